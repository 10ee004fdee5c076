"""Fixtures of the stack tests: the engine, the base images (stand-ins when Docker Hub cannot be
reached), the product image built from this checkout, and a deployment made the README's way."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from ruamel.yaml import YAML

from tests.conftest import REPO
from tests.docker.engine import Engine, EngineUnavailable, find_engine
from tests.docker.standins import ensure_base_images

COMPOSE = YAML(typ="safe").load((REPO / "docker-compose.yml").read_text())
APP_IMAGE = "docker.io/notexists/commodities-pipeline:0.1.0"  # the compose file's default
PYTHON_IMAGE = re.search(r"ARG PYTHON_IMAGE=(\S+)", (REPO / "Dockerfile").read_text())[1]
POSTGRES_IMAGE = COMPOSE["services"]["db"]["image"]
TIMINGS: dict[str, str] = {}  # printed at the end of the session (README figures)

# The Metals.Dev stand-in: the project's sandbox from the same image, on the compose network,
# added the way a local change is made: docker-compose.override.yml beside the compose file.
# The hourly job depends on it, so a run that ignored the override could not fetch.
OVERRIDE = """\
services:
  metals-dev:
    image: ${APP_IMAGE:-docker.io/notexists/commodities-pipeline}:${APP_VERSION:-0.1.0}
    entrypoint: ["python", "-m", "source.sandbox", "--host", "0.0.0.0", "--port", "8080",
                 "--api-key-file", "/run/secrets/metals_dev_api_key",
                 "--delay", "${SANDBOX_DELAY:-0}", "--hour-offset", "${SANDBOX_HOUR_OFFSET:-0}"]
    secrets: [metals_dev_api_key]
  pipeline:
    depends_on:
      metals-dev:
        condition: service_started
"""


@pytest.fixture(scope="session")
def engine(tmp_path_factory) -> Engine:
    try:
        return find_engine(tmp_path_factory.mktemp("engine"))
    except EngineUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Docker stack tests must run in CI: {exc}")
        pytest.skip(f"Docker stack tests skipped: {exc}")


@pytest.fixture(scope="session")
def app_image(engine) -> str:
    """The product image, built from this checkout with BuildKit under the compose file's
    default name, so the deployment finds it as if pulled from the registry."""
    started = time.monotonic()
    ensure_base_images(engine, PYTHON_IMAGE, POSTGRES_IMAGE)
    TIMINGS["base images (stand-ins when not pullable)"] = f"{time.monotonic() - started:.0f} s"
    started = time.monotonic()
    engine.run(
        "build", "--network", "host", "-t", APP_IMAGE, str(REPO),
        timeout=900, env={"DOCKER_BUILDKIT": "1"},
    )
    TIMINGS["image build (BuildKit)"] = f"{time.monotonic() - started:.0f} s"
    return APP_IMAGE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readme_block(after: str, until: str) -> str:
    """The deployment commands (docs/deploy.md) from the line holding `after` up to `until`."""
    text = (REPO / "docs" / "deploy.md").read_text()
    start = text.index(after)
    return text[start : text.index(until, start)]


class Deployment:
    """A directory holding only what the README names, and the commands a user types there."""

    def __init__(self, engine: Engine, root: Path, project: str):
        self.engine = engine
        self.root = root
        self.project = project

    def compose(self, *args: str, check: bool = True, timeout: float = 300, **env):
        return self.engine.run(
            "compose", *args, cwd=self.root, check=check, timeout=timeout,
            env=env,
        )

    def job(self, *args: str, timeout: float = 300, **env) -> subprocess.CompletedProcess:
        """`docker compose run --rm --no-TTY SERVICE ARGS...`, the README's way."""
        return self.compose("--progress", "quiet", "run", "--rm", "--no-TTY", *args,
                            check=False, timeout=timeout, **env)

    def script(self, name: str, *args: str, timeout: float = 300, **env):
        """A cron script, from cron's working directory."""
        return subprocess.run(
            [str(self.root / "scripts" / name), *args], cwd="/", capture_output=True, text=True,
            timeout=timeout, env={**self.engine.env, **env},
        )

    def secret(self, name: str) -> str:
        return (self.root / "secrets" / name).read_text()

    def reader(self):
        """The read-only role, from the host, on 127.0.0.1 (the README's psql line)."""
        return psycopg2.connect(
            host="127.0.0.1", port=self.db_port, user="commodities_reader",
            password=self.secret("pg_reader_password"), dbname="commodities",
        )

    def query(self, statement: str):
        conn = self.reader()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall()
        finally:
            conn.close()

    @property
    def db_port(self) -> int:
        return int(re.search(r"^DB_HOST_PORT=(\d+)$", (self.root / ".env").read_text(), re.M)[1])

    def cron_log(self) -> str:
        return "".join(p.read_text() for p in sorted((self.root / "logs").glob("cron-*.log")))


@pytest.fixture(scope="module")
def deployment(engine, app_image, tmp_path_factory) -> Deployment:
    """Deployed as the README says: the compose file, scripts/, .env from .env.example and the
    secrets made by the README's own commands; PostgreSQL up and healthy."""
    root = tmp_path_factory.mktemp("opt-commodities")
    for name in ("docker-compose.yml", ".env.example"):
        (root / name).write_bytes((REPO / name).read_bytes())
    subprocess.run(["cp", "-a", str(REPO / "scripts"), str(root / "scripts")], check=True)
    subprocess.run(["cp", ".env.example", ".env"], cwd=root, check=True)
    project = f"commodities-test-{uuid.uuid4().hex[:8]}"  # never a real deployment's volumes
    with (root / ".env").open("a") as env_file:  # this host's choices
        env_file.write(
            f"\nCOMPOSE_PROJECT_NAME={project}\nMETALS_DEV_BASE_URL=http://metals-dev:8080/v1\n"
            f"DB_HOST_PORT={free_port()}\nHTTP_BACKOFF=0.2\n"
        )
    secrets = readme_block("mkdir -m 700 secrets", "# 4.")
    subprocess.run(["bash", "-euo", "pipefail", "-c", secrets], cwd=root, check=True)
    (root / "docker-compose.override.yml").write_text(OVERRIDE)
    deployed = Deployment(engine, root, project)
    started = time.monotonic()
    deployed.compose("up", "-d", "--wait", "db", timeout=180)
    TIMINGS["stack start (up -d --wait db)"] = f"{time.monotonic() - started:.0f} s"
    # The roles every job's `init` makes, so a test that reads first (as the reader role)
    # passes alone as well as after the others.
    init = deployed.job("init")
    assert init.returncode == 0, init.stdout + init.stderr
    yield deployed
    deployed.compose("--profile", "jobs", "down", "--volumes", "--remove-orphans", check=False)


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.write_line("docker stack timings:")
        for label, figure in TIMINGS.items():
            terminalreporter.write_line(f"  {label}: {figure}")
