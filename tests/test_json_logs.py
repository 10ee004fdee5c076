"""LOG_FORMAT=json: every line of the log file and of stderr is one JSON object carrying the
job, the run's pipeline_runs id and the metal where there is one; no secret in any of them."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timedelta

import pytest

from source.log_setup import configure_logging, log_fields
from tests.conftest import TEST_API_KEY

METALS = {"gold", "silver", "platinum", "palladium"}


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    return [json.loads(line) for line in lines]  # each line parses on its own


def assert_utc_iso(stamp: str) -> None:
    assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0), stamp


def test_every_line_of_an_hourly_run_is_json_with_its_run_id(run_main, database):
    result = run_main("--no-train", LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    run_id = database.scalar("SELECT max(run_id) FROM pipeline_runs")
    lines = json_lines(run_main.log_text())
    for line in lines:
        assert {"time", "level", "logger", "message", "job", "run_id"} <= set(line), line
        assert_utc_iso(line["time"])
        assert line["job"] == "pipeline"
        assert TEST_API_KEY not in json.dumps(line)
    # Every line from the ledger row's opening on carries its id; before it, only the
    # migrations of a new database are logged (there is no run to name yet).
    first = next(i for i, line in enumerate(lines) if line["run_id"] is not None)
    assert {line["logger"] for line in lines[:first]} <= {"source.db_functions.migrations"}
    assert {line["run_id"] for line in lines[first:]} == {run_id}
    # The fetch threads and the loader thread carry the run id and their metal.
    fetched = [line for line in lines if "transformed" in line["message"]]
    assert {line["metal"] for line in fetched} == METALS
    assert {line["run_id"] for line in fetched} == {run_id}
    loaded = [line for line in lines if line.get("metal") and line["logger"] == "source.load"]
    assert {line["metal"] for line in loaded} == METALS


def test_a_failed_run_is_json_on_stderr_too_and_never_shows_the_key(run_main, database):
    result = run_main(
        "--no-train",
        LOG_FORMAT="json",
        METALS_DEV_BASE_URL="http://127.0.0.1:9/v1",
        HTTP_MAX_ATTEMPTS="1",
    )
    assert result.returncode == 1
    run_id = database.scalar("SELECT max(run_id) FROM pipeline_runs")
    stderr = json_lines(result.stderr)  # log lines and the printed outcome alike
    assert any("metals loaded" in line["message"] for line in stderr), result.stderr
    assert {line["run_id"] for line in stderr} == {run_id}
    assert {line["job"] for line in stderr} == {"pipeline"}
    log = json_lines(run_main.log_text())
    failed = [line for line in log if line["level"] == "ERROR" and line.get("metal")]
    assert {line["metal"] for line in failed} == METALS
    assert TEST_API_KEY not in result.stderr + run_main.log_text()


def test_the_text_format_stays_the_default(run_main):
    assert run_main("--no-train").returncode == 0
    assert not run_main.log_text().startswith("{")
    assert " INFO [" in run_main.log_text()


def test_an_unknown_log_format_is_a_one_line_config_error(run_main):
    result = run_main("status", LOG_FORMAT="xml")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "LOG_FORMAT must be text or json" in result.stderr


@pytest.fixture
def restored_logging(monkeypatch):
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # configure_logging wraps it under json
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


# A key with characters JSON escapes (quote, backslash, non-ASCII): the rendered line must not
# carry it in any form, escaped or not.
SECRET = 'k"e\\y-é-5f3a9c'


def test_a_secret_in_a_message_is_masked_in_the_json_line(tmp_path, restored_logging, capfd):
    path = configure_logging(tmp_path, (SECRET,), fmt="json")
    with log_fields(job="pipeline", run_id=4711, metal="gold"):
        logging.getLogger("test").warning(
            "calling https://api.example/v1?api_key=%s with key %s", "other-key", SECRET
        )
        logging.getLogger("test").error('quoted: "https://api.example/v1?api_key=other-key"')
        print(f"main.py: failed with {SECRET}", file=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.flush()
    written = path.read_text()
    echoed = capfd.readouterr().err
    for text in (written, echoed):
        for line in json_lines(text):
            assert (line["job"], line["run_id"], line["metal"]) == ("pipeline", 4711, "gold")
            assert "***" in line["message"]
        for form in (SECRET, json.dumps(SECRET)[1:-1], json.dumps(SECRET, ensure_ascii=False)):
            assert form not in text
        assert "other-key" not in text


def _worker_logs(parent_pid: int) -> tuple[int, list]:
    """What a training worker might log, run in a spawned process (tests below)."""
    import threading

    from source.log_setup import records_for_parent

    log = logging.getLogger("source.ml.train")
    with records_for_parent(parent_pid) as records:
        log.info("fold %d of %d", 1, 4)
        log.info("%d rows", "not a number")  # a bad call: its line is lost, nothing else
        logging.getLogger("thirdparty").info("chatter")  # below WARNING: the parent's rule
        try:
            raise ValueError(f"bad key {SECRET}")
        except ValueError:
            log.exception("failed with %s", "context", extra={"lock": threading.Lock()})
    return os.getpid(), records


def test_a_worker_process_lines_reach_the_parent_log_masked(tmp_path, restored_logging):
    import multiprocessing

    from source.log_setup import replay

    path = configure_logging(tmp_path, (SECRET,), fmt="json")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        worker, records = pool.apply(_worker_logs, (os.getpid(),))
    with log_fields(job="train", metal="silver"):
        replay(records)
    for handler in logging.getLogger().handlers:
        handler.flush()
    written = path.read_text()
    lines = json_lines(written)
    assert [line["message"].splitlines()[0] for line in lines] == [
        "fold 1 of 4",
        "failed with context",
    ]
    assert {line["pid"] for line in lines} == {worker} != {os.getpid()}
    assert all((line["job"], line["metal"]) == ("train", "silver") for line in lines)
    assert "ValueError: bad key ***" in lines[1]["message"]  # the traceback, masked
    assert SECRET not in written and json.dumps(SECRET)[1:-1] not in written
