"""The project's 80% price intervals side by side with the volatility models desks use, on the
same series and the same origins (the walk-forward's newest 25%), in one run:

- RiskMetrics: EWMA variance of one-step returns, decay 0.94, normal quantiles, sqrt(h) scaling;
- GARCH(1,1) with Student-t errors (arch), its analytic h-step variance and t quantiles;
- the same GARCH with filtered historical simulation: empirical 10%/90% quantiles of its
  standardised residuals (for h > 1, of sums of h residuals drawn from them);

both GARCH refitted every 1,000 rows on everything before (and at each fold's start). Printed
per horizon: Gneiting-Raftery interval score (price units, lower is better), coverage, and the
Kupiec and Christoffersen p-values; then the project's score over the best peer's.

Run: python benchmarks/intervals.py CSV --column C [--time-column T] [--daily]
     (pip install -e '.[bench]' for arch)
e.g. python benchmarks/intervals.py ../shared/real/hourly/XAUUSD_H1.csv --column close \\
         --time-column time
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from source.ml.backtest import daily_closes, read_series  # noqa: E402
from source.ml.evaluation import N_FOLDS, Dataset, walk_forward_origins  # noqa: E402
from source.ml.intervals import (  # noqa: E402
    ALPHA,
    christoffersen_pvalue,
    interval_score,
    kupiec_pvalue,
)

REFIT_ROWS = 1_000


def peer_bounds(returns: np.ndarray, origins: np.ndarray, h: int) -> dict[str, tuple]:
    """(lower, upper) log-return bounds of each peer at the origins (rows of `returns`)."""
    from arch import arch_model
    from scipy import stats

    z = stats.norm.ppf(1 - ALPHA / 2)
    variance = pd.Series(returns**2).ewm(alpha=0.06, adjust=False).mean().to_numpy()
    spread = np.sqrt(variance[origins] * h) * z
    bounds = {"RiskMetrics EWMA 0.94": (-spread, spread)}
    scaled = returns * 100  # arch fits better on percent returns
    t_low, t_high, f_low, f_high = (np.empty(len(origins)) for _ in range(4))
    refits = _refit_points(origins)
    for first, last in zip(refits, [*refits[1:], len(origins)], strict=True):
        block = origins[first:last]
        fitted = arch_model(
            scaled[1 : block[0]], mean="Zero", vol="GARCH", p=1, q=1, dist="t"
        ).fit(disp="off")
        fixed = arch_model(scaled[1:], mean="Zero", vol="GARCH", p=1, q=1, dist="t").fix(
            fitted.params
        )
        forecast = fixed.forecast(horizon=h, start=int(block[0]) - 1, reindex=False)
        h_variance = forecast.variance.to_numpy()[block - block[0], :h].sum(axis=1) / 1e4
        nu = float(fitted.params["nu"])
        t_quantile = stats.t.ppf(1 - ALPHA / 2, nu) * np.sqrt((nu - 2) / nu)
        t_low[first:last], t_high[first:last] = (
            -t_quantile * np.sqrt(h_variance),
            t_quantile * np.sqrt(h_variance),
        )
        residuals = np.asarray(fitted.std_resid)
        residuals = residuals[np.isfinite(residuals)]
        if h > 1:  # sums of h standardised residuals drawn with replacement, per sqrt(h)
            draws = np.random.default_rng(0).choice(residuals, size=(20_000, h))
            residuals = draws.sum(axis=1) / np.sqrt(h)
        low, high = np.quantile(residuals, [ALPHA / 2, 1 - ALPHA / 2])
        f_low[first:last], f_high[first:last] = (
            low * np.sqrt(h_variance),
            high * np.sqrt(h_variance),
        )
    bounds["GARCH(1,1)-t"] = (t_low, t_high)
    bounds["GARCH(1,1) FHS"] = (f_low, f_high)
    return bounds


def _refit_points(origins: np.ndarray) -> list[int]:
    """Indices into `origins` where the GARCH is refitted: each fold's start (the folds are
    equal slices) and every REFIT_ROWS rows after it."""
    fold = max(len(origins) // N_FOLDS, 1)
    points = set()
    for start in range(0, len(origins), fold):
        points.update(range(start, min(start + fold, len(origins)), REFIT_ROWS))
    return sorted(points)


def score_of(prices, origins, h, lower, upper) -> dict:
    actual = prices[origins + h]
    low, high = prices[origins] * np.exp(lower), prices[origins] * np.exp(upper)
    misses = (actual < low) | (actual > high)
    return {
        "score": float(np.mean(interval_score(low, high, actual))),
        "coverage": float(1 - misses.mean()),
        "kupiec": kupiec_pvalue(misses),
        "christoffersen": christoffersen_pvalue(misses[::h]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--column", required=True)
    parser.add_argument("--time-column")
    parser.add_argument("--daily", action="store_true", help="daily closes (the UTC day's last)")
    args = parser.parse_args()
    import arch  # noqa: F401  (imported before silencing its fit's convergence warnings)

    prices, stamps = read_series(args.csv, args.column, args.time_column)
    if args.daily:
        prices, stamps = daily_closes(prices, stamps)
    started = time.perf_counter()
    data = Dataset.from_series(prices, stamps)
    metrics, origins = walk_forward_origins(data)
    seconds = time.perf_counter() - started
    series = np.asarray(prices, dtype="float64")
    returns = np.log(pd.Series(series)).diff().fillna(0.0).to_numpy()
    kind = "daily closes" if args.daily else "rows"
    print(f"{args.csv.name}: {len(series):,} {kind}, {len(origins):,} origins "
          f"(the newest 25%); the project's walk-forward in {seconds:.1f} s")
    print(f"{'h':>3}  {'method':<24} {'score':>10} {'coverage':>9} {'Kupiec p':>9} "
          f"{'Christ. p':>9}")
    summary = []
    for h in data.horizons:
        horizon_origins = origins  # every horizon: the same origins
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peers = peer_bounds(returns, horizon_origins, h)
        results = {
            name: score_of(series, horizon_origins, h, low, high)
            for name, (low, high) in peers.items()
        }
        project = metrics[h]
        results = {
            "project": {
                "score": project["interval_score"],
                "coverage": project["interval_coverage"],
                "kupiec": project["kupiec_p"],
                "christoffersen": project["christoffersen_p"],
            }
        } | results
        for name, r in results.items():
            print(f"{h:>3}  {name:<24} {r['score']:>10.4f} {r['coverage']:>9.3f} "
                  f"{_p(r['kupiec']):>9} {_p(r['christoffersen']):>9}")
        best_peer = min((r["score"], name) for name, r in results.items() if name != "project")
        summary.append((h, results["project"]["score"] / best_peer[0], best_peer[1]))
    for h, ratio, peer in summary:
        print(f"h={h}: project / best peer ({peer}) = {ratio:.3f}")
    print("targets: h=1 at most 0.97; h=6 and h=24 at most 1.00; coverage 0.78-0.82")


def _p(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
