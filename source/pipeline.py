"""The hourly run, stage by stage: replay -> fetch + land -> transform -> queue -> load -> train."""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

import psycopg2

from source import monitoring, shutdown
from source.config import Settings
from source.db_functions.connection import Database, DatabaseUnavailable
from source.db_functions.migrations import connect_and_migrate
from source.db_functions.run_lock import database_run_lock
from source.db_functions.runs import RunRecord, close_recorded_run, open_run, status_for
from source.db_functions.units import target_units
from source.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from source.extract import (
    LOADED,
    fetch_spot_prices,
    make_client,
    mark_job_rejected,
    mark_loaded,
    replay_landed,
)
from source.load import LoadOutcome, LoadTotals, QueueLoader
from source.metals_dev import AuthError, QuotaExceeded

if TYPE_CHECKING:
    from source.backups.landed import LandedCopy

log = logging.getLogger(__name__)


@dataclass
class RunReport(LoadTotals):
    metals: tuple[str, ...]
    fetch_errors: dict[str, BaseException] = field(default_factory=dict)
    outcomes: list[LoadOutcome] = field(default_factory=list)
    database_error: str | None = None
    training_error: str | None = None
    models_trained: int = 0
    api_requests: int = 0
    interrupted: bool = False  # stopped by a signal
    # When an exception ended the run: the exit code the process returns with it (143 for
    # SIGTERM, a reportable error's own code, 1 for a crash).
    ended_with: int | None = None
    offsite: LandedCopy | None = None  # the copy of the landed files (BACKUP_S3_URL)

    @property
    def load_errors(self) -> dict[str, str]:
        return {o.job.metal: o.error for o in self.outcomes if o.error}

    @property
    def metals_ok(self) -> list[str]:
        loaded = {o.job.metal for o in self.outcomes if not o.error and not o.job.replayed}
        failed = {**self.fetch_errors, **self.load_errors}
        return [m for m in self.metals if m in loaded and m not in failed]

    @property
    def metals_failed(self) -> list[str]:
        return [m for m in self.metals if m not in self.metals_ok]

    @property
    def exit_code(self) -> int:
        if self.ended_with is not None:
            return self.ended_with
        errors = list(self.fetch_errors.values())
        if errors and not self.metals_ok and all(isinstance(e, AuthError) for e in errors):
            return EXIT_USAGE  # the key is wrong: a configuration error
        if not self.metals_ok:
            return EXIT_FAILURE
        if self.metals_failed or self.load_errors:
            return EXIT_PARTIAL
        return EXIT_FAILURE if self.training_error else EXIT_OK

    @property
    def status(self) -> str:
        if self.interrupted:
            return "interrupted"
        return status_for(self.exit_code)

    def summary(self) -> str:
        parts = [
            f"{len(self.metals_ok)}/{len(self.metals)} metals loaded",
            f"{self.rows_inserted} row(s) inserted, {self.rows_updated} updated",
            f"{self.api_requests} API request(s)",
        ]
        if suspects := self.counts.suspects:
            parts.append(f"{suspects} marked suspect")
        if self.metals_failed:
            parts.append("failed: " + ", ".join(self.metals_failed))
        if self.database_error:
            parts.append(f"database: {self.database_error}")
        if self.training_error:
            parts.append(f"training: {self.training_error}")
        return "; ".join(parts)


def run_hourly(settings: Settings, *, train: bool, job: str = "pipeline") -> RunReport:
    """One hourly run, in the ledger as `job`. Raw responses are landed even when the database
    is down."""
    started = time.monotonic()
    report = RunReport(metals=settings.metals)
    with ExitStack() as held:
        database, run_id = _open_ledger(settings, report, job, held)
        return _run(settings, train, started, report, database, run_id)


def _run(
    settings: Settings,
    train: bool,
    started: float,
    report: RunReport,
    database: Database | None,
    run_id: int | None,
) -> RunReport:
    """The stages after the ledger is open; the outcome is recorded whatever happens."""
    try:
        _extract_and_load(settings, database, report)
        if settings.backup_s3_url and database is not None:
            from source.backups.landed import copy_landed  # boto3 only with a bucket

            report.offsite = copy_landed(settings, settings.data_dir / LOADED)
            if report.offsite.newest is not None:
                monitoring.record(offsite_newest=report.offsite.newest.timestamp())
        if train and database is not None and report.metals_ok:
            report.models_trained, report.training_error = _train(settings, database)
    except BaseException as exc:
        report.interrupted = shutdown.stop_code(exc) is not None  # recorded, then propagated
        report.ended_with = shutdown.exit_code_of(exc)
        raise
    finally:
        with shutdown.shielded():  # a second signal must not cut the ledger short
            _record_outcome(settings, started, report, database, run_id)
    return report


def _record_outcome(settings, started, report, database, run_id) -> None:
    log.info("run finished in %.1fs: %s", time.monotonic() - started, report.summary())
    if run_id is not None and report.database_error is None:
        _close_ledger(database, run_id, report)
        if monitoring.active():
            _record_for_monitors(settings, database, report)
    elif run_id is not None:  # it went away mid-run: the next run marks the row
        log.warning(
            "run %d not recorded in pipeline_runs (database unavailable); the next run "
            "marks it interrupted",
            run_id,
            extra={"file_only": True},
        )


