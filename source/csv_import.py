"""The CSV import stage: read a vendor file of historic prices in chunks, validate each line,
COPY the good ones through a staging table and upsert them into one metal's tables, all in
one transaction per file. Memory stays bounded by the chunk size, whatever the file's size."""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import psycopg2

from source.db_functions.loaders import UpsertCounts
from source.db_functions.staging import BulkWriter
from source.errors import EXIT_USAGE, ReportableError, first_line
from source.log_setup import in_this_context
from source.progress import progress_bar

log = logging.getLogger(__name__)

CHUNK_ROWS = 50_000
DELIMITERS = ",;\t"
TIME_NAMES = ("timestamp", "time", "datetime", "date")
PRICE_NAMES = ("price", "rate_price", "close", "value")
ASK_NAMES = ("ask", "rate_ask")
MAX_BAD_LINES_KEPT = 1_000  # listed one by one; beyond that only counted


class ImportUsageError(ReportableError):
    """Options that do not fit the file (missing column, unknown zone...): exit 2."""

    exit_code = EXIT_USAGE


class ImportFailed(ReportableError):
    """The file was refused as a whole (--strict with bad lines, or a broken CSV): exit 1."""


@dataclass(frozen=True)
class CsvLayout:
    time_column: str | None = None
    date_column: str | None = None
    price_column: str | None = None
    ask_column: str | None = None
    time_format: str | None = None
    tz: str = "UTC"
    delimiter: str | None = None
    header: bool = True


@dataclass
class ImportReport:
    path: Path
    metal: str
    rows_read: int = 0
    blank_lines: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    bad_count: int = 0
    duplicates: int = 0
    counts: UpsertCounts = UpsertCounts()

    @property
    def rows_loaded(self) -> int:
        return self.counts.inserted + self.counts.updated

    def summary(self) -> str:
        text = (
            f"{self.path.name} -> {self.metal}: {self.rows_read:,} row(s) read, "
            f"{self.counts.inserted:,} inserted, {self.counts.updated:,} updated, "
            f"{self.rows_read - self.bad_count - self.duplicates - self.rows_loaded:,} "
            f"unchanged, {self.bad_count:,} bad line(s) skipped"
        )
        if self.duplicates:
            text += f", {self.duplicates:,} repeated time(s) (last line wins)"
        if self.counts.suspects:
            text += f", {self.counts.suspects:,} marked suspect (see `main.py quality`)"
        return text

    def first_bad(self) -> str:
        line, reason = self.bad_lines[0]
        return f"line {line}: {reason}"


# -- reading --------------------------------------------------------------------------------


