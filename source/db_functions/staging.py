"""Bulk loads at COPY speed, in one transaction per file.

Each parsed chunk goes by binary COPY (built with numpy: no per-value text formatting)
straight into the metal's historic table (a partition of the analytics table) when it cannot
collide with a stored row: strictly increasing times over a range the table holds nothing
in. Otherwise, and for every later chunk, it goes into a temporary staging table that is
upserted at the end (the last line wins for a repeated time).

Quality is judged from the first row the load changed. A file whose rows all went straight in,
in time order, before which the table held its whole history (the common first import), is
judged in memory from the parsed rows while the server copies them; otherwise the rows are
judged as stored (read back from the first changed row on).

A first load of a large file into an empty partition drops the partition's key and indexes
while the rows go straight in, and builds them again before anything else (first_load.py)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from source.db_functions.first_load import KeysSetAside, set_keys_aside
from source.db_functions.loaders import HISTORIC_COLUMNS_SQL, UpsertCounts, check_units
from source.db_functions.migrations import historic_sql, historic_table
from source.db_functions.quality_marks import Judgement, assess_metal

_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, PostgreSQL's binary time origin, in Unix µs
# Binary COPY: signature, flags, header extension length; per row the field count, then a
# length (-1 for NULL) and big-endian bytes per field; -1 as the trailer.
_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_TRAILER = (-1).to_bytes(2, "big", signed=True)
_NULL = (-1).to_bytes(4, "big", signed=True)
_EIGHT = (8).to_bytes(4, "big")

# Each buffer goes in one block: psycopg2 takes the GIL back for every block it sends, and the
# parsing thread may hold it 5 ms at a time while the server waits (8 KiB blocks made a
# 1M-row COPY 15x slower next to a busy thread; 1 MiB blocks still cost 0.5 s of 5).
COPY_BLOCK = 1 << 20  # the least block (a small buffer still goes in one)
STAGING_COLUMNS = 'line, "timestamp", rate_price, rate_ask'
# The historic table's columns in the loaders' order (the staged upsert writes them all).
TABLE_COLUMNS = HISTORIC_COLUMNS_SQL
# What table_buffer packs, in this order: the rest are NULL (bid, high, low, change and its
# percent) or their default (status 'success'), which the server fills in faster than it reads.
DIRECT_COLUMNS = (
    '"timestamp", metal, currency, unit, rate_price, rate_ask, source, fetched_at, raw_file'
)

# A first chunk at least this long into an empty partition goes in without the key (building
# it again costs more than it saves on a few rows, and the partition is locked meanwhile).
SET_ASIDE_ROWS = 10_000


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return len(data).to_bytes(4, "big") + data


def _none_for_nan(values: np.ndarray) -> list:
    """A float column as a list, missing values as None."""
    boxed = values.astype(object)
    boxed[np.isnan(values)] = None
    return boxed.tolist()


def _pack(parts: list[tuple[str, Any]], n: int) -> memoryview:
    """Rows from parts: ("const", bytes) repeated on every row, or (">i8"/">f8", array)."""
    fields, values = [], {}
    for i, (kind, value) in enumerate(parts):
        name = f"f{i}"
        fields.append((name, f"V{len(value)}" if kind == "const" else kind))
        values[name] = np.void(value) if kind == "const" else value
    packed = np.empty(n, dtype=np.dtype(fields))
    for name, value in values.items():
        packed[name] = value
    return memoryview(packed).cast("B")  # type: ignore[arg-type]  # numpy arrays are buffers; joined once into the COPY buffer, not copied here


def copy_in(cur, statement: str, buffer: io.BytesIO) -> None:
    """COPY a whole buffer, in one block."""
    # getvalue() returns the bytes the buffer was made from (getbuffer() would copy them).
    cur.copy_expert(statement, buffer, size=max(COPY_BLOCK, len(buffer.getvalue())))


def _times(rows: pd.DataFrame) -> np.ndarray:
    return rows["ts_us"].to_numpy(dtype="int64") - _PG_EPOCH_US


def staging_buffer(rows: pd.DataFrame) -> io.BytesIO:
    """(line, timestamp, price, ask) rows; a missing ask travels as NaN (NULL on upsert)."""
    parts = [
        ("const", (4).to_bytes(2, "big") + _EIGHT),
        (">i8", rows["line"].to_numpy(dtype="int64")),
        ("const", _EIGHT),
        (">i8", _times(rows)),
        ("const", _EIGHT),
        (">f8", rows["rate_price"].to_numpy(dtype="float64")),
        ("const", _EIGHT),
        (">f8", rows["rate_ask"].to_numpy(dtype="float64")),
    ]
    return io.BytesIO(b"".join([_HEADER, _pack(parts, len(rows)), _TRAILER]))


def table_buffer(rows: pd.DataFrame, *, metal, currency, unit, fetched_us, raw_file) -> io.BytesIO:
    """Historic-table rows (DIRECT_COLUMNS); rows without an ask get a NULL there."""
    body = []
    for has_ask, part in rows.groupby(rows["rate_ask"].notna(), sort=False):
        labels = b"".join(_text(v) for v in (metal, currency, unit))
        ask = [("const", _EIGHT), (">f8", part["rate_ask"].to_numpy(dtype="float64"))]
        parts = [
            ("const", (9).to_bytes(2, "big") + _EIGHT),
            (">i8", _times(part)),
            ("const", labels + _EIGHT),
            (">f8", part["rate_price"].to_numpy(dtype="float64")),
            *(ask if has_ask else [("const", _NULL)]),
            (
                "const",
                _text("csv")
                + _EIGHT
                + (fetched_us - _PG_EPOCH_US).to_bytes(8, "big", signed=True)
                + _text(raw_file),
            ),
        ]
        body.append(_pack(parts, len(part)))
    return io.BytesIO(b"".join([_HEADER, *body, _TRAILER]))  # one copy of the rows


class BulkWriter:
    """Writes parsed chunks of one file for one metal; call finish() once, in the transaction."""

    def __init__(
        self,
        cur,
        *,
        metal: str,
        currency: str,
        unit: str,
        raw_file: str,
        fetched_at: datetime | None = None,
    ):
        """`fetched_at` is when the rows were read (default: now; a replay gives the time of
        the import it repeats)."""
        self.cur = cur
        self.table = historic_sql(metal)
        self.labels = {"metal": metal, "currency": currency, "unit": unit, "raw_file": raw_file}
        self.metal = metal
        self.direct_rows = 0
        self.staged = False
        self.staged_last: int | None = None  # the last staged time while they all increase
        self.staged_in_order = True  # no time repeats: upsert straight from the staging table
        self.first_us: int | None = None  # the earliest time written straight in
        self.last_us: int | None = None  # the latest
        self.set_aside: KeysSetAside | None = None  # the partition's key, while dropped
        self.judgement: Judgement | None = None
        check_units(cur, metal, {(currency, unit)})
        cur.execute(
            "SELECT (extract(epoch FROM coalesce(%s, now())) * 1000000)::bigint", (fetched_at,)
        )
        self.fetched_us = cur.fetchone()[0]
        self.params = {**self.labels, "fetched_at": _when(self.fetched_us)}

    def begin(self, rows: pd.DataFrame) -> None:
        """Before the file's first rows are written (nothing else in flight on the cursor):
        what judging them in memory needs from the table."""
        if self.judgement is None and len(rows):
            if len(rows) >= SET_ASIDE_ROWS and _increasing(rows):  # else staged: keep the key
                self.set_aside = set_keys_aside(self.cur, self.table, historic_table(self.metal))
            self.judgement = Judgement(self.cur, self.metal, _when(int(rows["ts_us"].iloc[0])))

    def judge(self, rows: pd.DataFrame) -> None:
        """Judge parsed rows in memory (no database: it may run while a chunk is written)."""
        if self.judgement is None or not self.judgement.valid or not len(rows):
            return
        if not _increasing(rows):
            self.judgement.valid = False  # staged: judged as stored
            return
        times = rows["ts_us"].to_numpy(dtype="int64")
        asks = rows["rate_ask"].to_numpy(dtype="float64")
        self.judgement.add(
            (times / 1e6).tolist(),
            rows["rate_price"].to_numpy(dtype="float64").tolist(),
            _none_for_nan(asks),
        )

    def pack(self, rows: pd.DataFrame) -> io.BytesIO | None:
        """The rows as the table's COPY buffer, built by the parsing thread while the previous
        chunk is sent (the writer thread then waits for the GIL only once per chunk); None
        once the chunks are staged. No database: write() decides where the rows go."""
        if self.staged or not len(rows):
            return None
        return self._table_buffer(rows)

    def _table_buffer(self, rows: pd.DataFrame) -> io.BytesIO:
        return table_buffer(rows, fetched_us=self.fetched_us, **self.labels)

    def write(self, rows: pd.DataFrame, packed: io.BytesIO | None = None) -> None:
        """`packed`: what pack() made of these rows, if anything."""
        if not len(rows):
            return
        if not self.staged and self._cannot_collide(rows):
            first, last = int(rows["ts_us"].iloc[0]), int(rows["ts_us"].iloc[-1])  # increasing
            self.first_us = first if self.first_us is None else min(self.first_us, first)
            self.last_us = last if self.last_us is None else max(self.last_us, last)
            if packed is None:
                packed = self._table_buffer(rows)
            copy_in(
                self.cur, f"COPY {self.table} ({DIRECT_COLUMNS}) FROM STDIN (FORMAT binary)", packed
            )
            self.direct_rows += len(rows)
            return
        if not self.staged:  # from here on every chunk is staged, so the last line still wins
            self.cur.execute(
                'CREATE TEMP TABLE csv_staging (line bigint NOT NULL, "timestamp" timestamptz '
                "NOT NULL, rate_price double precision NOT NULL, rate_ask double precision) "
                "ON COMMIT DROP"
            )
            self.staged = True
        times = rows["ts_us"].to_numpy(dtype="int64")
        if self.staged_in_order:
            self.staged_in_order = (
                self.staged_last is None or times[0] > self.staged_last
            ) and _increasing(rows)
            self.staged_last = int(times[-1])
        copy_in(
            self.cur,
            f"COPY csv_staging ({STAGING_COLUMNS}) FROM STDIN (FORMAT binary)",
            staging_buffer(rows),
        )

    def _cannot_collide(self, rows: pd.DataFrame) -> bool:
        """Strictly increasing times, none stored between the first and the last."""
        if not _increasing(rows):
            return False
        times = rows["ts_us"].to_numpy(dtype="int64")
        if self.set_aside is not None:  # empty at the start: only this load wrote (no scan)
            return self.last_us is None or int(times[0]) > self.last_us
        self.cur.execute(
            f'SELECT EXISTS (SELECT 1 FROM {self.table} WHERE "timestamp" BETWEEN '
            "timestamptz 'epoch' + %s * interval '1 microsecond' "
            "AND timestamptz 'epoch' + %s * interval '1 microsecond')",
            (int(times[0]), int(times[-1])),
        )
        return not self.cur.fetchone()[0]

    def finish(self) -> tuple[UpsertCounts, int]:
        """Upsert what was staged; (inserted/updated counts, lines repeating a time)."""
        self._restore_keys()  # the upsert's ON CONFLICT needs the key, the marks find rows by it
        counts, duplicates = UpsertCounts(inserted=self.direct_rows), 0
        first = None if self.first_us is None else _when(self.first_us)
        if self.staged:
            staged, duplicates, first_changed = self._upsert_staged()
            counts += staged
            if first_changed is not None:
                first = first_changed if first is None else min(first, first_changed)
        # Vendor files carry bad ticks too: the same rules, from the first row that changed.
        if self.judgement is not None and self.judgement.valid and not self.staged:
            counts += UpsertCounts(marks=tuple(self.judgement.store(self.cur)))
        elif first is not None:
            counts += UpsertCounts(marks=tuple(assess_metal(self.cur, self.metal, first)))
        return counts, duplicates

    def _restore_keys(self) -> None:
        if self.set_aside is not None:
            self.set_aside.restore(self.cur)
            self.set_aside = None

    def _upsert_staged(self) -> tuple[UpsertCounts, int, datetime | None]:
        """(counts, lines repeating a time, the first row inserted or changed)."""
        if self.staged_in_order:
            counts, first_changed = self._upsert_in_order()
            return counts, 0, first_changed
        cur = self.cur
        cur.execute(
            """CREATE TEMP TABLE csv_rows ON COMMIT DROP AS
               SELECT DISTINCT ON ("timestamp") "timestamp", rate_price,
                      NULLIF(rate_ask, 'NaN') AS rate_ask
                 FROM csv_staging ORDER BY "timestamp", line DESC"""
        )
        kept = cur.rowcount
        cur.execute("SELECT count(*) FROM csv_staging")
        duplicates = cur.fetchone()[0] - kept
        cur.execute("ANALYZE csv_rows")
        # Bulk sources fill gaps and correct their own rows; they never replace a row that
        # came from another source (e.g. a spot quote with ask and bid at the same time).
        cur.execute(
            f"""WITH changed AS (UPDATE {self.table} AS t
                   SET rate_price = r.rate_price, rate_ask = r.rate_ask, rate_bid = NULL,
                       rate_high = NULL, rate_low = NULL, rate_change = NULL,
                       rate_change_percent = NULL, currency = %(currency)s, unit = %(unit)s,
                       fetched_at = %(fetched_at)s, raw_file = %(raw_file)s, loaded_at = now()
                  FROM csv_rows AS r
                 WHERE t."timestamp" = r."timestamp" AND t.source = 'csv'
                   AND (t.rate_price, t.rate_ask, t.rate_bid, t.rate_high, t.rate_low,
                        t.rate_change, t.rate_change_percent, t.currency, t.unit)
                       IS DISTINCT FROM (r.rate_price, r.rate_ask, NULL, NULL, NULL, NULL,
                        NULL, %(currency)s, %(unit)s)
                RETURNING t."timestamp")
                SELECT count(*), min("timestamp") FROM changed""",
            self.params,
        )
        updated, first_updated = cur.fetchone()
        cur.execute(
            f"""WITH added AS (INSERT INTO {self.table} ({TABLE_COLUMNS})
                SELECT "timestamp", %(metal)s, %(currency)s, %(unit)s, 'success', rate_price,
                       rate_ask, NULL, NULL, NULL, NULL, NULL, 'csv', %(fetched_at)s, %(raw_file)s
                  FROM csv_rows AS r
                 WHERE NOT EXISTS (SELECT 1 FROM {self.table} AS t
                                    WHERE t."timestamp" = r."timestamp")
                RETURNING "timestamp")
                SELECT count(*), min("timestamp") FROM added""",
            self.params,
        )
        inserted, first_inserted = cur.fetchone()
        changed = [t for t in (first_updated, first_inserted) if t is not None]
        counts = UpsertCounts(inserted=inserted, updated=updated)
        return counts, duplicates, min(changed) if changed else None

    def _upsert_in_order(self) -> tuple[UpsertCounts, datetime | None]:
        """No time repeats in the staging table: one INSERT ... ON CONFLICT, with the same
        rule as the two statements above (a csv row is corrected, another source's is kept).
        Rows it would leave alone are left out first by a read-only anti-join: an unchanged
        re-import then locks and writes nothing."""
        self.cur.execute("ANALYZE csv_staging")
        self.cur.execute(
            f"""WITH written AS (
                INSERT INTO {self.table} AS t ({TABLE_COLUMNS})
                SELECT "timestamp", %(metal)s, %(currency)s, %(unit)s, 'success', rate_price,
                       NULLIF(rate_ask, 'NaN'), NULL, NULL, NULL, NULL, NULL, 'csv', %(fetched_at)s,
                       %(raw_file)s
                  FROM csv_staging AS s
                 WHERE NOT EXISTS (
                       SELECT 1 FROM {self.table} AS o
                        WHERE o."timestamp" = s."timestamp"
                          AND (o.source <> 'csv'
                               OR (o.rate_price, o.rate_ask, o.rate_bid, o.rate_high, o.rate_low,
                                   o.rate_change, o.rate_change_percent, o.currency, o.unit)
                                  IS NOT DISTINCT FROM (s.rate_price, NULLIF(s.rate_ask, 'NaN'),
                                   NULL, NULL, NULL, NULL, NULL, %(currency)s, %(unit)s)))
                ON CONFLICT ("timestamp") DO UPDATE
                   SET rate_price = EXCLUDED.rate_price, rate_ask = EXCLUDED.rate_ask,
                       rate_bid = NULL, rate_high = NULL, rate_low = NULL, rate_change = NULL,
                       rate_change_percent = NULL, currency = EXCLUDED.currency,
                       unit = EXCLUDED.unit, fetched_at = %(fetched_at)s,
                       raw_file = EXCLUDED.raw_file, loaded_at = now()
                 WHERE t.source = 'csv'
                   AND (t.rate_price, t.rate_ask, t.rate_bid, t.rate_high, t.rate_low,
                        t.rate_change, t.rate_change_percent, t.currency, t.unit)
                       IS DISTINCT FROM (EXCLUDED.rate_price, EXCLUDED.rate_ask, NULL, NULL,
                        NULL, NULL, NULL, EXCLUDED.currency, EXCLUDED.unit)
                RETURNING t."timestamp", (t.xmax = 0) AS inserted)
            SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),
                   min("timestamp")
              FROM written""",
            self.params,
        )
        inserted, updated, first_changed = self.cur.fetchone()
        return UpsertCounts(inserted=inserted, updated=updated), first_changed


def _increasing(rows: pd.DataFrame) -> bool:
    """Strictly increasing times."""
    times = rows["ts_us"].to_numpy(dtype="int64")
    return len(times) < 2 or bool((np.diff(times) > 0).all())


def _when(unix_us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=unix_us)
