"""Monitoring the way operators already do it, with the real tools on 127.0.0.1: Debian's
node_exporter reading METRICS_DIR, Debian's Pushgateway receiving pushes, a local HTTP server
standing in for healthchecks.io, and promtool checking and unit-testing the alert rules."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, TEST_API_KEY
from tests.test_pipeline import insert_hourly_history

METALS = ("gold", "silver", "platinum", "palladium")
PROMETHEUS = REPO / "deploy" / "prometheus"


def tool(*names: str) -> str:
    """A Debian tool the test drives: skipped with one line outside CI, a failure in CI."""
    for name in names:
        path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
        if path:
            return path
    message = f"{names[0]} is not installed (Debian's prometheus packages; .ci/run installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def metrics_dir():
    """A folder node_exporter's own user (nobody here) can reach, as /var/lib/... would be."""
    path = Path(tempfile.mkdtemp(prefix="metrics-", dir="/tmp"))
    path.chmod(0o755)
    yield path / "textfile"
    shutil.rmtree(path, ignore_errors=True)


def prom(metrics_dir: Path, job: str) -> str:
    return (metrics_dir / f"commodities_{job}.prom").read_text()


class Server:
    """A real server binary on 127.0.0.1, stopped by the test."""

    def __init__(self, command: list[str], port: int, uid: int | None = None):
        if uid is not None and os.geteuid() == 0:
            command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command]
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                requests.get(self.url + "/metrics", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"{command[0]} did not start: {self.process.stderr.read()}")

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", timeout=5).text

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class PingRecorder:
    """Stands in for healthchecks.io: records every ping (path and body), answers 200 after
    `delay` seconds."""

    def __init__(self, delay: float = 0.0):
        self.pings: list[tuple[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                recorder.pings.append((self.path, body))
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ping/0b1e5c2d"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pings():
    recorder = PingRecorder()
    yield recorder
    recorder.close()


# -- metrics files -----------------------------------------------------------------------------


def test_node_exporter_reads_the_hourly_jobs_metrics(run_main, metrics_dir):
    binary = tool("prometheus-node-exporter", "node_exporter")
    assert run_main("--no-train", METRICS_DIR=str(metrics_dir)).returncode == 0
    port = free_port()
    # As its own unprivileged user, like the packaged service: the jobs' private umask must
    # not make the file unreadable to it.
    exporter = Server(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
         "--collector.textfile", f"--collector.textfile.directory={metrics_dir}"],
        port, uid=65534,  # nobody
    )
    try:
        scraped = exporter.metrics()
    finally:
        exporter.stop()
    assert value(scraped, "node_textfile_scrape_error") == 0
    assert value(scraped, "commodities_job_exit_code", job="pipeline") == 0
    assert value(scraped, "commodities_job_rows_inserted", job="pipeline") == 4
    assert value(scraped, "commodities_job_api_requests", job="pipeline") == 4
    assert value(scraped, "commodities_api_requests_this_month") == 4
    success = value(scraped, "commodities_job_last_success_timestamp_seconds", job="pipeline")
    assert abs(success - time.time()) < 120
    for metal in METALS:
        assert value(scraped, "commodities_metal_failed_runs_in_a_row", metal=metal) == 0
        quote = value(scraped, "commodities_metal_last_quote_timestamp_seconds", metal=metal)
        assert quote == pytest.approx(1772620200, abs=3600)  # the sandbox's 2026-03-04 10:00
        info = value(scraped, "commodities_metal_info", metal=metal, currency="USD", unit="toz")
        assert info == 1, f"{metal}: no commodities_metal_info in USD per toz"
    mtime = value(scraped, "node_textfile_mtime_seconds",
                  file=str(metrics_dir / "commodities_pipeline.prom"))
    assert mtime is not None


def test_a_failed_run_never_moves_the_last_success(run_main, metrics_dir):
    assert run_main("--no-train", METRICS_DIR=str(metrics_dir)).returncode == 0
    first = prom(metrics_dir, "pipeline")
    success = value(first, "commodities_job_last_success_timestamp_seconds", job="pipeline")
    time.sleep(1.1)
    down = run_main(
        "--no-train", METRICS_DIR=str(metrics_dir), METALS_DEV_BASE_URL="http://127.0.0.1:9/v1",
        HTTP_MAX_ATTEMPTS="1",
    )
    assert down.returncode == 1
    after = prom(metrics_dir, "pipeline")
    assert value(after, "commodities_job_last_success_timestamp_seconds", job="pipeline") == success
    assert value(after, "commodities_job_exit_code", job="pipeline") == 1
    last_run = value(after, "commodities_job_last_run_timestamp_seconds", job="pipeline")
    assert last_run > success
    for metal in METALS:
        assert value(after, "commodities_metal_failed_runs_in_a_row", metal=metal) == 1


def test_the_database_down_counts_failing_runs_on_from_the_last_file(run_main, metrics_dir):
    assert run_main("--no-train", METRICS_DIR=str(metrics_dir)).returncode == 0
    quotes = value(prom(metrics_dir, "pipeline"),
                   "commodities_metal_last_quote_timestamp_seconds", metal="gold")
    for streak in (1, 2, 3):
        down = run_main("--no-train", METRICS_DIR=str(metrics_dir), PGHOST="127.0.0.1",
                        PGPORT="1")
        assert down.returncode == 1
        text = prom(metrics_dir, "pipeline")
        assert value(text, "commodities_metal_failed_runs_in_a_row", metal="gold") == streak
        assert value(text, "commodities_metal_info", currency="USD", metal="gold", unit="toz") == 1
        # What only the database knows is carried forward, not dropped.
        assert value(text, "commodities_metal_last_quote_timestamp_seconds", metal="gold") == quotes


def test_a_run_stopped_by_sigterm_still_reports_143(run_main, metrics_dir, sandbox, pings):
    sandbox.delay = 5
    run = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "--no-train"], cwd=run_main.cwd,
        env={**run_main.env, "METRICS_DIR": str(metrics_dir), "HEALTHCHECK_URL": pings.url},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not pings.pings and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1)
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=60)
    assert run.returncode == 143
    text = prom(metrics_dir, "pipeline")
    assert value(text, "commodities_job_exit_code", job="pipeline") == 143
    assert [path for path, _ in pings.pings] == ["/ping/0b1e5c2d/start", "/ping/0b1e5c2d/143"]


