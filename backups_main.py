"""Backups of the database and the models: `python backups_main.py --help`."""

import sys

from source.backups.cli import main

if __name__ == "__main__":
    sys.exit(main())
