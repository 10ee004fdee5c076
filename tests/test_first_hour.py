"""The first hour of a new user: every ordinary slip gets one line on stderr naming what to fix
(exit 2 for usage and configuration), a closed pipe ends quietly, labels follow the rows."""

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest
from psycopg2 import sql

from tests.conftest import REPO, base_env
from tests.test_pipeline import insert_hourly_history
from tests.test_status_report import migrated


def one_line(result) -> str:
    """The single stderr line of a refused command (and no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def gold_rows(run_main, database):
    """A database holding 30 hours of gold in USD per toz, as an import would leave it."""
    migrated(database)
    insert_hourly_history(database, "gold", 30)
    return run_main


# -- folders, URLs, pipes ------------------------------------------------------------------------


def test_a_log_dir_that_cannot_be_made_is_one_line(run_main):
    line = one_line(result := run_main("status", LOG_DIR="/proc/nope"))
    assert result.returncode == 2
    assert line.startswith("main.py: configuration error: LOG_DIR: cannot create /proc/nope")


def test_a_data_dir_that_cannot_be_made_is_one_line_even_for_the_demo(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--demo"], cwd=tmp_path, capture_output=True,
        text=True, env=base_env(DATA_DIR="/proc/nope"), timeout=60,
    )
    assert result.returncode == 2
    assert "DATA_DIR: cannot create /proc/nope/demo" in one_line(result)
    assert not (tmp_path / "pgdata").exists()  # refused before anything started


def test_a_backups_dir_that_cannot_be_made_is_one_line(run_main):
    result = run_main("list", script="backups_main.py", LOG_DIR="/proc/nope")
    assert result.returncode == 2 and "LOG_DIR: cannot create" in one_line(result)
    result = run_main(script="backups_main.py", BACKUP_DIR="/proc/nope")
    assert result.returncode == 2 and "BACKUP_DIR: cannot create" in one_line(result)


def test_a_base_url_without_scheme_is_refused_before_any_request(run_main, sandbox):
    result = run_main("--no-train", METALS_DEV_BASE_URL="api.metals.dev")
    assert result.returncode == 2
    assert "METALS_DEV_BASE_URL must be an http(s) URL" in one_line(result)
    assert sandbox.requests == []


def test_refused_connections_are_not_counted_as_api_requests(run_main, database):
    result = run_main(
        "--no-train", "--metals", "gold", METALS_DEV_BASE_URL="http://127.0.0.1:9",
        HTTP_MAX_ATTEMPTS="2", HTTP_BACKOFF="0",
    )
    assert result.returncode == 1
    assert database.scalar("SELECT api_requests FROM pipeline_runs") == 0


def _closed_pipe(run_main, *args, script="main.py"):
    """Run a script with stdout a pipe whose reader has already gone (`| head` at its end)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, str(REPO / script), *args], cwd=run_main.cwd, env=run_main.env,
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
        )
    finally:
        os.close(write)


def test_a_closed_pipe_ends_quietly(gold_rows):
    for args in (["quality"], ["status"], ["status", "--json"], ["--help"]):
        result = _closed_pipe(gold_rows, *args)
        assert (result.returncode, result.stderr) == (0, ""), args
    listing = _closed_pipe(gold_rows, "list", script="backups_main.py")  # prints outside a step
    assert (listing.returncode, listing.stderr) == (0, "")


# -- import-csv ----------------------------------------------------------------------------------


def test_import_of_a_compressed_binary_or_folder_path_is_one_line(run_main, tmp_path):
    text = b"time,price\n2026-03-02T10:00Z,2000\n"
    (tmp_path / "gold.csv.gz").write_bytes(gzip.compress(text))
    (tmp_path / "gold.bin").write_bytes(bytes(range(256)) * 64)
    expected = {
        "gold.csv.gz": "is compressed (gzip or zip); decompress it first",
        "gold.bin": "is not a UTF-8 text file; export it as UTF-8 CSV",
        ".": "is a folder; name the CSV file in it",
    }
    for name, words in expected.items():
        result = run_main("import-csv", str(tmp_path / name), "--metal", "gold")
        assert result.returncode == 2, result.stderr
        assert words in one_line(result)


def test_import_with_a_unit_the_rows_contradict_is_one_line(gold_rows, tmp_path, database):
    path = tmp_path / "more.csv"
    path.write_text("time,price\n2026-03-02T10:00Z,64.2\n")
    result = gold_rows("import-csv", str(path), "--metal", "gold", UNIT="gram")
    assert result.returncode == 2
    assert one_line(result) == (
        "main.py: UNIT=gram contradicts the stored rows: gold is kept in USD per toz; unset it "
        "(or use another database, PGDATABASE, for another currency or unit)"
    )
    assert database.scalar("SELECT count(*) FROM gold_historic") == 30


