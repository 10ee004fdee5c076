"""The 80% intervals against the volatility models desks use: seasonality is found where it is
and not invented where it is not; nothing after a fold's start reaches its volatility model;
the calibration tests answer what the textbooks say."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from source.ml import evaluation
from source.ml.backtest import daily_closes, read_series
from source.ml.evaluation import Dataset, walk_forward_origins
from source.ml.intervals import (
    ALPHA,
    EXPERT_RATES,
    LEVEL,
    LEVEL_RANGE,
    IntervalModel,
    adapt_experts,
    adapt_levels,
    christoffersen_pvalue,
    interval_metrics,
    interval_score,
    kupiec_pvalue,
    level_floor,
    levels_of,
    mixed_level,
    quantile_at,
    start_experts,
)
from source.ml.volatility import Seasonality, VolatilityModel, buckets_of
from tests.conftest import REAL_HOURLY as REAL


def trading_hours(n: int) -> pd.Series:
    """Hourly stamps without weekends, as a metal's quotes."""
    stamps = pd.date_range("2021-01-04", periods=int(n * 1.5), freq="h", tz="UTC")
    return pd.Series(stamps[stamps.day_of_week < 5][:n])


def series(n: int, seed: int, seasonal: bool) -> tuple[pd.Series, pd.Series]:
    """A random walk; with `seasonal`, returns three times larger in two busy hours a day and
    a third as large at night (the shape of a metal's London/New York day)."""
    rng = np.random.default_rng(seed)
    stamps = trading_hours(n)
    scale = np.ones(n)
    if seasonal:
        hour = stamps.dt.hour.to_numpy()
        scale = np.where(np.isin(hour, (8, 14)), 3.0, np.where(hour < 6, 1 / 3, 1.0))
    returns = rng.normal(0, 0.001, n) * scale
    returns[0] = 0
    return pd.Series(1000 * np.exp(np.cumsum(returns))), stamps


def riskmetrics_score(prices: pd.Series, origins: np.ndarray, h: int) -> float:
    """The desk's default: EWMA 0.94 variance, normal quantiles, sqrt(h)."""
    values = prices.to_numpy()
    returns = np.log(prices).diff().fillna(0.0).to_numpy()
    variance = pd.Series(returns**2).ewm(alpha=0.06, adjust=False).mean().to_numpy()
    half = np.sqrt(variance[origins] * h) * 1.2815515655446004
    low, high = values[origins] * np.exp(-half), values[origins] * np.exp(half)
    return float(np.mean(interval_score(low, high, values[origins + h])))


def true_volatility_score(prices: pd.Series, origins: np.ndarray, h: int) -> float:
    """What knowing the random walk's true, constant volatility gives: the best there is."""
    values = prices.to_numpy()
    half = 0.001 * np.sqrt(h) * 1.2815515655446004
    low, high = values[origins] * np.exp(-half), values[origins] * np.exp(half)
    return float(np.mean(interval_score(low, high, values[origins + h])))


@pytest.mark.parametrize("seed", [4, 9])
def test_a_random_walk_without_seasonality_gets_nothing_from_the_future(seed):
    # Constant volatility: nothing beats knowing it. Doing better than that would mean the
    # profile, the models or the quantiles saw the future; and no made-up seasonality or
    # model makes it much better than the desk's RiskMetrics either.
    prices, stamps = series(6000, seed, seasonal=False)
    metrics, origins = walk_forward_origins(Dataset.from_series(prices, stamps))
    for h in (1, 6, 24):
        score = metrics[h]["interval_score"]
        assert score / true_volatility_score(prices, origins, h) >= 0.99, h
        assert score / riskmetrics_score(prices, origins, h) >= 0.95, h
        assert 0.76 <= metrics[h]["interval_coverage"] <= 0.84


def test_a_weekly_shape_in_volatility_is_found_and_pays():
    prices, stamps = series(8000, 3, seasonal=True)
    metrics, origins = walk_forward_origins(Dataset.from_series(prices, stamps))
    ratio = metrics[1]["interval_score"] / riskmetrics_score(prices, origins, 1)
    assert ratio < 0.85  # the busy and quiet hours get their own widths
    assert 0.77 <= metrics[1]["interval_coverage"] <= 0.83
    # The profile itself: busy hours about three times, night hours a third, of the rest.
    returns = np.log(prices).diff().fillna(0.0).to_numpy()
    buckets = buckets_of(stamps, "hourly")
    profile = Seasonality.fit(returns[1:], buckets[1:], 168).profile
    busy, night, other = profile[8], profile[2], profile[11]
    assert 2.4 < busy / other < 3.6 and 0.25 < night / other < 0.45