def test_a_misspelt_fact_is_refused_not_dropped():
    from source.monitoring import JobRecord, record
    from source.monitoring.job import _CURRENT

    current = JobRecord("pipeline", 0.0)
    token = _CURRENT.set(current)
    try:
        record(rows_inserted=4, summary="ok")
        with pytest.raises(TypeError):
            record(rows_insertd=5)  # type: ignore[call-arg]
    finally:
        _CURRENT.reset(token)
    assert (current.rows_inserted, current.summary) == (4, "ok")
    record(rows_inserted=9)  # outside a monitored job: nothing happens
    assert current.rows_inserted == 4


def test_the_textfile_is_replaced_atomically(tmp_path):
    from prometheus_client import CollectorRegistry, Gauge

    from source.monitoring.metrics import write_textfile

    def registry(number: float) -> CollectorRegistry:
        registry = CollectorRegistry()
        Gauge("commodities_test", "a value", registry=registry).set(number)
        return registry

    path = write_textfile(tmp_path, "pipeline", registry(1))
    with open(path) as reader:  # a scrape holding the old file open
        write_textfile(tmp_path, "pipeline", registry(2))
        # A rename swaps the whole file: the reader still has the complete old one, never a
        # truncated or half-written file; the next scrape gets the complete new one.
        assert "commodities_test 1.0" in reader.read()
    assert "commodities_test 2.0" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["commodities_pipeline.prom"]
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("args", "job"),
    [
        (["backfill", "--start", "2026-02-01", "--end", "2026-02-10"], "backfill"),
        (["train"], "train"),
    ],
)
def test_every_job_writes_its_own_file(run_main, metrics_dir, args, job):
    result = run_main(*args, METRICS_DIR=str(metrics_dir))
    assert result.returncode == 0, result.stderr
    text = prom(metrics_dir, job)
    assert value(text, "commodities_job_exit_code", job=job) == 0
    assert value(text, "commodities_job_last_success_timestamp_seconds", job=job) > 0
    if job == "backfill":
        assert value(text, "commodities_job_api_requests", job=job) == 1
        assert value(text, "commodities_job_rows_inserted", job=job) == 10 * 4


