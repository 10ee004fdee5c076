"""The load stage: frames arrive on a queue.Queue and a loader thread upserts each one in
its own transaction, then marks its raw files as loaded."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2

from source.db_functions.connection import Database, DatabaseUnavailable
from source.db_functions.loaders import UnitMismatch, UpsertCounts, upsert_prices
from source.db_functions.migrations import historic_table
from source.errors import first_line
from source.log_setup import in_this_context, log_fields
from source.transform import LoadJob

log = logging.getLogger(__name__)


@dataclass
class LoadOutcome:
    job: LoadJob
    inserted: int = 0
    updated: int = 0
    error: str | None = None
    refused: bool = False  # the rows can never load: the raw file goes to rejected/
    marks: tuple = ()  # quality marks that changed with this load


class LoadTotals:
    """Rows inserted and updated over a run's load outcomes (for reports with `outcomes`)."""

    outcomes: list[LoadOutcome]

    @property
    def rows_inserted(self) -> int:
        return sum(o.inserted for o in self.outcomes)

    @property
    def rows_updated(self) -> int:
        return sum(o.updated for o in self.outcomes)

    @property
    def counts(self) -> UpsertCounts:
        """The outcomes added up as one load's counts (`.suspects` is the rows marked)."""
        return sum(
            (UpsertCounts(o.inserted, o.updated, o.marks) for o in self.outcomes), UpsertCounts()
        )


# On SIGTERM the loader gets this long to finish the jobs already queued (Docker's stop waits
# 10 s before SIGKILL); a load still running then is cancelled, its files stay landed.
DRAIN_SECONDS = 5.0

# Errors in the rows themselves: loading the same file again would fail the same way.
PERMANENT_ERRORS = (UnitMismatch, psycopg2.DataError, psycopg2.IntegrityError)


def _log_marks(marks) -> None:
    """A new suspect quote is one warning line (metal, price, last good price, why); how the
    earlier ones were decided goes to the log."""
    for change in marks:
        if change.verdict.decision in ("pending", "inconsistent"):
            log.warning("%s", change.line())
        else:
            log.info("%s", change.line())


