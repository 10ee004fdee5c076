"""Hourly commodities price pipeline: `python main.py --help`."""

import sys

from source.cli import main

if __name__ == "__main__":
    sys.exit(main())
