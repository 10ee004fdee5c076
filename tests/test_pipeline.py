"""End to end: main.py as a subprocess against the local sandbox and a real PostgreSQL."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import REPO, TEST_API_KEY, held_lock

METALS = ("gold", "silver", "platinum", "palladium")
ONE_ROW_EACH = {"gold": 1, "silver": 1, "platinum": 1, "palladium": 1, "analytics": 4}
ALL_BUT_SILVER = {"gold": 1, "silver": 0, "platinum": 1, "palladium": 1, "analytics": 3}


def counts(database) -> dict[str, int]:
    result = {m: database.scalar(f"SELECT count(*) FROM {m}_historic") for m in METALS}
    result["analytics"] = database.scalar("SELECT count(*) FROM commodities_price_data_analytics")
    return result


def wait_for_analytics_rows(database, wanted: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if database.scalar("SELECT count(*) FROM commodities_price_data_analytics") >= wanted:
                return
        except psycopg2.errors.UndefinedTable:
            pass  # the run has not migrated yet
        time.sleep(0.1)
    raise AssertionError(f"fewer than {wanted} analytics rows after {seconds}s")


def files(root: Path, area: str) -> list[Path]:
    return sorted((root / "source" / "data" / area).rglob("*.json"))


def test_one_run_loads_one_row_per_metal_everywhere(run_main, database, sandbox):
    result = run_main("--no-train")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # under cron (no TTY) a good run is silent: no mail
    assert counts(database) == ONE_ROW_EACH

    quote = sandbox.prices.quote("gold", sandbox.current_hour())
    columns = '"timestamp", rate_price, rate_ask, rate_bid, source, currency, unit'
    row = database.query(f"SELECT {columns} FROM gold_historic")[0]
    assert row[0].isoformat().startswith(quote["timestamp"][:19])
    assert row[1:4] == (quote["rate"]["price"], quote["rate"]["ask"], quote["rate"]["bid"])
    assert row[4:] == ("api", "USD", "toz")

    loaded = files(run_main.cwd, "loaded")
    assert len(loaded) == 4 and not files(run_main.cwd, "incoming")
    assert json.loads(loaded[0].read_text())["status"] == "success"

    status, ok, inserted = database.query(
        "SELECT status, metals_ok, rows_inserted FROM pipeline_runs"
    )[0]
    assert (status, sorted(ok), inserted) == ("success", sorted(METALS), 4)
    log = run_main.log_text()
    for metal in METALS:
        assert f"{metal}: 1 row(s) inserted" in log
        assert f"{metal}: landed" in log


def test_rerun_adds_nothing_and_a_new_quote_adds_one_row_per_metal(run_main, database, sandbox):
    assert run_main("--no-train").returncode == 0
    first = counts(database)
    assert run_main("--no-train").returncode == 0
    assert counts(database) == first

    sandbox.hour_offset += 1  # the market moves on: a new quote timestamp
    assert run_main("--no-train").returncode == 0
    assert counts(database) == {k: v * 2 for k, v in first.items()}
    assert database.scalar("SELECT count(*) FROM pipeline_runs WHERE status = 'success'") == 3


@pytest.mark.parametrize(
    ("body", "logged"),
    [
        (b"<html>not json</html>", "silver: GET /metal/spot: HTTP 200, body is not JSON"),
        (b'{"status": "success", "metal": "silver"}', "silver: GET /metal/spot: missing field"),
        (
            b'{"status": "failure", "error_code": 1001, "error_message": "bad"}',
            "silver: GET /metal/spot: API error 1001: bad",
        ),
    ],
    ids=["not-json", "missing-fields", "api-error"],
)
def test_one_failing_metal_gives_exit_3_and_the_others_load(
    run_main, database, sandbox, body, logged
):
    sandbox.add_fault("silver", 200, body)
    result = run_main("--no-train")
    assert result.returncode == 3
    assert "silver" in result.stderr
    assert counts(database) == ALL_BUT_SILVER
    assert logged in run_main.log_text()
    rejected = files(run_main.cwd, "rejected")
    assert [p.read_bytes() for p in rejected] == [body]
    assert database.query("SELECT status, metals_failed FROM pipeline_runs") == [
        ("partial", ["silver"])
    ]


def test_a_metal_is_committed_to_both_tables_or_neither(run_main, database):
    # Make the analytics insert fail for silver only, after its historic insert succeeded.
    run_main("--no-train", "--metals", "gold")  # creates the schema
    database.query(
        """CREATE FUNCTION refuse_silver() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.metal = 'silver' THEN RAISE EXCEPTION 'analytics refused'; END IF;
           RETURN NEW; END $$;
           CREATE TRIGGER refuse_silver BEFORE INSERT ON commodities_price_data_analytics
           FOR EACH ROW EXECUTE FUNCTION refuse_silver();"""
    )
    result = run_main("--no-train")
    assert result.returncode == 3
    assert database.scalar("SELECT count(*) FROM silver_historic") == 0
    assert database.scalar("SELECT count(*) FROM platinum_historic") == 1
    assert "silver: load failed, raw file kept for the next run: analytics refused" in (
        run_main.log_text()
    )
    assert any("_spot_silver" in p.name for p in files(run_main.cwd, "incoming"))


def test_invalid_key_is_a_configuration_error(run_main, database):
    result = run_main("--no-train", METALS_DEV_API_KEY="not-the-right-key")
    assert result.returncode == 2
    assert "1101" in run_main.log_text()
    assert counts(database)["analytics"] == 0


def test_the_key_never_reaches_logs_or_landed_files(run_main, sandbox):
    sandbox.add_fault("gold", 500, b"down")  # retries and errors are logged too
    run_main("--no-train")
    run_main("--metals", "silver", "--no-train", METALS_DEV_BASE_URL="http://127.0.0.1:9/v1")
    written = [p for p in run_main.cwd.rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in written)
    for path in written:
        assert TEST_API_KEY.encode() not in path.read_bytes(), path


def test_fetches_overlap_in_time(run_main, sandbox):
    sandbox.delay = 0.6
    assert run_main("--no-train").returncode == 0
    spot = [r for r in sandbox.requests if r["path"] == "/v1/metal/spot"]
    assert len(spot) == 4
    assert max(r["start"] for r in spot) < min(r["end"] for r in spot), (
        "fetches ran one after another"
    )


def test_database_down_keeps_responses_and_the_next_run_loads_them(run_main, database):
    down = run_main("--no-train", PGPORT="1", PGHOST="127.0.0.1")
    assert down.returncode == 1
    (line,) = down.stderr.strip().splitlines()  # what cron mails: one line
    assert line.startswith("main.py: 0/4 metals loaded") and "database: cannot connect" in line
    assert len(files(run_main.cwd, "incoming")) == 4  # fetched and landed, nothing lost

    up = run_main("--no-train", "--metals", "gold")
    assert up.returncode == 0, up.stderr
    assert counts(database) == ONE_ROW_EACH
    assert not files(run_main.cwd, "incoming")
    assert "replaying" in run_main.log_text()


def test_a_second_run_while_one_holds_the_lock_exits_75(run_main, database):
    lock_path = run_main.cwd / "source" / "data" / ".pipeline.lock"
    lock_path.parent.mkdir(parents=True)
    with held_lock(lock_path):
        result = run_main("--no-train")
    assert result.returncode == 75
    assert "another run holds the lock" in result.stderr
    assert not files(run_main.cwd, "incoming")  # it fetched nothing
    assert database.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'gold_historic'") == 0


@pytest.mark.parametrize("metals", ["gold,silver", "palladium"])
def test_metals_option_limits_the_run(run_main, database, metals):
    assert run_main("--metals", metals, "--no-train").returncode == 0
    assert database.scalar("SELECT count(*) FROM commodities_price_data_analytics") == len(
        metals.split(",")
    )


def test_daily_log_file_is_appended_by_later_runs(run_main):
    run_main("--no-train")
    run_main("--no-train")
    (log_file,) = (run_main.cwd / "logs").glob("pipeline-*.log")
    assert log_file.read_text().count("run finished") == 2


def test_the_database_going_away_mid_run_is_one_line_and_nothing_is_lost(
    run_main, database, sandbox
):
    assert run_main("--no-train", "--metals", "gold").returncode == 0  # the schema exists
    sandbox.hour_offset += 1
    sandbox.delay = 1.5  # the run has connected and is waiting for the answers
    asked = []
    sandbox.on_request = lambda path, params: asked.append(path)
    run = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "--no-train"],
        cwd=run_main.cwd,
        env=run_main.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(asked) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    # The server refuses this database from now on and drops the run's connections.
    admin = psycopg2.connect(dbname="postgres", **database.server)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"ALTER DATABASE {database.name} ALLOW_CONNECTIONS false")
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database.name,),
            )
        started = time.monotonic()
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 1
        assert time.monotonic() - started < 30  # no waiting on the database metal by metal
        (line,) = stderr.strip().splitlines()
        assert line.startswith("main.py: 0/4 metals loaded") and "database: " in line
        assert len(files(run_main.cwd, "incoming")) == 4
    finally:
        with admin.cursor() as cur:
            cur.execute(f"ALTER DATABASE {database.name} ALLOW_CONNECTIONS true")
        admin.close()
    sandbox.delay = 0
    assert run_main("--no-train").returncode == 0
    assert counts(database)["analytics"] == 1 + 4  # the landed hour, then nothing new
    assert not files(run_main.cwd, "incoming")


def test_too_little_history_skips_training_with_a_warning(run_main):
    result = run_main()
    assert result.returncode == 0, result.stderr
    assert "model skipped, too little data" in run_main.log_text()
    # On the console (and so in cron's mail) one line for all eight, not eight lines.
    (line,) = result.stderr.strip().splitlines()
    assert "8 model(s) skipped, too little data yet" in line
    assert not (run_main.cwd / "trained_models").exists()


def test_train_command_needs_a_reachable_database(run_main):
    result = run_main("train", PGHOST="127.0.0.1", PGPORT="1")
    assert result.returncode == 1
    assert result.stderr.startswith("main.py: cannot connect to PostgreSQL at 127.0.0.1:1")
    assert result.stderr.count("\n") == 1
    assert "cannot connect to PostgreSQL" in run_main.log_text()


def test_a_run_killed_half_way_loses_nothing_and_the_next_run_completes(
    run_main, database, sandbox
):
    sandbox.delays["silver"] = 30  # silver hangs; the other metals land and load meanwhile
    process = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "--no-train"], cwd=run_main.cwd, env=run_main.env
    )
    wait_for_analytics_rows(database, 3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert counts(database) == ALL_BUT_SILVER

    sandbox.delays.clear()
    assert run_main("--no-train").returncode == 0
    assert counts(database) == ONE_ROW_EACH
    statuses = database.query("SELECT status FROM pipeline_runs ORDER BY run_id")
    assert statuses == [("interrupted",), ("success",)]


def test_sigterm_ends_a_run_cleanly_with_exit_143(run_main, database, sandbox):
    sandbox.delays["gold"] = 30
    process = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "--no-train"], cwd=run_main.cwd, env=run_main.env
    )
    wait_for_analytics_rows(database, 3)
    process.terminate()
    assert process.wait(timeout=60) == 143
    assert counts(database)["analytics"] == 3
    status, ok, failed = database.query(
        "SELECT status, metals_ok, metals_failed FROM pipeline_runs"
    )[0]
    assert status == "interrupted"
    assert sorted(ok) == ["palladium", "platinum", "silver"] and failed == ["gold"]


def test_replaying_an_already_loaded_file_adds_nothing(run_main, database):
    assert run_main("--no-train").returncode == 0
    loaded = files(run_main.cwd, "loaded")[0]
    incoming = run_main.cwd / "source" / "data" / "incoming"
    shutil.copy(loaded, incoming / loaded.name)  # as if a crash hit between commit and move
    assert run_main("--no-train").returncode == 0
    assert counts(database)["analytics"] == 4
    assert not files(run_main.cwd, "incoming")


def test_a_different_currency_is_refused_rather_than_mixed_in(run_main, database):
    assert run_main("--no-train").returncode == 0
    result = run_main("--no-train", CURRENCY="EUR")
    assert result.returncode == 2  # a configuration error, said before any request
    assert "CURRENCY=EUR contradicts the stored rows: gold is kept in USD per toz" in (
        result.stderr
    )
    assert database.query("SELECT DISTINCT currency FROM commodities_price_data_analytics") == [
        ("USD",)
    ]
    assert not files(run_main.cwd, "incoming") and not files(run_main.cwd, "rejected")
    assert run_main("--no-train").returncode == 0


def insert_hourly_history(database, metal: str, hours: int) -> None:
    database.query(
        f"""INSERT INTO {metal}_historic ("timestamp", metal, currency, unit, rate_price,
                rate_ask, source)
            SELECT timestamptz '2026-01-01' + make_interval(hours => i), '{metal}', 'USD', 'toz',
                   p, p * 1.0004, 'csv'
            FROM (SELECT i, 2000 * exp(0.002 * sin(i / 7.0) + 0.0001 * i) AS p
                  FROM generate_series(1, {hours}) AS i) s"""
    )


def test_train_command_trains_from_the_database(run_main, database):
    assert run_main("--no-train", "--metals", "gold").returncode == 0
    insert_hourly_history(database, "gold", 500)
    result = run_main("train", "--metals", "gold")
    assert result.returncode == 0, result.stderr
    assert "2 model(s) trained" in result.stdout
    for target in ("rate_price", "rate_ask"):
        assert (run_main.cwd / "trained_models" / f"model_{target}" / "gold.joblib").is_file()
    assert database.scalar("SELECT count(*) FROM model_runs WHERE metal = 'gold'") == 6
    assert database.scalar("SELECT count(*) FROM price_predictions") == 6


def test_a_training_failure_is_reported_after_the_data_is_loaded(run_main, database, tmp_path):
    assert run_main("--no-train", "--metals", "gold").returncode == 0
    insert_hourly_history(database, "gold", 500)
    not_a_directory = tmp_path / "models-file"
    not_a_directory.write_text("")
    result = run_main("--metals", "gold", MODELS_DIR=str(not_a_directory))
    assert result.returncode == 1
    # One line on stderr (the run's summary), the tracebacks in the log.
    (line,) = result.stderr.splitlines()
    assert line.startswith("main.py: 1/1 metals loaded;")
    assert "2 model(s) failed: gold rate_price" in line
    assert "Traceback (most recent call last)" in run_main.log_text()
    assert database.query("SELECT status FROM pipeline_runs ORDER BY run_id DESC LIMIT 1") == [
        ("failed",)
    ]


def test_what_the_training_workers_log_reaches_the_log_file(run_main, database):
    # The sandbox's silver quote after a smooth 2,000-dollar January: a 99% fall, so each
    # model's worker process warns that it held the forecast (source/ml/train.py).
    assert run_main("--no-train", "--metals", "silver").returncode == 0
    insert_hourly_history(database, "silver", 400)
    result = run_main("train", "--metals", "silver")
    assert result.returncode == 0, result.stderr
    logged = run_main.log_text()
    if "training 2 model(s) in 1 process(es)" in logged:
        pytest.skip("one core: the models were trained in the command's own process")
    (parent,) = re.findall(r"INFO \[(\d+)\] source\.ml\.train: training 2 model", logged)
    held = [line for line in logged.splitlines() if "is beyond ten times" in line]
    pids = {re.search(r"WARNING \[(\d+)\]", line).group(1) for line in held}
    assert len(held) >= 2 and pids and parent not in pids  # logged by the workers
    assert any("silver rate_price: the +1 forecast's change" in line for line in held)
    assert any("silver rate_ask: the +1 forecast's change" in line for line in held)
    assert result.stderr.count("is beyond ten times") == len(held)  # each once, formatted


def test_an_hourly_run_retrains_only_when_the_input_changed(run_main, database):
    assert run_main("--no-train", "--metals", "gold").returncode == 0
    insert_hourly_history(database, "gold", 500)
    meta = run_main.cwd / "trained_models" / "model_rate_price" / "gold.json"
    assert run_main("--metals", "gold").returncode == 0  # no model yet: trained
    first = json.loads(meta.read_text())
    rows = database.scalar("SELECT count(*) FROM gold_historic WHERE quality = 'ok'")
    assert first["trained_through"]["rows"] == rows

    result = run_main("--metals", "gold")  # the same quote again: nothing new to learn
    assert result.returncode == 0, result.stderr
    assert "training skipped: no model's input changed since it was trained" in (
        run_main.log_text()
    )
    assert json.loads(meta.read_text())["trained_at"] == first["trained_at"]

    database.query(
        """INSERT INTO gold_historic ("timestamp", metal, currency, unit, rate_price, rate_ask,
               source) VALUES ('2026-02-01', 'gold', 'USD', 'toz', 2100, 2101, 'csv')"""
    )
    assert run_main("--metals", "gold").returncode == 0  # one more good row: retrained
    second = json.loads(meta.read_text())
    assert second["trained_at"] != first["trained_at"]
    assert second["trained_through"]["rows"] == rows + 1
    # Refitted on the new row with the choice and calibration of the first run's evaluation,
    # which is less than a day old and a week of rows back: no new metrics recorded.
    assert second["refit_only"] and not first["refit_only"]
    assert (
        second["evaluated"]
        == first["evaluated"]
        == {
            "at": first["trained_at"],
            "rows_used": first["rows_used"],
            "frequency": "hourly",
        }
    )
    assert second["chosen"] == first["chosen"]
    assert database.scalar("SELECT count(*) FROM model_runs WHERE metal = 'gold'") == 6

    result = run_main("train", "--metals", "gold")  # train always trains and evaluates
    assert "2 model(s) trained" in result.stdout
    third = json.loads(meta.read_text())
    assert third["trained_at"] != second["trained_at"]
    assert not third["refit_only"] and third["evaluated"]["at"] == third["trained_at"]
    assert database.scalar("SELECT count(*) FROM model_runs WHERE metal = 'gold'") == 12

    skipped = run_main.log_text().count("training skipped: no model's input changed")
    database.query(  # a row the models never see: no reason to retrain
        """INSERT INTO gold_historic ("timestamp", metal, currency, unit, rate_price, rate_ask,
               source, quality) VALUES ('2026-02-02', 'gold', 'USD', 'toz', 2400, 2401, 'csv',
               'suspect')"""
    )
    assert run_main("--metals", "gold").returncode == 0
    assert run_main.log_text().count("training skipped: no model's input changed") == skipped + 1
    assert json.loads(meta.read_text())["trained_at"] == third["trained_at"]

    database.query(  # a week of new rows: the hourly run evaluates again, without `train`
        """INSERT INTO gold_historic ("timestamp", metal, currency, unit, rate_price, rate_ask,
               source)
           SELECT timestamptz '2026-01-22' + make_interval(hours => i), 'gold', 'USD', 'toz',
                  2100 + sin(i / 5.0), 2101 + sin(i / 5.0), 'csv'
             FROM generate_series(1, 168) AS i"""
    )
    assert run_main("--metals", "gold").returncode == 0
    fourth = json.loads(meta.read_text())
    assert not fourth["refit_only"] and fourth["evaluated"]["at"] == fourth["trained_at"]
    assert "walk-forward evaluation due (168 new rows since the evaluation)" in (
        run_main.log_text()
    )
    assert database.scalar("SELECT count(*) FROM model_runs WHERE metal = 'gold'") == 18
