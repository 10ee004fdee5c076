"""Deployment files, checked with real linters (no Docker engine here), and the cron scripts
run for real against a recording fake `docker` on PATH."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from ruamel.yaml import YAML

from tests.conftest import REPO, TEST_API_KEY, MainRunner, base_env

BIN = Path(sys.executable).parent
SCRIPTS = sorted((REPO / "scripts").glob("*.sh")) + sorted(
    (REPO / "tests" / "docker").rglob("*.sh")  # the stand-in postgres entry point
)


def tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert path, f"{name} is not installed (pip install -e '.[dev]')"
    return path


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


def test_dockerfile_passes_hadolint_with_warnings_as_failures():
    result = run(tool("hadolint"), "--failure-threshold", "warning", str(REPO / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_the_compose_spec():
    result = run(
        tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(REPO / "docker-compose.yml"),
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", [*SCRIPTS, REPO / ".ci" / "run"], ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script):
    result = run(tool("shellcheck"), str(script))
    assert result.returncode == 0, result.stdout


def test_compose_stack_shape():
    compose = YAML(typ="safe").load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["db"]["image"].startswith("postgres:15")
    assert "healthcheck" in services["db"]
    assert any(v.startswith("pgdata:") for v in services["db"]["volumes"])
    image = "${APP_IMAGE:-docker.io/notexists/commodities-pipeline}:${APP_VERSION:-0.1.0}"
    # The registry image, one for every app service; `build: .` for a local build.
    assert services["db"]["ports"] == ["127.0.0.1:${DB_HOST_PORT:-5432}:5432"]
    assert not [
        v for v in services["db"]["volumes"] if v.startswith(".")
    ]  # nothing from a checkout
    init = services["init"]
    assert init["image"] == image and init["entrypoint"] == ["python", "-m", "source.db_init"]
    assert init["environment"]["PGPASSWORD_FILE"] == "/run/secrets/pg_superuser_password"
    for name in ("pipeline", "backup"):
        app = services[name]
        assert app["build"] == "." and app["image"] == image
        assert app["depends_on"]["db"]["condition"] == "service_healthy"
        assert app["depends_on"]["init"]["condition"] == "service_completed_successfully"
        assert app["restart"] == "no"
        assert {"pg_app_password", "metals_dev_api_key"} <= set(app["secrets"])
        env = app["environment"]
        assert env["PGPASSWORD_FILE"].startswith("/run/secrets/")
        assert env["METALS_DEV_API_KEY_FILE"].startswith("/run/secrets/")
        assert not {"PGPASSWORD", "METALS_DEV_API_KEY"} & set(env)
        mounts = {v.split(":")[1] for v in app["volumes"]}
        assert mounts == {
            "/app/source/data", "/app/logs", "/app/trained_models", "/app/backups",
            "/app/pgdata",  # the demo's embedded PostgreSQL
            "/app/reports",
            "/app/metrics",
        }
    # Arguments passed to `docker compose run SERVICE ...` must reach the script.
    assert services["pipeline"]["entrypoint"] == ["python", "main.py"]
    assert "command" not in services["pipeline"]
    assert services["backup"]["entrypoint"] == ["python", "backups_main.py"]
    assert services["backup"]["command"] == ["create"]


def test_no_secret_or_state_enters_the_image():
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (
        ".env",
        "secrets/",
        "source/data/",
        "logs/",
        "trained_models/",
        "backups/",
        "pgdata/",
    ):
        assert entry in ignored
    dockerfile = (REPO / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith(("ENV", "ARG")):
            assert "KEY" not in line and "PASSWORD" not in line, line
    assert "USER 10001" in dockerfile


def test_the_containers_commands_run_outside_a_container(tmp_path):
    for script in ("main.py", "backups_main.py"):
        result = run(sys.executable, str(REPO / script), "--help", cwd=tmp_path)
        assert result.returncode == 0 and "usage" in result.stdout


@pytest.fixture
def fake_docker(tmp_path):
    """A `docker` that records its arguments and working directory, and exits with
    $FAKE_DOCKER_EXIT (`compose ps` for the init service reports exit code 0)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "docker-args"
    (bin_dir / "docker").write_text(
        '#!/bin/sh\ncase "$*" in *" ps "*) echo 0; exit 0;; esac\n'
        'pwd > "$FAKE_DOCKER_RECORD"\nprintf "%s\\n" "$@" >> "$FAKE_DOCKER_RECORD"\n'
        'exit "${FAKE_DOCKER_EXIT:-0}"\n'
    )
    (bin_dir / "docker").chmod(0o755)
    return bin_dir, record


