"""How far an exactly right 80% interval's coverage strays by chance, per horizon and test length.

A coverage figure from N origins of h-step moves is a noisy estimate: consecutive h-step moves
share h - 1 steps, so N origins hold only about N / h independent outcomes. This simulates the
best any method can do, an interval at the true 10%/90% quantiles of a Gaussian random walk's
h-step move, and prints per (N, h): the spread of its coverage, the chance that it lands inside
0.78-0.82 anyway, and how often Kupiec's test on non-overlapping origins (every h-th) rejects
it at 5% (about 5%: the test allows for the noise, a fixed band does not).

Run: python benchmarks/coverage_noise.py [N ...] [--runs R]
(default N: 512, 1244 and 12784, the 15:00 series', the daily closes' and the hourly files'
origins in benchmarks/intervals.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from source.ml.intervals import LEVEL, kupiec_pvalue  # noqa: E402

BAND = (0.78, 0.82)
HORIZONS = (1, 6, 24)


def exact_coverages(origins: int, h: int, runs: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """Coverage of the exact interval over `origins` overlapping h-step moves, `runs` times;
    and the share of runs Kupiec's test (every h-th origin) rejects at 5%."""
    rng = np.random.default_rng(seed)
    half = norm.ppf(1 - (1 - LEVEL) / 2) * np.sqrt(h)
    coverages, rejected = np.empty(runs), 0
    for run in range(runs):
        walk = np.concatenate([[0.0], np.cumsum(rng.normal(size=origins + h))])
        missed = np.abs(walk[h : h + origins] - walk[:origins]) > half
        coverages[run] = 1 - missed.mean()
        p = kupiec_pvalue(missed[::h])
        rejected += p is not None and p < 0.05
    return coverages, rejected / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("origins", type=int, nargs="*", default=[512, 1244, 12784])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    print(f"an exact 80% interval, {args.runs:,} simulated test periods per line")
    print(
        f"{'origins':>8} {'h':>3} {'independent':>11} {'coverage sd':>11} "
        f"{'P(inside 0.78-0.82)':>19} {'Kupiec rejects':>14}"
    )
    for origins in args.origins:
        for h in HORIZONS:
            coverages, rejected = exact_coverages(origins, h, args.runs)
            inside = np.mean((coverages >= BAND[0]) & (coverages <= BAND[1]))
            print(
                f"{origins:>8,} {h:>3} {origins // h:>11,} {coverages.std():>11.3f} "
                f"{inside:>19.2f} {rejected:>14.2f}"
            )


if __name__ == "__main__":
    main()
