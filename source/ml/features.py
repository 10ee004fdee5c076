"""Causal features and multi-horizon targets from a price series (pure functions).

A feature at row t uses prices up to and including t only; a target at row t is the log
return from t to t+h. Steps are rows (observations), not clock hours.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import pandas as pd

HORIZONS = (1, 6, 24)
RETURN_LAGS = 6
ROLLING_WINDOWS = (6, 24)


def log_returns(prices: pd.Series) -> pd.Series:
    return _log(prices).diff()


def _log(prices: pd.Series) -> pd.Series:
    # numpy's stubs type a ufunc of a Series as an ndarray; it returns a Series
    return cast(pd.Series, np.log(prices.astype("float64")))


def build_features(prices: pd.Series, timestamps: pd.Series | None = None) -> pd.DataFrame:
    """Lagged log returns, rolling mean/std of returns, and calendar terms; NaN during warm-up."""
    returns = log_returns(prices).reset_index(drop=True)
    columns: dict[str, pd.Series | np.ndarray] = {  # np.sin of a Series is one (_log)
        f"ret_lag_{lag}": returns.shift(lag - 1) for lag in range(1, RETURN_LAGS + 1)
    }
    for window in ROLLING_WINDOWS:
        rolling = returns.rolling(window, min_periods=window)
        columns[f"ret_mean_{window}"] = rolling.mean()
        columns[f"ret_std_{window}"] = rolling.std()
    if timestamps is not None:
        stamps = pd.to_datetime(pd.Series(timestamps).reset_index(drop=True), utc=True)
        hour = stamps.dt.hour + stamps.dt.minute / 60
        weekday = stamps.dt.day_of_week
        columns["hour_sin"] = np.sin(2 * np.pi * hour / 24)
        columns["hour_cos"] = np.cos(2 * np.pi * hour / 24)
        columns["weekday_sin"] = np.sin(2 * np.pi * weekday / 7)
        columns["weekday_cos"] = np.cos(2 * np.pi * weekday / 7)
    return pd.DataFrame(columns).astype("float64")


def build_targets(prices: pd.Series, horizons: tuple[int, ...] = HORIZONS) -> pd.DataFrame:
    """log(p[t+h] / p[t]) per horizon; NaN where t+h is beyond the data."""
    log_price = _log(prices.reset_index(drop=True))
    return pd.DataFrame({f"h{h}": log_price.shift(-h) - log_price for h in horizons})


def warmup_rows() -> int:
    return max(RETURN_LAGS, *ROLLING_WINDOWS)
