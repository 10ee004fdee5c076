"""The read model: gather, once, what the person on call needs (prices, runs, model skill,
backups, quality marks) into one typed `StatusFacts`, with the warnings that follow from it.
Rendered as terminal text, JSON and the HTML report by `source/report/`, and read by the
monitors. Reads only the database (never migrating it), the models' metadata and the backup
catalogue; makes no API request (`status --api` asks the API itself and hands the answer in)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import psycopg2

from source.backups.catalog import list_backups
from source.config import DEMO_DATABASE, Settings
from source.db_functions.connection import Database, open_database
from source.db_functions.migrations import historic_sql, pending_migrations, tables_present
from source.db_functions.units import stored_units
from source.errors import ReportableError
from source.facts import (
    SOURCES,
    ApiUsage,
    BackupFacts,
    ForecastFacts,
    MetalFacts,
    MonitorFacts,
    NewestBackup,
    QualityFacts,
    RangeFacts,
    RunFacts,
    RunRow,
    StatusFacts,
    UndecidedQuote,
)
from source.ml.registry import model_facts

log = logging.getLogger(__name__)

RECENT_RUNS = 10
RUN_OVERDUE = timedelta(hours=2)
BACKUP_OVERDUE = timedelta(hours=7)
FAILING_STREAK = 3
QUOTA_WARNING = 0.8


def _rows(cur, statement: str, params=()) -> list[dict]:
    cur.execute(statement, params)
    names = [column.name for column in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _age_seconds(moment: datetime | None, now: datetime) -> float | None:
    return (now - moment).total_seconds() if moment is not None else None


def no_rows_yet(metal: str) -> MetalFacts:
    return MetalFacts(
        metal=metal,
        currency=None,
        unit=None,
        latest_price=None,
        latest_ask=None,
        quote_time=None,
        quote_age_seconds=None,
        rows=0,
        rows_by_source=dict.fromkeys(SOURCES, 0),
    )


def metal_facts(cur, metal: str, now: datetime, units: tuple[str, str] | None) -> MetalFacts:
    """Latest quote, rows by source, and the currency/unit its rows are kept in (None: no rows)."""
    table = historic_sql(metal)
    latest = _rows(  # the newest good quote: a suspect one is shown apart (quality)
        cur,
        f"SELECT \"timestamp\", rate_price, rate_ask FROM {table} WHERE quality = 'ok' "
        'ORDER BY "timestamp" DESC LIMIT 1',
    )
    by_source = {
        row["source"]: row["rows"]
        for row in _rows(cur, f"SELECT source, count(*) AS rows FROM {table} GROUP BY source")
    }
    quote = latest[0] if latest else {}
    return MetalFacts(
        metal=metal,
        currency=units[0] if units else None,
        unit=units[1] if units else None,
        latest_price=quote.get("rate_price"),
        latest_ask=quote.get("rate_ask"),
        quote_time=_iso(quote.get("timestamp")),
        quote_age_seconds=_age_seconds(quote.get("timestamp"), now),
        rows=sum(by_source.values()),
        rows_by_source={s: by_source.get(s, 0) for s in SOURCES},
    )


def requests_this_month(cur, now: datetime) -> int:
    """API requests the ledger counts since the start of this calendar month (UTC)."""
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    cur.execute(
        "SELECT coalesce(sum(api_requests), 0) FROM pipeline_runs WHERE started_at >= %s",
        (month,),
    )
    return int(cur.fetchone()[0])


def run_facts(cur, now: datetime) -> RunFacts:
    runs = _rows(
        cur,
        """SELECT run_id, command, started_at, finished_at, status, exit_code, api_requests,
                  metals_failed, rows_inserted
             FROM pipeline_runs ORDER BY run_id DESC LIMIT %s""",
        (RECENT_RUNS,),
    )
    recent = []
    for run in runs:
        started, finished = run["started_at"], run["finished_at"]
        duration = (finished - started).total_seconds() if finished else None
        times = {"started_at": _iso(started), "finished_at": _iso(finished)}
        recent.append(RunRow(**{**run, **times}, duration_seconds=duration))
    cur.execute(
        """SELECT max(finished_at) FROM pipeline_runs
            WHERE command = 'pipeline' AND status IN ('success', 'partial')"""
    )
    last_success = cur.fetchone()[0]
    return RunFacts(
        recent=recent,
        api_requests_this_month=requests_this_month(cur, now),
        last_successful_run=_iso(last_success),
        last_successful_run_age_seconds=_age_seconds(last_success, now),
        offsite_error=_offsite_error(cur),
    )


def _offsite_error(cur) -> str | None:
    """The newest run's failed copy of its landed files (the column comes with migration 11:
    status never migrates, so an older database has none)."""
    cur.execute(
        """SELECT 1 FROM information_schema.columns
            WHERE table_name = 'pipeline_runs' AND column_name = 'offsite_error'"""
    )
    if cur.fetchone() is None:
        return None
    cur.execute(
        """SELECT offsite_error FROM pipeline_runs WHERE offsite_copied IS NOT NULL
            ORDER BY run_id DESC LIMIT 1"""
    )
    row = cur.fetchone()
    return row[0] if row else None


def failing_streaks(cur, metals: tuple[str, ...]) -> dict[str, int]:
    """How many of the latest hourly runs in a row each metal failed."""
    recent = _rows(
        cur,
        """SELECT metals_failed FROM pipeline_runs WHERE command = 'pipeline' AND finished_at IS
            NOT NULL ORDER BY run_id DESC LIMIT 24""",
    )
    streaks = {}
    for metal in metals:
        streak = 0
        for run in recent:
            if metal not in run["metals_failed"]:
                break
            streak += 1
        streaks[metal] = streak
    return streaks


def monitor_facts(cur, metals: tuple[str, ...], now: datetime) -> MonitorFacts:
    """For the monitors at the end of an hourly run: newest quote per metal (epoch seconds),
    failing streaks, API requests this month, and the currency and unit each is kept in."""
    quotes = {}
    for metal in metals:
        cur.execute(f'SELECT max("timestamp") FROM {historic_sql(metal)}')
        newest = cur.fetchone()[0]
        if newest is not None:
            quotes[metal] = newest.timestamp()
    return MonitorFacts(
        quotes=quotes,
        streaks=failing_streaks(cur, metals),
        requests_this_month=requests_this_month(cur, now),
        units=stored_units(cur, metals),
    )


def quality_facts(cur, metals: tuple[str, ...]) -> QualityFacts:
    """Quotes not marked ok: those still waiting for the next quotes, and how many are kept
    as suspect or rejected (`python main.py quality` lists them)."""
    from source.db_functions.quality_marks import flagged

    marked = flagged(cur, metals)
    undecided = [
        UndecidedQuote(**{**row, "time": _iso(row["time"])})
        for row in marked
        if row["decision"] == "pending"
    ]
    return QualityFacts(
        undecided=undecided,
        suspect=sum(1 for row in marked if row["quality"] == "suspect"),
        rejected=sum(1 for row in marked if row["quality"] == "rejected"),
    )


def range_facts(cur, now: datetime) -> list[RangeFacts]:
    """High and low with when, today / yesterday / this week / last 7 days (price_ranges)."""
    rows = _rows(cur, "SELECT * FROM price_ranges_at(%s)", (now,))
    return [
        RangeFacts(
            metal=row["metal"],
            period=row["period"],
            starts=_iso(row["starts"]),
            ends=_iso(row["ends"]),
            high=row["high"],
            high_at=_iso(row["high_at"]),
            low=row["low"],
            low_at=_iso(row["low_at"]),
        )
        for row in rows
    ]


def forecast_facts(cur, newest: dict[str, datetime | None]) -> list[ForecastFacts]:
    """The latest forecasts per metal, target and horizon (written after training), each with
    the trading hour (or day) it is for, and `stale` once quotes at or after that time exist."""
    rows = _rows(
        cur,
        """SELECT DISTINCT ON (metal, target, horizon) metal, target, horizon, origin_time,
                  predicted_value, lower, upper, last_value, frequency
             FROM price_predictions ORDER BY metal, target, horizon, origin_time DESC""",
    )
    firsts: dict[tuple[str, str], datetime] = {}
    for row in rows:
        row["target_time"] = forecast_time(row["origin_time"], row["horizon"], row["frequency"])
        key = (row["metal"], row["target"])
        firsts[key] = min(firsts.get(key, row["target_time"]), row["target_time"])
    forecasts = []
    for row in rows:
        latest = newest.get(row["metal"])
        # The forecasts of one run go stale together: when its first target time has a quote.
        stale = latest is not None and firsts[(row["metal"], row["target"])] <= latest
        times = {
            "origin_time": row["origin_time"].isoformat(),
            "target_time": row["target_time"].isoformat(),
        }
        forecasts.append(ForecastFacts(**{**row, **times}, stale=stale))
    return forecasts


def is_trading_time(moment: datetime) -> bool:
    """Spot metals trade from Sunday 22:00 to Friday 22:00 UTC (no quotes in between)."""
    weekday, hour = moment.weekday(), moment.hour
    return not (weekday == 5 or (weekday == 4 and hour >= 22) or (weekday == 6 and hour < 22))


def forecast_time(origin: datetime, horizon: int, frequency: str) -> datetime:
    """The time `horizon` steps after `origin`, counting only trading hours (or weekdays):
    the models count steps in rows, and no row exists while the market is closed."""
    step = timedelta(days=1) if frequency == "daily" else timedelta(hours=1)
    moment, left = origin, horizon
    while left > 0:
        moment += step
        trading = moment.weekday() < 5 if frequency == "daily" else is_trading_time(moment)
        left -= trading
    return moment


def backup_facts(settings: Settings, now: datetime) -> BackupFacts:
    """The backup catalogue's count and newest backup (whether it is off the host only when a
    bucket is configured): for status, the report and the backup job's metrics."""
    backups = list_backups(settings.backup_dir)
    if not backups:
        return BackupFacts(count=0, newest=None)
    newest = backups[-1]
    offsite = None  # no bucket configured
    if settings.backup_s3_url:
        from source.backups.offsite import is_offsite

        offsite = is_offsite(newest)
    return BackupFacts(
        count=len(backups),
        newest=NewestBackup(
            id=newest.id,
            age_seconds=(now - newest.created_at).total_seconds(),
            verified=newest.verified,
            level=newest.level,
            size_bytes=newest.size_bytes,
            offsite=offsite,
            created_at=newest.created_at.timestamp(),
        ),
    )


