"""The project's 80% price intervals side by side with the volatility models desks use, on the
same series and the same origins (the walk-forward's newest 25%), in one run:

- RiskMetrics: EWMA variance of one-step returns, decay 0.94, normal quantiles, sqrt(h) scaling;
- GARCH(1,1) with Student-t errors (arch), its analytic h-step variance and t quantiles;
- the same GARCH with filtered historical simulation: empirical 10%/90% quantiles of its
  standardised residuals (for h > 1, of sums of h residuals drawn from them);
- HAR-RV (Corsi 2009): the next h rows' realised variance regressed on the last day's, week's
  and month's, in levels or in logs, with empirical quantiles (see har_bounds);

the GARCH and the HAR refitted every 1,000 rows on everything before (and at each fold's
start). Printed per horizon: Gneiting-Raftery interval score (price units, lower is better),
coverage, and the Kupiec and Christoffersen p-values (on non-overlapping origins: every h-th);
then the project's score over the best peer's for every series run.

Run: python benchmarks/intervals.py CSV [CSV ...] --column C [--time-column T]
         [--daily | --with-daily] [--at-hour H] [--until DATE]
     (pip install -e '.[bench]' for arch)
e.g. python benchmarks/intervals.py ../shared/real/hourly/XAUUSD_H1.csv \\
         ../shared/real/hourly/XAGUSD_H1.csv --column close --time-column time --with-daily
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
    ROWS_PER_DAY,
    christoffersen_pvalue,
    interval_score,
    kupiec_pvalue,
)

REFIT_ROWS = 1_000
INTRADAY = "(HAR, intraday RV)"


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
        fitted = arch_model(scaled[1 : block[0]], mean="Zero", vol="GARCH", p=1, q=1, dist="t").fit(
            disp="off"
        )
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


HAR_DAYS = (1, 5, 22)  # Corsi's day, week and month, in days


def har_bounds(
    realised: np.ndarray, returns: np.ndarray, origins: np.ndarray, h: int, day: int
) -> tuple[np.ndarray, np.ndarray]:
    """HAR-RV (Corsi 2009): the realised variance of the next h rows regressed on the last
    day's, week's and month's daily realised variance, in levels and in logs (the one with the
    lower interval score on the rows before each block is used), with empirical 10%/90%
    quantiles of the h-row returns divided by its forecast standard deviation. `realised`: each
    row's realised variance (a daily row: the sum of its intraday squared returns); `day`: rows
    in a day (24 for hourly rows, 1 for daily ones). Refitted on the GARCH's schedule."""
    sums = np.concatenate([[0.0], np.cumsum(realised)])
    rows = np.arange(len(realised))
    components = []
    for days in HAR_DAYS:
        width = days * day
        start = np.maximum(rows + 1 - width, 0)
        components.append((sums[rows + 1] - sums[start]) / (rows + 1 - start) * day)
    regressors = np.column_stack([np.ones(len(rows)), *components])
    ahead = np.full(len(rows), np.nan)  # realised variance of the next h rows
    ahead[: len(rows) - h] = sums[rows[: len(rows) - h] + 1 + h] - sums[rows[: len(rows) - h] + 1]
    log_prices = np.concatenate([[0.0], np.cumsum(returns)])
    moves = np.full(len(rows), np.nan)  # the h-row log return from each row
    moves[: len(rows) - h] = (
        log_prices[rows[: len(rows) - h] + 1 + h] - log_prices[rows[: len(rows) - h] + 1]
    )
    first_row = max(HAR_DAYS) * day
    low, high = np.empty(len(origins)), np.empty(len(origins))
    refits = _refit_points(origins)
    for first, last in zip(refits, [*refits[1:], len(origins)], strict=True):
        block = origins[first:last]
        fit_rows = np.arange(first_row, int(block[0]) - h + 1)  # outcomes known by block[0]
        known = realised[: int(block[0]) + 1]
        floor = 1e-6 * float(np.mean(known[known > 0]))
        logs = np.column_stack(
            [np.ones(len(rows)), *(np.log(np.maximum(c, floor)) for c in components)]
        )
        best = None
        for kind, design in (("levels", regressors), ("logs", logs)):
            target = ahead[fit_rows]
            if kind == "logs":
                target = np.log(np.maximum(target, floor))
            coef, *_ = np.linalg.lstsq(design[fit_rows], target, rcond=None)
            fitted = design @ coef
            variance = np.maximum(fitted, floor) if kind == "levels" else np.exp(fitted)
            z = moves[fit_rows] / np.sqrt(variance[fit_rows])
            q_low, q_high = np.quantile(z, [ALPHA / 2, 1 - ALPHA / 2])
            spread = np.sqrt(variance[fit_rows])
            score = np.mean(interval_score(q_low * spread, q_high * spread, moves[fit_rows]))
            if best is None or score < best[0]:
                best = (score, q_low, q_high, variance)
        _, q_low, q_high, variance = best
        low[first:last] = q_low * np.sqrt(variance[block])
        high[first:last] = q_high * np.sqrt(variance[block])
    return low, high


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
        "kupiec": kupiec_pvalue(misses[::h]),  # on non-overlapping origins
        "christoffersen": christoffersen_pvalue(misses[::h]),
    }