def test_nothing_after_the_end_reaches_the_volatility_model():
    prices, stamps = series(6000, 5, seasonal=True)
    returns = np.log(prices).diff().fillna(0.0).to_numpy().copy()
    buckets = buckets_of(stamps, "hourly")
    end = 4000
    origins = np.arange(3000, end)
    before = VolatilityModel(returns, buckets, "hourly", end)
    changed = returns.copy()
    changed[end:] *= 5  # a very different future
    after = VolatilityModel(changed, buckets, "hourly", end)
    assert np.array_equal(before.seasonality.profile, after.seasonality.profile)
    assert before.garch == after.garch
    for name in before.candidates:
        for h in (1, 6, 24):
            assert np.allclose(
                before.variance(name, origins, h), after.variance(name, origins, h)
            ), name


def test_a_forecast_spanning_the_weekend_is_wider():
    prices, stamps = series(6000, 6, seasonal=False)
    returns = np.log(prices).diff().fillna(0.0).to_numpy().copy()
    returns[stamps.dt.day_of_week.eq(0) & stamps.dt.hour.eq(0)] *= 6  # the weekend's gap
    buckets = buckets_of(stamps, "hourly")
    model = VolatilityModel(returns, buckets, "hourly", len(returns))
    friday_late = np.flatnonzero((stamps.dt.day_of_week == 4) & (stamps.dt.hour == 23))[-1]
    tuesday = np.flatnonzero((stamps.dt.day_of_week == 1) & (stamps.dt.hour == 23))[-1]
    ratio = model.variance("ewma 0.97", [friday_late], 1) / model.variance(
        "ewma 0.97", [tuesday], 1
    )
    assert ratio[0] > 10


def test_kupiec_accepts_the_right_share_of_misses_and_rejects_a_wrong_one():
    rng = np.random.default_rng(0)
    right = rng.random(2000) < ALPHA
    assert kupiec_pvalue(right) > 0.05
    wrong = rng.random(2000) < 0.3
    assert kupiec_pvalue(wrong) < 1e-6
    # By hand: 250 misses in 1,000 against 20% expected: LR = 2 * (750 ln(0.75/0.8) +
    # 250 ln(0.25/0.2)) = 14.78, p = 0.000121.
    misses = np.zeros(1000, dtype=bool)
    misses[:250] = True
    assert kupiec_pvalue(misses) == pytest.approx(0.000121, rel=0.01)


def test_christoffersen_sees_misses_that_cluster():
    rng = np.random.default_rng(1)
    independent = rng.random(3000) < ALPHA
    assert christoffersen_pvalue(independent) > 0.05
    clustered = np.repeat(rng.random(600) < ALPHA, 5)  # misses come five in a row
    assert christoffersen_pvalue(clustered) < 1e-6


def test_the_adapted_level_uses_only_outcomes_already_known():
    rng = np.random.default_rng(2)
    reference = np.sort(np.abs(rng.normal(size=500)))
    scores = np.abs(rng.normal(size=300))
    positions, h = np.arange(300), 6
    before, _ = adapt_levels(reference, LEVEL, scores, positions, h, rate=0.05)
    changed = scores.copy()
    changed[100] = 50.0  # one origin's outcome, known from position 106 on
    after, _ = adapt_levels(reference, LEVEL, changed, positions, h, rate=0.05)
    assert np.array_equal(before[: 100 + h], after[: 100 + h])
    assert after[100 + h] != before[100 + h]
    # Misses one after another widen the interval; covers narrow it back.
    thresholds, level = adapt_levels(reference, LEVEL, np.full(200, 9.0), np.arange(200), 1, 0.05)
    assert thresholds[-1] > thresholds[0] and level > LEVEL
    _, level = adapt_levels(reference, LEVEL, np.zeros(200), np.arange(200), 1, 0.05)
    assert level < LEVEL


