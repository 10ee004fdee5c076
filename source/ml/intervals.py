"""80% price intervals (pure functions): conformal quantiles of volatility-scaled residuals.

A forecast's residual log return at horizon h, divided by the forecast standard deviation of
that return (source/ml/volatility.py: seasonal profile times a variance forecast), is close to
identically distributed even though volatility clusters and has a weekly shape. The 80%
quantile of its absolute value on a calibration window (the validation window, purged like the
point forecast) scales back into an interval around the point forecast.

The variance forecast combines candidates (a geometric mean): those whose interval score on the
calibration window is within 0.5% of the best one's at one step, within 3% at longer
horizons, where one window ranks candidates for several hours ahead less sharply than for the
next one. A combination is hurt less by a wrong ranking than a single pick. The naive interval
(constant empirical quantiles of past h-step returns around the last price) is the floor every
model must beat; the classical peers (RiskMetrics, GARCH) are compared in
benchmarks/intervals.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.8
ALPHA = 1 - LEVEL  # Gneiting-Raftery's alpha for a central 80% interval
# Candidates combined: those whose calibration interval score is within this share of the
# best one's: tight at one step, looser beyond, where one window ranks them less sharply.
TOLERANCE = {1: 0.005, "longer": 0.03}


def interval_score(lower, upper, actual, alpha: float = ALPHA) -> np.ndarray:
    """Gneiting-Raftery interval score per point, in the units of the values (lower is better)."""
    lower, upper, actual = map(np.asarray, (lower, upper, actual))
    return (
        (upper - lower)
        + (2 / alpha) * (lower - actual) * (actual < lower)
        + (2 / alpha) * (actual - upper) * (actual > upper)
    )


def coverage(lower, upper, actual) -> float:
    lower, upper, actual = map(np.asarray, (lower, upper, actual))
    return float(np.mean((actual >= lower) & (actual <= upper)))


@dataclass(frozen=True)
class IntervalModel:
    """One horizon's interval: the variance candidates combined, and the |z| quantile."""

    members: tuple[str, ...]
    quantile: float

    def variance(self, volatility, rows, horizon: int) -> np.ndarray:
        """Geometric mean of the members' variance forecasts at these origin rows."""
        logs = [np.log(volatility.variance(m, rows, horizon)) for m in self.members]
        return np.exp(np.mean(logs, axis=0))

    def bounds(self, predicted_return, variance):
        """(lower, upper) log-return bounds around the predicted return."""
        half = self.quantile * np.sqrt(np.asarray(variance))
        return predicted_return - half, predicted_return + half


def calibrate(
    predicted: np.ndarray, actual: np.ndarray, volatility, rows: np.ndarray, horizon: int, prices
) -> IntervalModel:
    """Rank the variance candidates by interval score on these rows (origins in the whole
    series' numbering), combine the best, and take the 80% quantile of |scaled residuals|."""
    residuals = actual - predicted
    actual_prices = prices * np.exp(actual)
    scored = []
    for name in volatility.candidates:
        variance = volatility.variance(name, rows, horizon)
        if not np.all(np.isfinite(variance)) or np.any(variance <= 0):
            continue
        quantile = float(np.quantile(np.abs(residuals) / np.sqrt(variance), LEVEL))
        lower, upper = IntervalModel((name,), quantile).bounds(predicted, variance)
        score = float(
            np.mean(interval_score(prices * np.exp(lower), prices * np.exp(upper), actual_prices))
        )
        scored.append((score, name))
    scored.sort()
    tolerance = TOLERANCE[1] if horizon == 1 else TOLERANCE["longer"]
    members = [name for score, name in scored if score <= scored[0][0] * (1 + tolerance)]
    combined = IntervalModel(tuple(members), 1.0).variance(volatility, rows, horizon)
    quantile = float(np.quantile(np.abs(residuals) / np.sqrt(combined), LEVEL))
    return IntervalModel(tuple(members), quantile)


def naive_bounds(past_returns: np.ndarray) -> tuple[float, float]:
    """Constant empirical 10%/90% quantiles of all past h-step log returns."""
    low, high = np.quantile(past_returns, (ALPHA / 2, 1 - ALPHA / 2))
    return float(low), float(high)


def interval_metrics(actual, lower, upper, naive_lower, naive_upper, horizon: int = 1) -> dict:
    score = float(np.mean(interval_score(lower, upper, actual)))
    naive = float(np.mean(interval_score(naive_lower, naive_upper, actual)))
    misses = (np.asarray(actual) < np.asarray(lower)) | (np.asarray(actual) > np.asarray(upper))
    return {
        "interval_coverage": coverage(lower, upper, actual),
        "interval_score": score,
        "naive_interval_score": naive,
        "interval_score_ratio": score / naive if naive > 0 else None,
        # Calibration tests: the share of misses (Kupiec), and whether misses cluster
        # (Christoffersen, on non-overlapping origins: every h-th one).
        "kupiec_p": kupiec_pvalue(misses),
        "christoffersen_p": christoffersen_pvalue(misses[::horizon]),
    }


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * np.log(y)


def kupiec_pvalue(misses: np.ndarray, level: float = LEVEL) -> float | None:
    """Kupiec's proportion-of-failures test: is the share of actual values outside the
    interval the 1 - level it should be? (likelihood ratio, chi-squared with 1 degree)"""
    from scipy.stats import chi2

    misses = np.asarray(misses, dtype=bool)
    n, x = len(misses), int(misses.sum())
    if n == 0:
        return None
    p, observed = 1 - level, x / n
    ratio = -2 * (
        _xlogy(n - x, 1 - p) + _xlogy(x, p) - _xlogy(n - x, 1 - observed) - _xlogy(x, observed)
    )
    return float(chi2.sf(max(ratio, 0.0), 1))


def christoffersen_pvalue(misses: np.ndarray) -> float | None:
    """Christoffersen's independence test: does a miss make the next miss likelier (misses
    that cluster)? Pass non-overlapping origins for horizons above one step."""
    from scipy.stats import chi2

    hits = np.asarray(misses, dtype=int)
    if len(hits) < 3:
        return None
    before, after = hits[:-1], hits[1:]
    n00 = int(np.sum((before == 0) & (after == 0)))
    n01 = int(np.sum((before == 0) & (after == 1)))
    n10 = int(np.sum((before == 1) & (after == 0)))
    n11 = int(np.sum((before == 1) & (after == 1)))
    if (n00 + n01) == 0 or (n10 + n11) == 0:
        return None
    pi01, pi11 = n01 / (n00 + n01), n11 / (n10 + n11)
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    unrestricted = (
        _xlogy(n00, 1 - pi01) + _xlogy(n01, pi01) + _xlogy(n10, 1 - pi11) + _xlogy(n11, pi11)
    )
    restricted = _xlogy(n00 + n10, 1 - pi) + _xlogy(n01 + n11, pi)
    return float(chi2.sf(max(-2 * (restricted - unrestricted), 0.0), 1))