@pytest.mark.parametrize(
    ("script", "service"),
    [("run_main_services.sh", "pipeline"), ("run_backup_service.sh", "backup")],
)
@pytest.mark.parametrize("exit_code", [0, 3, 75])
def test_cron_scripts_run_the_one_shot_service_and_propagate_its_exit_code(
    fake_docker, tmp_path, script, service, exit_code
):
    bin_dir, record = fake_docker
    logs = tmp_path / "host-logs"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_DOCKER_RECORD": str(record),
        "FAKE_DOCKER_EXIT": str(exit_code),
        "HOST_LOG_DIR": str(logs),
    }
    result = subprocess.run(
        [str(REPO / "scripts" / script)],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == exit_code, result.stderr
    # From the compose file's folder and without -f, so docker-compose.override.yml counts.
    assert record.read_text().splitlines() == [
        str(REPO),
        "compose",
        "--progress",
        "quiet",
        "run",
        "--rm",
        "--no-TTY",
        service,
    ]
    (log_file,) = logs.glob("cron-*.log")
    assert f"{service} finished" in log_file.read_text()
    assert f"exit code {exit_code}" in log_file.read_text()


def test_cron_script_passes_extra_arguments_through(fake_docker, tmp_path):
    bin_dir, record = fake_docker
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_DOCKER_RECORD": str(record),
        "HOST_LOG_DIR": str(tmp_path),
    }
    script = REPO / "scripts" / "run_main_services.sh"
    result = subprocess.run(
        [str(script), "--no-train"], cwd="/", env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0
    assert record.read_text().splitlines()[-2:] == ["pipeline", "--no-train"]


def test_crontab_schedules_hourly_and_six_hourly():
    lines = [
        line.split()
        for line in (REPO / "scripts" / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    schedule = {Path(fields[5]).name: fields[:5] for fields in lines}
    assert schedule["run_main_services.sh"][1:] == ["*", "*", "*", "*"]
    assert schedule["run_backup_service.sh"][1] == "*/6"


def test_db_init_creates_the_app_and_read_only_roles_idempotently(pg_server, sandbox, tmp_path):
    if os.environ.get("PGHOST"):
        pytest.skip("creates cluster-wide roles: only on the throwaway embedded server")
    admin = psycopg2.connect(dbname="postgres", **pg_server)
    admin.autocommit = True
    cur = admin.cursor()
    secrets = tmp_path.parent / f"{tmp_path.name}-secrets"
    secrets.mkdir()
    (secrets / "app").write_text("app-secret-123\n")
    (secrets / "reader").write_text("reader-secret-456\n")
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD"}
    env = base_env(
        PGDATABASE="commodities",
        APP_DB_PASSWORD_FILE=str(secrets / "app"),
        READER_DB_PASSWORD_FILE=str(secrets / "reader"),
        **{names[k]: str(v) for k, v in pg_server.items()},
    )
    try:
        for _ in range(2):  # runs before every job: the second time changes nothing
            result = run(sys.executable, "-m", "source.db_init", env=env, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            assert "app-secret" not in result.stdout + result.stderr
        cur.execute(
            "SELECT rolname, rolcanlogin, rolcreatedb, rolsuper, rolcreaterole, "
            "rolpassword IS NOT NULL FROM pg_authid "
            "WHERE rolname IN ('commodities_app', 'commodities_reader') ORDER BY 1"
        )
        assert cur.fetchall() == [
            ("commodities_app", True, True, False, False, True),
            ("commodities_reader", True, False, False, False, True),
        ]
        cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'commodities'")
        assert cur.fetchone() == ("commodities_app",)

        # The hourly job, connected as the app role, creates its schema and loads.
        app_env = base_env(
            METALS_DEV_API_KEY=TEST_API_KEY,
            METALS_DEV_BASE_URL=sandbox.base_url,
            PGHOST=str(pg_server["host"]),
            PGPORT=str(pg_server.get("port", "5432")),
            PGUSER="commodities_app",
            PGDATABASE="commodities",
        )
        job = MainRunner(tmp_path, app_env)("--no-train")
        assert job.returncode == 0, job.stderr
        # A BI tool as the read-only role reads tables and views created later, writes nothing.
        reader = psycopg2.connect(
            dbname="commodities", **{**pg_server, "user": "commodities_reader"}
        )
        try:
            with reader.cursor() as rcur:
                rcur.execute("SELECT count(*) FROM commodities_price_data_analytics")
                assert rcur.fetchone()[0] == 4
                rcur.execute("SELECT count(*) FROM daily_ohlc")
                assert rcur.fetchone()[0] >= 4
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    rcur.execute("DELETE FROM gold_historic")
        finally:
            reader.close()
    finally:
        cur.execute("DROP DATABASE IF EXISTS commodities WITH (FORCE)")
        cur.execute("DROP OWNED BY commodities_reader")
        cur.execute("DROP ROLE IF EXISTS commodities_app")
        cur.execute("DROP ROLE IF EXISTS commodities_reader")
        admin.close()


def test_the_image_lock_pins_every_runtime_dependency():
    import re
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[<>=!~\[ ]", dep)[0].lower() for dep in project["dependencies"]}
    pinned = {
        line.split("==")[0].lower()
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert wanted <= pinned, f"missing from requirements.lock: {sorted(wanted - pinned)}"


@pytest.mark.parametrize("workflow", sorted((REPO / ".github" / "workflows").glob("*.yml")))
def test_github_workflows_match_their_schema_and_hold_no_secret(workflow):
    result = run(
        tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = workflow.read_text()
    for line in text.splitlines():
        if "password" in line.lower() or "token" in line.lower():
            assert "${{ secrets." in line, line  # credentials only from repository secrets


def test_the_release_builds_both_platforms_and_tags_version_and_commit():
    release = YAML(typ="safe").load((REPO / ".github" / "workflows" / "release.yml").read_text())
    steps = release["jobs"]["image"]["steps"]
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64" and build["with"]["push"]
    meta = next(s for s in steps if s.get("uses", "").startswith("docker/metadata-action"))
    assert "type=semver,pattern={{version}}" in meta["with"]["tags"]
    assert "type=sha" in meta["with"]["tags"]
    ci = YAML(typ="safe").load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    assert any("bash .ci/run" in s.get("run", "") for s in ci["jobs"]["test"]["steps"])


def test_requirements_lock_is_derived_from_poetry_lock():
    # poetry.lock is the single source of pinned versions; the image installs requirements.lock.
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from requirements_from_poetry import render
    finally:
        sys.path.pop(0)
    fix = "python scripts/requirements_from_poetry.py"
    assert (REPO / "requirements.lock").read_text() == render(), f"out of date: run {fix}"


def test_the_monitoring_profile_gives_prometheus_alerts_and_the_dashboard(tmp_path):
    from tests.docker.engine import _compose_plugin

    # `docker compose --profile monitoring config`, with Compose's own loader (compose-go)
    result = run(
        str(_compose_plugin()), "--project-directory", str(REPO), "-f",
        str(REPO / "docker-compose.yml"), "--env-file", os.devnull, "--profile", "monitoring",
        "config", "--format", "json",
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    monitoring = {"node-exporter", "prometheus", "grafana"}
    assert monitoring <= set(services)
    plain = YAML(typ="safe").load((REPO / "docker-compose.yml").read_text())["services"]
    for name in monitoring:
        assert plain[name]["profiles"] == ["monitoring"]  # `up` alone starts none of them
        image = services[name]["image"]
        assert "@sha256:" in image or re.search(r":v?\d+\.\d+\.\d+$", image), image
        for port in services[name].get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)
    mounts = {name: {m["target"]: m for m in services[name]["volumes"]} for name in monitoring}
    # node_exporter reads the jobs' METRICS_DIR volume ...
    textfile = mounts["node-exporter"]["/textfile"]
    assert (textfile["type"], textfile["source"], textfile["read_only"]) == (
        "volume", "metrics", True
    )
    assert "--collector.textfile.directory=/textfile" in services["node-exporter"]["command"]
    # ... Prometheus scrapes it by service name, keeping the jobs' label, with the rules loaded
    config = YAML(typ="safe").load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    for target, path in (
        ("/etc/prometheus/prometheus.yml", "deploy/prometheus/prometheus.yml"),
        ("/etc/prometheus/alerts.yml", "deploy/prometheus/alerts.yml"),
    ):
        assert Path(mounts["prometheus"][target]["source"]) == REPO / path
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    (node,) = [job for job in config["scrape_configs"] if job["job_name"] == "node"]
    assert node["honor_labels"] is True
    assert node["static_configs"] == [{"targets": ["node-exporter:9100"]}]
    # ... and Grafana gets the provisioning files, the dashboard and the profile's Prometheus.
    for target, path in (
        ("/etc/grafana/provisioning", "deploy/grafana/provisioning"),
        ("/var/lib/grafana/dashboards", "deploy/grafana/dashboards"),
    ):
        assert Path(mounts["grafana"][target]["source"]) == REPO / path
    assert "grafana_admin_password" in {s["source"] for s in services["grafana"]["secrets"]}