def warnings_for(facts: StatusFacts) -> list[str]:
    """What needs a look; an empty list means healthy."""
    warnings = []
    runs = facts.runs
    age = runs.last_successful_run_age_seconds
    if age is None or age > RUN_OVERDUE.total_seconds():
        warnings.append(
            "no successful hourly run in the last 2 hours"
            + (f" (last: {runs.last_successful_run})" if runs.last_successful_run else "")
        )
    if runs.offsite_error:
        warnings.append(
            "the last run's landed files are not in the bucket (the next run retries): "
            + runs.offsite_error
        )
    newest = facts.backups.newest
    if newest is None:
        warnings.append("no backup yet")
    else:
        if newest.age_seconds > BACKUP_OVERDUE.total_seconds():
            warnings.append(f"newest backup {newest.id} is older than 7 hours")
        if not newest.verified:
            warnings.append(f"newest backup {newest.id} is not verified")
        if newest.offsite is False:
            warnings.append(
                f"newest backup {newest.id} is not off the host: its copy to the bucket "
                "failed or is pending (the next backup retries)"
            )
    for metal, streak in facts.failing_streaks.items():
        if streak >= FAILING_STREAK:
            warnings.append(f"{metal} failed the last {streak} runs in a row")
    for quote in facts.quality.undecided:
        warnings.append(
            f"{quote.metal}: suspect quote {quote.price:,.2f} at {quote.time[:16]} awaits the "
            f"next quotes ({quote.reason}); see `python main.py quality`"
        )
    usage = facts.api_usage
    if usage and usage.total and (usage.used or 0) / usage.total > QUOTA_WARNING:
        warnings.append(f"API quota {usage.used}/{usage.total} used (above 80%)")
    return warnings