class QueueLoader:
    """Consumes LoadJobs on a background thread with its own connection."""

    _DONE = object()

    def __init__(
        self,
        database: Database | None,
        on_loaded: Callable[[LoadJob], None],
        on_rejected: Callable[[LoadJob], None],
    ):
        self.database = database
        self.on_loaded = on_loaded
        self.on_rejected = on_rejected  # for rows that can never load, so they are not retried
        self.queue: queue.Queue = queue.Queue()
        self.outcomes: list[LoadOutcome] = []
        # Set when the database cannot be reached: later jobs fail at once (their raw files
        # stay landed) instead of each waiting for a connection that will not come.
        self.database_error: str | None = None
        self._conn = None
        self._cancelled = threading.Event()
        # Waited on instead of Thread.join: a signal interrupting join() in Python 3.11 can
        # mark a running thread as stopped (the loader would then write after the ledger).
        self._stopped = threading.Event()
        # The loader logs with the run's fields (job, run id), each job with its metal.
        self._thread = threading.Thread(
            target=in_this_context(self._run), name="loader", daemon=True
        )

    def __enter__(self) -> QueueLoader:
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc is not None:  # stopping (SIGTERM) or failing: queued jobs get a bounded time
            self.drain(DRAIN_SECONDS)
            return
        try:
            self.finish()
        except BaseException:  # SIGTERM while waiting for the last loads
            self.drain(DRAIN_SECONDS)
            raise

    def submit(self, job: LoadJob) -> None:
        self.queue.put(job)

    def finish(self) -> list[LoadOutcome]:
        """Wait for every submitted job; return their outcomes in load order."""
        if self._thread.is_alive():
            self.queue.put(self._DONE)
            self._stopped.wait()
        return self.outcomes

    def drain(self, seconds: float) -> list[LoadOutcome]:
        """Load what is queued for at most `seconds`, then cancel the load in flight and
        stop: afterwards the loader writes nothing more, so the outcomes are final."""
        if self._stopped.is_set():
            return self.outcomes
        self.queue.put(self._DONE)
        if not self._stopped.wait(seconds):
            self._cancelled.set()
            conn = self._conn
            if conn is not None and not conn.closed:
                conn.cancel()  # the running statement fails; its transaction rolls back
            self._stopped.wait(seconds)
            left = self.queue.qsize()
            log.warning(
                "stopping: the load in flight was cancelled after %.0fs; %d queued job(s) "
                "left, their raw files stay landed for the next run", seconds, left,
            )
        return self.outcomes

    def _run(self) -> None:
        try:
            while (job := self.queue.get()) is not self._DONE and not self._cancelled.is_set():
                with log_fields(metal=None if job.metal == "all" else job.metal):
                    outcome = self._load(job)
                    if self._cancelled.is_set() and outcome.error:
                        break  # cancelled mid-load: nothing committed, the file stays landed
                    self.outcomes.append(outcome)
                    self._after(job, outcome)
        finally:
            if self._conn is not None:
                self._conn.close()
            self._stopped.set()

    def _connection(self):
        if self.database_error is not None:
            raise DatabaseUnavailable(self.database_error)
        if self.database is None:
            raise DatabaseUnavailable("database unavailable")
        if self._conn is None or self._conn.closed:
            self._conn = self.database.connect()
        return self._conn

    def _load(self, job: LoadJob) -> LoadOutcome:
        try:
            counts = upsert_prices(self._connection(), job.frame, also=job.also)
        except PERMANENT_ERRORS as exc:
            log.error(
                "%s: rows refused, raw file moved to rejected/: %s", job.metal, first_line(exc)
            )
            return LoadOutcome(job, error=first_line(exc), refused=True)
        except (DatabaseUnavailable, psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            if self._cancelled.is_set():  # our own cancel: the database itself is fine
                log.warning(
                    "%s: load cancelled as the run stops, raw file kept for the next run",
                    job.metal,
                )
                return LoadOutcome(job, error="cancelled: the run is stopping")
            # The database is down or went away: said once in the run's closing line.
            self.database_error = self.database_error or first_line(exc)
            log.error(
                "%s: not loaded, raw file kept for the next run: %s", job.metal, first_line(exc),
                extra={"file_only": True},
            )
            return LoadOutcome(job, error=first_line(exc))
        except psycopg2.Error as exc:
            log.error(
                "%s: load failed, raw file kept for the next run: %s", job.metal, first_line(exc)
            )
            return LoadOutcome(job, error=first_line(exc))
        except Exception as exc:  # a bug must not kill the loader thread and strand the queue
            log.error("%s: load failed, raw file kept for the next run", job.metal, exc_info=True)
            return LoadOutcome(job, error=f"{type(exc).__name__}: {exc}")
        _log_marks(counts.marks)
        tables = ", ".join(historic_table(m) for m in sorted(job.frame["metal"].unique()))
        log.info(
            "%s: %d row(s) inserted, %d updated in %s and the analytics table%s",
            job.metal,
            counts.inserted,
            counts.updated,
            tables or "no table",
            " (replayed from an earlier run)" if job.replayed else "",
        )
        return LoadOutcome(
            job, inserted=counts.inserted, updated=counts.updated, marks=counts.marks
        )

    def _after(self, job: LoadJob, outcome: LoadOutcome) -> None:
        """Move the raw files; a failure here must not stop the loader (the rows are
        committed, and a file left in incoming/ is replayed harmlessly by the next run)."""
        try:
            if outcome.refused:
                self.on_rejected(job)
            elif outcome.error is None:
                self.on_loaded(job)
        except Exception:
            log.error("%s: could not file away the raw response", job.metal, exc_info=True)
