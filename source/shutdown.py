"""How a run stops on SIGTERM: STOP_REQUESTED is set (no new HTTP attempt starts, the loader
takes no new job) and SystemExit(143) unwinds the main thread, except inside `shielded()`
(closing the ledger), where the run finishes with the outcome it records."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("entrypoint")

STOP_REQUESTED = threading.Event()
_SHIELDED = threading.Event()


def stop_code(exc: BaseException) -> int | None:
    """The exit code a stop request unwound with (143 for SIGTERM), else None."""
    if isinstance(exc, SystemExit) and isinstance(exc.code, int) and exc.code > 128:
        return exc.code
    return None


def exit_code_of(exc: BaseException) -> int:
    """The exit code a command ends with when `exc` ends it: 143 for SIGTERM, a reportable
    error's own code, 1 for anything else."""
    code = stop_code(exc)
    return code if code is not None else getattr(exc, "exit_code", 1)


def terminate(signum: int, frame) -> None:
    """SIGTERM handler (docker stop, cron or Kubernetes ending the job)."""
    first = not STOP_REQUESTED.is_set()
    STOP_REQUESTED.set()
    if _SHIELDED.is_set() or not first:
        log.warning("received signal %d again or while recording the outcome: finishing", signum)
        return
    log.warning("received signal %d: stopping after the requests in flight", signum)
    raise SystemExit(128 + signum)


def install() -> None:
    signal.signal(signal.SIGTERM, terminate)


@contextmanager
def shielded() -> Iterator[None]:
    """A block a stop request does not cut short: recording what the run did."""
    _SHIELDED.set()
    try:
        yield
    finally:
        _SHIELDED.clear()
