"""Where backup files are kept: one small interface, two implementations (this host's
BACKUP_DIR here, a bucket in source.backups.remote), in the manner of litestream's replica
clients. A store holds folders of files (a backup's folder is named by its ID; another kind of
object gets a top-level folder of its own, which the backup catalogue passes over) and knows
four things: list them, open one for reading, write one (streamed, optionally through a
transform such as an encryption, and checked), and delete a folder."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from source.backups.manifest import MANIFEST, FileEntry, mismatch
from source.config import DEMO_SUBDIR
from source.errors import ReportableError
from source.files import atomic_write, fsync_path

log = logging.getLogger(__name__)

BLOCK = 1 << 20  # streamed in blocks of this size: no file is ever read whole into memory
ID_PATTERN = re.compile(r"\d{8}T\d{6}Z(-\d+)?")  # always with fullmatch
ID_EXAMPLE = "20261128T060000Z"

# A streaming transform: given a reader of the plaintext, a reader of what is to be stored.
Transform = Callable[[BinaryIO], BinaryIO]


class Store(Protocol):
    kind: str  # "local" or "remote", as `list` shows it

    def where(self, folder: str | None = None) -> str:
        """The store, or one of its folders, as a person reads it (a path, an s3:// URL)."""
        ...

    def folders(self) -> dict[str, dict[str, int]]:
        """Each complete folder (it holds a manifest) named like a backup: its files' sizes."""
        ...

    def open(self, folder: str, name: str) -> AbstractContextManager[BinaryIO]:
        """A reader of the stored bytes; OSError or the store's error when absent."""
        ...

    def write(
        self,
        folder: str,
        name: str,
        source: Path | BinaryIO,
        expected: FileEntry | None = None,
        transform: Transform | None = None,
    ) -> FileEntry:
        """Store `source` (through `transform` when given) as folder/name and check what was
        stored: against `expected` (the manifest's entry, when no transform changes the bytes)
        or against the digest taken while streaming. Returns what is stored."""
        ...

    def put(self, folder: str, name: str, body: bytes) -> None:
        """A small record (a verification), replaced whole: a reader sees old or new."""
        ...

    def delete(self, folder: str) -> None:
        """The folder and its files, the manifest first (a cut-short deletion lists nothing)."""
        ...


class HashingReader:
    """Passes reads through, taking the sha256 and the size of what went by, and the digest
    of each `part_size` part (for S3's composite checksum of a multipart upload)."""

    def __init__(self, inner: BinaryIO, part_size: int = 0):
        self.inner, self.part_size = inner, part_size
        self.digest, self.size = hashlib.sha256(), 0
        self.parts: list[bytes] = []
        self._part, self._in_part = hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.digest.update(data)
        self.size += len(data)
        view = memoryview(data)
        while self.part_size and view:
            take = min(len(view), self.part_size - self._in_part)
            self._part.update(view[:take])
            self._in_part += take
            view = view[take:]
            if self._in_part == self.part_size:
                self.parts.append(self._part.digest())
                self._part, self._in_part = hashlib.sha256(), 0
        return data

    def entry(self) -> FileEntry:
        return FileEntry(self.digest.hexdigest(), self.size)

    def part_digests(self) -> list[bytes]:
        return self.parts + ([self._part.digest()] if self._in_part else [])


class StoredFileDiffers(ReportableError):
    """What a store holds after a write is not what was written (str(): which, and how)."""


class LocalStore:
    """BACKUP_DIR: one folder per backup. Our own hidden entries (the lock, half-written and
    downloaded copies) and the demo's folder are passed over; anything else that is not a
    backup is skipped with a warning, never followed, never deleted."""

    kind = "local"

    def __init__(self, root: Path):
        self.root = root

    def path(self, folder: str) -> Path:
        return self.root / folder

    def where(self, folder: str | None = None) -> str:
        return str(self.path(folder) if folder else self.root)

    def folders(self) -> dict[str, dict[str, int]]:
        if not self.root.is_dir():
            return {}
        found = {}
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".") or (path.name == DEMO_SUBDIR and not path.is_symlink()):
                continue
            if why := _not_a_backup(path):
                skip(path, why)
                continue
            found[path.name] = {
                p.name: p.lstat().st_size
                for p in path.iterdir()
                if not p.is_symlink() and p.is_file()
            }
        return found

    def open(self, folder: str, name: str) -> AbstractContextManager[BinaryIO]:
        return open(self.path(folder) / name, "rb")

    def write(
        self,
        folder: str,
        name: str,
        source: Path | BinaryIO,
        expected: FileEntry | None = None,
        transform: Transform | None = None,
    ) -> FileEntry:
        target = self.path(folder)
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        with opened(source) as plain, transformed(plain, transform) as stream:
            reader = HashingReader(stream)
            atomic_write(target / name, lambda handle: shutil.copyfileobj(reader, handle, BLOCK))
        stored = reader.entry()
        problem = expected and transform is None and mismatch(name, stored, expected)
        if problem:
            (target / name).unlink(missing_ok=True)
            raise StoredFileDiffers(problem)
        return stored

    def put(self, folder: str, name: str, body: bytes) -> None:
        atomic_write(self.path(folder) / name, body)

    def delete(self, folder: str) -> None:
        path = self.path(folder)
        (path / MANIFEST).unlink(missing_ok=True)
        fsync_path(path)
        shutil.rmtree(path)


@contextmanager
def opened(source: Path | BinaryIO) -> Iterator[BinaryIO]:
    """A path opened for reading (and closed afterwards), or a stream passed on as it is."""
    if isinstance(source, Path):
        with open(source, "rb") as handle:
            yield handle
    else:
        yield source


@contextmanager
def transformed(plain: BinaryIO, transform: Transform | None) -> Iterator[BinaryIO]:
    """`plain` through `transform`, closed afterwards when it can be (which stops a worker
    the transform runs, e.g. the encryption's)."""
    if transform is None:
        yield plain
        return
    stream = transform(plain)
    try:
        yield stream
    finally:
        if close := getattr(stream, "close", None):
            close()


def temporary_folder(parent: Path, prefix: str) -> Path:
    """A new private folder under `parent` (same disk, so that a rename moves it)."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


_warned: set[Path] = set()


def is_backup_id(text: str) -> bool:
    return bool(ID_PATTERN.fullmatch(text))


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


def skip(path: Path, why: str) -> None:
    if path not in _warned:  # once per entry and command, however often the folder is read
        _warned.add(path)
        log.warning("%s is not a backup (%s): skipped, left as it is", path, why)
