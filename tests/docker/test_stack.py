"""The Docker Compose deployment, built from this checkout and used the way a person uses it:
deployed by the README's steps, every job through its cron script or `docker compose run`, one
job started by a real cron daemon, the database stopped under a running job. The tests follow
one deployment through its life, in file order."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg2
import pytest

from source.config import DEMO_METALS
from tests.docker.conftest import PYTHON_IMAGE, TIMINGS, Deployment

pytestmark = pytest.mark.timeout(600)
METALS = ("gold", "silver", "platinum", "palladium")
SEEN: dict[str, object] = {}  # what later tests compare with (rows at the backup, its ID)
CRON_LINE = re.compile(r"^\S+ pipeline finished at \S+ with exit code (\d+)$", re.M)


def rows(deployment: Deployment) -> int:
    return deployment.query("SELECT count(*) FROM commodities_price_data_analytics")[0][0]


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def files_in(deployment: Deployment, folder: str, pattern: str = "*") -> list[str]:
    """Files of a volume, listed by a container of the app image (no database needed)."""
    listed = deployment.job(
        "--no-deps", "--entrypoint", "find", "pipeline", folder, "-type", "f", "-name", pattern
    )
    assert listed.returncode == 0, listed.stderr
    return sorted(listed.stdout.split())


def host_csv(path: Path, hours: int, start: datetime) -> Path:
    """A vendor-style hourly price file on the host, readable by the container's user."""
    prices = 1500 * np.exp(np.cumsum(np.random.default_rng(7).normal(0, 0.002, hours)))
    times = [start + timedelta(hours=h) for h in range(hours)]
    lines = [f"{t:%Y-%m-%d %H:%M:%S},{p:.2f}" for t, p in zip(times, prices, strict=True)]
    path.write_text("time,close\n" + "\n".join(lines) + "\n")
    path.chmod(0o644)
    return path


def test_the_app_adds_at_most_400_mb_to_its_base_image(engine, app_image):
    def size(tag: str) -> int:
        return int(engine.run("image", "inspect", "-f", "{{.Size}}", tag).stdout)

    added = size(app_image) - size(PYTHON_IMAGE)
    TIMINGS["image: the app adds to its base"] = f"{added / 1e6:.0f} MB"
    assert added <= 400e6, f"the app adds {added / 1e6:.0f} MB"


def test_the_hourly_cron_script_loads_every_metal_readable_from_the_host(deployment):
    result = deployment.script("run_main_services.sh")
    assert result.returncode == 0, result.stderr
    # Cron mails what a job prints: here only that the models wait for more history.
    (line,) = result.stderr.strip().splitlines()
    assert "model(s) skipped, too little data yet" in line
    # Read from the host as the read-only role, which can write nothing.
    assert deployment.query(
        "SELECT metal, source FROM commodities_price_data_analytics ORDER BY metal"
    ) == sorted((metal, "api") for metal in METALS)
    conn = deployment.reader()
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), conn.cursor() as cur:
            cur.execute("DELETE FROM gold_historic")
    finally:
        conn.close()
    assert re.search(r"pipeline finished at \S+ with exit code 0", deployment.cron_log())
    # Its metrics, for node_exporter, in the metrics volume.
    metrics = files_in(deployment, "/app/metrics", "*.prom")
    assert metrics == ["/app/metrics/commodities_pipeline.prom"]


@pytest.mark.parametrize(
    ("secret", "variable"),
    [("pg_app_password", "APP_DB_PASSWORD_FILE"),  # read first by `init`, then by the job
     ("metals_dev_api_key", "METALS_DEV_API_KEY_FILE")],  # read by the job only
)
def test_an_unreadable_secret_is_one_line_naming_the_file_and_the_fix(
    deployment, secret, variable
):
    path = deployment.root / "secrets" / secret
    path.chmod(0o600)  # what the README used to say: unreadable by the jobs' uid 10001
    try:
        result = deployment.script("run_main_services.sh")
    finally:
        path.chmod(0o644)
    assert result.returncode == 2
    # Compose may first say that `init` failed; then the reason, in one line.
    line = result.stderr.strip().splitlines()[-1]
    assert f"cannot read {variable} (/run/secrets/{secret}): permission denied" in line
    assert "chmod 644 secrets/*" in line
    assert deployment.secret(secret) not in result.stderr


def test_backfill_then_train_in_containers(deployment):
    start = (date.today() - timedelta(days=420)).isoformat()
    backfill = deployment.job("pipeline", "backfill", "--start", start)
    assert backfill.returncode == 0, backfill.stderr
    assert deployment.query(
        "SELECT count(*) >= 4 * 400 FROM commodities_price_data_analytics WHERE source = 'backfill'"
    ) == [(True,)]
    train = deployment.job("pipeline", "train")
    assert train.returncode == 0, train.stderr
    assert "model(s) trained" in train.stdout
    models = files_in(deployment, "/app/trained_models", "*.joblib")
    assert {Path(p).stem for p in models} == set(METALS)
    SEEN["models"] = models


