"""The status stage: gather, once, what the person on call needs (prices, runs, API requests,
model skill, backups) into one plain dict, and the warnings that follow from it. Rendered as
terminal text, JSON and the HTML report by `source/report/`. Reads only the database, the
models' metadata and the backup catalogue; makes no API request unless asked (`usage`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import psycopg2

from source.backups.catalog import list_backups
from source.config import DEMO_DATABASE, Settings
from source.db_functions.connection import Database, open_database
from source.db_functions.migrations import add_commodities, apply_migrations, historic_table
from source.errors import ReportableError
from source.metals_dev import MetalsDevError

log = logging.getLogger(__name__)
TARGETS = ("rate_price", "rate_ask")  # as source.ml.train (not imported: no scikit-learn here)

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


def metal_facts(cur, metal: str, now: datetime, units: tuple[str, str] | None) -> dict:
    """Latest quote, rows by source, and the currency/unit its rows are kept in (None: no rows)."""
    table = historic_table(metal)
    latest = _rows(  # the newest good quote: a suspect one is shown apart (quality)
        cur,
        f'SELECT "timestamp", rate_price, rate_ask FROM {table} WHERE quality = \'ok\' '
        'ORDER BY "timestamp" DESC LIMIT 1',
    )
    by_source = {
        row["source"]: row["rows"]
        for row in _rows(cur, f"SELECT source, count(*) AS rows FROM {table} GROUP BY source")
    }
    quote = latest[0] if latest else {}
    return {
        "metal": metal,
        "currency": units[0] if units else None,
        "unit": units[1] if units else None,
        "latest_price": quote.get("rate_price"),
        "latest_ask": quote.get("rate_ask"),
        "quote_time": _iso(quote.get("timestamp")),
        "quote_age_seconds": _age_seconds(quote.get("timestamp"), now),
        "rows": sum(by_source.values()),
        "rows_by_source": {s: by_source.get(s, 0) for s in ("api", "backfill", "csv", "demo")},
    }


def run_facts(cur, now: datetime) -> dict:
    runs = _rows(
        cur,
        """SELECT run_id, command, started_at, finished_at, status, exit_code, api_requests,
                  metals_failed, rows_inserted
             FROM pipeline_runs ORDER BY run_id DESC LIMIT %s""",
        (RECENT_RUNS,),
    )
    for run in runs:
        finished = run["finished_at"]
        run["duration_seconds"] = (
            (finished - run["started_at"]).total_seconds() if finished else None
        )
        run["started_at"], run["finished_at"] = _iso(run["started_at"]), _iso(finished)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    requests_row = _rows(
        cur,
        "SELECT coalesce(sum(api_requests), 0) AS n FROM pipeline_runs WHERE started_at >= %s",
        (month,),
    )
    last_success = _rows(
        cur,
        """SELECT max(finished_at) AS at FROM pipeline_runs
            WHERE command = 'pipeline' AND status IN ('success', 'partial')""",
    )[0]["at"]
    return {
        "recent": runs,
        "api_requests_this_month": int(requests_row[0]["n"]),
        "last_successful_run": _iso(last_success),
        "last_successful_run_age_seconds": _age_seconds(last_success, now),
    }


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


def monitor_facts(cur, metals: tuple[str, ...], now: datetime) -> dict:
    """For the monitors at the end of an hourly run: newest quote per metal (epoch seconds),
    failing streaks and API requests this month, in JobRecord's terms."""
    quotes = {}
    for metal in metals:
        cur.execute(f'SELECT max("timestamp") FROM {historic_table(metal)}')
        newest = cur.fetchone()[0]
        if newest is not None:
            quotes[metal] = newest.timestamp()
    return {
        "quotes": quotes,
        "streaks": failing_streaks(cur, metals),
        "requests_this_month": run_facts(cur, now)["api_requests_this_month"],
    }


