"""Walk-forward (expanding window) evaluation against the naive persistence forecast."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from source.ml.features import HORIZONS, build_features, build_targets
from source.ml.intervals import (
    IntervalModel,
    adaptation_rate,
    calibrate,
    interval_metrics,
    level_floor,
    naive_bounds,
)
from source.ml.models import ForecastModel, fit_family, fit_forecast_model
from source.ml.volatility import VolatilityModel, buckets_of, frequency_of

N_FOLDS = 4
TEST_FRACTION = 0.25
# The window before each fold that chooses the point model and calibrates the intervals, in
# folds: two give the interval quantiles and the ranking of volatility candidates a steadier
# footing than one.
VALIDATION_FOLDS = 2
MIN_ROWS = 300  # below this a model is skipped, not trained


class NotEnoughData(ValueError):
    pass


@dataclass
class Dataset:
    """Aligned features, targets and prices for the rows where everything is known, and what
    the volatility forecasts need of the whole series."""

    X: np.ndarray
    Y: np.ndarray
    prices: np.ndarray
    feature_names: list[str]
    horizons: tuple[int, ...]
    last_features: np.ndarray  # the newest row: what a live forecast starts from
    returns: np.ndarray  # one-step log returns of the whole series (0 for the first row)
    buckets: np.ndarray  # seasonal bucket of every row (hour or day of the week)
    frequency: str  # "hourly", "daily" or "none" (no timestamps)
    positions: np.ndarray  # each usable row's place in the whole series

    @classmethod
    def from_series(cls, prices: pd.Series, timestamps=None, horizons=HORIZONS) -> Dataset:
        prices = pd.Series(prices, dtype="float64").reset_index(drop=True)
        features = build_features(prices, timestamps)
        targets = build_targets(prices, horizons)
        usable = features.notna().all(axis=1) & targets.notna().all(axis=1)
        if int(usable.sum()) < MIN_ROWS:
            raise NotEnoughData(f"{int(usable.sum())} usable rows, need at least {MIN_ROWS}")
        frequency = frequency_of(timestamps)
        buckets = (
            buckets_of(timestamps, frequency)
            if timestamps is not None
            else np.zeros(len(prices), dtype=int)
        )
        return cls(
            X=features[usable].to_numpy(),
            Y=targets[usable].to_numpy(),
            prices=prices[usable].to_numpy(),
            feature_names=list(features.columns),
            horizons=tuple(horizons),
            last_features=features.iloc[[-1]].to_numpy(),
            returns=np.log(prices).diff().fillna(0.0).to_numpy(),
            buckets=np.asarray(buckets, dtype=int),
            frequency=frequency,
            positions=np.flatnonzero(usable.to_numpy()),
        )

    def volatility(self, end: int) -> VolatilityModel:
        """Volatility candidates fitted on the whole series' returns before row `end`."""
        return VolatilityModel(self.returns, self.buckets, self.frequency, end)


def horizon_metrics(prices, actual_returns, predicted_returns) -> dict:
    """MAE in price units of model and naive on the same points, MASE, direction accuracy."""
    actual = prices * np.exp(actual_returns)
    model_mae = float(np.mean(np.abs(prices * np.exp(predicted_returns) - actual)))
    naive_mae = float(np.mean(np.abs(prices - actual)))
    moved = actual_returns != 0
    called = moved & (predicted_returns != 0)
    ups = float(np.mean(actual_returns[moved] > 0)) if moved.any() else None
    return {
        "n_predictions": int(len(prices)),
        "model_mae": model_mae,
        "naive_mae": naive_mae,
        "mase": model_mae / naive_mae if naive_mae > 0 else None,
        # Correct up/down calls where the model made one (None: it always said "no change").
        "direction_accuracy": (
            float(np.mean(np.sign(predicted_returns[called]) == np.sign(actual_returns[called])))
            if called.any()
            else None
        ),
        "direction_calls": int(called.sum()),
        # What always guessing the more common direction would score.
        "direction_base_rate": max(ups, 1 - ups) if ups is not None else None,
    }


