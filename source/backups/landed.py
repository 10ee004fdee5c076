"""A recovery point of one run: the raw files the jobs landed and loaded, copied to the bucket
after each run (encrypted like the backups when BACKUP_AGE_RECIPIENTS is set), so that
`restore latest` can bring back the newest backup and then load what came after it.

In the bucket they live under `<prefix>/landed/<YYYY-MM-DD>/<name>`, a top-level folder the
backup catalogue passes over; the name is the one the file had on this host (it starts with
its fetch time, UTC). What is copied: every loaded file fetched since shortly before the
bucket's newest backup that the bucket lacks, so a failed copy is caught up by the next run.
What is kept: the days from shortly before the bucket's oldest backup on.

An import-csv with a bucket keeps a copy of its CSV beside the landed files,
`<time>_import_<metal>.csv`, and how it was read, `<time>_import_<metal>.options.json` (written
second, so the pair is whole when the options are there); both are copied like the rest and
`restore latest` imports the CSV again, in time order with the landed responses."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from source.backups.catalog import catalogue
from source.backups.encryption import encrypting, identities_of
from source.backups.remote import RemoteError, RemoteStore
from source.config import Settings
from source.files import atomic_write, fsync_path

log = logging.getLogger(__name__)

LANDED = "landed"  # the bucket's folder of landed files
# A file fetched this long before a backup may have been loaded after its snapshot: it is
# copied and replayed too (loading a file twice changes nothing).
OVERLAP = timedelta(hours=1)
AGE_MAGIC = b"age-encryption.org/v1\n"
_TIME = re.compile(r"^(\d{8}T\d{6})\d{6}Z_[a-z]+_[a-z]+(\.\d+)?\.json$")
_IMPORTED = re.compile(r"^(\d{8}T\d{6})\d{6}Z_import_([a-z]+)\.(csv|options\.json)$")
IMPORT_OPTIONS = ".options.json"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class LandedCopy:
    """What a job's copy of its landed files did (recorded in its ledger row)."""

    copied: int
    error: str | None = None
    newest: datetime | None = None  # the newest data in the bucket: backup or landed file


def fetched_at(name: str) -> datetime | None:
    """The fetch (or import) time a landed file's name starts with, else None."""
    match = _TIME.match(name) or _IMPORTED.match(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match[1], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def is_import(name: str) -> bool:
    """A kept CSV of an import-csv, or its options (not a response to load)."""
    return _IMPORTED.match(name) is not None


@dataclass(frozen=True)
class KeptImport:
    """An import-csv the bucket can replay: its CSV and how it was read."""

    day: str
    csv: str
    options: str
    imported_at: datetime


def keep_import(loaded_dir: Path, csv_path: Path, metal: str, options: dict, now: datetime) -> Path:
    """Copy an imported CSV to loaded/<day>/ with its options, for copy_landed to take to the
    bucket; each written whole (temporary name, fsync, rename), the options last."""
    name = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}_import_{metal}"
    directory = loaded_dir / now.strftime("%Y-%m-%d")
    directory.mkdir(parents=True, exist_ok=True)
    target, partial = directory / f"{name}.csv", directory / f".{name}.csv.partial"
    shutil.copyfile(csv_path, partial)
    fsync_path(partial)
    os.replace(partial, target)
    atomic_write(directory / f"{name}{IMPORT_OPTIONS}", json.dumps(options, indent=1).encode())
    return target


def remote_imports(there: dict[str, dict[str, int]], since: datetime) -> list[KeptImport]:
    """The whole import pairs (CSV and options) of the bucket's landed files `there` (as
    remote_landed lists them) made since `since`, oldest first."""
    found = []
    for day, names in sorted(there.items()):
        for name in sorted(names):
            match = _IMPORTED.match(name)
            when = fetched_at(name)
            if match is None or match[3] != "csv" or when is None or when < since:
                continue
            options = name.removesuffix(".csv") + IMPORT_OPTIONS
            if options in names:
                found.append(KeptImport(day, name, options, when))
    return found


def fetch_import(settings: Settings, store: RemoteStore, kept: KeptImport, target: Path) -> dict:
    """Download a kept import's CSV to `target` (decrypted) and return its options."""
    from source.backups.encryption import decrypt_file

    folder = f"{LANDED}/{kept.day}"
    options = json.loads(_decrypted(settings, kept.options, _download(store, folder, kept.options)))
    stored = target.with_name(target.name + ".stored")
    with store.open(folder, kept.csv) as body, open(stored, "wb") as out:
        shutil.copyfileobj(body, out, 1 << 20)
    with open(stored, "rb") as head:
        encrypted = head.read(len(AGE_MAGIC)) == AGE_MAGIC
    if encrypted:
        name = f"{kept.day}/{kept.csv}"
        decrypt_file(stored, target, _identities(settings, name), f"landed file {name}")
        stored.unlink()
    else:
        os.replace(stored, target)
    return options


def _download(store: RemoteStore, folder: str, name: str) -> bytes:
    with store.open(folder, name) as body:
        return _read_all(body)