def quality_facts(cur, metals: tuple[str, ...]) -> dict:
    """Quotes not marked ok: those still waiting for the next quotes, and how many are kept
    as suspect or rejected (`python main.py quality` lists them)."""
    from source.db_functions.quality_marks import flagged

    marked = flagged(cur, metals)
    undecided = [
        {**row, "time": _iso(row["time"])} for row in marked if row["decision"] == "pending"
    ]
    return {
        "undecided": undecided,
        "suspect": sum(1 for row in marked if row["quality"] == "suspect"),
        "rejected": sum(1 for row in marked if row["quality"] == "rejected"),
    }


def model_facts(settings: Settings) -> list[dict]:
    """Skill per metal, target and horizon, from the models' metadata files."""
    models = []
    for metal in settings.metals:
        for target in TARGETS:
            path = settings.models_dir / f"model_{target}" / f"{metal}.json"
            try:
                meta = json.loads(path.read_text())
            except (OSError, ValueError):
                models.append({"metal": metal, "target": target, "trained": False})
                continue
            skill = {
                horizon: {
                    "mase": m.get("mase"),
                    "direction_accuracy": m.get("direction_accuracy"),
                    "beats_naive": m.get("mase") is not None and m["mase"] < 1,
                    "chosen": meta.get("chosen", {}).get(horizon),
                    "interval_coverage": m.get("interval_coverage"),
                    "interval_score_ratio": m.get("interval_score_ratio"),
                }
                for horizon, m in meta.get("metrics", {}).items()
            }
            models.append(
                {
                    "metal": metal,
                    "target": target,
                    "trained": True,
                    "trained_at": meta.get("trained_at"),
                    "rows_used": meta.get("rows_used"),
                    "frequency": meta.get("frequency", "hourly"),
                    "by_horizon": skill,
                }
            )
    return models


def range_facts(cur, now: datetime) -> list[dict]:
    """High and low with when, today / yesterday / this week / last 7 days (price_ranges)."""
    rows = _rows(cur, "SELECT * FROM price_ranges_at(%s)", (now,))
    for row in rows:
        for key in ("starts", "ends", "high_at", "low_at"):
            row[key] = _iso(row[key])
    return rows


def forecast_facts(cur, newest: dict[str, datetime | None]) -> list[dict]:
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
    for row in rows:
        latest = newest.get(row["metal"])
        # The forecasts of one run go stale together: when its first target time has a quote.
        row["stale"] = latest is not None and firsts[(row["metal"], row["target"])] <= latest
        row["origin_time"], row["target_time"] = _iso(row["origin_time"]), _iso(row["target_time"])
    return rows


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


def backup_facts(settings: Settings, now: datetime) -> dict:
    backups = list_backups(settings.backup_dir)
    if not backups:
        return {"count": 0, "newest": None}
    newest = backups[-1]
    offsite = None  # no bucket configured
    if settings.backup_s3_url:
        from source.backups.offsite import is_offsite

        offsite = is_offsite(newest)
    return {
        "count": len(backups),
        "newest": {
            "id": newest.id,
            "age_seconds": _age_seconds(newest.created_at, now),
            "verified": newest.verified,
            "level": newest.level,
            "size_bytes": newest.size_bytes,
            "offsite": offsite,
        },
    }


