"""How far a price may move (pure functions): the variance of the log return over the next h
rows, forecast from data up to a moment only.

Hourly metal returns have a strong weekly shape: quiet Asian hours, busy London and New York
opens, and the gap over the weekend in the first hour after it. So returns are first divided
by their seasonal profile (the typical size of a return in that hour of the week, or that day
of the week for daily data, from the last two years before the moment), and the variance of
what is left is forecast several ways, each with its own strength:

- EWMA of squared returns at decays 0.94, 0.97 and 0.99 (RiskMetrics-style);
- HAR and log-HAR: a regression of the next h rows' mean squared return on the last row's,
  the last day's, week's and month's (Corsi's heterogeneous autoregression);
- GARCH(1,1), fitted by Gaussian quasi-likelihood, mean-reverting over the horizon.

Each candidate's forecast is multiplied back by the profile of the h rows ahead (the next
hours of the week that hold quotes), so an interval spanning a weekend is wider.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

EWMA_DECAYS = (0.94, 0.97, 0.99)
# Rows in a day, a week and a month (HAR), and the window the profile and the models are
# fitted on: two years of hours; ten years of days, whose GARCH and HAR need the rows; the
# same for a series without timestamps (in practice daily closes from a vendor file).
SPANS: dict[str, dict[str, Any]] = {
    "hourly": {"har": (24, 120, 520), "window": 2 * 260 * 24, "buckets": 168},
    "daily": {"har": (5, 22, 66), "window": 10 * 260, "buckets": 7},
    "none": {"har": (5, 22, 66), "window": 10 * 260, "buckets": 1},
}
PROFILE_SHRINK = 5.0  # rows of the coarser profile a bucket's own estimate is blended with


def frequency_of(timestamps) -> str:
    """'hourly', 'daily' (from the typical time between rows), or 'none' without times."""
    if timestamps is None:
        return "none"
    stamps = pd.to_datetime(pd.Series(timestamps), utc=True)
    step = stamps.diff().median()
    if pd.isna(step):
        return "none"
    return "hourly" if step <= pd.Timedelta(hours=6) else "daily"


def buckets_of(timestamps, frequency: str) -> np.ndarray:
    """The seasonal bucket of each row: hour of the week, day of the week, or one bucket."""
    if frequency == "none":
        return np.zeros(len(timestamps) if timestamps is not None else 0, dtype=int)
    stamps = pd.to_datetime(pd.Series(timestamps), utc=True)
    weekday = stamps.dt.day_of_week.to_numpy()
    if frequency == "hourly":
        return weekday * 24 + stamps.dt.hour.to_numpy()
    return weekday


@dataclass(frozen=True)
class Seasonality:
    """Typical return size per bucket (mean square 1 over the rows it was fitted on), and the
    buckets that hold quotes, in the order they come."""

    profile: np.ndarray
    cycle: np.ndarray

    @classmethod
    def fit(cls, returns: np.ndarray, buckets: np.ndarray, n_buckets: int) -> Seasonality:
        squares = returns * returns
        counts = np.bincount(buckets, minlength=n_buckets).astype(float)
        sums = np.bincount(buckets, weights=squares, minlength=n_buckets)
        coarse = np.full(n_buckets, squares.mean() if len(squares) else 1.0)
        if n_buckets == 168:  # shrink toward the hour of the day (all weekdays together)
            hour = np.arange(168) % 24
            by_hour = np.bincount(hour[buckets], weights=squares, minlength=24)
            hours = np.bincount(hour[buckets], minlength=24)
            coarse = (by_hour / np.maximum(hours, 1))[hour]
        variance = (sums + PROFILE_SHRINK * coarse) / (counts + PROFILE_SHRINK)
        mean = np.average(variance, weights=counts) if counts.sum() else 1.0
        variance = np.maximum(variance / mean, 1e-6) if mean > 0 else np.ones(n_buckets)
        held = counts >= max(3.0, 0.3 * np.median(counts[counts > 0])) if counts.any() else counts
        cycle = np.flatnonzero(held) if held.any() else np.arange(n_buckets)
        return cls(np.sqrt(variance), cycle)

    def ahead(self, origin_buckets: np.ndarray, h: int) -> np.ndarray:
        """(origins, h): the squared profile of each of the next h buckets that hold quotes."""
        position = np.searchsorted(self.cycle, origin_buckets, side="right")
        following = self.cycle[(position[:, None] + np.arange(h)[None, :]) % len(self.cycle)]
        return self.profile[following] ** 2


def _ewma(squares: np.ndarray, decay: float) -> np.ndarray:
    return pd.Series(squares).ewm(alpha=1 - decay, adjust=False).mean().to_numpy()


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    sums = np.concatenate([[0.0], np.cumsum(values)])
    out = np.full(len(values), np.nan)
    out[window - 1 :] = (sums[window:] - sums[:-window]) / window
    return out


def _garch_variances(squares: np.ndarray, omega: float, alpha: float, beta: float):
    """Variance of each row's return given the rows before it (GARCH(1,1) recursion)."""
    from scipy.signal import lfilter

    lagged = np.concatenate([[0.0], squares[:-1]])
    return lfilter([alpha], [1.0, -beta], lagged) + omega / (1 - beta)


