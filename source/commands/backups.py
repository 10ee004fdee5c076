"""The commands of backups_main.py, each declared once beside its handler: create (the
default), list, verify, restore, prune."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from source import monitoring
from source.backups.catalog import (
    LATEST,
    BackupNotFound,
    checked_id,
    find_backup,
    list_backups,
    newest_restorable,
    prune,
)
from source.backups.databases import open_for_backups
from source.commands.registry import (
    BACKUP_LOCK,
    PIPELINE_LOCK,
    CommandLine,
    demo_option,
    option,
)
from source.config import KNOWN_METALS, Settings
from source.db_functions.run_lock import database_run_lock
from source.entrypoint import run_lock
from source.errors import EXIT_FAILURE, EXIT_LOCKED, EXIT_OK
from source.report.text import _age

log = logging.getLogger("backup")

EPILOG = """examples:
  python backups_main.py                 create a backup (verified, then pruned; copied to
                                         BACKUP_S3_URL when set)
  python backups_main.py list            local and remote copies, and how each was verified
  python backups_main.py verify          the newest backup; or: verify 20261128T060000Z
  python backups_main.py verify --remote the bucket's copy, restored into a scratch database
  python backups_main.py restore 20261128T060000Z
  python backups_main.py restore latest  from the bucket when the local copy is gone
  python backups_main.py prune           keep the newest BACKUP_KEEP backups