def warnings_for(facts: dict, streaks: dict[str, int]) -> list[str]:
    """What needs a look; an empty list means healthy."""
    warnings = []
    runs = facts["runs"]
    age = runs["last_successful_run_age_seconds"]
    if age is None or age > RUN_OVERDUE.total_seconds():
        warnings.append(
            "no successful hourly run in the last 2 hours"
            + (f" (last: {runs['last_successful_run']})" if runs["last_successful_run"] else "")
        )
    newest = facts["backups"]["newest"]
    if newest is None:
        warnings.append("no backup yet")
    else:
        if newest["age_seconds"] > BACKUP_OVERDUE.total_seconds():
            warnings.append(f"newest backup {newest['id']} is older than 7 hours")
        if not newest["verified"]:
            warnings.append(f"newest backup {newest['id']} is not verified")
        if newest.get("offsite") is False:
            warnings.append(
                f"newest backup {newest['id']} is not off the host: its copy to the bucket "
                "failed or is pending (the next backup retries)"
            )
    for metal, streak in streaks.items():
        if streak >= FAILING_STREAK:
            warnings.append(f"{metal} failed the last {streak} runs in a row")
    for row in facts.get("quality", {}).get("undecided", []):
        warnings.append(
            f"{row['metal']}: suspect quote {row['price']:,.2f} at {row['time'][:16]} awaits the "
            f"next quotes ({row['reason']}); see `python main.py quality`"
        )
    usage = facts.get("api_usage") or {}
    if usage.get("total") and usage.get("used", 0) / usage["total"] > QUOTA_WARNING:
        warnings.append(f"API quota {usage['used']}/{usage['total']} used (above 80%)")
    return warnings


def gather_status(settings: Settings, database: Database, now: datetime) -> dict:
    """Every fact status and the report show, in one JSON-ready dict (keys: docs/operations.md)."""
    from source.db_functions.units import stored_units

    conn = database.connect()
    try:
        with conn, conn.cursor() as cur:
            units = stored_units(cur, settings.metals)
            metals = [metal_facts(cur, metal, now, units.get(metal)) for metal in settings.metals]
            newest = {m["metal"]: _time(m["quote_time"]) for m in metals}
            facts = {
                "generated_at": now.isoformat(),
                "database": database.name,
                "demo": settings.demo,
                **labels(settings, units),
                "metals": metals,
                "runs": run_facts(cur, now),
                "forecasts": forecast_facts(cur, newest),
                "ranges": sorted(
                    (r for r in range_facts(cur, now) if r["metal"] in settings.metals),
                    key=_metal_order(settings),
                ),
            }
            streaks = failing_streaks(cur, settings.metals)
            facts["quality"] = quality_facts(cur, settings.metals)
    finally:
        conn.close()
    order = _metal_order(settings)
    facts["forecasts"].sort(key=lambda r: (order(r), r["target"], r["horizon"]))
    facts["models"] = model_facts(settings)
    facts["backups"] = backup_facts(settings, now)
    facts["api_usage"] = None
    facts["failing_streaks"] = streaks
    return facts


def labels(settings: Settings, units: dict[str, tuple[str, str]]) -> dict:
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
    return {"currency": currency, "unit": unit, "notes": notes}


