"""Backups of the database and the models: `python backups_main.py --help`."""

import sys

from source.commands.backups import main
from source.console import quiet_when_pipe_closes

if __name__ == "__main__":
    sys.exit(quiet_when_pipe_closes(main))
