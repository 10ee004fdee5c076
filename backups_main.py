"""Backups of the database and the models: `python backups_main.py --help`."""

import sys

if __name__ == "__main__":
    print("backups_main.py: not implemented yet (see issue 4)", file=sys.stderr)
    sys.exit(2)
