"""Bulk-load throughput: `main.py import-csv` of a CSV of one million hourly rows, against the
physical floor (psql `\\copy` of the same file into a plain table) and what a user would write
instead (pandas `DataFrame.to_sql(method="multi")`), with the import's peak memory.

Run: python benchmarks/load_throughput.py [rows] [--to-sql-rows N]
The to_sql line needs SQLAlchemy (pip install -e '.[bench]'); without it that line says
"skipped" and the rest is measured. A throwaway embedded
PostgreSQL unless PGHOST is set. to_sql is timed on --to-sql-rows (default 100,000) rows and
scaled linearly to the full file (it is linear: one INSERT per 1,000-row batch).
"""

from __future__ import annotations

import argparse
import os
import resource
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


SHAPE_INSERT = """INSERT INTO shape ("timestamp", metal, currency, unit, status, rate_price,
    rate_ask, source, fetched_at, raw_file)
SELECT "time", 'gold', 'USD', 'toz', 'success', price, ask, 'csv', now(), '/tmp/prices.csv'
FROM floor"""


def timed(label: str, command: list[str], env: dict, cwd: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{label} failed ({done.returncode}): {done.stderr.strip()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--to-sql-rows", type=int, default=100_000)
    args = parser.parse_args()
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
        write_csv(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 1e6
        print(f"file: {args.rows:,} rows, {size_mb:.1f} MB ({csv_path.name})")

        child_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        child_env.update(
            {"PGHOST": str(params["host"]), "PGPORT": str(params["port"]), "PGUSER": params["user"]}
        )
        importing = [sys.executable, str(REPO / "main.py"), "import-csv", str(csv_path)]
        import_s = timed("import-csv", [*importing, "--metal", "gold"], child_env, work)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

        psql = [str((database.bin_dir or Path()) / "psql") if database.bin_dir else "psql"]
        psql += ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", settings.pg_database]
        timed(
            "create table",
            [
                *psql,
                "-c",
                "DROP TABLE IF EXISTS floor; CREATE TABLE floor "
                '("time" timestamptz, price double precision, ask double precision)',
            ],
            child_env,
            work,
        )
        copy_s = timed(
            "psql \\copy",
            [*psql, "-c", f"\\copy floor FROM '{csv_path}' WITH (FORMAT csv, HEADER true)"],
            child_env,
            work,
        )

        # What writing these rows in the historic table's shape costs the server alone: an
        # INSERT ... SELECT into an empty copy of a partition (primary key, WAL, all columns).
        shape_s = timed(
            "insert into the historic shape",
            [
                *psql,
                "-c",
                "CREATE TABLE shape (LIKE gold_historic INCLUDING ALL)",
                "-c",
                SHAPE_INSERT,
            ],
            child_env,
            work,
        )
        to_sql_s = to_sql_seconds(csv_path, params, settings.pg_database, args.to_sql_rows)
        to_sql_full = None
        if to_sql_s is not None:
            to_sql_full = to_sql_s * args.rows / min(args.to_sql_rows, args.rows)

    rows = args.rows
    lines = [
        ("import-csv (one transaction into gold_historic = analytics)", import_s),
        ("psql \\copy into a plain 3-column table (the floor)", copy_s),
        ("server-side INSERT of those rows into the historic shape", shape_s),
        (f"pandas to_sql(method='multi') ({args.to_sql_rows:,} rows, scaled)", to_sql_full),
    ]
    for label, seconds in lines:
        if seconds is None:
            print(f"{label:<64} skipped: no SQLAlchemy (pip install -e '.[bench]')")
            continue
        print(f"{label:<64} {seconds:7.1f} s {rows / seconds:>10,.0f} rows/s")
    print(f"import / \\copy floor:              {import_s / copy_s:5.2f}x  (target: within 3x)")
    print(f"import / INSERT into the same shape: {import_s / shape_s:5.2f}x")
    if to_sql_full is not None:
        ratio = to_sql_full / import_s
        print(f"to_sql / import:                    {ratio:5.1f}x  (target: >= 10x)")
    print(f"import peak RSS:                    {peak_mb:5.0f} MB (target: under 1 GB)")


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