def test_import_csv_writes_its_file(run_main, metrics_dir, tmp_path):
    csv = tmp_path / "gold.csv"
    csv.write_text("time,price\n2020-01-01 10:00,1500\n2020-01-01 11:00,1501\nbad,line\n")
    result = run_main("import-csv", str(csv), "--metal", "gold", METRICS_DIR=str(metrics_dir))
    assert result.returncode == 3  # a bad line skipped
    text = prom(metrics_dir, "import_csv")
    assert value(text, "commodities_job_exit_code", job="import_csv") == 3
    assert value(text, "commodities_job_rows_inserted", job="import_csv") == 2
    assert value(text, "commodities_job_last_success_timestamp_seconds", job="import_csv") is None


def test_backup_create_verify_and_restore_report_the_newest_backup(run_main, metrics_dir):
    assert run_main("--no-train").returncode == 0
    env = {"METRICS_DIR": str(metrics_dir)}
    assert run_main(script="backups_main.py", **env).returncode == 0
    text = prom(metrics_dir, "backup")
    (backup,) = [p for p in (run_main.cwd / "backups").iterdir() if p.name[0].isdigit()]
    created = value(text, "commodities_backup_newest_timestamp_seconds")
    assert abs(created - time.time()) < 300
    assert value(text, "commodities_backup_newest_verified") == 1
    size = sum(p.stat().st_size for p in backup.iterdir() if p.name != "verification.json")
    assert value(text, "commodities_backup_newest_size_bytes") == pytest.approx(size, rel=0.05)
    assert value(text, "commodities_job_exit_code", job="backup") == 0
    for command in (["verify"], ["restore", backup.name]):
        result = run_main(*command, script="backups_main.py", **env)
        assert result.returncode == 0, result.stderr
        assert value(prom(metrics_dir, "backup"), "commodities_backups") == 1


def test_training_publishes_model_skill_per_metal_target_and_horizon(
    run_main, database, metrics_dir
):
    assert run_main("--no-train", "--metals", "gold").returncode == 0
    insert_hourly_history(database, "gold", 400)
    assert run_main("train", "--metals", "gold", METRICS_DIR=str(metrics_dir)).returncode == 0
    text = prom(metrics_dir, "models")
    for target in ("rate_price", "rate_ask"):
        for horizon in ("1", "6", "24"):
            labels = {"metal": "gold", "target": target, "horizon": horizon}
            assert 0 < value(text, "commodities_model_mase", **labels) < 2
            assert 0 <= value(text, "commodities_model_interval_coverage", **labels) <= 1


def test_a_known_plan_gives_the_quota_left(run_main, metrics_dir):
    result = run_main("--no-train", METRICS_DIR=str(metrics_dir), METALS_DEV_MONTHLY_QUOTA="100")
    assert result.returncode == 0
    text = prom(metrics_dir, "pipeline")
    assert value(text, "commodities_api_quota_requests") == 100
    assert value(text, "commodities_api_quota_remaining") == 96


# -- Pushgateway --------------------------------------------------------------------------------


