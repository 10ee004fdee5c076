"""What main.py and backups_main.py share: logging set-up, the lock, SIGTERM, and turning any
error into one stderr line with the right exit code (tracebacks go to the log file only)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

from source import shutdown
from source.config import Settings
from source.errors import EXIT_FAILURE, EXIT_LOCKED, ReportableError
from source.files import open_regular_file
from source.log_setup import configure_logging, log_fields, redact
from source.monitoring import JobRecord, monitored, record

log = logging.getLogger("entrypoint")
PRIVATE_UMASK = 0o077


class LockFileUnusable(ReportableError):
    """The lock path is a link, a folder or another non-file, or cannot be opened: exit 1."""


@contextmanager
def run_lock(path: Path):
    """Hold an exclusive lock (flock: the kernel releases it when the process dies, kill -9
    included); yields False when another process holds it. The path is never followed:
    LockFileUnusable, in one line, when it is a symbolic link or not a regular file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_regular_file(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise LockFileUnusable(_unusable(path, exc)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock; the file stays for the next run


def _unusable(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"the lock file {path} is a symbolic link, never followed; remove it and retry"
    if exc.errno in (errno.EISDIR, errno.EINVAL, errno.ENXIO):
        return f"the lock file {path} is not a regular file; remove it and retry"
    return f"cannot open the lock file {path}: {exc.strerror}"


def run_locked(
    prog: str,
    settings: Settings,
    lock_path: Path | None,
    step: Callable[[], int],
    *,
    job: str | None = None,
    ping: bool = False,
) -> int:
    """Configure logging, take the lock (exit 75 if held; None: a reader, no lock), run the
    step, report errors in one line. A `job` reports to the monitors when it ends (metrics,
    and for the scheduled jobs, `ping`, the healthcheck)."""
    # Backups hold the whole database and raw files the API's answers: whatever the umask,
    # everything this process (and pg_dump, its child) creates is 0600 files / 0700 folders.
    os.umask(PRIVATE_UMASK)
    log_path = configure_logging(settings.log_dir, settings.secrets, fmt=settings.log_format)
    shutdown.install()  # SIGTERM: finish what is in flight, record it, exit 143
    with log_fields(job=job), monitored(settings, job, ping=ping) as watched:
        try:
            code = _run_step(prog, settings, lock_path, step, log_path)
            if watched is not None:
                watched.exit_code = code
            return code
        finally:  # SIGTERM included: the monitors still see the catalogue and the models
            if watched is not None:
                _add_side_facts(settings, watched)


def _add_side_facts(settings: Settings, watched: JobRecord) -> None:
    """What the monitors show beside the job's own record: the backup catalogue after a
    backup job, the models' skill after a job changed them. Best effort, like the monitors."""
    from datetime import UTC, datetime

    from source.ml.registry import model_facts
    from source.status import backup_facts

    try:
        if watched.job == "backup":
            watched.backups = backup_facts(settings, datetime.now(UTC))
        if watched.models_changed:
            watched.models = model_facts(settings.models_dir, settings.metals)
    except (OSError, ValueError) as exc:
        log.warning("monitoring: could not read the backups or the models: %s", exc)


def _run_step(
    prog: str, settings: Settings, lock_path: Path | None, step: Callable[[], int], log_path
) -> int:
    try:
        return _locked_step(prog, settings, lock_path, step, log_path)
    except LockFileUnusable as exc:  # raised before the step could start
        log.error("%s", exc, extra={"file_only": True})
        print(f"{prog}: {exc}", file=sys.stderr)
        record(summary=str(exc))
        return exc.exit_code


def _locked_step(
    prog: str, settings: Settings, lock_path: Path | None, step: Callable[[], int], log_path
) -> int:
    with run_lock(lock_path) if lock_path else nullcontext(True) as locked:
        if not locked:
            message = f"another run holds the lock {lock_path}; exiting"
            log.warning(message, extra={"file_only": True})
            print(f"{prog}: {message}", file=sys.stderr)
            record(summary=message)
            return EXIT_LOCKED
        try:
            return step()
        except ReportableError as exc:
            log.error("%s", exc, extra={"file_only": True})
            line = redact(str(exc), settings.secrets)
            print(f"{prog}: {line}", file=sys.stderr)
            record(summary=line)
            return exc.exit_code
        except Exception as exc:
            log.error("unexpected error", exc_info=True, extra={"file_only": True})
            line = redact(f"{type(exc).__name__}: {exc}".splitlines()[0], settings.secrets)
            print(f"{prog}: unexpected error: {line} (traceback in {log_path})", file=sys.stderr)
            record(summary=f"unexpected error: {line}")
            return EXIT_FAILURE
