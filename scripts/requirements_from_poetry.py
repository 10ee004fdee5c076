"""Write requirements.lock (the Docker image's pins) from poetry.lock, the single source of
pinned versions: the runtime packages whose markers hold for the image (CPython 3.11, Linux).

Run after `poetry lock`:  python scripts/requirements_from_poetry.py
The test suite fails when requirements.lock and poetry.lock disagree."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.markers import Marker

REPO = Path(__file__).resolve().parent.parent
IMAGE = {  # the environment of the Dockerfile's python:3.11 slim image
    "python_version": "3.11",
    "python_full_version": "3.11.11",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
HEADER = (
    "# Pinned runtime dependencies for the Docker image (Python 3.11, linux), derived from\n"
    "# poetry.lock: python scripts/requirements_from_poetry.py\n"
    "# Install with: pip install --require-hashes -r requirements.lock\n"
)


def image_pins(lock_path: Path = REPO / "poetry.lock") -> list[tuple[str, list[str]]]:
    """(name==version, its sha256 hashes) for each package the image installs."""
    lock = tomllib.loads(lock_path.read_text())
    pins = []
    for package in lock["package"]:
        if package.get("optional") or "main" not in package.get("groups", ["main"]):
            continue  # extras (dev, notebook, bench) are not in the image
        marker = package.get("markers")
        if isinstance(marker, dict):
            marker = marker.get("main")
        if marker and not Marker(marker).evaluate(IMAGE):
            continue
        hashes = sorted(f["hash"] for f in package.get("files", []))
        pins.append((f"{package['name']}=={package['version']}", hashes))
    return sorted(pins, key=lambda pin: pin[0].lower())


def render() -> str:
    # Every file poetry.lock knows (wheels of every platform the image is built for, and the
    # sdist): pip --require-hashes refuses any downloaded file whose sha256 is not listed.
    lines = []
    for pin, hashes in image_pins():
        lines.append(" \\\n".join([pin, *(f"    --hash={h}" for h in hashes)]) + "\n")
    return HEADER + "".join(lines)


if __name__ == "__main__":
    (REPO / "requirements.lock").write_text(render())
    sys.exit(0)
