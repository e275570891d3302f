import sys

from usnav.cli.main import main

sys.exit(main())
