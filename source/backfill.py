"""The backfill stage: plan <=30-day windows over the days not yet covered, fetch one
/timeseries per window concurrently (each response landed before it is parsed), and hand
each window to the load stage as one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial

from source.config import Settings
from source.db_functions.connection import Database
from source.db_functions.coverage import missing_days
from source.db_functions.runs import status_for
from source.db_functions.units import target_units
from source.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, ReportableError
from source.extract import (
    make_client,
    mark_job_rejected,
    mark_loaded,
    mark_rejected,
    replay_landed,
    timeseries_job,
)
from source.load import LoadOutcome, LoadTotals, QueueLoader
from source.log_setup import in_this_context
from source.metals_dev import AuthError, MetalsDevClient, MetalsDevError, QuotaExceeded
from source.progress import progress_bar

log = logging.getLogger(__name__)

MAX_WINDOW_DAYS = 30  # the API's limit per /timeseries request
MAX_CONCURRENT_WINDOWS = 4  # polite to the API, and the loader keeps up


class BackfillUsageError(ReportableError):
    """Bad dates: one line, exit 2."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Window:
    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def __str__(self) -> str:
        return f"{self.start}..{self.end}"


def parse_day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BackfillUsageError(f"{option} {text!r} is not a date like 2024-01-31") from None


def resolve_range(start: str, end: str | None, today: date) -> tuple[date, date]:
    """Validate --start/--end; --end defaults to yesterday (UTC)."""
    first = parse_day(start, "--start")
    last = parse_day(end, "--end") if end else today - timedelta(days=1)
    if first > today:
        raise BackfillUsageError(f"--start {first} is in the future (today is {today} UTC)")
    if last > today:
        raise BackfillUsageError(f"--end {last} is in the future (today is {today} UTC)")
    if first > last:
        raise BackfillUsageError(f"--start {first} is after --end {last}")
    return first, last


def plan_windows(days: list[date], max_days: int = MAX_WINDOW_DAYS) -> list[Window]:
    """Group sorted days into runs of consecutive days, each cut into <= max_days windows."""
    windows: list[Window] = []
    for day in sorted(days):
        current = windows[-1] if windows else None
        if current and day == current.end + timedelta(days=1) and current.days < max_days:
            windows[-1] = Window(current.start, day)
        else:
            windows.append(Window(day, day))
    return windows


@dataclass
class BackfillReport(LoadTotals):
    windows_planned: int = 0
    windows_skipped: int = 0  # 30-day stretches already covered
    errors: dict[str, BaseException] = field(default_factory=dict)  # window -> error
    outcomes: list[LoadOutcome] = field(default_factory=list)
    api_requests: int = 0

    @property
    def windows_loaded(self) -> int:
        return sum(1 for o in self.outcomes if not o.error and not o.job.replayed)

    @property
    def windows_failed(self) -> int:
        return self.windows_planned - self.windows_loaded

    @property
    def exit_code(self) -> int:
        if self.errors and all(isinstance(e, AuthError) for e in self.errors.values()):
            return EXIT_USAGE if not self.windows_loaded else EXIT_PARTIAL
        if not self.windows_failed:
            return EXIT_OK
        return EXIT_PARTIAL if self.windows_loaded else EXIT_FAILURE

    @property
    def status(self) -> str:
        return status_for(self.exit_code)

    def summary(self) -> str:
        parts = [
            f"{self.windows_loaded}/{self.windows_planned} window(s) loaded",
            f"{self.windows_skipped} already present",
            f"{self.api_requests} API request(s)",
            f"{self.rows_inserted} row(s) inserted, {self.rows_updated} updated",
        ]
        if suspects := self.counts.suspects:
            parts.append(f"{suspects} marked suspect (see `main.py quality`)")
        if self.errors:
            parts.append("failed: " + ", ".join(sorted(self.errors)))
        return "; ".join(parts)


def _covered_windows(first: date, last: date, missing: list[date]) -> int:
    """How many windows of a from-scratch plan need no request at all."""
    every_day = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    wanted = set(missing)
    return sum(
        1
        for w in plan_windows(every_day)
        if not any(w.start + timedelta(days=i) in wanted for i in range(w.days))
    )


