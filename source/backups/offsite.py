"""Backups off the host: after every local backup, copy the verified backups the bucket is
missing (oldest first), apply the bucket's retention, and mark each local backup that has a
checked copy. Restores and remote verification fetch a copy back into a private folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from source.backups.catalog import DOWNLOAD_PREFIX, BackupInfo, list_backups, retention
from source.backups.remote import CHECKED, RESTORED, RemoteError, RemoteStore
from source.config import Settings
from source.errors import EXIT_PARTIAL
from source.files import atomic_write

log = logging.getLogger(__name__)

OFFSITE_MARK = "remote.json"  # in a local backup's folder: where its checked copy is


class OffsiteFailed(RemoteError):
    """The local backup is kept and verified, but no copy left the host: exit 3."""

    exit_code = EXIT_PARTIAL


def is_offsite(backup: BackupInfo) -> bool:
    return (backup.path / OFFSITE_MARK).is_file()


def _mark(backup: BackupInfo, store: RemoteStore) -> None:
    body = {"url": store.where(backup.id), "copied_at": datetime.now(UTC).isoformat()}
    atomic_write(backup.path / OFFSITE_MARK, json.dumps(body).encode())


def copy_offsite(settings: Settings, store: RemoteStore | None = None) -> list[str]:
    """Upload every verified local backup the bucket lacks, then prune the bucket. Returns
    the IDs uploaded; raises OffsiteFailed (exit 3) in one line naming the store."""
    store = store or RemoteStore(settings)
    try:
        remote = {b.id for b in store.list()}
        uploaded = []
        for backup in list_backups(settings.backup_dir):
            if backup.id in remote:
                if not is_offsite(backup):
                    _mark(backup, store)
                continue
            if not backup.verified:
                continue  # only a backup proven here is worth a copy there
            sent = store.upload(backup.path, backup.level)
            _mark(backup, store)
            uploaded.append(backup.id)
            log.info("backup %s copied to %s (%.1f MB)", backup.id, store.where(), sent / 1e6)
        prune_remote(store, settings.backup_keep_remote)
    except RemoteError as exc:
        raise OffsiteFailed(f"the backup stays on this host only: {exc}") from None
    return uploaded


def prune_remote(store: RemoteStore, keep: int) -> list[str]:
    """Keep the newest `keep` copies, and always the newest proven by a restore (or, when none
    was, the newest checked against a local copy)."""
    backups = store.list()
    restored = [b.id for b in backups if b.verified and b.level == RESTORED]
    proven = restored or [b.id for b in backups if b.verified and b.level == CHECKED]
    removed, spared = retention([b.id for b in backups], keep, proven)
    if spared:
        log.warning("kept %s in the bucket: it is the newest proven copy", spared)
    for backup_id in removed:
        store.delete(backup_id)
        log.info("pruned %s from the bucket (BACKUP_KEEP_REMOTE=%d)", backup_id, keep)
    return removed


@contextmanager
def fetched(settings: Settings, store: RemoteStore, backup_id: str) -> Iterator[BackupInfo]:
    """A remote copy downloaded into a private folder beside the local backups (same disk,
    never listed: its name starts with a dot), removed afterwards unless kept by `keep`."""
    settings.backup_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{DOWNLOAD_PREFIX}{backup_id}-"
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=settings.backup_dir))
    try:
        folder = store.download(backup_id, scratch / backup_id)
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        yield BackupInfo(backup_id, folder, size, None, None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def keep_locally(settings: Settings, backup: BackupInfo, store: RemoteStore) -> None:
    """After a restore from the bucket, the copy becomes a local backup again (it verified)."""
    target = settings.backup_dir / backup.id
    if target.exists() or target.is_symlink():  # never replace what is there, a link included
        return
    os.rename(backup.path, target)
    _mark(BackupInfo(backup.id, target, backup.size_bytes, None, None), store)
