"""The backup catalogue: one model of a backup, wherever it is kept (this host's BACKUP_DIR or
the bucket: see source.backups.store), IDs that sort by time, verification records, the one
rule for which backup is proven, and retention."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from source.backups.manifest import MANIFEST, FileEntry, encryption_of, manifest_files
from source.backups.store import (
    ID_EXAMPLE,
    LocalStore,
    Store,
    is_backup_id,
    skip,
)
from source.errors import EXIT_USAGE, ReportableError

log = logging.getLogger(__name__)

__all__ = ["ID_EXAMPLE", "is_backup_id"]  # the IDs' rule lives with the stores' listing

LATEST = "latest"
PARTIAL_PREFIX = ".partial-"
DOWNLOAD_PREFIX = ".download-"  # a copy fetched from the bucket (source.backups.offsite)
VERIFICATION = "verification.json"
# How far a verification got, weakest last:
RESTORED = "restored"  # the dump was restored into a scratch database and row counts matched
READ_ONLY = "read only"  # no CREATEDB: the archive was read end to end, never restored
CHECKED = "checked"  # a copy: every file's sha256 matched the backup it was copied from


class BackupError(ReportableError):
    """A backup operation cannot proceed; str() is one line."""


class BackupNotFound(BackupError):
    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Verification:
    ok: bool
    level: str | None  # RESTORED, READ_ONLY or CHECKED when ok
    verified_at: str
    detail: str = ""  # what was done, or the problems found

    @classmethod
    def from_record(cls, record: dict) -> Verification:
        ok = bool(record["ok"])
        detail = record.get("detail") or "; ".join(record.get("problems") or [])
        # A record written before levels were kept verified by restore.
        level = record.get("level", RESTORED if ok else None)
        return cls(ok, level if ok else None, record["verified_at"], detail)


@dataclass(frozen=True)
class Backup:
    """One backup in one store: its files as the manifest lists them, how it was verified."""

    id: str
    where: str  # the store's name for it: a folder, an s3:// URL
    kind: str  # the store's kind: "local" or "remote"
    size_bytes: int  # of everything stored for it
    files: dict[str, FileEntry] = field(default_factory=dict)  # empty: unreadable manifest
    verification: Verification | None = None  # None: never verified
    path: Path | None = None  # its folder, for a backup on this host
    encrypted: bool = False  # its files stored encrypted (age), as its manifest says
    recipients: int = 0  # how many age recipients they are encrypted to

    @property
    def verified(self) -> bool | None:
        return None if self.verification is None else self.verification.ok

    @property
    def level(self) -> str | None:
        return None if self.verification is None else self.verification.level

    @property
    def verified_at(self) -> str | None:
        return None if self.verification is None else self.verification.verified_at

    @property
    def proven(self) -> bool:
        """Verified by a restore: the only check trusted as if it had been a real restore."""
        return bool(self.verified) and self.level == RESTORED

    @property
    def created_at(self) -> datetime:
        return datetime.strptime(self.id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)

    @property
    def local_path(self) -> Path:
        """Its folder; only a backup of this host (or a copy fetched to it) has one."""
        if self.path is None:
            raise BackupError(f"{self.where} is not on this host")
        return self.path


def new_backup_id(backup_dir: Path, now: datetime | None = None) -> str:
    base = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    candidate, n = base, 1
    while (backup_dir / candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def checked_id(wanted: str | None) -> str | None:
    """A backup ID from the command line, checked the same way for local and remote copies:
    an ID, `latest` or None (the newest); anything else is no backup (exit 2)."""
    if wanted is None or wanted == LATEST or is_backup_id(wanted):
        return wanted
    raise BackupNotFound(f"no backup {wanted} (an ID looks like {ID_EXAMPLE}, or {LATEST})")


def _read_json(store: Store, backup_id: str, name: str) -> dict | None:
    try:
        with store.open(backup_id, name) as handle:
            body = json.loads(handle.read())
        return body if isinstance(body, dict) else None
    except Exception:  # an unreadable record is no record (a store's errors included)
        return None


def read_backup(store: Store, backup_id: str, sizes: dict[str, int]) -> Backup:
    """The backup `backup_id` of `store`, whose files have these sizes."""
    verification = None
    manifest = _read_json(store, backup_id, MANIFEST) or {}
    try:
        files = manifest_files(manifest)
    except ValueError:
        files = {}  # verify says what is wrong with it
    encryption = encryption_of(manifest) if isinstance(manifest, dict) else None
    recipients = encryption.get("recipients") if encryption else None
    if VERIFICATION in sizes and (record := _read_json(store, backup_id, VERIFICATION)):
        try:
            verification = Verification.from_record(record)
        except (KeyError, TypeError):
            verification = None
    path = store.path(backup_id) if isinstance(store, LocalStore) else None
    return Backup(
        backup_id,
        store.where(backup_id),
        store.kind,
        sum(sizes.values()),
        files,
        verification,
        path,
        encryption is not None,
        len(recipients) if isinstance(recipients, list) else 0,
    )


def catalogue(store: Store) -> list[Backup]:
    """The complete backups of a store (those with a manifest), oldest first."""
    return [read_backup(store, i, sizes) for i, sizes in sorted(store.folders().items())]


def list_backups(backup_dir: Path) -> list[Backup]:
    """This host's complete backups, oldest first (what is not a backup is skipped, warned
    about once, never followed, never deleted)."""
    return catalogue(LocalStore(backup_dir))


def find_backup(backup_dir: Path, backup_id: str | None) -> Backup:
    backup_id = None if checked_id(backup_id) == LATEST else backup_id
    backups = list_backups(backup_dir)
    if not backups:
        raise BackupNotFound(f"no backups in {backup_dir}")
    if backup_id is None:
        return backups[-1]
    for backup in backups:
        if backup.id == backup_id:
            return backup
    raise BackupNotFound(f"no backup {backup_id!r} in {backup_dir}")


def newest_restorable(backups: list[Backup]) -> tuple[Backup | None, list[str]]:
    """What `restore latest` means (backups oldest first): the newest backup that passed
    verification (or, when none was ever verified, the newest never checked, which restore
    verifies first); and the IDs of the newer ones passed over because they failed."""
    failed = [b.id for b in backups if b.verified is False]
    chosen = next((b for b in reversed(backups) if b.verified), None) or next(
        (b for b in reversed(backups) if b.verified is None), None
    )
    skipped = [i for i in failed if chosen is None or i > chosen.id]
    return chosen, skipped


def record_verification(
    store: Store,
    backup_id: str,
    ok: bool,
    problems: list[str],
    level: str | None,
    detail: str = "",
) -> None:
    """Beside the backup in its store, replaced whole: a reader sees the previous record or
    this one, never half."""
    body = {
        "ok": ok,
        "level": level if ok else None,
        "verified_at": datetime.now(UTC).isoformat(),
        "problems": problems,
        "detail": "; ".join(problems) or detail,
    }
    store.put(backup_id, VERIFICATION, json.dumps(body, indent=2).encode())


def proven_ids(backups: list[Backup]) -> list[str]:
    """The backups retention always spares the newest of (oldest first): those proven by a
    restore, or, when none is, those verified at all (a read or a checked copy)."""
    return [b.id for b in backups if b.proven] or [b.id for b in backups if b.verified]


def remove_leftovers(backup_dir: Path) -> list[str]:
    """Delete half-written backups and downloaded copies left by interrupted runs (call only
    under the lock); a link or file of that name is not ours: skipped, never followed."""
    removed = []
    leftovers = [*backup_dir.glob(PARTIAL_PREFIX + "*"), *backup_dir.glob(DOWNLOAD_PREFIX + "*")]
    for path in sorted(leftovers):
        if path.is_symlink() or not path.is_dir():
            skip(path, "a link or file with the name of a leftover")
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
        log.info("removed the leftover of an interrupted backup: %s", path.name)
    return removed


def prune(backup_dir: Path, keep: int) -> list[str]:
    """This host's retention (BACKUP_KEEP), after removing interrupted leftovers."""
    remove_leftovers(backup_dir)
    return prune_store(LocalStore(backup_dir), keep, "BACKUP_KEEP")


def prune_store(store: Store, keep: int, setting: str) -> list[str]:
    """Keep the newest `keep` backups of a store and always its newest proven one (see
    proven_ids: a read-only check is not trusted as if it had restored); return removed IDs."""
    backups = catalogue(store)
    removed, spared = retention([b.id for b in backups], keep, proven_ids(backups))
    there = "" if store.kind == "local" else " in the bucket"
    if spared:
        log.warning("kept %s%s: it is the newest proven backup", spared, there)
    for backup_id in removed:
        store.delete(backup_id)
        log.info("pruned backup %s%s (%s=%d)", backup_id, there, setting, keep)
    return removed


def retention(ids: list[str], keep: int, proven: list[str]) -> tuple[list[str], str | None]:
    """Of IDs oldest first: those to delete when keeping the newest `keep` and always the
    newest of `proven` (also oldest first); and that one, when it was kept beyond `keep`."""
    kept = set(ids[-keep:])
    spared = proven[-1] if proven and proven[-1] not in kept else None
    return [i for i in ids if i not in kept and i != spared], spared
