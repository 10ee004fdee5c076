"""The readers and the hourly run against their peers, on ten years of hourly history for every
metal: `status` vs its SQL through psql, `report` vs its SQL through psql, and the hourly run
with no new quote (training on) vs the same run with --no-train. Runs alternate; medians.

Run: python benchmarks/commands.py [--years 10] [--runs 5] [--keep DIR]
A throwaway embedded PostgreSQL and the local sandbox API (its clock fixed, so every hourly run
after the first finds no new quote). "Its SQL" is the exact statements the command sent,
recorded from a run of the same code in this process, replayed by psql in one session.
With --keep DIR the database and models are kept in DIR and reused by the next run.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from source.config import DEFAULT_METALS, load_settings  # noqa: E402
from source.db_functions.migrations import connect_and_migrate  # noqa: E402
from source.sandbox import BASE_PRICES, SandboxServer  # noqa: E402

NOW = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)  # a Wednesday: the sandbox's fixed clock
API_KEY = "benchmark-key"


def write_history(path: Path, metal: str, years: int) -> int:
    """time,price,ask: every trading hour of `years` years up to the hour before NOW."""
    end = NOW.replace(minute=0) - timedelta(hours=1)
    hours = pd.date_range(end=end, periods=years * 365 * 24, freq="h", tz="UTC")
    weekday, hour = hours.weekday, hours.hour
    closed = (weekday == 5) | ((weekday == 4) & (hour >= 22)) | ((weekday == 6) & (hour < 22))
    hours = hours[~closed]
    rng = np.random.default_rng(sum(map(ord, metal)))
    walk = np.cumsum(rng.normal(0, 0.0015, len(hours)))
    price = BASE_PRICES[metal] * np.exp(walk - walk[-1])  # ends near the sandbox's level
    frame = pd.DataFrame(
        {
            "time": hours.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "price": price.round(4),
            "ask": (price * 1.0005).round(4),
        }
    )
    frame.to_csv(path, index=False)
    return len(frame)


def run(command: list[str], env: dict, cwd: Path, ok=(0, 1)) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in ok:
        sys.exit(f"{' '.join(command[1:3])} failed ({done.returncode}): {done.stderr.strip()}")
    return seconds


def recorded_sql(settings, produce) -> str:
    """The statements `produce()` sends, mogrified, as one psql script."""
    import psycopg2
    from psycopg2.extras import LoggingConnection

    statements: list[str] = []

    class Recorder(LoggingConnection):
        def filter(self, msg, curs):
            statements.append(msg.decode() if isinstance(msg, bytes) else msg)
            return msg

    connect = psycopg2.connect

    def recording(*args, **kwargs):
        conn = connect(*args, connection_factory=Recorder, **kwargs)
        conn.initialize(open(os.devnull, "w"))  # noqa: SIM115
        return conn

    psycopg2.connect = recording
    try:
        produce()
    finally:
        psycopg2.connect = connect
    lines = [s.strip().rstrip(";") + ";" for s in statements if s.strip()]
    return "\\o /dev/null\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the database here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        work = (args.keep or Path(scratch)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        fresh = not (work / "trained_models").exists()
        with SandboxServer(api_key=API_KEY, clock=lambda: NOW) as sandbox:
            measure(args, work, fresh, sandbox)


def measure(args, work: Path, fresh: bool, sandbox: SandboxServer) -> None:
    env = {
        "EMBEDDED_PG_DIR": str(work / "pgdata"),
        "LOG_DIR": str(work / "logs"),
        "DATA_DIR": str(work / "data"),
        "MODELS_DIR": str(work / "trained_models"),
        "BACKUP_DIR": str(work / "backups"),
        "PGDATABASE": "bench",
    }
    settings = load_settings(env, require_api_key=False, env_file=work / "none")
    database = connect_and_migrate(settings)  # keeps an embedded server up meanwhile
    params = database.params
    # Bytecode cached as in the image (compiled at build) and any normal install: without it
    # every command would compile its modules again (~0.1 s for status).
    dropped = ("PG", "METALS", "EMBEDDED", "PYTHONDONTWRITEBYTECODE")
    child = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    child |= env | {
        "PYTHONPATH": str(REPO),
        "PGHOST": str(params["host"]),
        "PGPORT": str(params["port"]),
        "PGUSER": params["user"],
        "METALS_DEV_API_KEY": API_KEY,
        "METALS_DEV_BASE_URL": sandbox.base_url,
    }
    main_py = [sys.executable, str(REPO / "main.py")]
    if fresh:
        for metal in DEFAULT_METALS:
            csv_path = work / f"{metal}.csv"
            rows = write_history(csv_path, metal, args.years)
            seconds = run([*main_py, "import-csv", str(csv_path), "--metal", metal], child, work)
            print(f"imported {rows:,} hourly rows of {metal} in {seconds:.1f} s")
        seconds = run(main_py, child, work)  # the first hourly run: a new quote, models trained
        print(f"first hourly run (new quote, all models trained): {seconds:.1f} s")

    psql = [str(database.bin_dir / "psql") if database.bin_dir else "psql"]
    psql += ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", settings.pg_database]
    reader = settings.with_metals(None)
    status_sql = work / "status.sql"
    report_sql = work / "report.sql"
    status_sql.write_text(recorded_sql(reader, lambda: _status(reader)))
    report_sql.write_text(recorded_sql(reader, lambda: _report_queries(reader)))

    pairs = {
        "status": ([*main_py, "status"], [*psql, "-f", str(status_sql)]),
        "report": (
            [*main_py, "report", "--out", str(work / "report")],
            [*psql, "-f", str(report_sql)],
        ),
        "hourly, no new quote": (main_py, [*main_py, "--no-train"]),
    }
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pairs}
    for ours, peer in pairs.values():  # one round not counted: bytecode, caches
        run(ours, child, work), run(peer, child, work)
    for _ in range(args.runs):
        for name, (ours, peer) in pairs.items():
            times[name][0].append(run(ours, child, work))
            times[name][1].append(run(peer, child, work))
    targets = {"status": "0.4 s", "report": "1 s", "hourly, no new quote": "2x --no-train"}
    peers = {
        "status": "its SQL through psql",
        "report": "its SQL through psql",
        "hourly, no new quote": "the same run, --no-train",
    }
    print(f"{args.years} years of hourly history per metal, {args.runs} alternating runs, medians")
    print(f"{'command':<22} {'time':>7}  {'peer':<26} {'time':>7} {'ratio':>6}  target")
    for name, (ours, peer) in times.items():
        a, b = statistics.median(ours), statistics.median(peer)
        print(f"{name:<22} {a:6.2f}s  {peers[name]:<26} {b:6.2f}s {a / b:5.1f}x  {targets[name]}")


def _status(settings) -> None:
    from source.status import collect

    collect(settings, NOW)


def _report_queries(settings) -> None:
    from source.report.history import price_history
    from source.status import collect

    collect(settings, NOW)
    price_history(settings, NOW)


if __name__ == "__main__":
    main()
