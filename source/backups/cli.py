"""Command line of backups_main.py: create (default), list, verify, restore, prune."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from functools import partial

from source.backups.catalog import find_backup, list_backups, prune
from source.config import ConfigError, Settings, load_settings
from source.db_functions.migrations import connect_and_migrate
from source.entrypoint import run_lock, run_locked
from source.errors import EXIT_FAILURE, EXIT_LOCKED, EXIT_OK, EXIT_USAGE

log = logging.getLogger("backups_main")

EPILOG = """examples:
  python backups_main.py                 create a backup (verified, then pruned)
  python backups_main.py list
  python backups_main.py verify          the newest backup; or: verify 20261128T060000Z
  python backups_main.py restore 20261128T060000Z
  python backups_main.py prune           keep the newest BACKUP_KEEP backups

exit codes: 0 ok, 1 failure (e.g. a backup does not verify), 2 usage/configuration error,
75 another backup or restore holds the lock"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backups_main.py",
        description="Backups of the database (pg_dump) and the models, with checksums, "
        "verification by restore, restore and retention.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--demo", action="store_true", help="act on the demo database")
    # --demo is accepted after the command too (`list --demo`) without resetting it to False.
    demo = argparse.ArgumentParser(add_help=False)
    demo.add_argument(
        "--demo", action="store_true", default=argparse.SUPPRESS, help="the demo database"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, parents=[demo])

    create = command("create", "create one backup, verify it, prune (the default)")
    create.add_argument("--no-verify", action="store_true", help="skip the restore test")
    command("list", "one line per backup: ID, age, size, verified")
    verify = command("verify", "checksums, a full read of the models, a test restore of the dump")
    verify.add_argument("id", nargs="?", help="backup ID (default: the newest)")
    restore = command("restore", "restore the database and the models from a verified backup")
    restore.add_argument("id", help="backup ID, as shown by list")
    command("prune", "keep the newest BACKUP_KEEP backups; remove interrupted leftovers")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "create"
    try:
        settings = load_settings(demo=args.demo, require_api_key=False)
    except ConfigError as exc:
        print(f"backups_main.py: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if command == "list":
        return _list(settings)
    lock = settings.backup_dir / ".backup.lock"
    return run_locked("backups_main.py", settings, lock, partial(COMMANDS[command], settings, args))


def _create(settings: Settings, args) -> int:
    from source.backups.create import create_backup
    from source.backups.verify import verify_backup

    database = connect_and_migrate(settings)
    backup = create_backup(settings, database)
    if not getattr(args, "no_verify", False) and verify_backup(database, backup)[0]:
        print(
            f"backups_main.py: backup {backup.id} was written but does NOT verify", file=sys.stderr
        )
        return EXIT_FAILURE
    prune(settings.backup_dir, settings.backup_keep)
    print(f"backup {backup.id} created ({backup.size_bytes / 1e6:.1f} MB) in {backup.path}")
    return EXIT_OK


def _age(created: datetime) -> str:
    minutes = int((datetime.now(UTC) - created).total_seconds() // 60)
    if minutes < 120:
        return f"{minutes}m"
    return f"{minutes // 60}h" if minutes < 48 * 60 else f"{minutes // 1440}d"


def _list(settings: Settings) -> int:
    backups = list_backups(settings.backup_dir)
    if not backups:
        print(f"no backups in {settings.backup_dir}")
        return EXIT_OK
    print(f"{'ID':<20} {'AGE':>6} {'SIZE':>10}  VERIFIED")
    for backup in reversed(backups):
        state = {
            True: f"{backup.level} ({backup.verified_at[:19]})",
            False: "FAILED",
            None: "never",
        }
        print(
            f"{backup.id:<20} {_age(backup.created_at):>6} "
            f"{backup.size_bytes / 1e6:>8.1f}MB  {state[backup.verified]}"
        )
    return EXIT_OK


def _verify(settings: Settings, args) -> int:
    from source.backups.verify import verify_backup

    backup = find_backup(settings.backup_dir, args.id)
    problems, level = verify_backup(connect_and_migrate(settings), backup)
    if problems:
        print(
            f"backups_main.py: backup {backup.id} does NOT verify: {'; '.join(problems)}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    print(f"backup {backup.id} verified ({level})")
    return EXIT_OK


def _restore(settings: Settings, args) -> int:
    from source.backups.restore import restore_backup

    backup = find_backup(settings.backup_dir, args.id)
    # No hourly run may write while the database is being replaced.
    with run_lock(settings.data_dir / ".pipeline.lock") as locked:
        if not locked:
            print("backups_main.py: an hourly run holds the lock; try again", file=sys.stderr)
            return EXIT_LOCKED
        restore_backup(connect_and_migrate(settings), backup, settings.models_dir)
    print(f"restored backup {backup.id}")
    return EXIT_OK


def _prune(settings: Settings, args) -> int:
    removed = prune(settings.backup_dir, settings.backup_keep)
    print(f"pruned {len(removed)} backup(s); keeping at most {settings.backup_keep}")
    return EXIT_OK


COMMANDS = {"create": _create, "verify": _verify, "restore": _restore, "prune": _prune}