def detect_delimiter(sample: str) -> str:
    """Comma, semicolon or tab, from the first lines of the file."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        first = sample.splitlines()[0] if sample else ""
        return max(DELIMITERS, key=first.count)


def _pick(names: list[str], wanted: str | None, defaults: tuple[str, ...], role: str):
    """The header name for a role: the one given, else the first default present."""
    lowered = {name.strip().lower(): name for name in names}
    if wanted is not None:
        if wanted in names:
            return wanted
        if wanted.strip().lower() in lowered:
            return lowered[wanted.strip().lower()]
        raise ImportUsageError(
            f"no column {wanted!r} for {role}; the header has: {', '.join(names)}"
        )
    for name in defaults:
        if name in lowered:
            return lowered[name]
    return None


def _position(value: str | None, role: str, default: int | None, width: int) -> int | None:
    """A 1-based column number (--no-header) as a 0-based index."""
    if value is None:
        return None if default is None else default - 1
    if not value.isdigit() or not 1 <= int(value) <= width:
        raise ImportUsageError(
            f"with --no-header, {role} must be a column number from 1 to {width}, got {value!r}"
        )
    return int(value) - 1


def resolve_columns(first_row: list[str], layout: CsvLayout) -> dict[str, object]:
    """Map roles (time, date, price, ask) to header names, or 0-based positions."""
    if layout.header:
        time_default = () if layout.date_column else TIME_NAMES
        roles = {
            "time": _pick(first_row, layout.time_column, time_default, "--time-column"),
            "date": _pick(first_row, layout.date_column, (), "--date-column"),
            "price": _pick(first_row, layout.price_column, PRICE_NAMES, "--price-column"),
            "ask": _pick(first_row, layout.ask_column, ASK_NAMES, "--ask-column"),
        }
    else:
        width = len(first_row)
        roles = {
            "time": _position(
                layout.time_column, "--time-column", None if layout.date_column else 1, width
            ),
            "date": _position(layout.date_column, "--date-column", None, width),
            "price": _position(layout.price_column, "--price-column", 2, width),
            "ask": _position(layout.ask_column, "--ask-column", None, width),
        }
    if roles["time"] is None and roles["date"] is None:
        raise ImportUsageError(
            f"no time column found (looked for {', '.join(TIME_NAMES)}); name it with "
            "--time-column (or --date-column)"
        )
    if roles["price"] is None:
        raise ImportUsageError(
            f"no price column found (looked for {', '.join(PRICE_NAMES)}); name it with "
            "--price-column"
        )
    return {role: column for role, column in roles.items() if column is not None}


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ImportUsageError(
            f"--tz {name!r} is not a time zone (e.g. UTC, Europe/London)"
        ) from None


# -- parsing (pure) -------------------------------------------------------------------------


def parse_times(text: pd.Series, time_format: str | None, zone: ZoneInfo) -> pd.Series:
    """Strings -> UTC timestamps (NaT where unparseable or, for local times, not unique)."""
    fmt = time_format or "ISO8601"
    try:
        times = pd.to_datetime(text, format=fmt, errors="coerce")
    except ValueError:  # offsets that differ within the chunk
        return pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    if times.dt.tz is None:
        return times.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    return times.dt.tz_convert("UTC")


def _number_problem(raw, what: str, optional: bool) -> str:
    """Why one value is unusable ('' when fine); only called for the few bad lines."""
    if raw is None or (isinstance(raw, float) and np.isnan(raw)) or str(raw).strip() == "":
        return "" if optional else f"{what} is missing"
    try:
        value = float(raw)
    except ValueError:
        return f"{what} {raw!r} is not a number"
    if not np.isfinite(value):
        return f"{what} {raw!r} is not finite"
    return f"{what} {raw!r} is not positive" if value <= 0 else ""


def _usable(values: pd.Series) -> pd.Series:
    return values.notna() & np.isfinite(values.fillna(0)) & (values > 0)


def parse_chunk(
    chunk: pd.DataFrame, first_line: int, roles: dict, layout: CsvLayout, zone: ZoneInfo
) -> tuple[pd.DataFrame, list[tuple[int, str]], int]:
    """Validate one chunk: (good rows as STAGING_COLUMNS, [(line, reason)], blank lines)."""
    lines = np.arange(first_line, first_line + len(chunk))
    blank = chunk.isna().all(axis=1).to_numpy()
    chunk, lines = chunk[~blank], lines[~blank]
    if "date" in roles and "time" in roles:
        text = chunk[roles["date"]] + " " + chunk[roles["time"]]
    else:
        text = chunk[roles.get("time", roles.get("date"))]
    times = parse_times(text, layout.time_format, zone)
    price = pd.to_numeric(chunk[roles["price"]], errors="coerce")
    usable = times.notna() & _usable(price)
    ask = pd.Series(np.nan, index=chunk.index)
    if "ask" in roles:
        ask = pd.to_numeric(chunk[roles["ask"]], errors="coerce")
        usable &= chunk[roles["ask"]].isna() | _usable(ask)
    ok = usable.to_numpy()
    bad = []
    for position in np.flatnonzero(~ok):
        row = chunk.iloc[position]
        reason = _number_problem(row[roles["price"]], "price", optional=False)
        if not reason and "ask" in roles:
            reason = _number_problem(row[roles["ask"]], "ask", optional=True)
        if pd.isna(times.iloc[position]):
            reason = f"time {text.iloc[position]!r} is not a valid time"
        bad.append((int(lines[position]), reason))
    good = pd.DataFrame(
        {
            "line": lines[ok],
            "ts_us": times[ok].dt.as_unit("us").astype("int64").to_numpy(),
            "rate_price": price[ok].to_numpy(),
            "rate_ask": ask[ok].to_numpy(),
        }
    )
    return good, bad, int(blank.sum())


# -- the file -------------------------------------------------------------------------------


def _first_row_and_delimiter(path: Path, layout: CsvLayout) -> tuple[list[str], str]:
    try:
        with open(path, "rb") as handle:
            head = handle.read(64 * 1024)
    except OSError as exc:
        raise ImportUsageError(f"cannot read {path}: {exc.strerror}") from None
    sample = _text(path, head)
    if not sample.strip():
        raise ImportUsageError(f"{path} is empty")
    delimiter = layout.delimiter or detect_delimiter(sample)
    first_row = next(csv.reader(sample.splitlines()[:1], delimiter=delimiter))
    return first_row, delimiter


def _text(path: Path, head: bytes) -> str:
    """The file's first bytes as text; a compressed or binary file is refused in one line."""
    if head.startswith(b"\x1f\x8b") or head.startswith(b"PK\x03\x04"):
        raise ImportUsageError(f"{path} is compressed (gzip or zip); decompress it first")
    try:
        # A multi-byte character may be cut at the end of the sample: that alone is fine.
        text = head.decode("utf-8-sig", errors="strict" if len(head) < 64 * 1024 else "ignore")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise ImportUsageError(f"{path} is not a UTF-8 text file; export it as UTF-8 CSV")
    return text