def _time(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


def _metal_order(settings: Settings):
    """Every table lists the metals in the configured order."""
    order = {metal: n for n, metal in enumerate(settings.metals)}
    return lambda row: order.get(row["metal"], len(order))


def finish(facts: dict) -> dict:
    """Add the warnings (after the optional API usage is in) and the health verdict."""
    facts["warnings"] = warnings_for(facts, facts["failing_streaks"])
    facts["healthy"] = not facts["warnings"]
    return facts


class EmptyDatabase(ReportableError):
    """No pipeline run has created the tables yet: said in one line, exit 1."""


def open_for_reading(settings: Settings) -> Database:
    """The database, migrated when this role may (a read-only role reads as it is)."""
    database = open_database(settings)
    conn = database.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('pipeline_runs') IS NOT NULL")
            initialised = cur.fetchone()[0]
        if not initialised:
            raise EmptyDatabase(_empty_line(settings, database, cur_conn=conn))
        try:
            apply_migrations(conn)
            add_commodities(conn, settings.metals)  # a metal just added to METALS: no rows yet
        except psycopg2.errors.InsufficientPrivilege:
            conn.rollback()
    finally:
        conn.close()
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


def api_usage(settings: Settings) -> dict | None:
    """The API's own /usage answer, or None (with the reason logged) if it cannot be had."""
    from source.extract import make_client

    client = make_client(settings)
    try:
        answer = client.usage()
    except MetalsDevError as exc:
        log.warning("API usage unavailable: %s", exc)
        return None
    finally:
        client.close()
    return {key: answer.get(key) for key in ("plan", "total", "used", "remaining")}


def collect(settings: Settings, now: datetime, *, api: bool) -> dict:
    """Everything status and report show, with warnings and the health verdict."""
    facts = gather_status(settings, open_for_reading(settings), now)
    if api:
        facts["api_usage"] = api_usage(settings)
    return finish(facts)


@dataclass
class PriceHistory:
    """What a metal's charts show: good prices of the newest stretch that holds data, the
    quotes marked suspect or rejected in it, when the newest quote is, how many quotes there
    are, and every daily close when the history is long enough for a long view."""

    prices: pd.DataFrame  # timestamp, rate_price (good rows; daily closes when sparse)
    marked: pd.DataFrame  # timestamp, rate_price, quality
    newest: datetime | None
    resolution: str  # "hourly" or "daily"
    quotes: int = 0  # rows in the table, good or not
    oldest: datetime | None = None
    daily: pd.DataFrame | None = None  # timestamp, rate_price: all daily closes (long view)


HOURLY_WINDOW, DAILY_WINDOW, MIN_POINTS = timedelta(days=7), timedelta(days=180), 24
LONG_VIEW_AFTER = timedelta(days=28)  # more history than this: a second, whole-history chart


def price_history(settings: Settings, now: datetime) -> dict[str, PriceHistory]:
    """Per metal, the newest stretch that holds data, not the days before the wall clock: a
    feed that stopped, or history imported months ago, still shows its prices (and says how
    old they are). The last 7 days of quotes, or the last 180 daily closes when that holds
    fewer than a day's worth; and all daily closes when there are more than four weeks."""
    database = open_database(settings)
    conn = database.connect()
    history = {}
    try:
        with conn, conn.cursor() as cur:
            for metal in settings.metals:
                history[metal] = _metal_history(cur, metal)
    finally:
        conn.close()
    return history


def _frame(rows, columns) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["rate_price"] = frame["rate_price"].astype(float)
    return frame


def _daily_closes(cur, metal: str, after) -> list:
    cur.execute(
        """SELECT day::timestamp AT TIME ZONE 'UTC', close FROM daily_ohlc
            WHERE metal = %s AND day > %s ORDER BY day""",
        (metal, after),
    )
    return cur.fetchall()


def _metal_history(cur, metal: str) -> PriceHistory:
    table = historic_table(metal)
    cur.execute(f'SELECT min("timestamp"), max("timestamp"), count(*) FROM {table}')
    oldest, newest, quotes = cur.fetchone()
    columns = ["timestamp", "rate_price"]
    if newest is None:
        return PriceHistory(_frame([], columns), _frame([], [*columns, "quality"]), None, "hourly")
    cur.execute(
        f'SELECT "timestamp", rate_price FROM {table} '
        "WHERE quality = 'ok' AND \"timestamp\" > %s ORDER BY \"timestamp\"",
        (newest - HOURLY_WINDOW,),
    )
    rows, resolution, start = cur.fetchall(), "hourly", newest - HOURLY_WINDOW
    if len(rows) < MIN_POINTS and oldest < start:  # older quotes exist: show their closes
        rows, resolution = _daily_closes(cur, metal, (newest - DAILY_WINDOW).date()), "daily"
        start = newest - DAILY_WINDOW
    cur.execute(
        f'SELECT "timestamp", rate_price, quality FROM {table} '
        "WHERE quality <> 'ok' AND \"timestamp\" > %s ORDER BY \"timestamp\"",
        (start,),
    )
    marked = _frame(cur.fetchall(), [*columns, "quality"])
    daily = None
    if newest - oldest > LONG_VIEW_AFTER:
        daily = _frame(_daily_closes(cur, metal, oldest.date() - timedelta(days=1)), columns)
    return PriceHistory(
        _frame(rows, columns), marked, newest, resolution, quotes, oldest, daily
    )