def test_a_backup_through_its_cron_script_is_listed_verified(deployment):
    result = deployment.script("run_backup_service.sh")
    assert result.returncode == 0, result.stderr
    listing = deployment.job("backup", "list")
    assert listing.returncode == 0, listing.stderr
    (backup_id,) = re.findall(r"^(\d{8}T\d{6}Z)", listing.stdout, re.M)
    assert " restored (" in listing.stdout
    SEEN["backup"], SEEN["rows at backup"] = backup_id, rows(deployment)


def test_import_csv_of_a_file_on_the_host(deployment, tmp_path):
    csv = host_csv(tmp_path / "gold_2019.csv", 48, datetime(2019, 3, 4, tzinfo=UTC))
    result = deployment.job(
        "-v", f"{csv}:/import/gold_2019.csv:ro", "pipeline",
        "import-csv", "/import/gold_2019.csv", "--metal", "gold",
    )
    assert result.returncode == 0, result.stderr
    assert "48 inserted" in result.stdout
    assert rows(deployment) == SEEN["rows at backup"] + 48


def test_restore_brings_back_the_rows_and_swaps_the_models_in(deployment):
    emptied = deployment.job(
        "--no-deps", "--entrypoint", "sh", "pipeline", "-c", "rm -rf /app/trained_models/*"
    )
    assert emptied.returncode == 0, emptied.stderr
    assert files_in(deployment, "/app/trained_models", "*.joblib") == []
    result = deployment.job("backup", "restore", str(SEEN["backup"]))
    assert result.returncode == 0, result.stderr
    assert rows(deployment) == SEEN["rows at backup"]  # the imported rows are gone
    assert files_in(deployment, "/app/trained_models", "*.joblib") == SEEN["models"]


def test_status_is_healthy(deployment):
    result = deployment.job("pipeline", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    for metal in METALS:
        assert metal in result.stdout


def test_the_report_reaches_the_host(deployment):
    result = deployment.script("run_report.sh")
    assert result.returncode == 0, result.stderr
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    folder = deployment.root / "reports" / day
    assert result.stdout.strip() == f"report written to {folder}/index.html"
    charts = {f"{m}{view}.png" for m in METALS for view in ("", "-history")}  # recent, long
    assert {p.name for p in folder.iterdir()} == {"index.html", *charts}
    for path in folder.iterdir():  # the person who ran it owns (and can read) every file
        assert path.stat().st_uid == os.getuid() and path.stat().st_size > 1000


def test_backtest_of_a_file_on_the_host(deployment, tmp_path):
    csv = host_csv(tmp_path / "prices.csv", 1200, datetime(2024, 1, 1, tzinfo=UTC))
    result = deployment.job(
        "-v", f"{csv}:/import/prices.csv:ro", "--no-deps", "pipeline",
        "backtest", "--csv", "/import/prices.csv", "--column", "close",
    )
    assert result.returncode == 0, result.stderr
    assert '"n_predictions"' in result.stdout and '"mase"' in result.stdout


def production_rows(deployment) -> list | None:
    """The production database's rows by source; None before its first job migrated it."""
    if deployment.query("SELECT to_regclass('commodities_price_data_analytics')")[0][0] is None:
        return None
    return deployment.query("SELECT source, count(*) FROM commodities_price_data_analytics "
                            "GROUP BY source ORDER BY source")


def test_the_demo_runs_in_a_container_apart_from_production(deployment):
    before = production_rows(deployment)
    result = deployment.job("pipeline", "--demo", timeout=420)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Demo run finished - SYNTHETIC" in result.stdout
    # METALS unset in Compose: the demo's own default, copper (per tonne) included.
    assert f"{len(DEMO_METALS)}/{len(DEMO_METALS)} metals loaded" in result.stdout
    assert production_rows(deployment) == before  # nothing of the demo in production
    # Kept between runs in its own volume, not lost with the container.
    assert files_in(deployment, "/app/pgdata", "PG_VERSION")


def test_bad_input_is_one_line_and_exit_2(deployment):
    result = deployment.script("run_main_services.sh", "--metals", "unobtainium")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("main.py: configuration error: unknown metal(s) unobtainium")


@pytest.fixture(scope="module")
def cron(deployment, tmp_path_factory):
    """Debian's cron daemon with the hourly line of scripts/crontab, at the next minute, for
    this deployment. It runs in a private mount namespace, so it reads only this crontab (not
    the host's) and is stopped by the test."""
    daemon = shutil.which("cron") or "/usr/sbin/cron"
    if not Path(daemon).is_file() or os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the cron test must run in CI: needs Debian's cron and root")
        pytest.skip("cron test skipped: needs Debian's cron (apt install cron) and root")
    spool = tmp_path_factory.mktemp("crontabs")
    empty = tmp_path_factory.mktemp("cron.d")
    (empty / "crontab").write_text("")
    # The next minute of the host's local time (cron's), or the one after when the next one
    # starts too soon for the daemon to be up and reading its crontab.
    due = datetime.now() + timedelta(seconds=75)
    hourly = next(
        line for line in (deployment.root / "scripts" / "crontab").read_text().splitlines()
        if line.endswith("run_main_services.sh") and not line.startswith("#")
    )
    command = hourly.split()[5].replace("/opt/commodities", str(deployment.root))
    engine_env = deployment.engine.env
    crontab = spool / "root"
    crontab.write_text(
        f"PATH={engine_env['PATH']}\nDOCKER_CONFIG={engine_env['DOCKER_CONFIG']}\nMAILTO=\"\"\n"
        f"{due.minute} {due.hour} * * * {command} >{deployment.root}/cron-job.out 2>&1\n"
    )
    crontab.chmod(0o600)
    script = (
        'mount --bind "$1" /var/spool/cron/crontabs && mount --bind "$2" /etc/cron.d '
        '&& mount --bind "$2/crontab" /etc/crontab '
        '&& { [ ! -e /run/crond.pid ] || mount --bind "$2/crontab" /run/crond.pid; } '
        '&& exec "$3" -f'
    )
    process = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         str(spool), str(empty), daemon],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    lines_before = len(CRON_LINE.findall(deployment.cron_log()))
    yield due, process, lines_before
    process.terminate()
    process.wait(timeout=30)


