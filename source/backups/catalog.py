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
from source.errors import EXIT_USAGE, ReportableError
from source.files import atomic_write

log = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")
PARTIAL_PREFIX = ".partial-"
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


def _info(path: Path) -> BackupInfo:
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    verified, verified_at, level = None, None, None
    try:
        verification = json.loads((path / VERIFICATION).read_text())
        verified, verified_at = bool(verification["ok"]), verification["verified_at"]
        level = verification.get("level", RESTORED if verified else None)
    except (OSError, ValueError, KeyError):
        pass
    return BackupInfo(path.name, path, size, verified, verified_at, level)


def list_backups(backup_dir: Path) -> list[BackupInfo]:
    """Complete backups, oldest first; half-written ones (no final name) are not listed."""
    if not backup_dir.is_dir():
        return []
    return [
        _info(path)
        for path in sorted(backup_dir.iterdir())
        if path.is_dir() and ID_PATTERN.match(path.name) and (path / MANIFEST).is_file()
    ]


def find_backup(backup_dir: Path, backup_id: str | None) -> BackupInfo:
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
    """Delete half-written backups left by interrupted runs (call only under the lock)."""
    removed = []
    for path in sorted(backup_dir.glob(PARTIAL_PREFIX + "*")):
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