def test_one_step_experts_use_only_outcomes_already_known():
    rng = np.random.default_rng(6)
    reference = np.sort(np.abs(rng.normal(size=500)))
    scores = np.abs(rng.normal(size=300))
    experts = start_experts(LEVEL)
    before, _ = adapt_experts(reference, experts, scores, 0.01)
    changed = scores.copy()
    changed[100] = 50.0  # known from the next origin on
    after, _ = adapt_experts(reference, experts, changed, 0.01)
    assert np.array_equal(before[:101], after[:101])
    assert after[101] > before[101]
    # No origins: nothing learnt; a one-value reference still gives thresholds.
    nothing, kept = adapt_experts(reference, experts, np.array([]), 0.01)
    assert len(nothing) == 0 and kept == experts
    single, after_one = adapt_experts(np.array([1.0]), experts, np.array([0.5, 1.0, 2.0]), 0.01)
    assert np.array_equal(single, [1.0, 1.0, 1.0]) and np.isfinite(after_one).all()
    # Where the reference repeats a value, an outcome at it needs the lowest level reaching it.
    tied = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0, 1.0, 1.0, 1.0, 2.0])
    need = levels_of(tied, np.array([1.0]))[0]
    assert quantile_at(tied, need) == 1.0 and quantile_at(tied, need - 1e-9) < 1.0
    # An outcome that is not a number teaches nothing; levels stay where their threshold moves.
    uneven = tuple((0.7 + 0.02 * e, 0.3 - 0.04 * e) for e in range(len(EXPERT_RATES)))
    _, unchanged = adapt_experts(reference, uneven, np.array([np.nan]), 0.01)
    assert unchanged == uneven
    _, flooded = adapt_experts(reference, experts, np.full(500, 50.0), 0.05)
    assert max(level for level, _ in flooded) == LEVEL_RANGE[1]


def test_one_step_experts_follow_a_new_regime_faster_and_keep_calm_on_the_slow_rate():
    # A calm, calibrated spell: the slow experts' levels stay nearest what the outcomes
    # need, so they keep most of the weight. Then every move is twice as large: the fast
    # experts reach a level that covers them long before one rate of the slowest would, and
    # the weight follows them.
    rng = np.random.default_rng(7)
    reference = np.sort(np.abs(rng.normal(size=2000)))
    rate, calm = 0.002, np.abs(rng.normal(size=3000))
    _, experts = adapt_experts(reference, start_experts(LEVEL), calm, rate)
    weights = [w for _, w in experts]
    half = len(EXPERT_RATES) // 2
    assert sum(weights[:half]) > sum(weights[half:])
    assert abs(mixed_level(experts) - LEVEL) < 0.05
    wild = 2 * np.abs(rng.normal(size=300))
    thresholds, after = adapt_experts(reference, experts, wild, rate)
    single, level = adapt_levels(reference, mixed_level(experts), wild, np.arange(300), 1, rate)
    assert mixed_level(after) > level + 0.05
    assert np.mean(wild[150:] > thresholds[150:]) < np.mean(wild[150:] > single[150:]) - 0.05
    assert sum(w for _, w in after[half:]) > sum(w for _, w in after[:half])


def test_a_model_saved_before_experts_starts_them_from_its_level():
    reference = np.sort(np.abs(np.random.default_rng(8).normal(size=500)))
    old = IntervalModel(("ewma 0.94",), reference, level=0.83, rate=0.01)  # no experts kept
    _, adapted = old.adapt(np.zeros(1), np.arange(1), 1)  # one cover: every level falls
    assert len(adapted.experts) == len(EXPERT_RATES)
    for (level, _), multiple in zip(adapted.experts, EXPERT_RATES, strict=True):
        assert level == pytest.approx(0.83 - 0.01 * multiple * ALPHA)
    assert adapted.level == pytest.approx(mixed_level(adapted.experts))
    # Saved experts carry on from where they stood (another number of them: start afresh).
    experts = tuple((0.75 + 0.01 * e, 0.1 + 0.05 * e) for e in range(len(EXPERT_RATES)))
    kept = IntervalModel(("ewma 0.94",), reference, mixed_level(experts), 0.01, experts=experts)
    scores = np.abs(np.random.default_rng(9).normal(size=50))
    _, carried = kept.adapt(scores, np.arange(50), 1)
    assert carried.experts == adapt_experts(reference, experts, scores, 0.01)[1]
    _, restarted = replace(kept, experts=experts[:3]).adapt(np.zeros(1), np.arange(1), 1)
    assert len(restarted.experts) == len(EXPERT_RATES)
    # Beyond one step: one level at the model's rate, no experts.
    _, longer = old.adapt(np.zeros(1), np.arange(1), 6)
    assert longer.experts == () and longer.level == pytest.approx(0.83 - 0.01 * ALPHA)


def tails_that_change(n: int, seed: int, change: int) -> tuple[pd.Series, pd.Series]:
    """Daily closes: normal returns, then from `change` on the same variance in fat-tailed
    form (one day in twenty six times as wide): the share of calm days rises, and a quantile
    fitted before the change holds far more than 80% of the moves after it."""
    rng = np.random.default_rng(seed)
    stamps = pd.Series(pd.bdate_range("2010-01-04", periods=n, tz="UTC"))
    wide = rng.random(n) < 0.05
    fat = np.where(wide, rng.normal(0, 6, n), rng.normal(0, 1, n)) / np.sqrt(2.75)
    returns = 0.01 * np.where(np.arange(n) >= change, fat, rng.normal(0, 1, n))
    returns[0] = 0
    return pd.Series(100 * np.exp(np.cumsum(returns))), stamps


