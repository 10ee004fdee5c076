"""The manifest: what a backup holds, with sha256 and size of every file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from source.files import sha256_of

MANIFEST = "manifest.json"
DATABASE_DUMP = "database.dump"
MODELS_ARCHIVE = "models.tar.gz"


@dataclass(frozen=True)
class FileEntry:
    """A file as the manifest records it (and as a store holds it)."""

    sha256: str  # hex
    size: int


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_of(path), "size": path.stat().st_size}


def read_manifest(backup_dir: Path) -> dict:
    try:
        return json.loads((backup_dir / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{backup_dir.name}: unreadable {MANIFEST} ({exc})") from None


def manifest_files(manifest: dict) -> dict[str, FileEntry]:
    """The files a manifest lists; ValueError when they are not as this module writes them."""
    try:
        return {
            str(name): FileEntry(str(entry["sha256"]), int(entry["size"]))
            for name, entry in manifest.get("files", {}).items()
        }
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the manifest's files are malformed ({exc!r})") from None


def encryption_of(manifest: dict) -> dict | None:
    """The manifest's `encryption` record ({"format", "recipients", "files"}), or None."""
    record = manifest.get("encryption")
    return record if isinstance(record, dict) and record.get("files") else None


def mismatch(name: str, stored: FileEntry, expected: FileEntry) -> str | None:
    """How a stored file differs from the manifest's entry, or None."""
    if stored.size != expected.size:
        return f"{name} is {stored.size} bytes, manifest says {expected.size}"
    if stored.sha256 != expected.sha256:
        return f"{name} sha256 does not match the manifest"
    return None


def checksum_problems(backup_dir: Path, manifest: dict) -> list[str]:
    """Files that are missing or whose size or sha256 differ from the manifest."""
    problems = []
    try:
        files = manifest_files(manifest)
    except ValueError as exc:
        return [str(exc)]
    for name, expected in files.items():
        path = backup_dir / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        size = path.stat().st_size
        # Of a file of the wrong size the size says enough: it is not read.
        digest = sha256_of(path) if size == expected.size else expected.sha256
        if problem := mismatch(name, FileEntry(digest, size), expected):
            problems.append(problem)
    for required in (DATABASE_DUMP, MODELS_ARCHIVE):
        if required not in manifest.get("files", {}):
            problems.append(f"manifest lists no {required}")
    return problems
