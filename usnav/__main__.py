from usnav.cli.main import entry

entry()
