"""`backups_main.py restore ID`: verify first, extract the models inside MODELS_DIR, restore the
dump into a new database and check its row counts; only then replace the live database, by
renaming the new one in (where this role may not create databases: in place, in one
transaction), and swap the already extracted model folders in right after."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
from pathlib import Path

import psycopg2
import psycopg2.errors

from source.backups.catalog import RESTORED, Backup, BackupError
from source.backups.create import row_counts
from source.backups.databases import (
    RESTORING,
    can_swap,
    copy_object_grants,
    create_like,
    derived_name,
    drop_own,
    swap_in,
)
from source.backups.manifest import DATABASE_DUMP, MODELS_ARCHIVE, read_manifest
from source.backups.pgtools import PgTool, find_tool, libpq_env, run_tool
from source.backups.verify import unsafe_member, verify_backup
from source.config import DEMO_SUBDIR
from source.db_functions.connection import Database
from source.errors import first_line
from source.files import fsync_path, swap_in_directory

log = logging.getLogger(__name__)

STAGING = ".restoring"  # inside MODELS_DIR, hidden: never archived by a backup


def _current_counts(database: Database, dbname: str | None = None) -> dict[str, int]:
    conn = database.connect(dbname=dbname)
    try:
        with conn, conn.cursor() as cur:
            return row_counts(cur)
    finally:
        conn.close()


def extract_safely(tar: tarfile.TarFile, target: Path) -> None:
    """Extract only plain files and folders inside `models/` (the checks verify makes; then
    tarfile's "data" filter where this Python has it, from 3.11.4 on)."""
    for member in tar.getmembers():
        if problem := unsafe_member(member):
            raise BackupError(f"models archive holds an unsafe entry: {problem}")
    if hasattr(tarfile, "data_filter"):
        tar.extractall(target, filter="data")
    else:
        tar.extractall(target)


def stage_models(archive: Path, models_dir: Path) -> Path:
    """Extract the archive into MODELS_DIR/.restoring (nothing is written beside MODELS_DIR:
    it may be a volume's mount point in a read-only /app); returns the staging folder."""
    models_dir = models_dir.resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = models_dir / STAGING
    if staging.is_symlink() or staging.is_file():
        staging.unlink()
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    with tarfile.open(archive, "r:gz") as tar:
        extract_safely(tar, staging)
    (staging / "models").mkdir(exist_ok=True)
    return staging


def swap_models(staging: Path, models_dir: Path) -> int:
    """Swap each folder of MODELS_DIR for the staged one with one atomic exchange; returns
    the number of files restored."""
    models_dir = models_dir.resolve()
    restored = staging / "models"
    files = sum(1 for p in restored.rglob("*") if p.is_file())
    # The demo's folder is not in a real backup: it is left as it is.
    current = [p for p in models_dir.iterdir() if not p.name.startswith(".")]
    current = [p for p in current if p.name != DEMO_SUBDIR or (restored / DEMO_SUBDIR).exists()]
    replaced = sorted(
        str(p.relative_to(models_dir))
        for top in current
        for p in [top, *top.rglob("*")]
        if p.is_file()
    )
    log.info(
        "restore: replacing %d model file(s) in %s: %s",
        len(replaced),
        models_dir,
        ", ".join(replaced) or "-",
    )
    dropped = staging / "dropped"
    dropped.mkdir()
    for name in sorted({p.name for p in restored.iterdir()} | {p.name for p in current}):
        if (restored / name).exists():
            swap_in_directory(restored / name, models_dir / name)  # atomic where supported
        else:  # not in the backup: removed, as a restore of the whole directory would
            os.rename(models_dir / name, dropped / name)
    shutil.rmtree(staging, ignore_errors=True)
    fsync_path(models_dir)
    return files


def restore_backup(database: Database, backup: Backup, models_dir: Path, lock_session=None) -> None:
    """Nothing live changes until everything is checked: the backup verifies, the models are
    extracted, the new database is complete; then the swap, then the models. `lock_session`
    holds the run lock until the swap."""
    problems, level = verify_backup(database, backup)
    if problems:
        raise BackupError(f"backup {backup.id} does not verify, refusing to restore: {problems[0]}")
    if level != RESTORED:
        log.warning("restore: %s was only read, not test-restored, before this restore", backup.id)
    manifest = read_manifest(backup.local_path)
    staging = stage_models(backup.local_path / MODELS_ARCHIVE, models_dir)
    try:
        before = _current_counts(database)
        pg_restore = find_tool("pg_restore", int(manifest["server_major"]), database)
        dump = backup.local_path / DATABASE_DUMP
        log.info("restore: %s into %s with %s", backup.id, database.name, pg_restore.description)
        refused = can_swap(database)
        if refused is None:
            release = lock_session.close if lock_session is not None else (lambda: None)
            after = restore_by_swap(database, pg_restore, dump, manifest, release)
        else:
            log.info(
                "restore: %s: restoring %s in place, in one transaction", refused, database.name
            )
            after = restore_in_place(database, pg_restore, dump)
        for table in sorted(set(before) | set(after)):
            log.info(
                "restore: %s: %s -> %s rows",
                table,
                before.get(table, "absent"),
                after.get(table, "absent"),
            )
        files = swap_models(staging, models_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "restore of %s complete: database %s, %d model file(s)", backup.id, database.name, files
    )


RESTORE_OPTIONS = ["--exit-on-error", "--no-owner", "--no-privileges"]


def restore_in_place(database: Database, pg_restore: PgTool, dump: Path) -> dict[str, int]:
    """All or nothing: one transaction, and pg_restore dies with this process."""
    run_tool(
        pg_restore,
        [
            "--clean",
            "--if-exists",
            "--single-transaction",
            *RESTORE_OPTIONS,
            "--dbname",
            database.name,
            str(dump),
        ],
        libpq_env(database),
    )
    return _current_counts(database)


def restore_by_swap(
    database: Database, pg_restore: PgTool, dump: Path, manifest: dict, release
) -> dict[str, int]:
    """Fill `<live>__restoring`, check its row counts against the manifest, swap it in."""
    new = derived_name(database.name, RESTORING)
    try:
        create_like(database, new)
    except psycopg2.errors.DuplicateDatabase:  # left by a restore the clean-up found in use
        raise BackupError(f"database {new} exists and is in use; try again later") from None
    except psycopg2.Error as exc:
        raise BackupError(f"cannot create database {new}: {first_line(exc)}") from None
    try:
        # Held open until the swap: another host's clean-up leaves a database in use alone.
        holder = database.connect(dbname=new)
        try:
            run_tool(
                pg_restore, [*RESTORE_OPTIONS, "--dbname", new, str(dump)], libpq_env(database, new)
            )
            carried = copy_object_grants(database, new)
            log.info(
                "restore: %d grant(s) of %s carried over to the restored copy",
                carried,
                database.name,
            )
            with holder, holder.cursor() as cur:
                after = row_counts(cur)
        finally:
            holder.close()
        expected = manifest.get("row_counts", {})
        wrong = [
            f"{table}: {after.get(table, 'absent')} rows restored, manifest says {count}"
            for table, count in expected.items()
            if after.get(table) != count
        ]
        if wrong:
            raise BackupError(f"restored copy differs, {database.name} left as it was: {wrong[0]}")
        swap_in(database, new, release)
    except BaseException:
        _drop_quietly(database, new)
        raise
    return after


def _drop_quietly(database: Database, name: str) -> None:
    """After a failed restore; if even this fails, the next backup command drops it."""
    try:
        drop_own(database, name)
    except Exception as exc:  # the original error is the one to report
        log.warning("restore: could not drop %s: %s", name, first_line(exc))