exit codes: 0 ok, 1 failure (e.g. a backup does not verify), 2 usage/configuration error,
3 the backup is kept and verified here but could not be copied to the bucket,
75 another backup or restore holds the lock"""


BACKUPS = CommandLine(
    prog="backups_main.py",
    description="Backups of the database (pg_dump) and the models, with checksums, "
    "verification by restore, restore and retention.",
    epilog=EPILOG,
    default="create",
    options=(demo_option("act on the demo database"),),
)
# --demo is accepted after the command too (`list --demo`) without resetting it to False.
DEMO = demo_option("the demo database")
# create, verify and restore report as the backup job; the scheduled create pings.
BACKUP_JOB = {"job": "backup", "monitored": True, "lock": BACKUP_LOCK}


@BACKUPS.command(
    "create",
    help="create one backup, verify it, prune (the default)",
    options=(DEMO, option("--no-verify", action="store_true", help="skip the restore test")),
    ping=True,
    **BACKUP_JOB,
)
def create(settings: Settings, args: argparse.Namespace) -> int:
    from source.backups.create import create_backup
    from source.backups.verify import verify_backup

    database = open_for_backups(settings)
    backup = create_backup(settings, database)
    # Verified by restore on the plaintext, which is then replaced by its encryption.
    problems = [] if getattr(args, "no_verify", False) else verify_backup(database, backup)[0]
    if settings.backup_age_recipients:
        from source.backups.encryption import seal

        backup = seal(backup, settings.backup_age_recipients)
    if problems:
        line = f"backup {backup.id} was written but does NOT verify"
        monitoring.record(summary=line)
        print(f"backups_main.py: {line}", file=sys.stderr)
        return EXIT_FAILURE
    prune(settings.backup_dir, settings.backup_keep)
    summary = f"backup {backup.id} created ({backup.size_bytes / 1e6:.1f} MB) in {backup.path}"
    if settings.backup_age_recipients:
        summary += f", encrypted (age) to {len(settings.backup_age_recipients)} recipient(s)"
    monitoring.record(summary=summary)
    print(summary)
    if settings.backup_s3_url:
        from source.backups.offsite import copy_offsite

        uploaded = copy_offsite(settings)  # OffsiteFailed: one line, exit 3
        summary += f"; copied to {settings.backup_s3_url}: {', '.join(uploaded) or 'nothing new'}"
        monitoring.record(summary=summary, offsite_newest=_newest_offsite(settings))
    return EXIT_OK


def _newest_offsite(settings: Settings) -> float | None:
    """The newest data in the bucket (a backup or a landed file), for the metric; None when
    the bucket cannot be listed (the copy just succeeded: rare, and the next run tells)."""
    from source.backups.landed import newest_offsite
    from source.backups.remote import RemoteError, RemoteStore

    try:
        newest = newest_offsite(RemoteStore(settings))
    except RemoteError:
        return None
    return newest.timestamp() if newest else None


@BACKUPS.command(
    "list",
    help="one line per backup: ID, age, size, where (local, remote), verified",
    options=(DEMO,),
    job="backup",
    logged=False,
)
def list_(settings: Settings, args: argparse.Namespace) -> int:
    local = {b.id: b for b in list_backups(settings.backup_dir)}
    remote, trouble = {}, None
    if settings.backup_s3_url:
        from source.backups.remote import RemoteError, RemoteStore

        try:
            remote = {b.id: b for b in RemoteStore(settings).list()}
        except RemoteError as exc:
            trouble = str(exc)
    if not local and not remote:
        print(
            f"no backups in {settings.backup_dir}"
            + (f" or {settings.backup_s3_url}" if settings.backup_s3_url else "")
        )
    else:
        print(f"{'ID':<20} {'AGE':>6} {'SIZE':>10}  {'WHERE':<12} {'STORED':<10} VERIFIED")
    for backup_id in sorted(set(local) | set(remote), reverse=True):
        here, there = local.get(backup_id), remote.get(backup_id)
        where = "local+remote" if here and there else ("local" if here else "remote")
        states = []
        if here:
            states.append(_state(here.verified, here.level, here.verified_at))
        if there:
            states.append("remote " + _state(there.verified, there.level, there.verified_at))
        shown = here or there
        assert shown is not None  # the ID came from one of the two listings
        size = shown.size_bytes
        age = _age(_seconds_since(shown.created_at))
        stored = f"age ({shown.recipients} key)" if shown.encrypted else "plain"
        print(
            f"{backup_id:<20} {age:>6} {size / 1e6:>8.1f}MB  {where:<12} {stored:<10} "
            + "; ".join(states)
        )
    if trouble:
        print(f"backups_main.py: remote copies unknown: {trouble}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _seconds_since(created: datetime) -> float:
    return (datetime.now(UTC) - created).total_seconds()


def _state(verified: bool | None, level: str | None, verified_at: str | None) -> str:
    if verified is None:
        return "never"
    return f"{level} ({(verified_at or '?')[:19]})" if verified else "FAILED"


@BACKUPS.command(
    "verify",
    help="checksums, a full read of the models, a test restore of the dump",
    options=(
        DEMO,
        option("id", nargs="?", help="backup ID (default: the newest)"),
        option("--remote", action="store_true", help="verify the bucket's copy (BACKUP_S3_URL)"),
    ),
    **BACKUP_JOB,
)
def verify(settings: Settings, args: argparse.Namespace) -> int:
    from source.backups.verify import verify_backup

    if getattr(args, "remote", False):
        return _verify_remote(settings, args)
    backup = find_backup(settings.backup_dir, checked_id(args.id))
    if _encrypted(backup) and not settings.backup_age_identity:
        return _verify_stored(backup)
    with _plaintext(settings, backup) as plain:
        problems, level = verify_backup(open_for_backups(settings), plain)
        if plain is not backup:
            from source.backups.encryption import carry_verification

            carry_verification(plain, backup)
    if problems:
        line = f"backup {backup.id} does NOT verify: {'; '.join(problems)}"
        monitoring.record(summary=line)
        print(f"backups_main.py: {line}", file=sys.stderr)
        return EXIT_FAILURE
    monitoring.record(summary=f"backup {backup.id} verified ({level})")
    print(f"backup {backup.id} verified ({level})")
    return EXIT_OK


def _encrypted(backup) -> bool:
    from source.backups.encryption import encryption_of
    from source.backups.manifest import read_manifest

    try:
        return encryption_of(read_manifest(backup.local_path)) is not None
    except ValueError:
        return False  # verify says what is wrong with the manifest


def _plaintext(settings: Settings, backup):
    """The backup decrypted for verify and restore (itself when not encrypted)."""
    from source.backups.encryption import plaintext

    return plaintext(backup, settings.backup_age_identity)


def _verify_stored(backup) -> int:
    """An encrypted backup without the identity: the sha256 of what is stored, no more."""
    from source.backups.catalog import record_verification
    from source.backups.manifest import checksum_problems, read_manifest
    from source.backups.store import LocalStore

    problems = checksum_problems(backup.local_path, read_manifest(backup.local_path))
    if problems:
        record_verification(LocalStore(backup.local_path.parent), backup.id, False, problems, None)
        line = f"backup {backup.id} does NOT verify: {'; '.join(problems)}"
        monitoring.record(summary=line)
        print(f"backups_main.py: {line}", file=sys.stderr)
        return EXIT_FAILURE
    line = (
        f"backup {backup.id}: the sha256 of every stored (encrypted) file matches the manifest; "
        "decrypting it and the restore test need the identity (BACKUP_AGE_IDENTITY_FILE)"
    )
    monitoring.record(summary=line)
    print(line)
    return EXIT_OK


def _verify_remote(settings: Settings, args) -> int:
    """Download the bucket's copy, check it, restore it into a scratch database; record it."""
    from source.backups.catalog import record_verification
    from source.backups.offsite import fetched
    from source.backups.verify import verify_backup

    store = _store(settings)
    backup_id = _remote_id(store, checked_id(args.id))
    with fetched(settings, store, backup_id) as copy, _plaintext(settings, copy) as plain:
        problems, level = verify_backup(open_for_backups(settings), plain)
    detail = "downloaded, checked and restored into a scratch database"
    record_verification(store, backup_id, not problems, problems, level, detail)
    if problems:
        line = f"the copy of {backup_id} in {store.url} does NOT verify: {'; '.join(problems)}"
        monitoring.record(summary=line)
        print(f"backups_main.py: {line}", file=sys.stderr)
        return EXIT_FAILURE
    line = f"the copy of {backup_id} in {store.url} verified ({level})"
    monitoring.record(summary=line)
    print(line)
    return EXIT_OK


