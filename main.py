"""Hourly commodities price pipeline: `python main.py --help`."""

import sys

from source.commands.main import main
from source.console import quiet_when_pipe_closes

if __name__ == "__main__":
    sys.exit(quiet_when_pipe_closes(main))
