"""Model files: `<models_dir>/model_<target>/<metal>.joblib` plus `<metal>.json` metadata.

Both are written atomically. The metadata carries the joblib file's sha256, and a file whose
checksum does not match is refused before it is unpickled.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import joblib

from source.files import atomic_write, sha256_of


class ModelIntegrityError(Exception):
    """A model file is missing, or does not match the sha256 in its metadata."""


def model_paths(models_dir: Path, target: str, metal: str) -> tuple[Path, Path]:
    directory = Path(models_dir) / f"model_{target}"
    return directory / f"{metal}.joblib", directory / f"{metal}.json"


def library_versions() -> dict[str, str]:
    import numpy
    import pandas
    import sklearn

    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "pandas": pandas.__version__,
        "numpy": numpy.__version__,
        "joblib": joblib.__version__,
    }


def save_model(models_dir: Path, target: str, metal: str, model, metadata: dict) -> dict:
    """Write the model then its metadata (with the model's sha256); return the metadata."""
    model_path, meta_path = model_paths(models_dir, target, metal)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(model_path, lambda handle: joblib.dump(model, handle))
    metadata = metadata | {"sha256": sha256_of(model_path), "model_file": model_path.name}
    atomic_write(meta_path, json.dumps(metadata, indent=2, default=str).encode())
    return metadata


def read_metadata(models_dir: Path, target: str, metal: str) -> dict:
    _, meta_path = model_paths(models_dir, target, metal)
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(f"{meta_path}: unreadable metadata ({exc})") from None


def load_model(models_dir: Path, target: str, metal: str):
    """Unpickle a model only after its sha256 matches the metadata."""
    model_path, meta_path = model_paths(models_dir, target, metal)
    expected = read_metadata(models_dir, target, metal).get("sha256")
    if not model_path.is_file():
        raise ModelIntegrityError(f"{model_path}: missing")
    actual = sha256_of(model_path)
    if actual != expected:
        raise ModelIntegrityError(
            f"{model_path}: sha256 {actual[:12]}… does not match {meta_path.name} "
            f"({str(expected)[:12]}…); refusing to load it"
        )
    return joblib.load(model_path)
