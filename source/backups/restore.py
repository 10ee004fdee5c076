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
from source.files import fsync_path, swap_in_directory

log = logging.getLogger(__name__)


def _current_counts(database: Database) -> dict[str, int]:
    conn = database.connect()
    try:
        with conn, conn.cursor() as cur:
            return row_counts(cur)
    finally:
        conn.close()


def extract_safely(tar: tarfile.TarFile, target: Path) -> None:
    """Extract only plain files and folders inside `target` (tarfile's "data" filter, which
    Python 3.11 has only from 3.11.4 on: Debian bookworm's 3.11.2 gets the same check here)."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(target, filter="data")
        return
    root = target.resolve()
    for member in tar.getmembers():
        inside = (root / member.name).resolve().is_relative_to(root)
        if not inside or not (member.isfile() or member.isdir()):
            raise BackupError(f"models archive holds an unsafe entry: {member.name}")
    tar.extractall(target)


def restore_models(archive: Path, models_dir: Path) -> int:
    """Extract inside MODELS_DIR, then swap each of its folders in with one atomic exchange;
    returns the number of files restored. Nothing is written beside MODELS_DIR: it may be a
    volume's mount point in a read-only /app (Compose, Kubernetes)."""
    models_dir = models_dir.resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = models_dir / ".restoring"  # hidden: never archived by a backup
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    with tarfile.open(archive, "r:gz") as tar:
        extract_safely(tar, staging)
    restored = staging / "models"
    restored.mkdir(exist_ok=True)
    files = sum(1 for p in restored.rglob("*") if p.is_file())
    # The demo's folder is not in a real backup: it is left as it is.
    current = [p for p in models_dir.iterdir() if not p.name.startswith(".")]
    current = [p for p in current if p.name != DEMO_SUBDIR or (restored / DEMO_SUBDIR).exists()]
    replaced = sorted(
        str(p.relative_to(models_dir)) for top in current for p in [top, *top.rglob("*")]
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