def fold_plan(n: int, horizons, n_folds: int = N_FOLDS, test_fraction: float = TEST_FRACTION):
    """(train_end, start, end) per fold: rows [start, end) are tested; training uses rows
    before train_end, whose targets (t + max horizon) all end before `start` (the purge)."""
    fold_size = max(int(n * test_fraction) // n_folds, 1)
    purge = max(horizons)
    plan = []
    for k in range(n_folds):
        start = n - (n_folds - k) * fold_size
        end = start + fold_size if k < n_folds - 1 else n
        plan.append((start - purge, start, end))
    return plan, fold_size


# Independent h-row moves a calibration window should hold: a quantile of |scaled residuals|
# from fewer is too noisy (e.g. 24-day moves in two years of daily closes).
MIN_INDEPENDENT_MOVES = 150


def calibrate_intervals(
    data: Dataset, model: ForecastModel, volatility: VolatilityModel
) -> dict[int, IntervalModel]:
    """Interval per horizon from the model's own validation residuals; where the validation
    window holds too few independent h-row moves, from the rows before it as well (with the
    naive forecast's residuals there: the actual returns), as far back as data allows."""
    assert model.validation is not None, "fit_forecast_model keeps its validation predictions"
    rows, predicted = model.validation
    earliest = int(np.searchsorted(data.positions, volatility.warm_up))
    intervals = {}
    for j, h in enumerate(data.horizons):
        missing = MIN_INDEPENDENT_MOVES * h - len(rows)
        before = np.arange(max(earliest, rows[0] - max(missing, 0)), rows[0])
        cal_rows = np.concatenate([before, rows])
        cal_predicted = np.concatenate([np.zeros(len(before)), predicted[:, j]])
        intervals[h] = calibrate(
            cal_predicted,
            data.Y[cal_rows, j],
            volatility,
            data.positions[cal_rows],
            h,
            data.prices[cal_rows],
            rate=adaptation_rate(data.frequency, h),
            floor=level_floor(h),
        )
    return intervals


def walk_forward(data: Dataset, n_folds: int = N_FOLDS, test_fraction: float = TEST_FRACTION):
    """Expanding-window folds over the most recent data; training purged of target overlap.
    Point metrics against persistence, interval metrics against constant quantiles. Every
    profile, decay, regression and quantile is fitted on data before the fold."""
    return walk_forward_origins(data, n_folds, test_fraction)[0]


@threadpool_limits.wrap(limits=1)
def walk_forward_origins(
    data: Dataset, n_folds: int = N_FOLDS, test_fraction: float = TEST_FRACTION
) -> tuple[dict, np.ndarray]:
    """walk_forward's metrics, and the origins tested (rows of the whole series), so that
    other interval methods can be scored on exactly the same ones (benchmarks/intervals.py).
    One BLAS/OpenMP thread, as in training: boosting's OpenMP threads spin-wait, and on a
    busy host (`main.py backtest` next to the hourly job) more threads than free cores make
    it many times slower, not faster."""
    plan, fold_size = fold_plan(len(data.X), data.horizons, n_folds, test_fraction)
    predictions, fold_rows, choices, bounds = [], [], [], []
    for train_end, start, end in plan:
        model = fit_forecast_model(
            data.X[:train_end],
            data.Y[:train_end],
            horizons=data.horizons,
            feature_names=data.feature_names,
            validation_size=VALIDATION_FOLDS * fold_size,
        )
        predicted = model.predict_returns(data.X[start:end])
        volatility = data.volatility(int(data.positions[start]))
        intervals = calibrate_intervals(data, model, volatility)
        fold_bounds = []
        for j, h in enumerate(data.horizons):
            origins = data.positions[start:end]
            variance = intervals[h].variance(volatility, origins, h)
            # The level adapts through the fold as the live one does between hourly trainings:
            # each origin's interval from the outcomes known by then.
            scores = np.abs(data.Y[start:end, j] - predicted[:, j]) / np.sqrt(variance)
            quantiles, _ = intervals[h].adapt(scores, origins, h)
            lower, upper = intervals[h].bounds(predicted[:, j], variance, quantiles)
            naive = naive_bounds(data.Y[:train_end, j])
            fold_bounds.append(
                (lower, upper, np.full(end - start, naive[0]), np.full(end - start, naive[1]))
            )
        predictions.append(predicted)
        fold_rows.append(np.arange(start, end))
        choices.append([c.label for c in model.choices])
        bounds.append(fold_bounds)
    rows = np.concatenate(fold_rows)
    predicted = np.vstack(predictions)
    prices = data.prices[rows]
    by_horizon = {}
    for j, h in enumerate(data.horizons):
        actual = prices * np.exp(data.Y[rows, j])
        lower, upper, naive_lower, naive_upper = (
            np.concatenate([fold[j][k] for fold in bounds]) for k in range(4)
        )
        by_horizon[h] = (
            horizon_metrics(prices, data.Y[rows, j], predicted[:, j])
            | interval_metrics(
                actual,
                prices * np.exp(lower),
                prices * np.exp(upper),
                prices * np.exp(naive_lower),
                prices * np.exp(naive_upper),
                horizon=h,
            )
            | {"chosen_per_fold": [fold[j] for fold in choices]}
        )
    return by_horizon, data.positions[rows]


def fit_final(data: Dataset) -> tuple[ForecastModel, VolatilityModel]:
    """The deployed model: selection on the most recent window, refit on everything; with the
    volatility model of the whole series, for the live interval."""
    fold_size = max(int(len(data.X) * TEST_FRACTION) // N_FOLDS, 1)
    model = fit_forecast_model(
        data.X,
        data.Y,
        horizons=data.horizons,
        feature_names=data.feature_names,
        validation_size=VALIDATION_FOLDS * fold_size,
    )
    volatility = data.volatility(len(data.returns))
    model.intervals = calibrate_intervals(data, model, volatility)
    return model, volatility


def refit(
    data: Dataset, previous: ForecastModel, previous_rows: int
) -> tuple[ForecastModel, VolatilityModel]:
    """The deployed model between evaluations: the families the last evaluation chose refitted
    on every row, its choice (family and shrinkage per horizon) and interval calibration (the
    variance members and |scaled residuals|) kept; the volatility model refitted on the whole
    series, for the live interval. The adapted level carries on through the outcomes that
    became known since `previous` (the model saved last, trained on the first `previous_rows`
    rows of this series), scored with its forecasts: made before those outcomes were known."""
    chosen = {c.family for c in previous.choices} - {"naive"}
    estimators = {family: fit_family(family, data.X, data.Y) for family in sorted(chosen)}
    model = ForecastModel(data.horizons, data.feature_names, list(previous.choices), estimators)
    volatility = data.volatility(len(data.returns))
    new = data.positions >= previous_rows - max(data.horizons)  # usable only since then
    predicted = previous.predict_returns(data.X[new]) if new.any() else None
    intervals = {}
    for j, h in enumerate(data.horizons):
        interval = previous.intervals[h]
        if predicted is not None:
            origins = data.positions[new]
            variance = interval.variance(volatility, origins, h)
            scores = np.abs(data.Y[new, j] - predicted[:, j]) / np.sqrt(variance)
            _, interval = interval.adapt(scores, origins, h)
        intervals[h] = interval
    model.intervals = intervals
    return model, volatility