def test_the_pushgateway_receives_them_grouped_by_job_alone(run_main):
    binary = tool("prometheus-pushgateway", "pushgateway")
    port = free_port()
    gateway = Server([binary, f"--web.listen-address=127.0.0.1:{port}"], port)
    try:
        assert run_main("--no-train", PUSHGATEWAY_URL=gateway.url).returncode == 0
        scraped = gateway.metrics()
        success = value(scraped, "commodities_job_last_success_timestamp_seconds",
                        instance="", job="pipeline")
        down = run_main("--no-train", PUSHGATEWAY_URL=gateway.url,
                        METALS_DEV_BASE_URL="http://127.0.0.1:9/v1", HTTP_MAX_ATTEMPTS="1")
        assert down.returncode == 1
        after = gateway.metrics()
    finally:
        gateway.stop()
    assert abs(success - time.time()) < 120
    assert value(scraped, "commodities_metal_failed_runs_in_a_row", instance="", job="pipeline",
                 metal="gold") == 0
    # Grouped by job alone: no instance of its own, so one group however many pods ran it.
    groups = {dict(labels).get("instance") for (name, labels) in samples(scraped)
              if name.startswith("commodities_")}
    assert groups == {""}
    # A failed run leaves the pushed last success where it was.
    assert value(after, "commodities_job_last_success_timestamp_seconds",
                 instance="", job="pipeline") == success
    assert value(after, "commodities_job_exit_code", instance="", job="pipeline") == 1


# -- dead-man's switch -------------------------------------------------------------------------


def test_the_hourly_job_pings_start_then_success(run_main, pings):
    assert run_main("--no-train", HEALTHCHECK_URL=pings.url).returncode == 0
    assert [path for path, _ in pings.pings] == ["/ping/0b1e5c2d/start", "/ping/0b1e5c2d"]
    assert pings.pings[-1][1].startswith("4/4 metals loaded")


def test_a_failing_run_pings_its_exit_code_and_never_the_key(run_main, pings):
    result = run_main("--no-train", HEALTHCHECK_URL=pings.url,
                      METALS_DEV_BASE_URL="http://127.0.0.1:9/v1", HTTP_MAX_ATTEMPTS="1")
    assert result.returncode == 1
    assert [path for path, _ in pings.pings] == ["/ping/0b1e5c2d/start", "/ping/0b1e5c2d/1"]
    assert pings.pings[-1][1].startswith("0/4 metals loaded")
    for path, body in pings.pings:
        assert TEST_API_KEY not in path + body


def test_each_scheduled_job_pings_its_own_check(run_main, pings):
    template = pings.url + "-{job}"
    assert run_main("--no-train", HEALTHCHECK_URL=template).returncode == 0
    assert run_main(script="backups_main.py", HEALTHCHECK_URL=template).returncode == 0
    assert run_main("train", HEALTHCHECK_URL=template).returncode == 0  # not scheduled
    assert [path for path, _ in pings.pings] == [
        "/ping/0b1e5c2d-pipeline/start", "/ping/0b1e5c2d-pipeline",
        "/ping/0b1e5c2d-backup/start", "/ping/0b1e5c2d-backup",
    ]
    assert pings.pings[-1][1].startswith("backup ")
    # Without {job} the URL is the hourly job's check: the backup does not ping it.
    pings.pings.clear()
    assert run_main(script="backups_main.py", HEALTHCHECK_URL=pings.url).returncode == 0
    assert pings.pings == []


def test_monitors_down_or_slow_never_fail_the_job_and_cost_seconds(run_main, metrics_dir):
    slow = PingRecorder(delay=30)  # accepts, then never answers in time
    try:
        started = time.monotonic()
        result = run_main(
            "--no-train", HEALTHCHECK_URL=slow.url, PUSHGATEWAY_URL="http://127.0.0.1:9",
            METRICS_DIR=str(metrics_dir),
        )
        elapsed = time.monotonic() - started
    finally:
        slow.close()
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "monitoring:" in line]
    assert len(warnings) == 2, result.stderr  # one line per monitor, not one per attempt
    assert any("healthcheck unavailable" in line for line in warnings)
    assert any("Pushgateway unavailable" in line for line in warnings)
    assert elapsed < 20  # start ping (2 s) + end ping and push side by side (2-3 s) + the run
    assert value(prom(metrics_dir, "pipeline"), "commodities_job_exit_code", job="pipeline") == 0


# -- alert rules -------------------------------------------------------------------------------


def test_the_alert_rules_are_valid():
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(PROMETHEUS / "alerts.yml")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_fire_as_their_unit_tests_say_weekend_included():
    result = subprocess.run(
        [tool("promtool"), "test", "rules", "alerts_test.yml"],
        cwd=PROMETHEUS, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