def gather_status(
    settings: Settings, database: Database, now: datetime, api_usage: ApiUsage | None = None
) -> StatusFacts:
    """Every fact status and the report show, with the warnings and the health verdict."""
    order = _metal_order(settings)
    conn = database.connect()
    try:
        with conn, conn.cursor() as cur:
            units = stored_units(cur, settings.metals)
            present = tables_present(cur, settings.metals)
            metals = [
                metal_facts(cur, metal, now, units.get(metal))
                if metal in present
                else no_rows_yet(metal)
                for metal in settings.metals
            ]
            newest = {m.metal: _time(m.quote_time) for m in metals}
            currency, unit, notes = labels(settings, units)
            runs = run_facts(cur, now)
            forecasts = sorted(
                forecast_facts(cur, newest), key=lambda f: (order(f.metal), f.target, f.horizon)
            )
            ranges = sorted(
                (r for r in range_facts(cur, now) if r.metal in settings.metals),
                key=lambda r: order(r.metal),
            )
            streaks = failing_streaks(cur, settings.metals)
            quality = quality_facts(cur, present)
    finally:
        conn.close()
    facts = StatusFacts(
        generated_at=now.isoformat(),
        database=database.name,
        demo=settings.demo,
        currency=currency,
        unit=unit,
        notes=notes,
        metals=metals,
        runs=runs,
        forecasts=forecasts,
        ranges=ranges,
        quality=quality,
        models=model_facts(settings.models_dir, settings.metals),
        backups=backup_facts(settings, now),
        api_usage=api_usage,
        failing_streaks=streaks,
    )
    facts.warnings = warnings_for(facts)
    facts.healthy = not facts.warnings
    return facts


