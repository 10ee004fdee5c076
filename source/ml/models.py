"""Candidate model families, shrinkage toward "no change", and selection against naive.

Every family forecasts the log return at each horizon (multi-output). The naive persistence
forecast (a return of 0) is always a candidate and wins unless a model beats it on the
validation window that directly precedes the data it will be used on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.multioutput import MultiOutputRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

FAMILIES = ("ridge", "gbm")
SHRINKAGE = (0.25, 0.5, 0.75, 1.0)
MIN_IMPROVEMENT = 0.005  # a model must beat naive validation MAE by 0.5% to be preferred
GBM_MAX_ROWS = 20_000  # boosting sees the most recent rows only: recent regimes, bounded cost


def make_estimator(family: str):
    if family == "ridge":
        return Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=10.0))])
    if family == "gbm":
        return MultiOutputRegressor(
            HistGradientBoostingRegressor(
                max_iter=60,
                learning_rate=0.05,
                max_leaf_nodes=15,
                min_samples_leaf=50,
                l2_regularization=1.0,
                early_stopping=False,
                random_state=0,
            )
        )
    raise ValueError(f"unknown model family {family!r}")


def fit_family(family: str, X: np.ndarray, Y: np.ndarray):
    if family == "gbm":
        X, Y = X[-GBM_MAX_ROWS:], Y[-GBM_MAX_ROWS:]
    return make_estimator(family).fit(X, Y)


@dataclass(frozen=True)
class Choice:
    """What forecasts one horizon: a family scaled by `shrink`, or naive."""

    family: str  # "naive" or one of FAMILIES
    shrink: float
    validation_mae: float
    naive_validation_mae: float

    @property
    def label(self) -> str:
        return "naive" if self.family == "naive" else f"{self.family}*{self.shrink:g}"


def select(val_predictions: dict[str, np.ndarray], Y_val: np.ndarray) -> list[Choice]:
    """Per horizon, the (family, shrinkage) with the lowest validation MAE, or naive."""
    choices = []
    for j in range(Y_val.shape[1]):
        actual = Y_val[:, j]
        naive_mae = float(np.mean(np.abs(actual)))
        best = Choice("naive", 0.0, naive_mae, naive_mae)
        for family, predicted in val_predictions.items():
            for shrink in SHRINKAGE:
                mae = float(np.mean(np.abs(shrink * predicted[:, j] - actual)))
                if mae < best.validation_mae and mae < naive_mae * (1 - MIN_IMPROVEMENT):
                    best = Choice(family, shrink, mae, naive_mae)
        choices.append(best)
    return choices


class ForecastModel:
    """Fitted families plus the per-horizon choice; predicts log returns."""

    def __init__(self, horizons, feature_names, choices: list[Choice], estimators: dict):
        self.horizons = tuple(horizons)
        self.feature_names = list(feature_names)
        self.choices = choices
        self.estimators = estimators
        self.validation: tuple[np.ndarray, np.ndarray] | None = None
        self.intervals: dict = {}  # horizon -> IntervalModel, set by fit_final

    def predict_returns(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros((len(X), len(self.horizons)))
        cache = {}
        for j, choice in enumerate(self.choices):
            if choice.family == "naive":
                continue
            if choice.family not in cache:
                cache[choice.family] = self.estimators[choice.family].predict(X)
            out[:, j] = choice.shrink * cache[choice.family][:, j]
        return out


def fit_forecast_model(
    X: np.ndarray, Y: np.ndarray, *, horizons, feature_names, validation_size: int
) -> ForecastModel:
    """Select on the most recent `validation_size` rows (purged), then refit on all rows."""
    purge = max(horizons)
    inner_end = len(X) - validation_size - purge
    if inner_end < validation_size:
        raise ValueError("too few rows to validate")
    X_val, Y_val = X[-validation_size:], Y[-validation_size:]
    val_predictions = {
        family: fit_family(family, X[:inner_end], Y[:inner_end]).predict(X_val)
        for family in FAMILIES
    }
    choices = select(val_predictions, Y_val)
    chosen = {c.family for c in choices} - {"naive"}
    estimators = {family: fit_family(family, X, Y) for family in sorted(chosen)}
    model = ForecastModel(horizons, feature_names, choices, estimators)
    # What the chosen forecast said on the validation window, before seeing it: the residuals
    # that calibrate the intervals (rows len(X)-validation_size .. len(X)-1 of X).
    combined = np.zeros_like(Y_val)
    for j, choice in enumerate(choices):
        if choice.family != "naive":
            combined[:, j] = choice.shrink * val_predictions[choice.family][:, j]
    model.validation = (np.arange(len(X) - validation_size, len(X)), combined)
    return model