def read_chunks(path: Path, layout: CsvLayout, chunk_rows: int) -> Iterator[tuple]:
    """(chunk, its first line number in the file, roles, bytes read so far).

    Prices are read as numbers by the CSV parser itself (the common clean file: no Python
    string per value); from the first chunk with a value that is not a usable number (or that
    the parser refuses), chunks come as strings, so each bad line gets its reason."""
    first_row, delimiter = _first_row_and_delimiter(path, layout)
    roles = resolve_columns(first_row, layout)
    numbers = [roles[role] for role in ("price", "ask") if role in roles]
    fast = _chunks(path, layout, chunk_rows, roles, delimiter, numbers)
    done, as_numbers = 0, True  # chunks passed on; all of them read as numbers
    try:
        for chunk, line, position in fast:
            if not _clean(chunk, roles):
                as_numbers = False
                break
            yield chunk, line, roles, position
            done += 1
    except (ValueError, UnicodeDecodeError):  # the strings say which line and why
        as_numbers = False
    finally:
        fast.close()
    if as_numbers:
        return
    line = 2 if layout.header else 1  # where the chunk being read starts
    try:
        for index, (chunk, first, position) in enumerate(
            _chunks(path, layout, chunk_rows, roles, delimiter, [])
        ):
            if index >= done:
                yield chunk, first, roles, position
            line = first + len(chunk)
    except pd.errors.ParserError as exc:
        raise ImportFailed(f"{path.name} is not a well-formed CSV: {exc}".strip()) from None
    except UnicodeDecodeError:
        raise ImportUsageError(
            f"{path} is not a UTF-8 text file (an invalid byte after line {line}); "
            "export it as UTF-8 CSV"
        ) from None


def _chunks(path, layout, chunk_rows, roles, delimiter, numbers) -> Generator[tuple, None, None]:
    """(chunk, its first line, bytes read so far); `numbers`: columns read as float64."""
    dtype = {column: object for column in roles.values()}
    dtype.update({column: "float64" for column in numbers})
    with open(path, "rb") as raw:
        reader = pd.read_csv(
            raw,
            sep=delimiter,
            header=0 if layout.header else None,
            usecols=sorted(set(roles.values()), key=str),
            dtype=dtype,
            skipinitialspace=True,
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
            chunksize=chunk_rows,
            encoding="utf-8-sig",
        )
        line = 2 if layout.header else 1
        for chunk in reader:
            yield chunk, line, raw.tell()
            line += len(chunk)


