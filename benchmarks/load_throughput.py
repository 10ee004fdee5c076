"""Bulk-load throughput: `main.py import-csv` of a CSV of one million hourly rows, each figure
side by side with its peer in the same run: the first import (an empty table) against psql
`\\copy` of the same file into a plain table, and a re-import with nothing new against the
plain upsert (psql `\\copy` into a staging table + `INSERT ... ON CONFLICT DO UPDATE ... WHERE
changed` into the same table); the import's peak memory; and what a user would write instead
(pandas `DataFrame.to_sql(method="multi")`).

Run: python benchmarks/load_throughput.py [rows] [--rounds N] [--to-sql-rows N]
Each round runs project and peer one after the other (first import, \\copy, \\copy into the
same plain table with the primary key on its time that idempotency needs, the same rows
\\copied into the historic table's shape: the floor of that table itself, and into a narrow
table: what narrower rows would leave, re-import, upsert),
so a busy machine slows both alike; the figures are medians over the rounds. The to_sql line
needs SQLAlchemy (pip install -e '.[bench]'); without it, or with --to-sql-rows 0, that line
says "skipped". A throwaway embedded PostgreSQL unless PGHOST is set. to_sql is timed on
--to-sql-rows (default 100,000) rows and scaled linearly to the full file (it is linear: one
INSERT per 1,000-row batch).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from source.config import load_settings  # noqa: E402
from source.db_functions.migrations import connect_and_migrate  # noqa: E402

WIDE = (
    '"timestamp", metal, currency, unit, status, rate_price, rate_ask, source, fetched_at, raw_file'
)


def write_wide_csv(path: Path, wide: Path) -> None:
    """The same rows with the historic table's per-row labels, for the table's own floor."""
    frame = pd.read_csv(path, dtype=str)
    labels = {"metal": "gold", "currency": "USD", "unit": "toz", "status": "success"}
    frame = frame.assign(**labels)
    frame = frame.assign(source="csv", fetched_at="2026-01-01T00:00:00Z", raw_file=str(path))
    columns = ["time", *labels, "price", "ask", "source", "fetched_at", "raw_file"]
    frame[columns].to_csv(wide, index=False)


def write_csv(path: Path, rows: int) -> None:
    """time,price,ask: hourly UTC ISO 8601 times, a random-walk price, ask 0.02% above."""
    rng = np.random.default_rng(0)
    price = 1800 * np.exp(np.cumsum(rng.normal(0, 0.0015, rows)))
    frame = pd.DataFrame(
        {
            "time": pd.date_range("1990-01-01", periods=rows, freq="h", tz="UTC").strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "price": price.round(4),
            "ask": (price * 1.0002).round(4),
        }
    )
    frame.to_csv(path, index=False)


# The peer of a re-import: what a careful hand-written loader does for the same rows.
UPSERT = """INSERT INTO gold_historic AS t ("timestamp", metal, currency, unit, status,
    rate_price, rate_ask, source, fetched_at, raw_file)
SELECT "time", 'gold', 'USD', 'toz', 'success', price, ask, 'csv', now(), '{path}'
FROM stage
ON CONFLICT ("timestamp") DO UPDATE SET rate_price = EXCLUDED.rate_price,
    rate_ask = EXCLUDED.rate_ask, fetched_at = EXCLUDED.fetched_at, raw_file = EXCLUDED.raw_file
