"""SIGTERM (docker stop, Kubernetes, cron) while rows wait on the database: what was queued is
loaded within a bounded time, and the ledger says exactly what happened and what the process
returned."""

import signal
import subprocess
import sys

from source.load import DRAIN_SECONDS
from tests.conftest import REPO
from tests.test_pipeline import ONE_ROW_EACH, counts, files
from tests.test_reliability import wait_for


def _start_blocked_run(run_main, database, *args):
    """A run whose four landed responses wait on a lock another session holds."""
    run_main("--no-train", "--metals", "gold")  # the schema exists
    database.query("DELETE FROM gold_historic")
    database.query("DELETE FROM pipeline_runs")
    blocker = database.connect()
    cur = blocker.cursor()
    cur.execute("LOCK TABLE commodities_price_data_analytics IN ACCESS EXCLUSIVE MODE")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "--no-train", *args],
        cwd=run_main.cwd,
        env=run_main.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: len(files(run_main.cwd, "incoming")) == 4)
    wait_for(lambda: database.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    ) == 1)
    return process, blocker


def _ledger(database):
    return database.query(
        "SELECT status, exit_code, rows_inserted FROM pipeline_runs ORDER BY run_id"
    )


def test_sigterm_loads_what_was_queued_and_the_ledger_says_143(run_main, database):
    process, blocker = _start_blocked_run(run_main, database)
    process.send_signal(signal.SIGTERM)
    blocker.rollback()  # the lock goes within the drain time: every queued row loads
    blocker.close()
    assert process.wait(timeout=60) == 143
    assert counts(database) == ONE_ROW_EACH
    assert not files(run_main.cwd, "incoming")
    assert len(files(run_main.cwd, "loaded")) == 5  # with the first run's gold
    assert _ledger(database) == [("interrupted", 143, 4)]


def test_sigterm_with_the_database_stuck_gives_up_after_the_drain_time(run_main, database):
    process, blocker = _start_blocked_run(run_main, database)
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=DRAIN_SECONDS * 2 + 30) == 143
        stderr = process.stderr.read()
    finally:
        blocker.rollback()
        blocker.close()
    assert "Traceback" not in stderr
    assert counts(database)["analytics"] == 0
    assert len(files(run_main.cwd, "incoming")) == 4  # kept for the next run
    assert _ledger(database) == [("interrupted", 143, 0)]  # closed after the loader stopped
    assert "load cancelled as the run stops, raw file kept" in run_main.log_text()
    database.query("SELECT pg_sleep(0.5)")  # a loader still alive would commit about now
    assert counts(database)["analytics"] == 0
    assert run_main("--no-train").returncode == 0
    assert counts(database) == ONE_ROW_EACH


def test_a_backfill_stopped_by_sigterm_records_exit_143(run_main, database, sandbox):
    run_main("--no-train", "--metals", "gold")
    database.query("DELETE FROM pipeline_runs")
    sandbox.requests.clear()
    sandbox.delay = 3  # every window is in flight when the signal comes
    process = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "backfill", "--start", "2024-01-01",
         "--end", "2024-03-01"],
        cwd=run_main.cwd, env=run_main.env, stderr=subprocess.PIPE, text=True,
    )
    wait_for(lambda: len(sandbox.requests) >= 1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    (status, exit_code, _rows), = _ledger(database)
    assert (status, exit_code) == ("interrupted", 143)
