"""Where backups live: `BACKUP_DIR/<ID>/`, IDs that sort by time, and retention."""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from source.backups.manifest import MANIFEST
from source.config import DEMO_SUBDIR
from source.errors import EXIT_USAGE, ReportableError
from source.files import atomic_write

log = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"\d{8}T\d{6}Z(-\d+)?")  # always with fullmatch
ID_EXAMPLE = "20261128T060000Z"
LATEST = "latest"
PARTIAL_PREFIX = ".partial-"
DOWNLOAD_PREFIX = ".download-"  # a copy fetched from the bucket (source.backups.offsite)
VERIFICATION = "verification.json"
RESTORED = "restored"  # the dump was restored into a scratch database and row counts matched
READ_ONLY = "read only"  # no CREATEDB: the archive was read end to end, never restored


class BackupError(ReportableError):
    """A backup operation cannot proceed; str() is one line."""


class BackupNotFound(BackupError):
    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class BackupInfo:
    id: str
    path: Path
    size_bytes: int
    verified: bool | None  # None: never verified
    verified_at: str | None
    level: str | None = None  # RESTORED or READ_ONLY: how far the last verify got

    @property
    def fully_verified(self) -> bool:
        return bool(self.verified) and self.level == RESTORED

    @property
    def created_at(self) -> datetime:
        return datetime.strptime(self.id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def new_backup_id(backup_dir: Path, now: datetime | None = None) -> str:
    base = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    candidate, n = base, 1
    while (backup_dir / candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def is_backup_id(text: str) -> bool:
    return bool(ID_PATTERN.fullmatch(text))


def checked_id(wanted: str | None) -> str | None:
    """A backup ID from the command line, checked the same way for local and remote copies:
    an ID, `latest` or None (the newest); anything else is no backup (exit 2)."""
    if wanted is None or wanted == LATEST or is_backup_id(wanted):
        return wanted
    raise BackupNotFound(f"no backup {wanted} (an ID looks like {ID_EXAMPLE}, or {LATEST})")


def _info(path: Path) -> BackupInfo:
    size = sum(p.lstat().st_size for p in path.iterdir() if not p.is_symlink() and p.is_file())
    verified, verified_at, level = None, None, None
    try:
        verification = json.loads((path / VERIFICATION).read_text())
        verified, verified_at = bool(verification["ok"]), verification["verified_at"]
        level = verification.get("level", RESTORED if verified else None)
    except (OSError, ValueError, KeyError):
        pass
    return BackupInfo(path.name, path, size, verified, verified_at, level)


_warned: set[Path] = set()


def _not_a_backup(path: Path) -> str | None:
    """Why an entry of BACKUP_DIR is not a backup, or None (a folder named by ID, with its
    manifest). Links are never followed."""
    if path.is_symlink():
        return "a symbolic link"
    if not path.is_dir():
        return "not a folder"
    if not is_backup_id(path.name):
        return f"not named like a backup ID ({ID_EXAMPLE})"
    manifest = path / MANIFEST
    if manifest.is_symlink() or not manifest.is_file():
        return f"no {MANIFEST}"
    return None


def _skip(path: Path, why: str) -> None:
    if path not in _warned:  # once per entry and command, however often the folder is read
        _warned.add(path)
        log.warning("%s is not a backup (%s): skipped, left as it is", path, why)


def list_backups(backup_dir: Path) -> list[BackupInfo]:
    """Complete backups, oldest first. Our own hidden entries (the lock, half-written and
    downloaded copies) and the demo's folder are passed over; anything else that is not a
    backup is skipped with a warning, never followed, never deleted."""
    if not backup_dir.is_dir():
        return []
    backups = []
    for path in sorted(backup_dir.iterdir()):
        if path.name.startswith(".") or (path.name == DEMO_SUBDIR and not path.is_symlink()):
            continue
        if why := _not_a_backup(path):
            _skip(path, why)
        else:
            backups.append(_info(path))
    return backups


def find_backup(backup_dir: Path, backup_id: str | None) -> BackupInfo:
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


def newest_restorable(backups: list[BackupInfo]) -> tuple[BackupInfo | None, list[str]]:
    """What `restore latest` means (backups oldest first): the newest backup that passed
    verification (or, when none was ever verified, the newest never checked, which restore
    verifies first); and the IDs of the newer ones passed over because they failed."""
    failed = [b.id for b in backups if b.verified is False]
    chosen = next((b for b in reversed(backups) if b.verified), None) or next(
        (b for b in reversed(backups) if b.verified is None), None
    )
    skipped = [i for i in failed if chosen is None or i > chosen.id]
    return chosen, skipped


def record_verification(path: Path, ok: bool, problems: list[str], level: str | None) -> None:
    """Written atomically: a reader sees the previous record or this one, never half."""
    body = {
        "ok": ok,
        "level": level if ok else None,
        "verified_at": datetime.now(UTC).isoformat(),
        "problems": problems,
    }
    atomic_write(path / VERIFICATION, json.dumps(body, indent=2).encode())


def remove_leftovers(backup_dir: Path) -> list[str]:
    """Delete half-written backups and downloaded copies left by interrupted runs (call only
    under the lock); a link or file of that name is not ours: skipped, never followed."""
    removed = []
    leftovers = [*backup_dir.glob(PARTIAL_PREFIX + "*"), *backup_dir.glob(DOWNLOAD_PREFIX + "*")]
    for path in sorted(leftovers):
        if path.is_symlink() or not path.is_dir():
            _skip(path, "a link or file with the name of a leftover")
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
        log.info("removed the leftover of an interrupted backup: %s", path.name)
    return removed


def prune(backup_dir: Path, keep: int) -> list[str]:
    """Keep the newest `keep` backups, and always the newest verified one; return removed IDs."""
    remove_leftovers(backup_dir)
    backups = list_backups(backup_dir)
    # Never delete the newest backup proven by a restore (or, if none was, the newest read
    # end to end): a read-only check is not trusted as if it had restored.
    proven = [b.id for b in backups if b.fully_verified] or [b.id for b in backups if b.verified]
    removed, spared = retention([b.id for b in backups], keep, proven)
    if spared:
        log.warning("kept %s: it is the newest verified backup", spared)
    for backup in backups:
        if backup.id in removed:
            shutil.rmtree(backup.path)
            log.info("pruned backup %s (BACKUP_KEEP=%d)", backup.id, keep)
    return removed


def retention(ids: list[str], keep: int, proven: list[str]) -> tuple[list[str], str | None]:
    """Of IDs oldest first: those to delete when keeping the newest `keep` and always the
    newest of `proven` (also oldest first); and that one, when it was kept beyond `keep`."""
    kept = set(ids[-keep:])
    spared = proven[-1] if proven and proven[-1] not in kept else None
    return [i for i in ids if i not in kept and i != spared], spared
