"""The manifest: what a backup holds, with sha256 and size of every file."""

from __future__ import annotations

import json
from pathlib import Path

from source.files import sha256_of

MANIFEST = "manifest.json"
DATABASE_DUMP = "database.dump"
MODELS_ARCHIVE = "models.tar.gz"


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_of(path), "size": path.stat().st_size}


def read_manifest(backup_dir: Path) -> dict:
    try:
        return json.loads((backup_dir / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{backup_dir.name}: unreadable {MANIFEST} ({exc})") from None


def checksum_problems(backup_dir: Path, manifest: dict) -> list[str]:
    """Files that are missing or whose size or sha256 differ from the manifest."""
    problems = []
    for name, expected in manifest.get("files", {}).items():
        path = backup_dir / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        if path.stat().st_size != expected["size"]:
            problems.append(
                f"{name} is {path.stat().st_size} bytes, manifest says {expected['size']}"
            )
        elif sha256_of(path) != expected["sha256"]:
            problems.append(f"{name} sha256 does not match the manifest")
    for required in (DATABASE_DUMP, MODELS_ARCHIVE):
        if required not in manifest.get("files", {}):
            problems.append(f"manifest lists no {required}")
    return problems
