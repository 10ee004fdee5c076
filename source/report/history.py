"""The report's chart data: per metal, the good prices of the newest stretch that holds data,
the quotes marked in it, and every daily close for the long view. Read from the database only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from source.config import Settings
from source.db_functions.connection import open_database
from source.db_functions.migrations import historic_sql, tables_present


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
            present = tables_present(cur, settings.metals)  # one just added has none yet
            for metal in settings.metals:
                history[metal] = _metal_history(cur, metal) if metal in present else _nothing()
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


def _nothing() -> PriceHistory:
    columns = ["timestamp", "rate_price"]
    return PriceHistory(_frame([], columns), _frame([], [*columns, "quality"]), None, "hourly")


def _metal_history(cur, metal: str) -> PriceHistory:
    table = historic_sql(metal)
    cur.execute(f'SELECT min("timestamp"), max("timestamp"), count(*) FROM {table}')
    oldest, newest, quotes = cur.fetchone()
    columns = ["timestamp", "rate_price"]
    if newest is None:
        return _nothing()
    cur.execute(
        f'SELECT "timestamp", rate_price FROM {table} '
        'WHERE quality = \'ok\' AND "timestamp" > %s ORDER BY "timestamp"',
        (newest - HOURLY_WINDOW,),
    )
    rows, resolution, start = cur.fetchall(), "hourly", newest - HOURLY_WINDOW
    if len(rows) < MIN_POINTS and oldest < start:  # older quotes exist: show their closes
        rows, resolution = _daily_closes(cur, metal, (newest - DAILY_WINDOW).date()), "daily"
        start = newest - DAILY_WINDOW
    cur.execute(
        f'SELECT "timestamp", rate_price, quality FROM {table} '
        'WHERE quality <> \'ok\' AND "timestamp" > %s ORDER BY "timestamp"',
        (start,),
    )
    marked = _frame(cur.fetchall(), [*columns, "quality"])
    daily = None
    if newest - oldest > LONG_VIEW_AFTER:
        daily = _frame(_daily_closes(cur, metal, oldest.date() - timedelta(days=1)), columns)
    return PriceHistory(_frame(rows, columns), marked, newest, resolution, quotes, oldest, daily)