def labels(
    settings: Settings, units: dict[str, tuple[str, str]]
) -> tuple[str, str | None, list[str]]:
    """Currency and unit as the stored rows say (the settings' only where there are no rows),
    and a note when CURRENCY/UNIT say otherwise: a reader labels what is there."""
    kinds = sorted(set(units.values()))
    # Commodities in several units (copper per tonne, gold per ounce): unit None, each
    # metal's facts carry its own.
    fallback = (settings.currency, settings.unit or ("toz" if not kinds else None))
    currency, unit = kinds[0] if len(kinds) == 1 else fallback
    notes = []
    wrong = {
        metal: kept
        for metal, kept in units.items()
        if kept[0] != settings.currency or settings.unit not in (None, kept[1])
    }
    if wrong:
        kept = "; ".join(f"{m} in {c} per {u}" for m, (c, u) in wrong.items())
        setting = f"CURRENCY={settings.currency}" + (
            f" UNIT={settings.unit}" if settings.unit else ""
        )
        notes.append(f"{setting} ignored: the stored rows are {kept} (labels follow the rows)")
    return currency, unit, notes


def _time(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


def _metal_order(settings: Settings):
    """Every table lists the metals in the configured order."""
    order = {metal: n for n, metal in enumerate(settings.metals)}
    return lambda metal: order.get(metal, len(order))


class EmptyDatabase(ReportableError):
    """No pipeline run has created the tables yet: said in one line, exit 1."""


class SchemaBehind(ReportableError):
    """The schema lacks migrations this code reads: said in one line, exit 1 (readers never
    migrate; the next writing command does)."""


def open_for_reading(settings: Settings) -> Database:
    """The database as it is: never migrated by a reader. Empty, or with a schema older than
    this code reads: one line (exit 1) instead."""
    database = open_database(settings)
    conn = database.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('pipeline_runs') IS NOT NULL")
            initialised = cur.fetchone()[0]
        if not initialised:
            raise EmptyDatabase(_empty_line(settings, database, cur_conn=conn))
        try:
            with conn, conn.cursor() as cur:
                pending = pending_migrations(cur)
        except psycopg2.errors.InsufficientPrivilege:  # a role that may not see the versions
            pending = []
    finally:
        conn.close()
    if pending:
        raise SchemaBehind(
            f"database {database.name} lacks schema migration(s) "
            f"{', '.join(map(str, pending))}: status, report and quality only read; the next "
            "writing command (`python main.py`, backfill, import-csv, train) migrates it"
        )
    return database


def _empty_line(settings: Settings, database: Database, cur_conn) -> str:
    """Why there is nothing to show; after the quick start, where the demo's data is."""
    line = f"database {database.name} is empty: no run has loaded anything yet"
    if settings.demo:
        return line + " (try `python main.py --demo`)"
    with cur_conn, cur_conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DATABASE,))
        demo_exists = cur.fetchone() is not None
    if demo_exists:
        return line + (
            f"; the demo's rows are in their own database ({DEMO_DATABASE}): add --demo, e.g. "
            "`python main.py status --demo`"
        )
    return line + " (try `python main.py`, or `--demo`)"


def collect(settings: Settings, now: datetime) -> StatusFacts:
    """Everything status and report show, with warnings and the health verdict (no API
    usage: a command that asks the API passes its answer to `gather_status`)."""
    return gather_status(settings, open_for_reading(settings), now)
