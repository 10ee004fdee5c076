"""Model files: `<models_dir>/model_<target>/<metal>.joblib` plus `<metal>.json` metadata,
and the model facts status, the report and the metrics show, read from that metadata.

Both are written atomically. The metadata carries the joblib file's sha256, for whoever
unpickles a model to check first (a file that does not match is not to be unpickled).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from source.facts import HorizonSkill, ModelFacts
from source.files import atomic_write, sha256_of

TARGETS = ("rate_price", "rate_ask")  # the columns a model is trained for, per metal


class ModelIntegrityError(Exception):
    """A model file is missing, or does not match the sha256 in its metadata."""


def model_paths(models_dir: Path, target: str, metal: str) -> tuple[Path, Path]:
    directory = Path(models_dir) / f"model_{target}"
    return directory / f"{metal}.joblib", directory / f"{metal}.json"


def library_versions() -> dict[str, str]:
    import joblib
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
    import joblib  # not at the top: status and the hourly run's schedule read metadata only

    model_path, meta_path = model_paths(models_dir, target, metal)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(model_path, lambda handle: joblib.dump(model, handle))
    metadata = metadata | {"sha256": sha256_of(model_path), "model_file": model_path.name}
    atomic_write(meta_path, json.dumps(metadata, indent=2, default=str).encode())
    return metadata


def load_model(models_dir: Path, target: str, metal: str, metadata: dict):
    """The saved model, unpickled only when its file matches the sha256 in `metadata`."""
    import joblib

    model_path, _ = model_paths(models_dir, target, metal)
    if not model_path.is_file() or sha256_of(model_path) != metadata.get("sha256"):
        raise ModelIntegrityError(f"{model_path}: missing or not the file its metadata names")
    with model_path.open("rb") as handle:
        return joblib.load(handle)


def read_metadata(models_dir: Path, target: str, metal: str) -> dict:
    _, meta_path = model_paths(models_dir, target, metal)
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(f"{meta_path}: unreadable metadata ({exc})") from None


def model_facts(models_dir: Path, metals: tuple[str, ...]) -> list[ModelFacts]:
    """Skill per metal, target and horizon, from the models' metadata files (no model is
    unpickled, no scikit-learn imported); a model without readable metadata is untrained."""
    models = []
    for metal in metals:
        for target in TARGETS:
            try:
                meta = read_metadata(models_dir, target, metal)
            except ModelIntegrityError:
                models.append(ModelFacts(metal, target, trained=False))
                continue
            chosen = meta.get("chosen", {})
            skill = {
                str(horizon): HorizonSkill(
                    mase=m.get("mase"),
                    direction_accuracy=m.get("direction_accuracy"),
                    beats_naive=m.get("mase") is not None and m["mase"] < 1,
                    chosen=chosen.get(horizon),
                    interval_coverage=m.get("interval_coverage"),
                    interval_score_ratio=m.get("interval_score_ratio"),
                )
                for horizon, m in meta.get("metrics", {}).items()
            }
            models.append(
                ModelFacts(
                    metal,
                    target,
                    trained=True,
                    trained_at=meta.get("trained_at"),
                    rows_used=meta.get("rows_used"),
                    frequency=meta.get("frequency", "hourly"),
                    by_horizon=skill,
                )
            )
    return models
