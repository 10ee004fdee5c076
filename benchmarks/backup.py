"""Time and size of `backups_main.py create` + `verify` for a database of one million price
rows (250,000 per metal in the historic tables, the partitions of the analytics table),
on a throwaway embedded PostgreSQL. Run: python benchmarks/backup.py [rows]"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from source.config import KNOWN_METALS, load_settings  # noqa: E402
from source.db_functions.migrations import connect_and_migrate  # noqa: E402

FILL = """
INSERT INTO {metal}_historic ("timestamp", metal, currency, unit, rate_price, rate_ask, rate_bid,
    rate_high, rate_low, rate_change, rate_change_percent, source, fetched_at)
SELECT timestamptz '2000-01-01' + make_interval(hours => i), '{metal}', 'USD', 'toz',
       p, p * 1.0002, p * 0.9998, p * 1.01, p * 0.99, p * 0.001, 0.1, 'csv', now()
FROM (SELECT i, 1000 + 100 * sin(i / 500.0) + random() AS p FROM generate_series(1, {n}) AS i) s;
"""


def main(argv: list[str]) -> None:
    rows = int(argv[0]) if argv else 1_000_000
    with tempfile.TemporaryDirectory() as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = {
            "EMBEDDED_PG_DIR": f"{work}/pgdata",
            "BACKUP_DIR": f"{work}/backups",
            "MODELS_DIR": f"{work}/models",
            "LOG_DIR": f"{work}/logs",
            "DATA_DIR": f"{work}/data",
        }
        settings = load_settings(env, require_api_key=False, env_file=Path(work) / "none")
        database = connect_and_migrate(settings)  # keeps the embedded server up for this process
        conn = database.connect()
        with conn, conn.cursor() as cur:
            for metal in KNOWN_METALS:
                cur.execute(FILL.format(metal=metal, n=rows // len(KNOWN_METALS)))
        conn.close()
        print(f"database: {rows:,} price rows in the historic tables (= the analytics table)")
        child_env = {**os.environ, **env}
        timings = {}
        for step in (["create", "--no-verify"], ["verify"]):
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, str(REPO / "backups_main.py"), *step],
                env=child_env,
                cwd=work,
                capture_output=True,
                text=True,
            )
            timings[step[0]] = time.perf_counter() - started
            if done.returncode != 0:
                sys.exit(f"{step[0]} failed: {done.stderr.strip()}")
        backup = next(p for p in Path(work, "backups").iterdir() if p.is_dir())
        dump_mb = (backup / "database.dump").stat().st_size / 1e6
        size_mb = sum(p.stat().st_size for p in backup.iterdir()) / 1e6
        print(f"backup size: {size_mb:.1f} MB (dump {dump_mb:.1f} MB)")
        for step, seconds in timings.items():
            print(f"{step:>7}: {seconds:6.1f} s  {size_mb / seconds:6.1f} MB/s")
        total = sum(timings.values())
        print(f"  total: {total:6.1f} s  (target: under 120 s)")


if __name__ == "__main__":
    main(sys.argv[1:])
