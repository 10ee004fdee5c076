"""What main.py and backups_main.py share: logging set-up, the lock, SIGTERM, and turning any
error into one stderr line with the right exit code (tracebacks go to the log file only)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

from filelock import FileLock, Timeout

from source import shutdown
from source.config import Settings
from source.errors import EXIT_FAILURE, EXIT_LOCKED, ReportableError
from source.log_setup import configure_logging, redact
from source.monitoring import monitored, record

log = logging.getLogger("entrypoint")
PRIVATE_UMASK = 0o077


@contextmanager
def run_lock(path: Path):
    """Hold an exclusive lock; yields False when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


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
    log_path = configure_logging(settings.log_dir, settings.secrets)
    shutdown.install()  # SIGTERM: finish what is in flight, record it, exit 143
    with monitored(settings, job, ping=ping) as watched:
        code = _run_step(prog, settings, lock_path, step, log_path)
        if watched is not None:
            watched.exit_code = code
        return code


def _run_step(
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
