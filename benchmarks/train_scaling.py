"""Training time for all eight models (4 metals x rate_price/rate_ask) on 1, 5 and 10 years of
synthetic hourly history, idle and next to one busy-looping neighbour process, and the ratio;
the peak memory of a training worker; then the scaling per year of history (a straight line
through the smallest and the largest history: seconds and MB fixed + per year).
Run: python benchmarks/train_scaling.py [years ...]

Times the same code path as `main.py train` minus the database: the models computed side by
side in worker processes (one per available core, BLAS/OpenMP held to one thread each), then
the joblib/metadata write.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from source.ml.registry import save_model  # noqa: E402
from source.ml.sampling import training_rows  # noqa: E402
from source.ml.train import TARGETS, available_cores, fit_in_worker, min_rows  # noqa: E402

HOURS_PER_YEAR = 24 * 365
METALS = ("gold", "silver", "platinum", "palladium")


def synthetic_history(hours: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    returns = rng.normal(0, 0.0015, hours)
    returns[1:] += 0.2 * returns[:-1]
    price = 1000 * np.exp(np.cumsum(returns))
    stamps = pd.date_range("2015-01-01", periods=hours, freq="h", tz="UTC")
    return pd.DataFrame({"timestamp": stamps, "rate_price": price, "rate_ask": price * 1.0005})


def fit_measured(*task):
    """fit_in_worker, and the worker's peak resident memory so far (MB)."""
    return fit_in_worker(*task), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_all_models(years: int) -> tuple[float, float]:
    """(seconds, the largest worker peak in MB): sizes run smallest first, so a reused
    worker's peak is this size's."""
    hours = years * HOURS_PER_YEAR
    tasks = []
    for seed, metal in enumerate(METALS):
        history = synthetic_history(hours, seed)
        for target in TARGETS:
            series, sampling = training_rows(history[["timestamp", target]], min_rows())
            tasks.append((series, metal, target, sampling))
    started = time.perf_counter()
    measured = Parallel(n_jobs=min(len(tasks), available_cores()))(
        delayed(fit_measured)(*task) for task in tasks
    )
    with tempfile.TemporaryDirectory() as models_dir:
        for result, _ in measured:
            assert result[0] == "ok", result
            _, model, metadata, _, _ = result
            save_model(Path(models_dir), metadata["target"], metadata["metal"], model, metadata)
    return time.perf_counter() - started, max(peak for _, peak in measured)


def busy_loop() -> None:
    while True:
        pass


def main(argv: list[str]) -> None:
    years_list = [int(y) for y in argv] or [1, 5, 10]
    print(f"{available_cores()} core(s) available")
    print(
        f"{'years':>5} {'rows/metal':>11} {'idle (s)':>9} {'busy (s)':>9} {'busy/idle':>10} "
        f"{'worker peak (MB)':>17}"
    )
    line: dict[int, tuple[float, float]] = {}
    for years in sorted(years_list):
        idle, peak = time_all_models(years)
        line[years] = idle, peak
        neighbour = multiprocessing.Process(target=busy_loop, daemon=True)
        neighbour.start()
        try:
            busy, _ = time_all_models(years)
        finally:
            neighbour.terminate()
            neighbour.join()
        print(
            f"{years:>5} {years * HOURS_PER_YEAR:>11,} {idle:>9.1f} {busy:>9.1f} "
            f"{busy / idle:>10.2f} {peak:>17.0f}"
        )
    if len(line) > 1:
        (few, (s0, m0)), (many, (s1, m1)) = min(line.items()), max(line.items())
        per_s, per_mb = (s1 - s0) / (many - few), (m1 - m0) / (many - few)
        print(
            f"scaling: {s0 - per_s * few:.1f} s + {per_s:.2f} s per year of history (idle, all "
            f"eight models); a worker {m0 - per_mb * few:.0f} MB + {per_mb:.1f} MB per year"
        )
    print("targets: 10 years idle <= 60 s on 2 cores; busy/idle <= 2")


if __name__ == "__main__":
    main(sys.argv[1:])