WHERE (t.rate_price, t.rate_ask) IS DISTINCT FROM (EXCLUDED.rate_price, EXCLUDED.rate_ask)"""
PLAIN = '("time" timestamptz, price double precision, ask double precision)'
KEYED = '("time" timestamptz PRIMARY KEY, price double precision, ask double precision)'
# What narrower rows would cost: the same key, prices, marks and defaults, but the per-row
# constants (metal, currency, unit, status, source, file name) as one load id; the load id
# and fetched_at stored on every row as the import would (here by their defaults).
NARROW = """("time" timestamptz PRIMARY KEY, price double precision NOT NULL CHECK (price > 0),
    ask double precision, bid double precision, high double precision, low double precision,
    change double precision, change_percent double precision,
    fetched_at timestamptz DEFAULT '2026-01-01T00:00:00Z', load_id integer NOT NULL DEFAULT 1,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    quality text NOT NULL DEFAULT 'ok' CHECK (quality IN ('ok', 'suspect', 'rejected')),
    quality_decision text NOT NULL DEFAULT 'rule', quality_reason text)"""


def timed(label: str, command: list[str], env: dict, cwd: str) -> tuple[float, float]:
    """(seconds, the process's peak RSS in MB)."""
    started = time.perf_counter()
    child = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"{label} failed ({child.returncode}): {child.stderr.read().strip()}")
    child.stderr.close()
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--to-sql-rows", type=int, default=100_000)
    parser.add_argument("--write", nargs=2, metavar=("CSV", "WIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_csv(Path(args.write[0]), args.rows)
        write_wide_csv(Path(args.write[0]), Path(args.write[1]))
        return
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = {
            "EMBEDDED_PG_DIR": f"{work}/pgdata",
            "LOG_DIR": f"{work}/logs",
            "DATA_DIR": f"{work}/data",
            "PGDATABASE": "bench",
        }
        env.update({k: v for k, v in os.environ.items() if k.startswith("PG")})
        settings = load_settings(env, require_api_key=False, env_file=Path(work) / "none")
        database = connect_and_migrate(settings)  # keeps an embedded server up meanwhile
        params = {**database.params}
        csv_path = Path(work) / "prices.csv"
        wide_path = Path(work) / "wide.csv"
        # Written by a child process: a forked child's peak RSS counts the parent's pages
        # until it execs, so this process stays small for the import's figure to be its own.
        here = Path(__file__).resolve()
        writing = [sys.executable, str(here), str(args.rows), "--write", str(csv_path)]
        subprocess.run([*writing, str(wide_path)], check=True)
        size_mb = csv_path.stat().st_size / 1e6
        print(f"file: {args.rows:,} rows, {size_mb:.1f} MB ({csv_path.name})")

        child_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        child_env.update(
            {"PGHOST": str(params["host"]), "PGPORT": str(params["port"]), "PGUSER": params["user"]}
        )
        importing = [sys.executable, str(REPO / "main.py"), "import-csv", str(csv_path)]
        importing += ["--metal", "gold"]
        psql = [str((database.bin_dir or Path()) / "psql") if database.bin_dir else "psql"]
        psql += ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", settings.pg_database]
        copy = f"\\copy {{}} FROM '{csv_path}' WITH (FORMAT csv, HEADER true)"

        def sql(label: str, *statements: str) -> tuple[float, float]:
            command = [*psql]
            for statement in statements:
                command += ["-c", statement]
            return timed(label, command, child_env, work)

        sql("create tables", f"CREATE TABLE floor {PLAIN}")
        sql("create tables", f"CREATE TABLE keyed {KEYED}")
        sql("create tables", "CREATE TABLE shape (LIKE gold_historic INCLUDING ALL)")
        sql("create tables", f"CREATE TABLE narrow {NARROW}")
        sql("create tables", "CREATE INDEX ON narrow (\"time\") WHERE quality <> 'ok'")
        runs: dict[str, list[float]] = {"first": [], "copy": [], "again": [], "upsert": []}
        runs["shape"], runs["narrow"], runs["keyed"] = [], [], []
        peaks = []
        for _ in range(args.rounds):
            sql("empty", "TRUNCATE gold_historic, quality_events, floor, keyed, shape, narrow")
            seconds, peak = timed("import-csv", importing, child_env, work)
            runs["first"].append(seconds)
            peaks.append(peak)
            runs["copy"].append(sql("psql \\copy", copy.format("floor"))[0])
            runs["keyed"].append(sql("psql \\copy into a keyed table", copy.format("keyed"))[0])
            wide = f"\\copy shape ({WIDE}) FROM '{wide_path}' WITH (FORMAT csv, HEADER true)"
            runs["shape"].append(sql("psql \\copy into the shape", wide)[0])
            narrow = copy.format('narrow ("time", price, ask)')
            runs["narrow"].append(sql("psql \\copy into a narrow shape", narrow)[0])
            seconds, peak = timed("import-csv again", importing, child_env, work)
            runs["again"].append(seconds)
            peaks.append(peak)
            runs["upsert"].append(
                sql(
                    "upsert",
                    f"CREATE TEMP TABLE stage {PLAIN}",
                    copy.format("stage"),
                    UPSERT.format(path=csv_path),
                )[0]
            )
        to_sql_s = None
        if args.to_sql_rows > 0:
            to_sql_s = to_sql_seconds(csv_path, params, settings.pg_database, args.to_sql_rows)
        to_sql_full = None
        if to_sql_s is not None:
            to_sql_full = to_sql_s * args.rows / min(args.to_sql_rows, args.rows)

    rows = args.rows
    median = {name: statistics.median(times) for name, times in runs.items()}
    print(
        f"{args.rounds} round(s), medians; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores"
    )
    lines = [
        ("import-csv, empty table (whole command, quality marks included)", median["first"]),
        ("  peer: psql \\copy of the same file into a plain 3-column table", median["copy"]),
        ("  the same with a primary key on the time (what idempotency needs)", median["keyed"]),
        ("  the table's floor: psql \\copy of these rows into its shape", median["shape"]),
        ("  a narrow table's floor (per-row constants as one load id)", median["narrow"]),
        ("import-csv again, nothing new", median["again"]),
        ("  peer: psql \\copy to staging + INSERT ... ON CONFLICT, same table", median["upsert"]),
        (f"pandas to_sql(method='multi') ({args.to_sql_rows:,} rows, scaled)", to_sql_full),
    ]
    for label, seconds in lines:
        if seconds is None:
            print(f"{label:<68} skipped (no SQLAlchemy, or --to-sql-rows 0)")
            continue
        print(f"{label:<68} {seconds:7.2f} s {rows / seconds:>10,.0f} rows/s")
    first = median["first"] / median["copy"]
    again = median["again"] / median["upsert"]
    print(f"first import / \\copy:        {first:5.2f}x  (target: at most 3x)")
    keyed = median["first"] / median["keyed"]
    print(f"  first import / keyed \\copy: {keyed:5.2f}x  (the peer with the primary key)")
    shape = median["shape"] / median["copy"]
    print(f"  the table's floor / \\copy:  {shape:5.2f}x  (its 15 columns and primary key)")
    print(f"  first import / that floor: {median['first'] / median['shape']:5.2f}x")
    narrow = median["narrow"] / median["copy"]
    print(f"  a narrow table's floor / \\copy: {narrow:5.2f}x  (what narrower rows leave)")
    print(f"re-import / plain upsert:    {again:5.2f}x  (target: at most 1.5x)")
    if to_sql_full is not None:
        print(f"to_sql / first import:       {to_sql_full / median['first']:5.1f}x")
    print(f"import peak RSS:             {max(peaks):5.0f} MB (target: under 400 MB)")


def to_sql_seconds(csv_path: Path, params: dict, dbname: str, rows: int) -> float | None:
    """Seconds for pandas to_sql of the first `rows` rows; None without SQLAlchemy."""
    try:
        import sqlalchemy
    except ImportError:
        return None
    frame = pd.read_csv(csv_path, nrows=rows)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    url = sqlalchemy.URL.create(
        "postgresql+psycopg2",
        username=params["user"],
        password=params.get("password"),
        host=str(params["host"]),
        port=int(params["port"]),
        database=dbname,
    )
    engine = sqlalchemy.create_engine(url)
    started = time.perf_counter()
    frame.to_sql(
        "to_sql_prices", engine, if_exists="replace", index=False, method="multi", chunksize=1000
    )
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


if __name__ == "__main__":
    main()
