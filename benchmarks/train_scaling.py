"""Training time for all eight models (4 metals x rate_price/rate_ask) on 1, 5 and 10 years of
synthetic hourly history. Run: python benchmarks/train_scaling.py [years ...]

Times the same code path as `main.py train` minus the database: features, walk-forward
evaluation, final fit and the joblib/metadata write.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from source.ml.registry import save_model  # noqa: E402
from source.ml.train import TARGETS, train_series  # noqa: E402

HOURS_PER_YEAR = 24 * 365
METALS = ("gold", "silver", "platinum", "palladium")


def synthetic_history(hours: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    returns = rng.normal(0, 0.0015, hours)
    returns[1:] += 0.2 * returns[:-1]
    price = 1000 * np.exp(np.cumsum(returns))
    stamps = pd.date_range("2015-01-01", periods=hours, freq="h", tz="UTC")
    return pd.DataFrame({"timestamp": stamps, "rate_price": price, "rate_ask": price * 1.0005})


def time_all_models(years: int) -> tuple[float, int]:
    hours = years * HOURS_PER_YEAR
    histories = {metal: synthetic_history(hours, seed) for seed, metal in enumerate(METALS)}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as models_dir:
        for metal, history in histories.items():
            for target in TARGETS:
                model, metadata, _ = train_series(history[["timestamp", target]], metal, target)
                save_model(Path(models_dir), target, metal, model, metadata)
    return time.perf_counter() - started, hours


def main(argv: list[str]) -> None:
    years_list = [int(y) for y in argv] or [1, 5, 10]
    print(f"{'years':>5} {'rows/metal':>11} {'8 models (s)':>13} {'per model (s)':>14}")
    for years in years_list:
        seconds, rows = time_all_models(years)
        print(f"{years:>5} {rows:>11,} {seconds:>13.1f} {seconds / 8:>14.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
