"""`backups_main.py restore ID`: verify first, then restore the database in one transaction and
swap the models directory in."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
from pathlib import Path

from source.backups.catalog import RESTORED, BackupError, BackupInfo
from source.backups.create import row_counts
from source.backups.manifest import DATABASE_DUMP, MODELS_ARCHIVE, read_manifest
from source.backups.pgtools import find_tool, libpq_env, run_tool
from source.backups.verify import verify_backup
from source.config import DEMO_SUBDIR
from source.db_functions.connection import Database
from source.files import swap_in_directory

log = logging.getLogger(__name__)


def _current_counts(database: Database) -> dict[str, int]:
    conn = database.connect()
    try:
        with conn, conn.cursor() as cur:
            return row_counts(cur)
    finally:
        conn.close()


def restore_models(archive: Path, models_dir: Path) -> int:
    """Extract to a sibling directory, then swap it in; returns the number of files restored."""
    models_dir = models_dir.resolve()
    models_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = models_dir.parent / f".{models_dir.name}.restoring"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(staging, filter="data")
    restored = staging / "models"
    restored.mkdir(exist_ok=True)
    files = sum(1 for p in restored.rglob("*") if p.is_file())
    if models_dir.exists():
        replaced = sorted(
            str(p.relative_to(models_dir)) for p in models_dir.rglob("*") if p.is_file()
        )
        log.info(
            "restore: replacing %d model file(s) in %s: %s",
            len(replaced),
            models_dir,
            ", ".join(replaced) or "-",
        )
    demo_models = models_dir / DEMO_SUBDIR  # not in a real backup: carried over as it is
    if demo_models.is_dir() and not (restored / DEMO_SUBDIR).exists():
        os.rename(demo_models, restored / DEMO_SUBDIR)
    old = swap_in_directory(restored, models_dir)  # atomic where the filesystem allows
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    return files


def restore_backup(database: Database, backup: BackupInfo, models_dir: Path) -> None:
    problems, level = verify_backup(database, backup)
    if problems:
        raise BackupError(f"backup {backup.id} does not verify, refusing to restore: {problems[0]}")
    if level != RESTORED:
        log.warning("restore: %s was only read, not test-restored, before this restore", backup.id)
    manifest = read_manifest(backup.path)
    before = _current_counts(database)
    pg_restore = find_tool("pg_restore", int(manifest["server_major"]), database)
    log.info("restore: %s into %s with %s", backup.id, database.name, pg_restore.description)
    run_tool(
        pg_restore,
        [
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            "--no-privileges",
            "--dbname",
            database.name,
            str(backup.path / DATABASE_DUMP),
        ],
        libpq_env(database),
    )
    after = _current_counts(database)
    for table in sorted(set(before) | set(after)):
        log.info(
            "restore: %s: %s -> %s rows",
            table,
            before.get(table, "absent"),
            after.get(table, "absent"),
        )
    files = restore_models(backup.path / MODELS_ARCHIVE, models_dir)
    log.info(
        "restore of %s complete: database %s, %d model file(s)", backup.id, database.name, files
    )