def fit_garch(squares: np.ndarray) -> tuple[float, float, float]:
    """(omega, alpha, beta) by Gaussian quasi-likelihood, variance targeting the sample's."""
    from scipy.optimize import minimize

    level = float(np.mean(squares)) or 1e-12

    def parameters(theta) -> tuple[float, float, float]:
        alpha = 0.3 / (1 + np.exp(-theta[0]))
        beta = (0.9999 - alpha) / (1 + np.exp(-theta[1]))
        return level * (1 - alpha - beta), alpha, beta

    def negative_log_likelihood(theta) -> float:
        variances = np.maximum(_garch_variances(squares, *parameters(theta)), 1e-12 * level)
        return float(np.sum(np.log(variances) + squares / variances))

    found = minimize(negative_log_likelihood, np.array([-1.0, 2.0]), method="L-BFGS-B")
    return parameters(found.x)


# A candidate: (origin rows, h) -> the deseasonalized variance over each of the next h rows.
Candidate = Callable[[np.ndarray, int], np.ndarray]


class VolatilityModel:
    """Candidates fitted on the returns before `end` (a row of the whole series); each gives
    the variance of the log return over the next h rows at any origin (causally: at an origin
    it uses returns up to that origin only)."""

    def __init__(self, returns: np.ndarray, buckets: np.ndarray, frequency: str, end: int):
        spans = SPANS[frequency]
        start = max(1, end - spans["window"])
        self.buckets = buckets
        self.warm_up = 2 * max(spans["har"])  # origins before this: HAR not defined yet
        self.seasonality = Seasonality.fit(returns[start:end], buckets[start:end], spans["buckets"])
        deseasonalized = returns / self.seasonality.profile[buckets]
        squares = deseasonalized * deseasonalized
        self.candidates: dict[str, Candidate] = {}
        for decay in EWMA_DECAYS:
            self.candidates[f"ewma {decay}"] = _flat(_ewma(squares, decay))
        self._add_har(squares, spans["har"], start, end)
        omega, alpha, beta = fit_garch(squares[start:end])
        self.garch = {"omega": omega, "alpha": alpha, "beta": beta}
        following = omega + alpha * squares + beta * _garch_variances(squares, omega, alpha, beta)
        level = omega / (1 - alpha - beta)

        def garch(rows: np.ndarray, h: int) -> np.ndarray:
            decay = (alpha + beta) ** np.arange(h)
            return level + decay[None, :] * (following[rows] - level)[:, None]

        self.candidates["garch"] = garch

    def _add_har(self, squares: np.ndarray, windows, start: int, end: int) -> None:
        """HAR and log-HAR per horizon, fitted lazily (the first time a horizon is asked)."""
        components = [squares] + [_trailing_mean(squares, w) for w in windows]
        regressors = np.column_stack([np.ones(len(squares)), *components])
        floor = 1e-3 * float(np.nanmean(squares[start:end]) or 1e-12)
        logs = np.column_stack(
            [np.ones(len(squares)), *(np.log(np.maximum(c, floor)) for c in components[1:])]
        )
        sums = np.concatenate([[0.0], np.cumsum(squares)])
        fitted: dict[tuple[str, int], np.ndarray] = {}

        def forecast(kind: str, h: int) -> np.ndarray:
            if (kind, h) not in fitted:
                rows = np.arange(max(start, max(windows)), end - h)
                if len(rows) < 100:  # too short a history for a regression
                    fitted[kind, h] = np.full(len(squares), np.nan)
                    return fitted[kind, h]
                future = (sums[rows + 1 + h] - sums[rows + 1]) / h  # mean of the next h
                if kind == "har":
                    coef, *_ = np.linalg.lstsq(regressors[rows], future, rcond=None)
                    fitted[kind, h] = np.maximum(regressors @ coef, floor)
                else:
                    target = np.log(np.maximum(future, floor))
                    coef, *_ = np.linalg.lstsq(logs[rows], target, rcond=None)
                    spread = np.mean(np.exp(target - logs[rows] @ coef))  # back from logs
                    fitted[kind, h] = np.exp(logs @ coef) * spread
            return fitted[kind, h]

        for kind in ("har", "log-har"):

            def har(rows: np.ndarray, h: int, kind: str = kind) -> np.ndarray:
                return np.repeat(forecast(kind, h)[rows][:, None], h, axis=1)

            self.candidates[kind] = har

    def variance(self, name: str, rows: np.ndarray, h: int) -> np.ndarray:
        """Variance of the h-row log return from each origin row, with the seasonal profile of
        the rows ahead put back."""
        rows = np.asarray(rows)
        path = self.candidates[name](rows, h)
        return np.sum(path * self.seasonality.ahead(self.buckets[rows], h), axis=1)


def _flat(per_row: np.ndarray) -> Candidate:
    return lambda rows, h: np.repeat(per_row[rows][:, None], h, axis=1)
