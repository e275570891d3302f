"""The ``usnav`` command line: thin subcommands over library functions."""
