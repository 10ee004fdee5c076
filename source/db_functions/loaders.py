"""COPY-based upserts: one transaction writes a metal's rows to its historic table and the
analytics table, keyed by the API's timestamp, so reloading the same data changes nothing."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pandas as pd

from source.db_functions.migrations import ANALYTICS_TABLE, historic_table
from source.transform import HISTORIC_COLUMNS, RATE_COLUMNS

_COLUMNS = ", ".join(f'"{c}"' for c in HISTORIC_COLUMNS)
_UPDATED = [*RATE_COLUMNS, "currency", "unit", "status", "source", "fetched_at", "raw_file"]
_SET = ", ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATED) + ", loaded_at = now()"
# A reloaded quote with the same values is left alone (fetched_at keeps the first fetch).
_CHANGED = "({}) IS DISTINCT FROM ({})".format(
    ", ".join(f"t.{c}" for c in [*RATE_COLUMNS, "currency", "unit"]),
    ", ".join(f"EXCLUDED.{c}" for c in [*RATE_COLUMNS, "currency", "unit"]),
)


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int = 0
    updated: int = 0


def frame_to_csv(frame: pd.DataFrame) -> io.StringIO:
    """Serialise rows for COPY ... (FORMAT csv); NaN/None become NULL."""
    buffer = io.StringIO()
    frame[HISTORIC_COLUMNS].to_csv(
        buffer, index=False, header=False, date_format="%Y-%m-%dT%H:%M:%S.%f%z"
    )
    buffer.seek(0)
    return buffer


def _upsert_sql(table: str, key: str) -> str:
    return (
        f"INSERT INTO {table} AS t ({_COLUMNS}) "
        f"SELECT {_COLUMNS} FROM staging_prices "
        f"ON CONFLICT ({key}) DO UPDATE SET {_SET} WHERE {_CHANGED} "
        "RETURNING (xmax = 0) AS inserted"
    )


class UnitMismatch(ValueError):
    """The frame's currency/unit differ from the rows already in the table."""


def _check_units(cur, table: str, frame: pd.DataFrame) -> None:
    """Rows are keyed by timestamp alone, so one table must hold one currency and unit."""
    cur.execute(f"SELECT currency, unit FROM {table} LIMIT 1")
    existing = cur.fetchone()
    incoming = set(zip(frame["currency"], frame["unit"], strict=True))
    if existing and incoming != {existing}:
        found = ", ".join(f"{c}/{u}" for c, u in sorted(incoming))
        raise UnitMismatch(
            f"{table} holds {existing[0]}/{existing[1]} prices, these rows are {found}; "
            "use another database (PGDATABASE) for another currency or unit"
        )


def upsert_prices(conn, frame: pd.DataFrame) -> UpsertCounts:
    """Upsert one metal's rows into `<metal>_historic` and the analytics table atomically."""
    metals = frame["metal"].unique()
    if len(metals) != 1:
        raise ValueError(f"a frame must hold exactly one metal, got {list(metals)}")
    table = historic_table(str(metals[0]))
    with conn, conn.cursor() as cur:
        _check_units(cur, table, frame)
        cur.execute(
            f"CREATE TEMP TABLE staging_prices (LIKE {ANALYTICS_TABLE} INCLUDING DEFAULTS) "
            "ON COMMIT DROP"
        )
        cur.copy_expert(
            f"COPY staging_prices ({_COLUMNS}) FROM STDIN WITH (FORMAT csv)", frame_to_csv(frame)
        )
        cur.execute(_upsert_sql(table, '"timestamp"'))
        flags = [row[0] for row in cur.fetchall()]
        cur.execute(_upsert_sql(ANALYTICS_TABLE, 'metal, "timestamp"'))
    inserted = sum(flags)
    return UpsertCounts(inserted=inserted, updated=len(flags) - inserted)
