"""`main.py backtest`: the same walk-forward evaluation on any price series from a CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from source.ml.evaluation import Dataset, NotEnoughData, walk_forward


class BacktestInputError(Exception):
    """The CSV or its columns cannot be used; reported in one line (exit 2)."""


def read_series(
    path: Path, column: str, time_column: str | None
) -> tuple[pd.Series, pd.Series | None]:
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise BacktestInputError(f"cannot read {path}: {exc}") from None
    for name in filter(None, (column, time_column)):
        if name not in frame.columns:
            raise BacktestInputError(
                f"{path} has no column {name!r} (columns: {', '.join(frame.columns)})"
            )
    timestamps = None
    if time_column:
        frame[time_column] = pd.to_datetime(frame[time_column], utc=True, errors="coerce")
        frame = frame.dropna(subset=[time_column]).sort_values(time_column, kind="stable")
        timestamps = frame[time_column]
    prices = pd.to_numeric(frame[column], errors="coerce")
    keep = prices.notna() & (prices > 0)
    return prices[keep], (timestamps[keep] if timestamps is not None else None)


def daily_closes(prices: pd.Series, timestamps: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Each UTC day's last price, and the days (a daily series cut from an intraday one)."""
    days = pd.Series(prices.to_numpy(), index=pd.DatetimeIndex(timestamps))
    closes = days.resample("1D").last().dropna()
    return closes.reset_index(drop=True), pd.Series(closes.index)


def backtest_csv(path: Path, column: str, time_column: str | None = None) -> dict:
    prices, timestamps = read_series(path, column, time_column)
    try:
        data = Dataset.from_series(prices, timestamps)
    except NotEnoughData as exc:
        raise BacktestInputError(f"{path}: {exc}") from None
    by_horizon = walk_forward(data)
    first = by_horizon[data.horizons[0]]
    keys = (
        "n_predictions",
        "model_mae",
        "naive_mae",
        "mase",
        "direction_accuracy",
        "interval_coverage",
        "interval_score",
        "naive_interval_score",
        "interval_score_ratio",
        "kupiec_p",
        "christoffersen_p",
    )
    return {key: first[key] for key in keys} | {
        "direction_base_rate": first["direction_base_rate"],
        "horizon": data.horizons[0],
        "by_horizon": {str(h): m for h, m in by_horizon.items()},
    }