def _open_ledger(settings: Settings, report: RunReport, job: str, held: ExitStack):
    """Database and run id, or (None, None) with the error noted when it is down. The run
    lock is taken first (held until `held` closes): a run still 'running' is then dead."""
    try:
        database = connect_and_migrate(settings)
        held.enter_context(database_run_lock(database))
        conn = database.connect()
        try:
            return database, open_run(conn, job)
        finally:
            conn.close()
    except DatabaseUnavailable as exc:
        report.database_error = str(exc)  # the run's closing line says it on the console
        log.error(
            "%s; fetching anyway, responses stay landed for the next run",
            exc,
            extra={"file_only": True},
        )
        return None, None


def _target_units(
    database: Database | None, metals: tuple[str, ...], unit: str | None
) -> dict[str, str]:
    """Each metal's unit for replayed /timeseries files (units.target_units); none when the
    database is down (the load, later, refuses a unit it cannot take)."""
    if database is None:
        return {}
    try:
        return target_units(database, metals, unit)
    except (DatabaseUnavailable, psycopg2.Error):
        return {}


def _extract_and_load(settings: Settings, database: Database | None, report: RunReport) -> None:
    """Replay, fetch and land concurrently, and load everything through the queue."""
    client = make_client(settings)
    try:
        loader = QueueLoader(
            database,
            on_loaded=partial(mark_loaded, settings.data_dir),
            on_rejected=partial(mark_job_rejected, settings.data_dir),
        )
        with loader:
            report.outcomes = loader.outcomes  # filled by the loader thread as it goes
            for job in replay_landed(
                settings.data_dir,
                source=settings.source_tag,
                metals=settings.metals,
                units_of=partial(_target_units, database, settings.metals, settings.unit),
                max_bytes=settings.max_response_bytes,
            ):
                loader.submit(job)
            report.fetch_errors = fetch_spot_prices(
                client,
                settings.metals,
                currency=settings.currency,
                unit=settings.unit,
                source=settings.source_tag,
                data_dir=settings.data_dir,
                submit=loader.submit,
            )
        if report.database_error is None:
            report.database_error = loader.database_error  # went away in the middle of the run
    finally:
        report.api_requests = client.request_count
        client.close()
    log_api_trouble(report.fetch_errors.values())


def log_api_trouble(errors) -> None:
    """The same clear lines for 1203 and 1101 whichever command met them."""
    errors = list(errors)
    if any(isinstance(e, QuotaExceeded) for e in errors):
        log.error("Metals.Dev monthly quota exceeded (error 1203): no further requests this run")
    if any(isinstance(e, AuthError) for e in errors):
        log.error("Metals.Dev rejected the API key (error 1101): check METALS_DEV_API_KEY")


def _train(settings: Settings, database: Database) -> tuple[int, str | None]:
    from source.ml.schedule import metals_to_retrain  # reads metadata: no scikit-learn yet

    started = time.monotonic()
    try:
        metals = metals_to_retrain(settings, database)
        if not metals:
            log.info(
                "training skipped: no model's input changed since it was trained "
                "(`python main.py train` retrains anyway)"
            )
            return 0, None
        if metals != settings.metals:
            unchanged = [m for m in settings.metals if m not in metals]
            log.info(
                "training %s: new input; %s unchanged since trained",
                ", ".join(metals),
                ", ".join(unchanged),
            )
        from source.ml.train import train_all  # scikit-learn only when training

        # The walk-forward evaluation only where due (a day old, or a week of new rows).
        trained = train_all(settings, database, metals, evaluate=False)
    except Exception as exc:  # a training bug must not hide that the data was loaded
        from source.ml.train import TrainingFailed

        log.error(  # the run's closing line on stderr says it; the log keeps the detail
            "training failed: %s",
            exc,
            exc_info=not isinstance(exc, TrainingFailed),
            extra={"file_only": True},
        )
        return 0, str(exc) if isinstance(exc, TrainingFailed) else f"{type(exc).__name__}: {exc}"
    log.info("training finished in %.1fs: %d model(s) written", time.monotonic() - started, trained)
    return trained, None


def _record_for_monitors(settings: Settings, database: Database, report: RunReport) -> None:
    """What the monitors need from the database once the run is recorded: each metal's newest
    quote, failing streaks, requests this month. Best effort: a failure is only logged."""
    from source.status import monitor_facts

    try:
        conn = database.connect()
        try:
            with conn, conn.cursor() as cur:
                facts = monitor_facts(cur, settings.metals, datetime.now(UTC))
        finally:
            conn.close()
    except (DatabaseUnavailable, psycopg2.Error) as exc:
        log.warning("monitoring: could not read the run's facts: %s", exc)
        return
    quota = any(isinstance(e, QuotaExceeded) for e in report.fetch_errors.values())
    monitoring.record(
        quotes=facts.quotes,
        streaks=facts.streaks,
        units=facts.units,
        requests_this_month=facts.requests_this_month,
        quota_exhausted=quota,
    )


def _close_ledger(database: Database, run_id: int, report: RunReport) -> None:
    record = RunRecord(
        status=report.status,
        exit_code=report.exit_code,
        rows_inserted=report.rows_inserted,
        rows_updated=report.rows_updated,
        api_requests=report.api_requests,
        metals_ok=report.metals_ok,
        metals_failed=report.metals_failed,
        message=report.summary(),
    )
    if report.offsite is not None:
        record.offsite_copied, record.offsite_error = report.offsite.copied, report.offsite.error
    close_recorded_run(database, run_id, record)