def test_the_image_also_builds_with_the_legacy_builder(engine, cron):
    # Runs while cron's minute comes round.
    started = time.monotonic()
    engine.run(
        "build", "--network", "host", "-t", "commodities-test/legacy-build:latest",
        str(Path(__file__).resolve().parents[2]), timeout=900, env={"DOCKER_BUILDKIT": "0"},
    )
    TIMINGS["image build (legacy builder)"] = f"{time.monotonic() - started:.0f} s"
    engine.run("image", "rm", "commodities-test/legacy-build:latest", check=False)


def test_cron_starts_the_hourly_job_and_its_line_reaches_the_cron_log(deployment, cron):
    due, daemon, before = cron  # lines counted when cron was started: it may be done already
    deadline = time.monotonic() + max(0.0, (due - datetime.now()).total_seconds()) + 180
    while len(CRON_LINE.findall(deployment.cron_log())) == before and time.monotonic() < deadline:
        time.sleep(2)
    codes = CRON_LINE.findall(deployment.cron_log())[before:]
    output = deployment.root / "cron-job.out"
    running = "running" if daemon.poll() is None else f"exited {daemon.returncode}"
    assert codes == ["0"], (
        f"cron ({running}), due {due:%H:%M}: "
        + (output.read_text() if output.exists() else deployment.cron_log())
    )


def spot_requests(deployment: Deployment) -> int:
    logs = deployment.compose("logs", "--no-log-prefix", "metals-dev").stdout
    return logs.count("GET /v1/metal/spot")


def test_the_database_stopped_mid_run_then_the_next_run_loads_what_landed(deployment):
    before = rows(deployment)
    slow = {"SANDBOX_DELAY": "8", "SANDBOX_HOUR_OFFSET": "1"}  # a quote of a new hour
    deployment.compose("up", "-d", "--wait", "metals-dev", **slow)
    run = subprocess.Popen(
        [str(deployment.root / "scripts" / "run_main_services.sh")], cwd="/",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**deployment.engine.env, **slow},
    )
    deadline = time.monotonic() + 120
    while spot_requests(deployment) < len(METALS) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert spot_requests(deployment) == len(METALS), "the run never asked for the prices"
    deployment.compose("stop", "db")  # while the four answers are on their way
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr
    (line,) = stderr.strip().splitlines()  # what cron mails
    assert line.startswith("main.py: 0/4 metals loaded") and "database: " in line
    assert len(files_in(deployment, "/app/source/data/incoming", "*.json")) == len(METALS)

    later = {"SANDBOX_DELAY": "0", "SANDBOX_HOUR_OFFSET": "2"}
    deployment.compose("up", "-d", "--wait", "metals-dev", **later)
    result = deployment.script("run_main_services.sh", "--no-train", **later)  # db restarts
    assert result.returncode == 0, result.stderr
    assert rows(deployment) == before + 2 * len(METALS)  # the landed hour and the new one
    assert files_in(deployment, "/app/source/data/incoming", "*.json") == []