def _store(settings: Settings):
    from source.backups.remote import RemoteStore

    if not settings.backup_s3_url:
        raise BackupNotFound("BACKUP_S3_URL is not set: there is no remote copy")
    return RemoteStore(settings)


def _remote_id(store, wanted: str | None) -> str:
    """The bucket's copy of `wanted` (None or `latest`: the newest), which must be there."""
    ids = [backup.id for backup in store.list()]
    if wanted not in (None, LATEST):
        if wanted not in ids:
            raise BackupNotFound(f"no backup {wanted} in {store.url}")
        return wanted
    if not ids:
        raise BackupNotFound(f"no complete backup in {store.url}")
    return ids[-1]


@BACKUPS.command(
    "restore",
    help="restore the database and the models from a verified backup",
    options=(
        DEMO,
        option(
            "id",
            help="backup ID as shown by list, or `latest`; fetched from the bucket when the "
            "local copy is gone",
        ),
        option(
            "--replay",
            action="store_true",
            help="then load the bucket's landed files newer than the backup (the default "
            "for `latest` with BACKUP_S3_URL)",
        ),
    ),
    folders=(PIPELINE_LOCK.folder,),  # it also takes the hourly run's lock
    **BACKUP_JOB,
)
def restore(settings: Settings, args: argparse.Namespace) -> int:
    from source.backups.restore import restore_backup

    wanted = checked_id(args.id)
    assert wanted is not None  # restore's ID is a required argument
    # No hourly run may write while the database is being replaced: this host's file lock
    # and the database's run lock, whose session the restore closes just before its swap.
    with run_lock(PIPELINE_LOCK.path(settings)) as locked:
        if not locked:
            print("backups_main.py: an hourly run holds the lock; try again", file=sys.stderr)
            return EXIT_LOCKED
        local = _local_backup(settings, wanted)
        database = open_for_backups(settings, create=True)
        with database_run_lock(database) as session:
            if local is not None:
                with _plaintext(settings, local) as plain:
                    restore_backup(database, plain, settings.models_dir, session)
                restored = local.id
            else:
                restored = _restore_from_bucket(settings, database, wanted, session)
        summary = f"restored backup {restored}"
        if settings.backup_s3_url and (wanted == LATEST or getattr(args, "replay", False)):
            summary += _replay_landed(settings, restored)
    monitoring.record(summary=summary, models_changed=True)
    print(summary)
    return EXIT_OK


def _replay_landed(settings: Settings, backup_id: str) -> str:
    """The bucket's landed files newer than the backup, loaded in time order as an hourly run
    loads what an earlier one landed, and its kept CSVs imported again where they fall: the
    database comes back as it was after the last run whose files reached the bucket."""
    from source.backups.catalog import Backup, BackupError
    from source.backups.landed import OVERLAP, remote_imports, remote_landed

    store = _store(settings)
    there = remote_landed(store)  # listed once: each stretch below downloads from it
    since = Backup(backup_id, "", "", 0).created_at - OVERLAP  # loading twice changes nothing
    replayed = _Replayed()
    for kept in remote_imports(there, since):
        _replay_responses(settings, store, there, (since, kept.imported_at), replayed)
        _replay_import(settings, store, kept, replayed)
        since = kept.imported_at
    _replay_responses(settings, store, there, (since, None), replayed)
    log.info(
        "restore: %d landed file(s) and %d import(s) replayed from the bucket, %d row(s)",
        replayed.files,
        replayed.imports,
        replayed.rows,
    )
    if replayed.failed:
        raise BackupError(
            f"backup {backup_id} restored, but {len(replayed.failed)} landed file(s) did not "
            f"load: {replayed.failed[0]}"
        )
    if not replayed.files and not replayed.imports:
        return ""
    imports = f" and {replayed.imports} import(s)" if replayed.imports else ""
    return (
        f"; then {replayed.files} landed file(s){imports} newer than it replayed "
        f"({replayed.rows} rows)"
    )


