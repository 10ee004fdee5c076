"""Base images for the stack test. Docker Hub is not reachable from every test machine: when
the compose file's `python:3.11.x-slim-bookworm` or `postgres:15.x-bookworm` cannot be pulled,
stand-ins are built under those very tags from Debian bookworm (debootstrap --variant=minbase,
docker import), so the product's Dockerfile and compose file are built and run unchanged.
The stand-ins live here, in the test harness only."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.docker.engine import Engine

HERE = Path(__file__).resolve().parent / "standins"
MINBASE = "commodities-test/bookworm-minbase:latest"
LABEL = "org.commodities.test.standin"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# pip settings worth carrying into a build container; local paths (file://, find-links) are
# meaningless there and are left out.
PIP_KEYS = ("index-url", "extra-index-url", "trusted-host", "cert", "timeout", "retries")


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted(HERE.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _label(engine: Engine, tag: str) -> str | None:
    result = engine.run(
        "image", "inspect", "--format", f'{{{{index .Config.Labels "{LABEL}"}}}}', tag,
        check=False, timeout=60,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _pullable(engine: Engine, tag: str) -> bool:
    return engine.run("pull", "--quiet", tag, check=False, timeout=90).returncode == 0


def host_pip_conf() -> str:
    """The host's pip index settings, as a pip.conf for a build container."""
    listed = subprocess.run(
        ["python3", "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    ).stdout
    settings: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        name = key.split(".", 1)[-1]
        value = value.strip().strip("'\"")
        urls = [v for v in value.split() if not v.startswith("file:")]
        if name in PIP_KEYS and urls:
            settings[name] = " ".join(urls)
    return "[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items()))


# As in Debian's official images: apt keeps no downloaded .deb files in a layer.
_CLEAN = (
    '"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
    '/var/cache/apt/*.bin || true";'
)
DOCKER_CLEAN = (
    f"DPkg::Post-Invoke {{ {_CLEAN} }};\nAPT::Update::Post-Invoke {{ {_CLEAN} }};\n"
    'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
)


def _build_minbase(engine: Engine, scratch: Path) -> None:
    rootfs = scratch / "rootfs"
    subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
        check=True, capture_output=True, timeout=600,
    )
    (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(DOCKER_CLEAN)
    subprocess.run(["rm", "-rf", f"{rootfs}/var/cache/apt/archives"], check=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    engine.run("import", "-", MINBASE, stdin=tar.stdout, timeout=300)
    tar.wait()


def _build_standin(engine: Engine, tag: str, dockerfile: str, scratch: Path) -> None:
    context = scratch / "context"
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(HERE, context)
    shutil.copy(HOST_CA_BUNDLE, context / "host-ca-certificates.crt")
    (context / "pip.conf").write_text(host_pip_conf())
    engine.run(
        "build", "--network", "host", "--label", f"{LABEL}={_fingerprint()}",
        "-f", str(context / dockerfile), "-t", tag, str(context),
        timeout=600, env={"DOCKER_BUILDKIT": "0"},
    )


def ensure_base_images(engine: Engine, python_tag: str, postgres_tag: str) -> list[str]:
    """Make both base images available; returns the tags that are stand-ins built here."""
    wanted = {python_tag: "python.Dockerfile", postgres_tag: "postgres.Dockerfile"}
    fingerprint = _fingerprint()
    missing = []
    for tag in wanted:
        label = _label(engine, tag)  # None: absent; "": a real image; else a stand-in's
        if label == fingerprint or label == "" or (label is None and _pullable(engine, tag)):
            continue
        missing.append(tag)  # absent and not pullable, or a stand-in from older files
    if missing:
        with tempfile.TemporaryDirectory(prefix="standins-") as scratch:
            if not engine.image_exists(MINBASE):
                _build_minbase(engine, Path(scratch))
            for tag in missing:
                _build_standin(engine, tag, wanted[tag], Path(scratch))
    return [tag for tag in wanted if _label(engine, tag) == fingerprint]
