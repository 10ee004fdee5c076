"""The command lines: `registry` is the pattern, `main` the commands of main.py, `backups` those
of backups_main.py. Each command is declared once, beside its handler."""
