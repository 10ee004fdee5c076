"""The training part of an hourly run with one new quote, on ten years of synthetic hourly
history for each of the four metals (eight models): before (the walk-forward evaluation and
the final fit, as every retraining did) against after (the refit keeping the last
evaluation's choice and calibration, source/ml/schedule.py). Runs alternate; medians.
Run: python benchmarks/hourly_refit.py [--years N] [--runs N]

The same code path as the hourly run minus the database: the models computed side by side in
worker processes (one per available core), the saved models read back through the registry
(sha256 checked) for the refit, then the joblib/metadata write.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from joblib import Parallel, delayed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.train_scaling import HOURS_PER_YEAR, METALS, synthetic_history  # noqa: E402
from source.ml.registry import save_model  # noqa: E402
from source.ml.sampling import training_rows  # noqa: E402
from source.ml.train import (  # noqa: E402
    TARGETS,
    available_cores,
    fit_in_worker,
    min_rows,
    previous_evaluation,
)


def tasks_for(histories: dict, rows: int) -> list[tuple]:
    tasks = []
    for metal, history in histories.items():
        for target in TARGETS:
            series, sampling = training_rows(history[["timestamp", target]][:rows], min_rows())
            tasks.append((series, metal, target, sampling))
    return tasks


def train_and_save(tasks: list[tuple], models_dir: Path, refit: bool) -> float:
    started = time.perf_counter()
    jobs = []
    for series, metal, target, sampling in tasks:
        previous = None
        if refit:
            previous = previous_evaluation(
                models_dir, metal, target, len(series), sampling["frequency"]
            )
            assert previous is not None, "the evaluation is not due: a refit"
        jobs.append((series, metal, target, sampling, previous))
    results = Parallel(n_jobs=min(len(jobs), available_cores()))(
        delayed(fit_in_worker)(*job) for job in jobs
    )
    for result in results:
        assert result[0] == "ok", result
        _, model, metadata, _, _ = result
        assert metadata["refit_only"] == refit
        if not refit:  # the refit's model stays beside the evaluated one for the next run
            save_model(models_dir, metadata["target"], metadata["metal"], model, metadata)
        else:
            with tempfile.TemporaryDirectory() as scratch:
                save_model(Path(scratch), metadata["target"], metadata["metal"], model, metadata)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    hours = args.years * HOURS_PER_YEAR
    histories = {metal: synthetic_history(hours, seed) for seed, metal in enumerate(METALS)}
    with tempfile.TemporaryDirectory() as directory:
        models_dir = Path(directory)
        seconds = train_and_save(tasks_for(histories, hours - 1), models_dir, refit=False)
        print(f"{available_cores()} core(s); {hours:,} hourly rows per metal")
        print(f"evaluated and trained on all but the newest row: {seconds:.1f} s")
        with_new_quote = tasks_for(histories, hours)
        before, after = [], []
        for _ in range(args.runs):
            after.append(train_and_save(with_new_quote, models_dir, refit=True))
            with tempfile.TemporaryDirectory() as scratch:
                before.append(train_and_save(with_new_quote, Path(scratch), refit=False))
        b, a = statistics.median(before), statistics.median(after)
        print(f"one new quote, {args.runs} alternating runs, medians:")
        print(f"  before (walk-forward evaluation + final fit): {b:.1f} s")
        print(f"  after (refit, last evaluation kept):          {a:.1f} s  ({b / a:.1f}x faster)")


if __name__ == "__main__":
    main()