def test_import_options_are_checked_the_same_way_as_everywhere(run_main, tmp_path, database):
    path = tmp_path / "gold.csv"
    path.write_text("time,price\n2026-03-02T10:00Z,2000\n")
    both = run_main("import-csv", str(path), "--metal", "gold", "--metals", "silver")
    assert both.returncode == 2 and "drop --metals silver" in one_line(both)
    wide = run_main("import-csv", str(path), "--metal", "gold", "--delimiter", "::")
    assert wide.returncode == 2 and "--delimiter '::' is not one character" in one_line(wide)
    header_only = tmp_path / "header.csv"
    header_only.write_text("time,price\n")
    result = run_main("import-csv", str(header_only), "--metal", "gold")
    assert result.returncode == 2 and "has a header but no rows" in one_line(result)
    upper = run_main("import-csv", str(path), "--metal", "GOLD")  # as METALS=Gold is accepted
    assert upper.returncode == 0, upper.stderr
    assert database.scalar("SELECT count(*) FROM gold_historic") == 1


# -- quality -------------------------------------------------------------------------------------


def test_quality_accept_says_what_is_wrong_with_the_quote_named(gold_rows):
    stamp = "2026-01-01T05:00Z"  # one of the rows, never flagged
    result = gold_rows("quality", "accept", "--metal", "GOLD", "--time", stamp)
    assert result.returncode == 2
    assert one_line(result) == (
        "main.py quality: the gold quote at 2026-01-01 05:00 UTC is ok and was never flagged; "
        "nothing to accept (`python main.py quality` lists the flagged ones)"
    )
    typo = gold_rows("quality", "accept", "--metal", "gld", "--time", stamp)
    assert typo.returncode == 2 and "unknown metal 'gld'; choose from" in one_line(typo)
    missing = gold_rows("quality", "reject", "--metal", "gold")
    assert missing.returncode == 2 and "needs --time (" in one_line(missing)


# -- labels from the stored rows -------------------------------------------------------------------


def test_status_labels_come_from_the_rows_with_a_note(gold_rows):
    result = gold_rows("status", CURRENCY="EUR", UNIT="g")
    assert "PRICES (USD/toz)" in result.stdout
    assert (
        "  note: CURRENCY=EUR UNIT=g ignored: the stored rows are gold in USD per toz (labels "
        "follow the rows)"
    ) in result.stdout.splitlines()
    facts = json.loads(gold_rows("status", "--json", CURRENCY="EUR", UNIT="g").stdout)
    assert (facts["currency"], facts["unit"]) == ("USD", "toz")
    assert (facts["metals"][0]["currency"], facts["metals"][0]["unit"]) == ("USD", "toz")
    assert facts["metals"][1]["currency"] is None  # silver: no rows, no label to claim
    facts = json.loads(gold_rows("status", "--json", METALS="silver,Gold").stdout)
    for table in ("metals", "ranges", "models"):  # one order in every table: the configured
        assert list(dict.fromkeys(r["metal"] for r in facts[table])) == ["silver", "gold"]


def test_an_hourly_run_whose_currency_contradicts_the_rows_sends_nothing(gold_rows, sandbox):
    result = gold_rows("--no-train", CURRENCY="EUR")
    assert result.returncode == 2
    assert "CURRENCY=EUR contradicts the stored rows: gold is kept in USD per toz" in one_line(
        result
    )
    assert sandbox.requests == []


def test_the_demo_refuses_another_currency_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--demo"], cwd=tmp_path, capture_output=True,
        text=True, env=base_env(CURRENCY="EUR"), timeout=60,
    )
    assert result.returncode == 2
    assert one_line(result) == (
        "main.py: configuration error: the demo's synthetic feed quotes USD per toz, not EUR "
        "per toz; unset CURRENCY and UNIT for --demo"
    )
    assert "inserted" not in result.stdout


def test_status_of_an_empty_database_points_to_the_demo_when_it_has_run(run_main, pg_server):
    from tests.conftest import _admin

    _admin(pg_server, "CREATE DATABASE commodities_demo")
    try:
        result = run_main("status")
    finally:
        _admin(pg_server, sql.SQL("DROP DATABASE commodities_demo WITH (FORCE)"))
    assert result.returncode == 1
    assert one_line(result).endswith(
        "is empty: no run has loaded anything yet; the demo's rows are in their own database "
        "(commodities_demo): add --demo, e.g. `python main.py status --demo`"
    )


# -- runs and backups ------------------------------------------------------------------------------


def test_train_runs_show_in_the_runs_table(gold_rows, database):
    insert_hourly_history(database, "silver", 400)
    assert gold_rows("train", "--metals", "silver").returncode == 0
    facts = json.loads(gold_rows("status", "--json").stdout)
    assert [(r["command"], r["status"]) for r in facts["runs"]["recent"]][0] == (
        "train", "success"
    )


def test_restore_latest_takes_the_newest_verified_backup(loaded):
    assert loaded(script="backups_main.py").returncode == 0
    backups = loaded.cwd / "backups"
    (good,) = [p for p in backups.iterdir() if p.name[0].isdigit()]
    bad = backups / "29990101T000000Z"
    shutil.copytree(good, bad)
    (bad / "verification.json").write_text(
        json.dumps({"ok": False, "level": None, "verified_at": "2999-01-01T00:00:00+00:00",
                    "problems": ["database.dump: sha256 differs"]})
    )
    result = loaded("restore", "latest", script="backups_main.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"latest: {good.name}, the newest verified backup; newer {bad.name} failed verification",
        f"restored backup {good.name}",
    ]