def fetch_windows(
    client: MetalsDevClient,
    windows: list[Window],
    settings: Settings,
    submit: Callable,
    progress,
    units: dict[str, str] | None = None,
) -> dict[str, BaseException]:
    """Fetch windows concurrently (bounded); submit one LoadJob each; return {window: error}.
    The API quotes every metal per ounce here (UNIT, if set, otherwise toz): `units` says
    what each metal's rows are kept in (copper per tonne), which its prices become."""

    def fetch_one(window: Window) -> None:
        fetched = None
        try:
            fetched = client.timeseries(
                str(window.start), str(window.end), settings.currency, settings.unit or "toz"
            )
            job = timeseries_job(
                fetched.payload,
                metals=settings.metals,
                raw_file=fetched.landed_path,
                fetched_at=fetched.raw.fetched_at,
                units=units,
            )
        except MetalsDevError as exc:  # a body that cannot load is not replayed either
            landed = exc.landed_path or (fetched.landed_path if fetched else None)
            mark_rejected(settings.data_dir, landed)
            raise
        log.info("backfill %s: %d price row(s) fetched", window, len(job.frame))
        submit(job)

    errors: dict[str, BaseException] = {}
    workers = max(1, min(MAX_CONCURRENT_WINDOWS, len(windows)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backfill") as pool:
        futures = {pool.submit(in_this_context(fetch_one), window): window for window in windows}
        for future in as_completed(futures):
            error = future.exception()
            if error is not None:
                errors[str(futures[future])] = error
                # 1101/1203 get one clear line at the end (log_api_trouble), not one per window.
                level = (
                    logging.INFO if isinstance(error, AuthError | QuotaExceeded) else logging.ERROR
                )
                log.log(level, "backfill %s failed: %s", futures[future], error)
            progress.update(1)
    return errors


def _loader(settings: Settings, database: Database) -> QueueLoader:
    return QueueLoader(
        database,
        on_loaded=partial(mark_loaded, settings.data_dir),
        on_rejected=partial(mark_job_rejected, settings.data_dir),
    )


def replay_first(settings: Settings, database: Database) -> list[LoadOutcome]:
    """Load what an earlier run landed but did not load, before deciding what to fetch."""
    with _loader(settings, database) as loader:
        for job in replay_landed(
            settings.data_dir,
            source=settings.source_tag,
            metals=settings.metals,
            units_of=partial(target_units, database, settings.metals, settings.unit),
            max_bytes=settings.max_response_bytes,
        ):
            loader.submit(job)
    return loader.outcomes


def run_backfill(
    settings: Settings, database: Database, first: date, last: date, *, force: bool
) -> BackfillReport:
    """Backfill [first, last]: skip covered days unless force, fetch, land, load."""
    replayed = replay_first(settings, database)
    conn = database.connect()
    try:
        every_day = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        days = every_day if force else missing_days(conn, first, last, settings.metals)
    finally:
        conn.close()
    windows = plan_windows(days)
    report = BackfillReport(windows_planned=len(windows))
    report.windows_skipped = _covered_windows(first, last, days)
    log.info(
        "backfill %s..%s: %d day(s) to fetch in %d window(s)%s",
        first,
        last,
        len(days),
        len(windows),
        " (--force)" if force else "",
    )
    client = make_client(settings)
    progress = progress_bar(total=len(windows), unit="window", desc="backfill")
    try:
        if windows:  # no room to land the answers: no request spent (LowDiskSpace)
            client.check_ready()
        with _loader(settings, database) as loader, progress as bar:
            report.outcomes = loader.outcomes
            units = target_units(database, settings.metals, settings.unit)
            report.errors = fetch_windows(client, windows, settings, loader.submit, bar, units)
    finally:
        report.api_requests = client.request_count
        client.close()
    report.outcomes = replayed + report.outcomes
    for number, outcome in enumerate(report.outcomes):
        if outcome.error and not outcome.job.replayed:
            files = outcome.job.raw_files  # none when the disk refused it: loaded from memory
            name = files[0].name if files else f"window loaded from memory #{number}"
            report.errors[name] = RuntimeError(outcome.error)
    return report
