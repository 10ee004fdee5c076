"""Features without look-ahead, honest metrics, selection against naive, checksummed files."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from source.files import sha256_of
from source.ml.evaluation import Dataset, fold_plan, horizon_metrics, walk_forward
from source.ml.features import HORIZONS, build_features, build_targets
from source.ml.intervals import EXPERT_RATES
from source.ml.models import GBM_MAX_ROWS, MIN_IMPROVEMENT, select
from source.ml.registry import model_paths, read_metadata, save_model
from source.ml.train import train_series
from tests.conftest import REPO


def load_checked(models_dir, target: str, metal: str):
    """A saved model, unpickled only after its sha256 matches its metadata (the product never
    unpickles one: status and the report read the metadata and price_predictions)."""
    import joblib

    model_path, _ = model_paths(models_dir, target, metal)
    assert sha256_of(model_path) == read_metadata(models_dir, target, metal)["sha256"]
    return joblib.load(model_path)


def random_walk(n: int, seed: int, phi: float = 0.0) -> pd.Series:
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0, 0.002, n)
    returns = np.zeros(n)
    for i in range(1, n):
        returns[i] = phi * returns[i - 1] + shocks[i]
    return pd.Series(1000 * np.exp(np.cumsum(returns)))


def hourly(n: int) -> pd.Series:
    return pd.Series(pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"))


def test_changing_a_future_price_never_changes_a_past_feature():
    prices = random_walk(200, seed=1)
    before = build_features(prices, hourly(200))
    changed = prices.copy()
    changed.iloc[120] *= 1.5
    after = build_features(changed, hourly(200))
    pd.testing.assert_frame_equal(before.iloc[:120], after.iloc[:120])
    assert not before.iloc[120:].equals(after.iloc[120:])  # the change is visible from t=120 on


def test_targets_are_log_returns_h_steps_ahead():
    prices = pd.Series([100.0, 110.0, 121.0, 133.1])
    targets = build_targets(prices, (1, 2))
    assert targets["h1"].iloc[0] == pytest.approx(np.log(1.1))
    assert targets["h2"].iloc[1] == pytest.approx(np.log(1.21))
    assert targets["h2"].iloc[2:].isna().all()


def test_metrics_match_a_hand_computed_example():
    prices = np.array([100.0, 200.0])
    actual = np.log([1.1, 0.9])  # actual prices 110 and 180
    predicted = np.log([1.05, 1.0])  # forecasts 105 and 200 (the second is "no change")
    metrics = horizon_metrics(prices, actual, predicted)
    assert metrics["model_mae"] == pytest.approx((5 + 20) / 2)
    assert metrics["naive_mae"] == pytest.approx((10 + 20) / 2)
    assert metrics["mase"] == pytest.approx(12.5 / 15)
    assert metrics["direction_accuracy"] == 1.0 and metrics["direction_calls"] == 1
    assert metrics["direction_base_rate"] == 0.5


def backtest(tmp_path, prices: pd.Series) -> dict:
    csv = tmp_path / "series.csv"
    pd.DataFrame({"t": hourly(len(prices)), "close": prices}).to_csv(csv, index=False)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "main.py"),
            "backtest",
            "--csv",
            str(csv),
            "--column",
            "close",
            "--time-column",
            "t",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1  # one JSON object
    return json.loads(result.stdout)


def test_backtest_finds_real_autocorrelation(tmp_path):
    result = backtest(tmp_path, random_walk(4000, seed=7, phi=0.4))
    for key in ("n_predictions", "model_mae", "naive_mae", "mase", "direction_accuracy"):
        assert key in result
    assert result["n_predictions"] > 900
    assert result["mase"] < 0.95
    assert result["mase"] == pytest.approx(result["model_mae"] / result["naive_mae"])
    assert result["direction_accuracy"] > result["direction_base_rate"] + 0.05
    assert set(result["by_horizon"]) == {"1", "6", "24"}


@pytest.mark.parametrize("seed", [3, 11])
def test_backtest_on_a_random_walk_neither_beats_nor_loses_to_naive(tmp_path, seed):
    result = backtest(tmp_path, random_walk(4000, seed=seed))
    assert 0.98 <= result["mase"] <= 1.01  # below 0.98 on a random walk would mean leakage
    for horizon in result["by_horizon"].values():
        assert 0.97 <= horizon["mase"] <= 1.02
    # Constant volatility: the interval is calibrated and no better than constant quantiles.
    assert 0.75 <= result["interval_coverage"] <= 0.85
    assert 0.95 <= result["interval_score_ratio"] <= 1.05


def clustered_volatility(n: int, seed: int) -> pd.Series:
    """A random walk whose volatility switches between calm and turbulent regimes."""
    rng = np.random.default_rng(seed)
    regime = np.repeat(rng.choice([0.001, 0.004], size=n // 100 + 1), 100)[:n]
    return pd.Series(1000 * np.exp(np.cumsum(rng.normal(0, 1, n) * regime)))


def test_intervals_are_calibrated_and_beat_constant_quantiles_when_volatility_clusters(tmp_path):
    result = backtest(tmp_path, clustered_volatility(4000, seed=2))
    keys = ("interval_coverage", "interval_score", "naive_interval_score", "interval_score_ratio")
    for key in keys:
        assert key in result and key in result["by_horizon"]["6"]
    assert 0.75 <= result["interval_coverage"] <= 0.85
    assert result["interval_score_ratio"] < 0.9
    assert result["interval_score_ratio"] == pytest.approx(
        result["interval_score"] / result["naive_interval_score"]
    )


def test_an_oracle_series_is_found_far_below_naive():
    # The next return is a known function of the current one (a feature): a model that
    # cannot find this could not find anything.
    rng = np.random.default_rng(1)
    returns = np.zeros(3000)
    for i in range(1, 3000):
        returns[i] = 0.8 * returns[i - 1] + rng.normal(0, 0.002)
    data = Dataset.from_series(pd.Series(1000 * np.exp(np.cumsum(returns))), hourly(3000))
    assert walk_forward(data)[1]["mase"] < 0.75


def test_the_purge_keeps_every_training_target_out_of_the_test_fold(monkeypatch):
    from source.ml import models

    plan, fold_size = fold_plan(2000, HORIZONS)
    for train_end, start, end in plan:
        assert (train_end - 1) + max(HORIZONS) < start <= end
    # Inside each fit, the models chosen on the validation window were trained on rows whose
    # targets end before that window starts.
    fitted = []
    real_fit = models.fit_family
    monkeypatch.setattr(
        models, "fit_family", lambda f, X, Y: fitted.append(len(X)) or real_fit(f, X, Y)
    )
    X, Y = np.random.default_rng(0).normal(size=(1000, 3)), np.zeros((1000, 3))
    models.fit_forecast_model(
        X, Y, horizons=HORIZONS, feature_names=["a", "b", "c"], validation_size=100
    )
    inner = fitted[0]
    assert (inner - 1) + max(HORIZONS) < 1000 - 100


def test_the_margin_over_naive_is_half_a_percent():
    actual = np.array([[0.01], [-0.01]] * 50)  # naive MAE 0.01
    # Predicting c * actual has MAE (1 - c) * 0.01: c is the improvement over naive.
    assert select({"ridge": 0.004 * actual}, actual)[0].family == "naive"  # 0.4%: not enough
    assert select({"ridge": 0.006 * actual}, actual)[0].family == "ridge"  # 0.6%: preferred
    assert MIN_IMPROVEMENT == 0.005


def test_boosting_sees_only_the_newest_rows(monkeypatch):
    from source.ml import models

    seen = []

    class Spy:
        def fit(self, X, Y):
            seen.append((len(X), X[0, 0]))
            return self

    monkeypatch.setattr(models, "make_estimator", lambda family: Spy())
    X = np.arange(GBM_MAX_ROWS + 5000, dtype=float).reshape(-1, 1)
    models.fit_family("gbm", X, np.zeros((len(X), 1)))
    models.fit_family("ridge", X, np.zeros((len(X), 1)))
    assert seen == [(GBM_MAX_ROWS, 5000.0), (GBM_MAX_ROWS + 5000, 0.0)]


def test_training_runs_with_one_blas_and_openmp_thread(monkeypatch):
    from threadpoolctl import threadpool_info

    from source.ml import train

    seen = []
    monkeypatch.setattr(
        train, "train_series", lambda *args: seen.append(threadpool_info()) or (None, None, None)
    )
    train.fit_in_worker(pd.DataFrame(), "gold", "rate_price", {})
    assert seen and seen[0] and all(pool["num_threads"] == 1 for pool in seen[0])


def test_backtest_reports_bad_input_in_one_line(tmp_path):
    csv = tmp_path / "prices.csv"
    csv.write_text("day,close\n2024-01-01,1\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "backtest", "--csv", str(csv), "--column", "price"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"main.py backtest: {csv} has no column 'price' (columns: day, close)"
    )


@pytest.fixture
def saved_model(tmp_path):
    series = pd.DataFrame(
        {"timestamp": hourly(600), "rate_price": random_walk(600, seed=5, phi=0.3)}
    )
    model, metadata, _ = train_series(series, "gold", "rate_price")
    save_model(tmp_path, "rate_price", "gold", model, metadata)
    return tmp_path


def test_a_model_loaded_through_the_registry_predicts_what_it_did_before_saving(tmp_path):
    series = pd.DataFrame({"timestamp": hourly(800), "rate_price": random_walk(800, 9, phi=0.4)})
    model, metadata, _ = train_series(series, "gold", "rate_price")
    X = np.random.default_rng(3).normal(0, 0.002, size=(50, len(model.feature_names)))
    before = model.predict_returns(X)
    save_model(tmp_path, "rate_price", "gold", model, metadata)
    after = load_checked(tmp_path, "rate_price", "gold").predict_returns(X)  # sha256 checked
    np.testing.assert_array_equal(before, after)


def test_saved_model_loads_and_metadata_is_complete(saved_model):
    model = load_checked(saved_model, "rate_price", "gold")
    assert model.horizons == (1, 6, 24)
    _, meta_path = model_paths(saved_model, "rate_price", "gold")
    meta = json.loads(meta_path.read_text())
    for key in (
        "metal",
        "target",
        "trained_at",
        "rows_used",
        "data_window",
        "horizons",
        "library_versions",
        "sha256",
    ):
        assert key in meta
    assert set(meta["metrics"]["1"]) >= {"model_mae", "naive_mae", "mase", "direction_accuracy"}
    # The one-step interval's experts: each one's level and weight, their mix the level used.
    one = meta["interval"]["by_horizon"]["1"]
    assert len(one["experts"]) == len(EXPERT_RATES)
    assert sum(w for _, w in one["experts"]) == pytest.approx(1)
    assert sum(lv * w for lv, w in one["experts"]) == pytest.approx(one["level"])
    assert "experts" not in meta["interval"]["by_horizon"]["24"]


def test_the_walk_forward_runs_with_one_blas_and_openmp_thread(monkeypatch):
    from threadpoolctl import threadpool_info

    from source.ml import evaluation

    seen = []

    def fit_and_look(*args, **kwargs):
        seen.append(threadpool_info())
        raise RuntimeError("looked")

    monkeypatch.setattr(evaluation, "fit_forecast_model", fit_and_look)
    data = Dataset.from_series(random_walk(1000, seed=1), hourly(1000))
    with pytest.raises(RuntimeError, match="looked"):
        evaluation.walk_forward(data)
    assert seen and seen[0] and all(pool["num_threads"] == 1 for pool in seen[0])


def test_model_facts_come_from_the_metadata_files_alone(saved_model):
    from source.ml.registry import TARGETS, model_facts

    facts = model_facts(saved_model, ("gold", "silver"))
    assert [(m.metal, m.target, m.trained) for m in facts] == [
        ("gold", "rate_price", True),
        ("gold", "rate_ask", False),
        ("silver", "rate_price", False),
        ("silver", "rate_ask", False),
    ]
    assert TARGETS == ("rate_price", "rate_ask")
    gold = facts[0]
    assert set(gold.by_horizon) == {"1", "6", "24"}
    assert gold.by_horizon["1"].beats_naive == (gold.by_horizon["1"].mase < 1)
    assert facts[1].to_json() == {"metal": "gold", "target": "rate_ask", "trained": False}


def test_a_metal_is_retrained_only_when_a_model_of_it_was_trained_on_other_rows(tmp_path):
    from datetime import UTC, datetime, timedelta, timezone

    from source.ml.schedule import mark, mark_of, metals_to_train

    newest = datetime(2026, 3, 4, 10, tzinfo=UTC)
    now = {
        ("gold", "rate_price"): mark(500, newest),
        ("gold", "rate_ask"): mark(500, newest),
        ("silver", "rate_price"): mark(0, None),  # nothing to train on: nothing to do
        ("silver", "rate_ask"): mark(0, None),
    }
    assert metals_to_train(tmp_path, now) == ("gold",)  # no model yet
    series = pd.DataFrame({"timestamp": pd.date_range(end=newest, periods=500, freq="h")})
    for target in ("rate_price", "rate_ask"):
        model_file, meta = model_paths(tmp_path, target, "gold")
        model_file.parent.mkdir(parents=True, exist_ok=True)
        model_file.write_bytes(b"model")
        meta.write_text(json.dumps({"trained_through": mark_of(series)}))
    assert metals_to_train(tmp_path, now) == ()
    # The same newest quote read back in another time zone is the same mark.
    zurich = timezone(timedelta(hours=1))
    assert mark(500, newest.astimezone(zurich)) == now[("gold", "rate_ask")]
    assert metals_to_train(tmp_path, now | {("gold", "rate_ask"): mark(501, newest)}) == ("gold",)
    model_paths(tmp_path, "rate_price", "gold")[0].unlink()  # metadata without its model
    assert metals_to_train(tmp_path, now) == ("gold",)


def test_the_walk_forward_evaluation_is_due_after_a_day_or_a_week_of_new_rows():
    from datetime import UTC, datetime, timedelta

    from source.ml.schedule import EVALUATE_AFTER_ROWS, evaluation, evaluation_due

    at = datetime(2026, 3, 4, 10, tzinfo=UTC)
    meta = {"frequency": "hourly", "evaluated": evaluation(at, 5000, "hourly")}
    assert EVALUATE_AFTER_ROWS == 168  # a week of hourly quotes
    assert evaluation_due(meta, 5001, "hourly", at + timedelta(hours=1)) is None
    assert evaluation_due(meta, 5000 + 167, "hourly", at + timedelta(hours=23)) is None
    assert evaluation_due(meta, 5000 + 168, "hourly", at + timedelta(hours=1))
    assert evaluation_due(meta, 5001, "hourly", at + timedelta(hours=24))
    assert evaluation_due(meta, 4999, "hourly", at + timedelta(hours=1))  # rows went away
    assert evaluation_due(meta, 5001, "daily", at + timedelta(hours=1))
    assert evaluation_due({"frequency": "hourly"}, 5001, "hourly", at)  # never evaluated
    assert evaluation_due(None, 5001, "hourly", at)


def test_a_refit_keeps_the_evaluated_choice_and_calibration_and_skips_the_evaluation(
    monkeypatch,
):
    from source.ml import train

    prices = random_walk(1010, seed=9, phi=0.4)
    times = hourly(1010)
    first = pd.DataFrame({"timestamp": times[:1000], "rate_price": prices[:1000]})
    model, metadata, _ = train_series(first, "gold", "rate_price")
    assert not metadata["refit_only"]
    assert metadata["evaluated"]["rows_used"] == 1000

    def no_evaluation(*args, **kwargs):
        raise AssertionError("the walk-forward evaluation ran")

    monkeypatch.setattr(train, "walk_forward", no_evaluation)
    monkeypatch.setattr(train, "fit_final", no_evaluation)
    later = pd.DataFrame({"timestamp": times, "rate_price": prices})
    refitted, meta2, forecast = train_series(
        later, "gold", "rate_price", previous=(model, metadata)
    )
    assert meta2["refit_only"] and meta2["evaluated"] == metadata["evaluated"]
    assert meta2["rows_used"] == 1010
    assert meta2["chosen"] == metadata["chosen"] and meta2["metrics"] == metadata["metrics"]
    assert [c.label for c in refitted.choices] == [c.label for c in model.choices]
    for h, interval in refitted.intervals.items():  # calibration kept, the level carried on
        kept = model.intervals[h]
        assert interval.members == kept.members
        np.testing.assert_array_equal(interval.reference, kept.reference)
        if h == 1:  # each one-step expert carried on from where it stood, at its own rate
            assert len(interval.experts) == len(kept.experts) == len(EXPERT_RATES)
            for (level, _), (was, _), multiple in zip(
                interval.experts, kept.experts, EXPERT_RATES, strict=True
            ):
                assert abs(level - was) <= 10 * multiple * kept.rate + 1e-12
            assert interval.experts != kept.experts
        else:
            assert abs(interval.level - kept.level) <= 10 * kept.rate + 1e-12  # ten outcomes
    assert refitted.intervals[1].level != model.intervals[1].level
    assert forecast["origin_time"] == times.iloc[-1]
    # The families are refitted on the new rows: on the newest ones they forecast anew.
    chosen = {c.family for c in model.choices} - {"naive"}
    for family in chosen:
        assert refitted.estimators[family] is not model.estimators[family]


def test_a_history_ending_in_a_crash_gives_finite_forecasts_and_says_so(caplog):
    # 400 smooth hours, then a quote 99% lower two months on: the ridge, fitted on moves of a
    # few hundredths of a percent, extrapolated that to prices of 5.76, 0.005 and infinity
    # (the report then drew a billion-dash line until the kernel killed it).
    i = np.arange(1, 401)
    prices = np.append(2000 * np.exp(0.002 * np.sin(i / 7.0) + 0.0001 * i), 20.6289)
    times = pd.date_range("2026-01-01 01:00", periods=400, freq="h", tz="UTC")
    series = pd.DataFrame({
        "timestamp": times.append(pd.DatetimeIndex([pd.Timestamp("2026-03-04 10:00", tz="UTC")])),
        "rate_price": prices,
    })
    with caplog.at_level("WARNING", logger="source.ml.train"):
        forecasts = train_series(series, "silver", "rate_price")[2]
    for h, value in forecasts["values"].items():
        low, high = forecasts["bounds"][h]
        assert np.isfinite([value, low, high]).all() and 2.06 <= value <= 206.3, (h, value)
        assert low <= value <= high and low < high, (h, low, high)  # held: at its edge
    assert forecasts["values"][1] > 20.5  # held at ten times the largest hourly move: -0.4%
    assert "silver rate_price: the +1 forecast's change -1.28 is beyond ten times" in caplog.text


def test_a_forecast_a_few_times_the_largest_move_is_left_alone():
    from source.ml.train import plausible_limit, within

    moves = np.array([-0.0002, 0.0004])
    assert within(-0.002, plausible_limit(moves)) == -0.002  # 5x: a forecast, not an accident
    assert within(-1.28, plausible_limit(moves)) == -0.004
    assert within(float("inf"), plausible_limit(np.array([-4.6]))) == pytest.approx(np.log(10))