def test_coverage_comes_back_to_80_percent_when_the_regime_changes(monkeypatch):
    prices, stamps = tails_that_change(4000, seed=1, change=3000)  # the test folds: new regime
    data = Dataset.from_series(prices, stamps)
    adaptive = walk_forward_origins(data)[0][1]
    monkeypatch.setattr(evaluation, "adaptation_rate", lambda frequency, horizon: 0.0)
    fixed = walk_forward_origins(data)[0][1]
    assert fixed["interval_coverage"] > 0.86  # the old quantile: far too wide
    assert adaptive["interval_coverage"] < 0.845
    assert adaptive["interval_score"] < 0.985 * fixed["interval_score"]


@pytest.mark.skipif(not REAL.is_dir(), reason="the real hourly files are in ../shared/real")
def test_daily_closes_without_timestamps_get_intervals_as_good_as_with_them():
    # A vendor file of daily closes may come without a time column: its volatility models
    # must still be fitted on years of rows, not on a window sized for something else.
    prices, stamps = read_series(REAL / "XAGUSD_H1.csv", "close", "time")
    closes, days = daily_closes(prices, stamps)
    dated = walk_forward_origins(Dataset.from_series(closes, days))
    undated = walk_forward_origins(Dataset.from_series(closes))
    ratio = undated[0][1]["interval_score"] / dated[0][1]["interval_score"]
    assert ratio < 1.005


def test_kupiec_is_taken_on_non_overlapping_origins():
    # Overlapping 24-row moves share 23 rows: 24 misses in a row are one event, not 24.
    rng = np.random.default_rng(3)
    actual = rng.normal(size=2400)
    lower, upper = np.full(2400, -1.28), np.full(2400, 1.28)
    naive = (np.full(2400, -2.0), np.full(2400, 2.0))
    misses = (actual < lower) | (actual > upper)
    metrics = interval_metrics(actual, lower, upper, *naive, horizon=24)
    assert metrics["kupiec_p"] == kupiec_pvalue(misses[::24])
    assert interval_metrics(actual, lower, upper, *naive)["kupiec_p"] == kupiec_pvalue(misses)


def test_the_har_peer_uses_nothing_after_each_origin():
    # The benchmark's HAR-RV peer must be as honest as the project: an origin's bounds come
    # from returns up to it, its regression and quantiles from outcomes known by its block.
    from benchmarks.intervals import har_bounds

    rng = np.random.default_rng(4)
    returns = rng.normal(0, 0.01, 6000) * np.repeat(rng.uniform(0.5, 2, 60), 100)
    returns[0] = 0
    origins = np.arange(4500, 6000 - 24)
    change = 5000
    changed = returns.copy()
    changed[change + 1 :] *= 4  # a very different future after origin `change`
    for h, day in ((1, 24), (24, 24), (6, 1)):
        before = har_bounds(returns**2, returns, origins, h, day)
        after = har_bounds(changed**2, changed, origins, h, day)
        known = origins <= change
        for b, a in zip(before, after, strict=True):
            assert np.array_equal(b[known], a[known]), h
            assert not np.allclose(b[~known], a[~known]), h


def test_beyond_one_step_the_level_only_widens():
    # Few, slow outcomes at long horizons: a run of covers must not narrow the interval below
    # the calibrated 80%, while a run of misses still widens it; one step adapts both ways.
    rng = np.random.default_rng(5)
    reference = np.sort(np.abs(rng.normal(size=500)))
    assert level_floor(1) < LEVEL and level_floor(6) == level_floor(24) == LEVEL
    thresholds, level = adapt_levels(
        reference, LEVEL, np.zeros(300), np.arange(300), 24, 0.01, level_floor(24)
    )
    assert level == LEVEL and thresholds.min() == thresholds[0]
    _, level = adapt_levels(
        reference, LEVEL, np.full(300, 9.0), np.arange(300), 24, 0.01, level_floor(24)
    )
    assert level > LEVEL


def test_the_coverage_noise_benchmark_simulates_an_exact_interval():
    # Its figures say how far chance alone moves an exactly right interval's coverage: the
    # interval must be exact (80% on average) and the noise grow with the horizon.
    from benchmarks.coverage_noise import exact_coverages

    one, rejected = exact_coverages(512, 1, runs=300)
    day, rejected_day = exact_coverages(512, 24, runs=300)
    assert abs(one.mean() - LEVEL) < 0.005 and abs(day.mean() - LEVEL) < 0.01
    assert 0.012 < one.std() < 0.024 < day.std()
    assert rejected < 0.12 and rejected_day < 0.12  # Kupiec on every h-th origin
