"""The run ledger: one `pipeline_runs` row per run, opened at start and closed at the end."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from source import shutdown
from source.db_functions.run_lock import database_run_lock
from source.errors import EXIT_OK, EXIT_PARTIAL
from source.log_setup import bind_run_id

log = logging.getLogger(__name__)


def open_run(conn, command: str) -> int:
    """Start a ledger row. Called under the run lock, so a row still 'running' was killed."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE pipeline_runs SET status = 'interrupted', message = 'process ended before "
            "recording an outcome (killed?)' WHERE status = 'running'"
        )
        cur.execute("INSERT INTO pipeline_runs (command) VALUES (%s) RETURNING run_id", (command,))
        run_id = cur.fetchone()[0]
    bind_run_id(run_id)  # every later line of the job's log carries it (LOG_FORMAT=json)
    return run_id


def close_run(
    conn,
    run_id: int,
    *,
    status: str,
    exit_code: int | None,
    metals_ok: list[str],
    metals_failed: list[str],
    rows_inserted: int,
    rows_updated: int,
    api_requests: int,
    message: str | None,
    offsite_copied: int | None = None,
    offsite_error: str | None = None,
) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(
            """UPDATE pipeline_runs
                  SET finished_at = now(), status = %s, exit_code = %s, metals_ok = %s,
                      metals_failed = %s, rows_inserted = %s, rows_updated = %s,
                      api_requests = %s, message = %s, offsite_copied = %s, offsite_error = %s
                WHERE run_id = %s""",
            (
                status,
                exit_code,
                metals_ok,
                metals_failed,
                rows_inserted,
                rows_updated,
                api_requests,
                message,
                offsite_copied,
                offsite_error,
                run_id,
            ),
        )


def status_for(exit_code: int) -> str:
    """The ledger status of a command that ended with this exit code."""
    return {EXIT_OK: "success", EXIT_PARTIAL: "partial"}.get(exit_code, "failed")


@dataclass
class RunRecord:
    """What a command reports into its ledger row when it ends."""

    status: str = "interrupted"  # until the command says otherwise (SIGTERM, crash)
    exit_code: int | None = None
    rows_inserted: int = 0
    rows_updated: int = 0
    api_requests: int = 0
    metals_ok: list[str] = field(default_factory=list)
    metals_failed: list[str] = field(default_factory=list)
    message: str | None = None
    offsite_copied: int | None = None  # landed files copied to the bucket (BACKUP_S3_URL)
    offsite_error: str | None = None  # why they could not be (the next run retries)


@contextmanager
def recorded_run(database, command: str):
    """A `pipeline_runs` row around a command, under the database run lock (RunLocked, exit
    75, when another run holds it); yields a RunRecord to fill in."""
    with database_run_lock(database):
        conn = database.connect()
        try:
            run_id = open_run(conn, command)
        finally:
            conn.close()
        with _closing_run(database, run_id) as record:
            yield record


@contextmanager
def _closing_run(database, run_id: int):
    record = RunRecord()
    try:
        yield record
    except BaseException as exc:
        _record_failure(record, exc)
        raise
    finally:
        with shutdown.shielded():  # a second signal must not cut the ledger short
            close_recorded_run(database, run_id, record)


def close_recorded_run(database, run_id: int, record: RunRecord) -> None:
    """Close the ledger row with what the record says, on a connection of its own; a failure
    is logged, not raised (the outcome on stderr and in the log still stands)."""
    try:
        conn = database.connect()
        try:
            close_run(conn, run_id, **asdict(record))
        finally:
            conn.close()
    except Exception as exc:
        log.error("could not record the run in pipeline_runs: %s", exc)


def _record_failure(record: RunRecord, exc: BaseException) -> None:
    """What the ledger says of a command that ended by an exception: the exit code the
    process returns with it (143 for SIGTERM, the error's own code, else 1)."""
    stopped = shutdown.stop_code(exc)
    if stopped is not None:
        record.status, record.exit_code = "interrupted", stopped
        record.message = f"stopped by signal {stopped - 128}" + (
            f" after: {record.message}" if record.message else ""
        )
    else:
        record.status, record.exit_code = "failed", shutdown.exit_code_of(exc)
        record.message = f"{type(exc).__name__}: {exc}"
