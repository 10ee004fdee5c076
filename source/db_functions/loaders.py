"""COPY-based upserts keyed by the API's timestamp, so reloading the same data changes nothing.

A metal's historic table is a partition of the analytics table (migration 4): a row written
to `<metal>_historic` is in `commodities_price_data_analytics` by construction."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from source.db_functions.migrations import ANALYTICS_TABLE, historic_sql, historic_table
from source.db_functions.quality_marks import assess_metal
from source.transform import HISTORIC_COLUMNS, RATE_COLUMNS

HISTORIC_COLUMNS_SQL = ", ".join(f'"{c}"' for c in HISTORIC_COLUMNS)
_UPDATED = [*RATE_COLUMNS, "currency", "unit", "status", "source", "fetched_at", "raw_file"]
_SET = ", ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATED) + ", loaded_at = now()"
# A reloaded quote with the same values is left alone (fetched_at keeps the first fetch).
_CHANGED = "({}) IS DISTINCT FROM ({})".format(
    ", ".join(f"t.{c}" for c in [*RATE_COLUMNS, "currency", "unit"]),
    ", ".join(f"EXCLUDED.{c}" for c in [*RATE_COLUMNS, "currency", "unit"]),
)
# Bulk sources (daily backfill, vendor CSV) fill gaps: they never replace a row that came
# from another source, e.g. a full spot quote with ask and bid at the same timestamp.
_KEEP_RICHER = "(t.source = EXCLUDED.source OR EXCLUDED.source NOT IN ('backfill', 'csv'))"


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    marks: tuple = ()  # quality marks that changed with this load (MarkChange)

    def __add__(self, other: UpsertCounts) -> UpsertCounts:
        return UpsertCounts(
            self.inserted + other.inserted, self.updated + other.updated, self.marks + other.marks
        )

    @property
    def suspects(self) -> int:
        """Rows this load marked suspect (bad ticks are kept, marked)."""
        return sum(1 for change in self.marks if change.verdict.mark != "ok")


def frame_to_csv(frame: pd.DataFrame) -> io.StringIO:
    """Serialise rows for COPY ... (FORMAT csv); NaN/None become NULL."""
    buffer = io.StringIO()
    frame[HISTORIC_COLUMNS].to_csv(
        buffer, index=False, header=False, date_format="%Y-%m-%dT%H:%M:%S.%f%z"
    )
    buffer.seek(0)
    return buffer


def upsert_from(table: str, key: str, source_table: str, select: str = HISTORIC_COLUMNS_SQL) -> str:
    """INSERT ... SELECT ... ON CONFLICT DO UPDATE; RETURNING tells inserts from updates."""
    return (
        f"INSERT INTO {table} AS t ({HISTORIC_COLUMNS_SQL}) "
        f"SELECT {select} FROM {source_table} "
        f"ON CONFLICT ({key}) DO UPDATE SET {_SET} WHERE {_CHANGED} AND {_KEEP_RICHER} "
        "RETURNING (xmax = 0) AS inserted"
    )


def counts_of(cur) -> UpsertCounts:
    flags = [row[0] for row in cur.fetchall()]
    inserted = sum(flags)
    return UpsertCounts(inserted=inserted, updated=len(flags) - inserted)


class UnitMismatch(ValueError):
    """The frame's currency/unit differ from the rows already in the table."""


def check_units(cur, metal: str, incoming: set[tuple[str, str]]) -> None:
    """Rows are keyed by timestamp alone, so one table must hold one currency and unit."""
    cur.execute(f"SELECT currency, unit FROM {historic_sql(metal)} LIMIT 1")
    existing = cur.fetchone()
    if existing and incoming and incoming != {existing}:
        found = ", ".join(f"{c}/{u}" for c, u in sorted(incoming))
        raise UnitMismatch(
            f"{historic_table(metal)} holds {existing[0]}/{existing[1]} prices, "
            f"these rows are {found}; "
            "use another database (PGDATABASE) for another currency or unit"
        )


def _upsert_metal(cur, metal: str, frame: pd.DataFrame) -> UpsertCounts:
    table = historic_sql(metal)
    check_units(cur, metal, set(zip(frame["currency"], frame["unit"], strict=True)))
    cur.execute("TRUNCATE staging_prices")
    cur.copy_expert(
        f"COPY staging_prices ({HISTORIC_COLUMNS_SQL}) FROM STDIN WITH (FORMAT csv)",
        frame_to_csv(frame),
    )
    cur.execute(upsert_from(table, '"timestamp"', "staging_prices"))
    counts = counts_of(cur)
    # The rows judged in the same transaction: a quote is never visible unmarked.
    marks = assess_metal(cur, metal, frame["timestamp"].min().to_pydatetime())
    return UpsertCounts(counts.inserted, counts.updated, tuple(marks))


def upsert_prices(conn, frame: pd.DataFrame, *, also: Callable | None = None) -> UpsertCounts:
    """Upsert rows into their `<metal>_historic` table (so the analytics table) atomically.

    A frame may hold several metals (a /timeseries window): all of them or none commit.
    `also(cur)` runs in the same transaction (e.g. to record what a backfill covered)."""
    total = UpsertCounts()
    with conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS staging_prices "
            f"(LIKE {ANALYTICS_TABLE} INCLUDING DEFAULTS) ON COMMIT DROP"
        )
        for metal, rows in frame.groupby("metal", sort=True):
            total += _upsert_metal(cur, str(metal), rows)
        if also is not None:
            also(cur)
    return total
