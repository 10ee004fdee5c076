"""Backups off the host: after every local backup, copy the verified backups the bucket is
missing (oldest first), apply the bucket's retention, and mark each local backup that has a
checked copy. Restores and remote verification fetch a copy back into a private folder. A copy
is the same in both directions: every file streamed from one store to the other and checked
against the manifest, the manifest last."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from source.backups.catalog import (
    CHECKED,
    DOWNLOAD_PREFIX,
    Backup,
    catalogue,
    list_backups,
    prune_store,
    read_backup,
    record_verification,
)
from source.backups.landed import prune_landed
from source.backups.manifest import MANIFEST
from source.backups.remote import RemoteError, RemoteStore
from source.backups.store import LocalStore, Store, StoredFileDiffers, temporary_folder
from source.config import Settings
from source.errors import EXIT_PARTIAL
from source.files import atomic_write

log = logging.getLogger(__name__)

OFFSITE_MARK = "remote.json"  # in a local backup's folder: where its checked copy is


class OffsiteFailed(RemoteError):
    """The local backup is kept and verified, but no copy left the host: exit 3."""

    exit_code = EXIT_PARTIAL


def is_offsite(backup: Backup) -> bool:
    return backup.path is not None and (backup.path / OFFSITE_MARK).is_file()


def _mark(folder: Path, url: str) -> None:
    body = {"url": url, "copied_at": datetime.now(UTC).isoformat()}
    atomic_write(folder / OFFSITE_MARK, json.dumps(body).encode())


def copy_backup(backup: Backup, source: Store, target: Store) -> int:
    """Every file of the backup from `source` to `target`, each checked against the manifest,
    the manifest last (a copy without it is incomplete and never listed). Returns the bytes
    stored."""
    stored = 0
    for name in [*backup.files, MANIFEST]:
        expected = backup.files.get(name)  # the manifest's own digest is not in it
        if isinstance(source, LocalStore):  # a path: the store may send it in parallel parts
            stored += target.write(backup.id, name, source.path(backup.id) / name, expected).size
            continue
        with source.open(backup.id, name) as reader:
            stored += target.write(backup.id, name, reader, expected).size
    return stored


def copy_offsite(settings: Settings, store: RemoteStore | None = None) -> list[str]:
    """Upload every verified local backup the bucket lacks, then prune the bucket. Returns
    the IDs uploaded; raises OffsiteFailed (exit 3) in one line naming the store."""
    store = store or RemoteStore(settings)
    local = LocalStore(settings.backup_dir)
    try:
        remote = {b.id for b in catalogue(store)}
        uploaded = []
        for backup in list_backups(settings.backup_dir):
            if backup.id in remote:
                if not is_offsite(backup):
                    _mark(local.path(backup.id), store.where(backup.id))
                continue
            if not backup.verified:
                continue  # only a backup proven here is worth a copy there
            sent = copy_backup(backup, local, store)
            detail = f"sha256 of every file matches the local copy ({backup.level or 'unverified'})"
            record_verification(store, backup.id, True, [], CHECKED, detail)
            _mark(local.path(backup.id), store.where(backup.id))
            uploaded.append(backup.id)
            log.info("backup %s copied to %s (%.1f MB)", backup.id, store.where(), sent / 1e6)
        prune_store(store, settings.backup_keep_remote, "BACKUP_KEEP_REMOTE")
        prune_landed(store)  # the landed files no backup left in the bucket needs
    except RemoteError as exc:
        raise OffsiteFailed(f"the backup stays on this host only: {exc}") from None
    return uploaded


def remote_backup(store: Store, backup_id: str) -> Backup:
    """The bucket's copy of `backup_id` as its catalogue lists it (it must be complete)."""
    sizes = store.folders().get(backup_id)
    if sizes is None:
        raise RemoteError(f"{store.where(backup_id)}: no complete copy")
    backup = read_backup(store, backup_id, sizes)
    if not backup.files:
        raise RemoteError(f"{store.where(backup_id)}: unreadable {MANIFEST}")
    return backup


@contextmanager
def fetched(settings: Settings, store: Store, backup_id: str) -> Iterator[Backup]:
    """A remote copy downloaded into a private folder beside the local backups (same disk,
    never listed: its name starts with a dot), every file checked against the manifest while
    it streams in; a tampered or truncated copy is refused in one line. Removed afterwards
    unless `keep_locally` moved it."""
    scratch = temporary_folder(settings.backup_dir, f"{DOWNLOAD_PREFIX}{backup_id}-")
    try:
        backup = remote_backup(store, backup_id)
        here = LocalStore(scratch)
        try:
            copy_backup(backup, store, here)
        except StoredFileDiffers as exc:
            raise RemoteError(f"{store.where(backup_id)} is damaged, refusing it: {exc}") from None
        yield read_backup(here, backup_id, here.folders()[backup_id])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def keep_locally(settings: Settings, backup: Backup, store: Store) -> None:
    """After a restore from the bucket, the copy becomes a local backup again (it verified)."""
    target = settings.backup_dir / backup.id
    if target.exists() or target.is_symlink():  # never replace what is there, a link included
        return
    os.rename(backup.local_path, target)
    _mark(target, store.where(backup.id))