def daily_realised(prices: pd.Series, stamps: pd.Series) -> np.ndarray:
    """Each UTC day's realised variance: the sum of the squared returns between the rows that
    fall in it (the day's first one from the day before's last price), in daily_closes' order."""
    returns = np.log(pd.Series(prices.to_numpy(), index=pd.DatetimeIndex(stamps))).diff()
    days = (returns.fillna(0.0) ** 2).resample("1D").sum()
    counts = pd.Series(1, index=returns.index).resample("1D").sum()
    return days[counts > 0].to_numpy()


def benchmark(name: str, prices, stamps, daily: bool) -> list[tuple]:
    """Print the project and the four peers per horizon on one series; return the summary."""
    intraday = None
    if daily:
        intraday = daily_realised(prices, stamps)
        prices, stamps = daily_closes(prices, stamps)
    started = time.perf_counter()
    data = Dataset.from_series(prices, stamps)
    metrics, origins = walk_forward_origins(data)
    seconds = time.perf_counter() - started
    series = np.asarray(prices, dtype="float64")
    returns = np.log(pd.Series(series)).diff().fillna(0.0).to_numpy()
    day = ROWS_PER_DAY[data.frequency]
    kind = "daily closes" if daily else "rows"
    print(
        f"\n{name}: {len(series):,} {kind}, {len(origins):,} origins "
        f"(the newest 25%); the project's walk-forward in {seconds:.1f} s"
    )
    print(
        f"{'h':>3}  {'method':<24} {'score':>10} {'coverage':>9} {'Kupiec p':>9} {'Christ. p':>9}"
    )
    summary = []
    for h in data.horizons:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peers = peer_bounds(returns, origins, h)
        # A daily series has no intraday returns: its realised variance is the squared return.
        peers["HAR-RV"] = har_bounds(returns**2, returns, origins, h, day)
        results = {
            peer: score_of(series, origins, h, low, high) for peer, (low, high) in peers.items()
        }
        if intraday is not None:  # shown, not a peer: information the project is not given
            low, high = har_bounds(intraday, returns, origins, h, day)
            results[INTRADAY] = score_of(series, origins, h, low, high)
        project = metrics[h]
        results = {
            "project": {
                "score": project["interval_score"],
                "coverage": project["interval_coverage"],
                "kupiec": project["kupiec_p"],
                "christoffersen": project["christoffersen_p"],
            }
        } | results
        for method, r in results.items():
            print(
                f"{h:>3}  {method:<24} {r['score']:>10.4f} {r['coverage']:>9.3f} "
                f"{_p(r['kupiec']):>9} {_p(r['christoffersen']):>9}"
            )
        best_peer = min(
            (r["score"], peer) for peer, r in results.items() if peer not in ("project", INTRADAY)
        )
        summary.append(
            (
                name,
                h,
                results["project"]["score"] / best_peer[0],
                best_peer[1],
                results["project"]["coverage"],
                results["project"]["kupiec"],
            )
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, nargs="+")
    parser.add_argument("--column", required=True)
    parser.add_argument("--time-column")
    parser.add_argument("--daily", action="store_true", help="daily closes (the UTC day's last)")
    parser.add_argument(
        "--with-daily", action="store_true", help="each file as given and its daily closes"
    )
    parser.add_argument(
        "--at-hour", type=int, help="one row a day: the row at this hour (a daily series)"
    )
    parser.add_argument("--until", help="only the rows before this date (another test window)")
    args = parser.parse_args()
    import arch  # noqa: F401  (imported before silencing its fit's convergence warnings)

    runs = [True] if args.daily else [False, True] if args.with_daily else [False]
    summary = []
    for path in args.csv:
        prices, stamps = read_series(path, args.column, args.time_column)
        label = path.name
        if args.until:
            keep = (stamps < pd.Timestamp(args.until, tz="UTC")).to_numpy()
            prices, stamps, label = prices[keep], stamps[keep], f"{label} <{args.until}"
        if args.at_hour is not None:
            keep = (stamps.dt.hour == args.at_hour).to_numpy()
            prices, stamps, label = prices[keep], stamps[keep], f"{label} {args.at_hour}:00"
        for daily in runs:
            name = f"{label} daily" if daily else label
            summary += benchmark(name, prices, stamps, daily)
    print(
        f"\n{'series':<22} {'h':>3} {'project/best':>12}  {'best peer':<22} "
        f"{'coverage':>8} {'Kupiec p':>8}"
    )
    for name, h, ratio, peer, covered, kupiec in summary:
        print(f"{name:<22} {h:>3} {ratio:>12.3f}  {peer:<22} {covered:>8.3f} {_p(kupiec):>8}")
    print(
        "targets: hourly at most 0.97 of the best peer at every horizon, daily at most 1.00; "
        "coverage 0.78-0.82"
    )


def _p(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