@dataclass
class _Replayed:
    files: int = 0
    imports: int = 0
    rows: int = 0
    failed: list[str] = field(default_factory=list)


def _replay_responses(settings, store, there, window, replayed: _Replayed) -> None:
    """The landed responses fetched in [since, before) (before None: no end), loaded."""
    from source.backfill import replay_first
    from source.backups.landed import fetch_landed
    from source.db_functions.migrations import connect_and_migrate
    from source.extract import INCOMING

    since, before = window
    incoming = settings.data_dir / INCOMING
    fetched = fetch_landed(settings, store, there, since, incoming, before=before)
    if not fetched:
        return
    outcomes = replay_first(settings, connect_and_migrate(settings))
    replayed.files += fetched
    replayed.rows += sum(o.inserted + o.updated for o in outcomes if not o.error)
    replayed.failed += [o.error for o in outcomes if o.error]


def _replay_import(settings: Settings, store, kept, replayed: _Replayed) -> None:
    """A kept import-csv, imported again with the options it was first read with."""
    import tempfile

    from source.backups.landed import fetch_import
    from source.csv_import import CsvLayout, ImportFailed, import_file
    from source.db_functions.migrations import connect_and_migrate

    with tempfile.TemporaryDirectory(dir=settings.data_dir, prefix=".replay-") as scratch:
        downloaded = Path(scratch) / kept.csv
        options = fetch_import(settings, store, kept, downloaded)
        try:
            metal, layout = options["metal"], CsvLayout(**options["layout"])
            if metal not in KNOWN_METALS:
                raise KeyError(metal)
            read_as = {k: options[k] for k in ("currency", "unit", "strict")}
            name = Path(str(options.get("name") or kept.csv)).name.strip(".") or kept.csv
            stamp = options.get("fetched_at")
            fetched_at = datetime.fromisoformat(stamp) if stamp else kept.imported_at
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            replayed.failed.append(f"{kept.options}: not the options of an import ({exc!r})")
            return
        database = connect_and_migrate(settings, metals=(*settings.metals, metal))
        conn = database.connect()
        try:
            report = import_file(
                conn,
                downloaded.rename(Path(scratch) / name),  # its messages name the file imported
                metal,
                layout,
                **read_as,
                raw_file=options.get("raw_file"),
                fetched_at=fetched_at,
            )
        except ImportFailed as exc:
            replayed.failed.append(str(exc))
            return
        finally:
            conn.close()
    replayed.imports += 1
    replayed.rows += report.rows_loaded


def _local_backup(settings: Settings, wanted: str):
    """The local backup to restore, or None when it must come from the bucket."""
    local = list_backups(settings.backup_dir)
    if wanted == LATEST:
        if local:
            return _latest_verified(local, settings.backup_dir)
        if not settings.backup_s3_url:
            raise BackupNotFound(f"no backups in {settings.backup_dir}")
        return None  # the host lost its backups: the bucket's newest
    if any(b.id == wanted for b in local) or not settings.backup_s3_url:
        return find_backup(settings.backup_dir, wanted)
    return None


def _latest_verified(local: list, backup_dir) -> object:
    """The newest local backup that passed verification, saying which and what it passed over."""
    chosen, skipped = newest_restorable(local)
    if chosen is None:
        raise BackupNotFound(
            f"no backup in {backup_dir} passed verification ({', '.join(skipped)} failed); "
            "restore one by its ID to see why"
        )
    what = "the newest verified backup" if chosen.verified else "never verified: checked first"
    passed = f"; newer {', '.join(skipped)} failed verification" if skipped else ""
    print(f"latest: {chosen.id}, {what}{passed}")
    return chosen


def _restore_from_bucket(settings: Settings, database, wanted: str, session) -> str:
    from source.backups.offsite import fetched, keep_locally
    from source.backups.restore import restore_backup

    store = _store(settings)
    backup_id = _remote_id(store, wanted)
    log.info("restore: %s is not here; fetching it from %s", backup_id, store.url)
    with fetched(settings, store, backup_id) as copy:
        with _plaintext(settings, copy) as plain:
            restore_backup(database, plain, settings.models_dir, session)
        keep_locally(settings, copy, store)
    return backup_id


@BACKUPS.command(
    "prune",
    help="keep the newest BACKUP_KEEP backups; remove interrupted leftovers",
    options=(DEMO,),
    job="backup",
    lock=BACKUP_LOCK,
)
def prune_(settings: Settings, args: argparse.Namespace) -> int:
    removed = prune(settings.backup_dir, settings.backup_keep)
    print(f"pruned {len(removed)} backup(s); keeping at most {settings.backup_keep}")
    return EXIT_OK


main = BACKUPS.main