def _clean(chunk: pd.DataFrame, roles: dict) -> bool:
    """Every non-blank line's price usable, its ask empty or usable (read as numbers)."""
    lines = chunk[~chunk.isna().all(axis=1)]
    ok = _usable(lines[roles["price"]])
    if "ask" in roles:
        ok &= lines[roles["ask"]].isna() | _usable(lines[roles["ask"]])
    return bool(ok.all())


def import_file(
    conn,
    path: Path,
    metal: str,
    layout: CsvLayout,
    *,
    currency: str,
    unit: str,
    strict: bool,
    chunk_rows: int = CHUNK_ROWS,
    raw_file: str | None = None,
    fetched_at: datetime | None = None,
) -> ImportReport:
    """Stream, validate and COPY (straight in, or via staging + upsert), one transaction.
    `raw_file` and `fetched_at` are the file the rows name as theirs and when it was read
    (default: `path`, now; a restore replaying a kept copy gives the original's)."""
    named = {"raw_file": raw_file or str(path.resolve()), "fetched_at": fetched_at}
    try:
        return _import(conn, path, metal, layout, currency, unit, strict, chunk_rows, named)
    except psycopg2.Error as exc:
        # A lost connection surfaces as "connection already closed" from the rollback; the
        # reason is the error that came before it.
        cause = exc.__context__ if isinstance(exc, psycopg2.InterfaceError) else exc
        raise ImportFailed(
            f"{path.name}: nothing loaded, the database failed: {first_line(cause or exc)}"
        ) from None


def _import(conn, path, metal, layout, currency, unit, strict, chunk_rows, named) -> ImportReport:
    zone = _zone(layout.tz)
    report = ImportReport(path=path, metal=metal)
    size = path.stat().st_size
    progress = progress_bar(total=size, unit="B", unit_scale=True, desc=path.name)
    started = time.monotonic()
    # One worker thread writes chunk n while this thread parses chunk n+1 (the server's
    # insert time then hides the parsing); at most two chunks are in memory.
    with conn, conn.cursor() as cur, progress as bar, ThreadPoolExecutor(1, "copy") as copier:
        writer = BulkWriter(cur, metal=metal, currency=currency, unit=unit, **named)
        in_flight = None
        for chunk, first_line, roles, position in read_chunks(path, layout, chunk_rows):
            good, bad, blank = parse_chunk(chunk, first_line, roles, layout, zone)
            report.rows_read += len(chunk) - blank
            report.blank_lines += blank
            report.bad_count += len(bad)
            report.bad_lines.extend(bad[: MAX_BAD_LINES_KEPT - len(report.bad_lines)])
            packed = writer.pack(good)  # while the previous chunk is sent
            if in_flight is not None:
                in_flight.result()  # raises what the writer raised
            writer.begin(good)
            in_flight = copier.submit(in_this_context(writer.write), good, packed)
            writer.judge(good)  # in memory, while the server copies
            bar.update(position - bar.n)
        if in_flight is not None:
            in_flight.result()
        if report.rows_read == 0:
            raise ImportUsageError(f"{path} has a header but no rows; nothing loaded")
        if strict and report.bad_count:
            raise ImportFailed(
                f"{report.bad_count:,} bad line(s) in {path.name}, first {report.first_bad()}; "
                "nothing loaded (--strict)"
            )
        log.info(
            "%s: %d line(s) parsed and copied in %.1fs",
            path.name,
            report.rows_read,
            time.monotonic() - started,
        )
        started = time.monotonic()
        report.counts, report.duplicates = writer.finish()
        log.info(
            "%s: upserted into %s_historic and the analytics table in %.1fs",
            path.name,
            metal,
            time.monotonic() - started,
        )
    return report
