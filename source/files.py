"""Durable file writes shared by the stages: write to a temp name, fsync, rename, fsync dir;
and careful reads of files anyone may have put in a landing folder."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes a rename in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(target: Path, write: Callable[[BinaryIO], object] | bytes) -> Path:
    """Readers see the old file or the complete new one, never a partial write."""
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(write, bytes):
                handle.write(write)
            else:
                write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(target)  # a failed write or fsync (ENOSPC) names no file
        raise
    fsync_path(target.parent)
    return target


def free_bytes(path: Path) -> int:
    """Bytes this process may still write under `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


class NotARegularFile(Exception):
    """Why a path was not read: str() says what it is (a link, a directory, too big)."""


class FileTooLarge(NotARegularFile):
    """A regular file over the size limit: not read."""


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
}


class _NotRegular(OSError):
    """open_regular_file's refusal of something that is not a regular file (EINVAL); its
    strerror says what it is."""


def open_regular_file(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open that never follows a symbolic link, never blocks (a FIFO) and accepts only a
    regular file: another user's link or FIFO where a lock, a private or a landed file belongs
    must not redirect or block us. The one place for these checks. Raises OSError: ELOOP for
    a link, EINVAL for anything else that is not a regular file, or what os.open raises
    (EISDIR for a folder opened to write)."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK, mode)
    try:
        kind = stat.S_IFMT(os.fstat(fd).st_mode)  # of what was opened: no check-then-open race
        if kind != stat.S_IFREG:
            raise _NotRegular(errno.EINVAL, _KINDS.get(kind, "not a regular file"), str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most max_bytes, or NotARegularFile. A symbolic link
    is never followed and nothing is read from anything else (a pipe does not block)."""
    try:
        fd = open_regular_file(path, os.O_RDONLY)
    except _NotRegular as exc:
        raise NotARegularFile(exc.strerror) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotARegularFile("a symbolic link (not followed)") from None
        raise NotARegularFile(f"cannot be opened: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise FileTooLarge(f"{size} bytes, more than the {max_bytes} allowed")
        chunks, read = [], 0
        while chunk := os.read(fd, max_bytes + 1 - read):
            chunks.append(chunk)
            read += len(chunk)
            if read > max_bytes:  # it grew after the fstat
                raise FileTooLarge(f"more than the {max_bytes} bytes allowed")
        return b"".join(chunks)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _renameat2_exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux renameat2); False where that is not supported."""
    import ctypes  # here: every command imports this module, few swap folders

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(error, os.strerror(error), str(first))


def swap_in_directory(new: Path, current: Path) -> Path | None:
    """Put `new` in place of `current` (a folder or a file) so readers see one or the other,
    never neither; returns where the replaced one now is (to delete), or None if none was."""
    if not current.exists():
        os.rename(new, current)
        fsync_path(current.parent)
        return None
    if _renameat2_exchange(new, current):
        fsync_path(current.parent)
        return new  # the old contents now live at `new`'s path
    # No atomic exchange on this filesystem: two renames, a moment with no directory.
    old = current.with_name(f".{current.name}.replaced")
    os.rename(current, old)
    os.rename(new, current)
    fsync_path(current.parent)
    return old
