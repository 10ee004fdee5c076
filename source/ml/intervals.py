"""80% price intervals (pure functions): volatility-scaled conformal quantiles.

A forecast's residual return at horizon h, divided by the EWMA volatility of one-step returns
known at the forecast's origin times sqrt(h), is close to identically distributed even though
volatility clusters. Its empirical 10% and 90% quantiles on a calibration window (the
validation window, purged like the point forecast) scale back into an interval around the
point forecast with today's volatility. The EWMA decay is chosen on that window by the
interval score. The benchmark is the naive interval: constant empirical quantiles of all past
h-step returns around the last price.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

LEVEL = 0.8
ALPHA = 1 - LEVEL  # Gneiting-Raftery's alpha for a central 80% interval
LAMBDAS = (0.94, 0.97, 0.99)  # EWMA decays tried (RiskMetrics' hourly/daily range)


def ewma_volatility(prices: pd.Series, decay: float) -> np.ndarray:
    """Causal EWMA standard deviation of one-step log returns, at each row (uses up to t)."""
    returns = np.log(pd.Series(prices, dtype="float64")).diff().fillna(0.0)
    variance = (returns**2).ewm(alpha=1 - decay, adjust=False).mean().to_numpy()
    floor = (
        max(float(np.nanmedian(np.sqrt(variance[variance > 0]))) * 1e-3, 1e-12)
        if (variance > 0).any()
        else 1e-12
    )
    return np.maximum(np.sqrt(variance), floor)


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
class ScaledQuantiles:
    """Interval of one horizon: return quantiles in units of sigma*sqrt(h)."""

    decay: float
    low: float
    high: float

    def bounds(self, predicted_return, sigma, horizon: int):
        """(lower, upper) log-return bounds around the predicted return."""
        width = np.asarray(sigma) * np.sqrt(horizon)
        return predicted_return + self.low * width, predicted_return + self.high * width


def calibrate(
    predicted: np.ndarray, actual: np.ndarray, sigmas: dict[float, np.ndarray], horizon: int, prices
) -> ScaledQuantiles:
    """Per decay, quantiles of the scaled residuals (actual - predicted log returns); keep the
    decay with the best interval score on these rows."""
    residuals = actual - predicted
    actual_prices = prices * np.exp(actual)
    best, best_score = None, np.inf
    for decay, sigma in sigmas.items():
        z = residuals / (sigma * np.sqrt(horizon))
        # Symmetric: |z|'s 80% quantile. A short window's drift would otherwise skew it.
        high = float(np.quantile(np.abs(z), LEVEL))
        low = -high
        candidate = ScaledQuantiles(decay, low, high)
        lo, hi = candidate.bounds(predicted, sigma, horizon)
        score = float(
            np.mean(interval_score(prices * np.exp(lo), prices * np.exp(hi), actual_prices))
        )
        if score < best_score:
            best, best_score = candidate, score
    return best


def naive_bounds(past_returns: np.ndarray) -> tuple[float, float]:
    """Constant empirical 10%/90% quantiles of all past h-step log returns."""
    low, high = np.quantile(past_returns, (ALPHA / 2, 1 - ALPHA / 2))
    return float(low), float(high)


def interval_metrics(actual, lower, upper, naive_lower, naive_upper) -> dict:
    score = float(np.mean(interval_score(lower, upper, actual)))
    naive = float(np.mean(interval_score(naive_lower, naive_upper, actual)))
    return {
        "interval_coverage": coverage(lower, upper, actual),
        "interval_score": score,
        "naive_interval_score": naive,
        "interval_score_ratio": score / naive if naive > 0 else None,
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
