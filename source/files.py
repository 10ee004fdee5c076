"""Durable file writes shared by the stages: write to a temp name, fsync, rename, fsync dir."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
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
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_path(target.parent)
    return target


def open_regular_file(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open that never follows a symbolic link and accepts only a regular file: another
    user's link or FIFO where a lock or private file belongs must not redirect or block us.
    Raises OSError (ELOOP for a link, EISDIR for a folder, EINVAL for anything else)."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


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