def _decrypted(settings: Settings, name: str, data: bytes) -> bytes:
    if not data.startswith(AGE_MAGIC):
        return data
    import pyrage

    try:
        return pyrage.decrypt(data, _identities(settings, name))
    except pyrage.DecryptError as exc:
        raise RemoteError(
            f"landed file {name} does not decrypt with BACKUP_AGE_IDENTITY_FILE ({exc})"
        ) from None


def _identities(settings: Settings, name: str) -> list:
    return identities_of(settings.backup_age_identity, f"landed file {name}", [])


def remote_landed(store: RemoteStore) -> dict[str, dict[str, int]]:
    """The bucket's landed files: {day: {name: size}}."""
    found: dict[str, dict[str, int]] = {}
    for key, size in store.names(LANDED).items():
        day, _, name = key.partition("/")
        if _DAY.match(day) and fetched_at(name):
            found.setdefault(day, {})[name] = size
    return found


def local_landed(loaded_dir: Path, since: datetime | None) -> list[tuple[str, Path]]:
    """(day, path) of the files under DATA_DIR/loaded/ fetched since `since`, oldest first."""
    if not loaded_dir.is_dir():
        return []
    earliest = (since - timedelta(days=1)).strftime("%Y-%m-%d") if since else ""
    found = []
    for day in sorted(p for p in loaded_dir.iterdir() if _DAY.match(p.name) and p.is_dir()):
        if day.name < earliest:
            continue
        for path in sorted(day.iterdir()):
            when = fetched_at(path.name)
            recent = when is not None and (since is None or when >= since)
            if recent and path.is_file() and not path.is_symlink():
                found.append((day.name, path))
    return found


def copy_landed(
    settings: Settings, loaded_dir: Path, store: RemoteStore | None = None
) -> LandedCopy:
    """Copy what the bucket lacks; never raises for the bucket's sake (the load stands)."""
    try:
        store = store or RemoteStore(settings)
        backups = catalogue(store)
        since = backups[-1].created_at - OVERLAP if backups else None
        there = remote_landed(store)
        transform = (
            encrypting(settings.backup_age_recipients) if settings.backup_age_recipients else None
        )
        copied = 0
        times = [backups[-1].created_at] if backups else []
        times += [t for names in there.values() for n in names if (t := fetched_at(n))]
        for day, path in local_landed(loaded_dir, since):
            if path.name in there.get(day, {}):
                continue
            store.write(f"{LANDED}/{day}", path.name, path, transform=transform)
            copied += 1
            times.append(fetched_at(path.name))  # type: ignore[arg-type]
        if copied:
            log.info("copied %d landed file(s) to %s/%s", copied, store.where(), LANDED)
        return LandedCopy(copied, newest=max(times) if times else None)
    except Exception as exc:  # the bucket's trouble, or a file that vanished: retried next run
        line = str(exc) if isinstance(exc, RemoteError) else f"{type(exc).__name__}: {exc}"
        log.warning("landed files not copied to the bucket (the next run retries): %s", line)
        return LandedCopy(0, line.splitlines()[0] if line else type(exc).__name__)


def fetch_landed(
    settings: Settings,
    store: RemoteStore,
    there: dict[str, dict[str, int]],
    since: datetime,
    target: Path,
    before: datetime | None = None,
) -> int:
    """Download the landed responses of `there` (the bucket's, as remote_landed lists them)
    fetched since `since` and before `before` (when given) into `target` (DATA_DIR/incoming/,
    where the next load picks them up), decrypting those that are encrypted. Returns how
    many."""
    count = 0
    target.mkdir(parents=True, exist_ok=True)
    for day, names in sorted(there.items()):
        for name in sorted(names):
            when = fetched_at(name)
            if when is None or is_import(name) or when < since:
                continue
            if before is not None and when >= before:
                continue
            data = _download(store, f"{LANDED}/{day}", name)
            atomic_write(target / name, _decrypted(settings, f"{day}/{name}", data))
            count += 1
    return count


def _read_all(body) -> bytes:
    """A landed file is small (a few KB, at most MAX_RESPONSE_BYTES)."""
    blocks = []
    while block := body.read(1 << 20):
        blocks.append(block)
    return b"".join(blocks)


def prune_landed(store: RemoteStore) -> list[str]:
    """The bucket's landed days older than its oldest backup (minus a day): no backup they
    complete is left."""
    backups = catalogue(store)
    if not backups:
        return []
    keep_from = (backups[0].created_at - timedelta(days=1)).strftime("%Y-%m-%d")
    removed = []
    for day in sorted(remote_landed(store)):
        if day < keep_from:
            store.delete(f"{LANDED}/{day}")
            removed.append(day)
    if removed:
        log.info("pruned the bucket's landed files of %s", ", ".join(removed))
    return removed


def newest_offsite(store: RemoteStore) -> datetime | None:
    """The newest data in the bucket: its newest backup or its newest landed file."""
    times = [b.created_at for b in catalogue(store)[-1:]]
    times += [t for names in remote_landed(store).values() for n in names if (t := fetched_at(n))]
    return max(times) if times else None
