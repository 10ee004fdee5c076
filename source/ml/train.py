"""The training stage: for every metal and target, evaluate walk-forward, fit the deployed
model, save it with metadata, and write metrics (`model_runs`) and forecasts
(`price_predictions`) to the database.

The walk-forward evaluation (which also chooses each horizon's model and calibrates the
intervals) is most of the cost. `train` always runs it; the hourly run only when it is due
(source/ml/schedule.py: a day old, or a week of new rows): otherwise the model is refitted on
the new rows with the last evaluation's choice and calibration, and its metrics are that
evaluation's (metadata `evaluated`: when it ran, on how many rows)."""

from __future__ import annotations

import logging
import os
import time
import traceback
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from psycopg2.extras import execute_values
from threadpoolctl import threadpool_limits

from source.config import Settings
from source.db_functions.connection import Database
from source.db_functions.migrations import historic_sql
from source.errors import ReportableError
from source.log_setup import log_fields, records_for_parent, replay
from source.ml.evaluation import (
    MIN_ROWS,
    Dataset,
    NotEnoughData,
    fit_final,
    refit,
    walk_forward,
)
from source.ml.features import HORIZONS, warmup_rows
from source.ml.intervals import LEVEL
from source.ml.models import GBM_MAX_ROWS, SHRINKAGE
from source.ml.registry import (
    TARGETS,
    ModelIntegrityError,
    library_versions,
    load_model,
    read_metadata,
    save_model,
)
from source.ml.sampling import DAILY, HOURLY, training_rows
from source.ml.schedule import evaluation, evaluation_due, mark_of

log = logging.getLogger(__name__)


def read_history(conn, metal: str) -> pd.DataFrame:
    """The metal's good rows only: a suspect or rejected quote never reaches a model."""
    with conn.cursor() as cur:
        cur.execute(
            f'SELECT "timestamp", rate_price, rate_ask FROM {historic_sql(metal)} '
            "WHERE quality = 'ok' ORDER BY \"timestamp\""
        )
        rows = cur.fetchall()
    frame = pd.DataFrame(rows, columns=["timestamp", "rate_price", "rate_ask"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.astype({"rate_price": "float64", "rate_ask": "float64"})


PLAUSIBLE = 10  # a forecast may move up to this many times the history's largest move ...
TENFOLD = float(np.log(10))  # ... and never more than tenfold either way


def plausible_limit(changes: np.ndarray) -> float:
    """The largest log change a forecast may predict: ten times the largest h-step change in
    its history, at most tenfold. Features far outside the training data (a price that fell
    99% in an hour) make a linear model extrapolate to absurd or infinite prices."""
    return min(PLAUSIBLE * float(np.max(np.abs(changes))), TENFOLD)


def within(change: float, limit: float) -> float:
    if not np.isfinite(change):
        return limit if change > 0 else -limit
    return min(max(change, -limit), limit)


def train_series(
    series: pd.DataFrame,
    metal: str,
    target: str,
    sampling: dict | None = None,
    previous: tuple | None = None,
):
    """Evaluate and fit on a (timestamp, target) frame; return model, metadata, forecasts.
    With `previous` (the last evaluated model and its metadata, of the same features and
    horizons) no evaluation runs: the model is refitted with its choice and calibration."""
    sampling = sampling or {"frequency": HOURLY, "rule": "as given", "rows_used": len(series)}
    data = Dataset.from_series(series[target], series["timestamp"])
    if previous is not None and (
        tuple(previous[0].horizons) != data.horizons
        or list(previous[0].feature_names) != data.feature_names
        or previous[1]["data_window"]["start"] != series["timestamp"].iloc[0].isoformat()
    ):
        previous = None  # other features, horizons or first row: evaluate afresh
    now = datetime.now(UTC)
    if previous is None:
        metrics = {str(h): m for h, m in walk_forward(data).items()}
        model, volatility = fit_final(data)
        evaluated = evaluation(now, len(series), sampling["frequency"])
    else:
        old_model, old_metadata = previous
        metrics = old_metadata["metrics"]
        model, volatility = refit(data, old_model, old_metadata["rows_used"])
        evaluated = old_metadata["evaluated"]
    origin_time = series["timestamp"].iloc[-1]
    last_value = float(series[target].iloc[-1])
    returns = model.predict_returns(data.last_features)[0]
    last = np.array([len(data.returns) - 1])  # the newest row, in the whole series
    forecasts, bounds = {}, {}
    for j, (h, r) in enumerate(zip(data.horizons, returns, strict=True)):
        interval = model.intervals[h]
        low, high = interval.bounds(r, interval.variance(volatility, last, h)[0])
        limit = plausible_limit(data.Y[:, j])
        r, low, high = (within(v, limit) for v in (r, low, high))
        if r != returns[j]:  # nothing known: the interval is all that is plausible
            low, high = -limit, limit
            log.warning("%s %s: the +%d forecast's change %+.3g is beyond ten times any %d-step "
                        "change in its history; held at %+.3g, its interval +-%.3g",
                        metal, target, h, returns[j], h, r, limit)
        forecasts[h] = last_value * float(np.exp(r))
        bounds[h] = (last_value * float(np.exp(low)), last_value * float(np.exp(high)))
    metadata = {
        "metal": metal,
        "target": target,
        "trained_at": now.isoformat(),
        "rows_used": len(series),
        "data_window": {
            "start": series["timestamp"].iloc[0].isoformat(),
            "end": origin_time.isoformat(),
        },
        "horizons": list(data.horizons),
        "frequency": sampling["frequency"],
        "horizon_unit": "days" if sampling["frequency"] == DAILY else "hours (rows)",
        "sampling": sampling,
        "features": data.feature_names,
        "candidates": "naive; ridge (all rows); gradient boosting (newest "
        f"{GBM_MAX_ROWS:,} rows); each scaled toward no change by {list(SHRINKAGE)}",
        "chosen": {str(h): c.label for h, c in zip(data.horizons, model.choices, strict=True)},
        "evaluation": "expanding-window walk-forward, 4 folds over the latest 25% of rows; "
        "model and shrinkage chosen on the window before each fold; naive = persistence",
        "metrics": metrics,
        "evaluated": evaluated,
        "refit_only": previous is not None,
        "interval": {
            "level": LEVEL,
            "method": "validation residuals scaled by a seasonal (hour-of-week) volatility "
            "forecast; the quantile of |scaled residuals| at a level adapted to recent misses "
            "(adaptive conformal inference, starting at 80%; at one step the rate learnt by six "
            "experts (DtACI); beyond one step never below 80%); "
            "variance candidates (EWMA, HAR, "
            "log-HAR, GARCH) combined when their interval score is within 0.5% (h=1) or 3% "
            "(longer) of the best on the calibration window",
            "seasonality": data.frequency,
            "garch": volatility.garch,
            "by_horizon": {
                str(h): {"members": list(q.members), "level": q.level, "quantile": q.quantile}
                | ({"experts": [list(e) for e in q.experts]} if q.experts else {})
                for h, q in model.intervals.items()
            },
        },
        "library_versions": library_versions(),
    }
    return (
        model,
        metadata,
        {
            "origin_time": origin_time,
            "last_value": last_value,
            "values": forecasts,
            "bounds": bounds,
        },
    )


def _record_metrics(cur, metadata: dict) -> None:
    """The evaluation's metrics per horizon, one `model_runs` row each."""
    execute_values(
        cur,
        """INSERT INTO model_runs (trained_at, metal, target, horizon, chosen_model, rows_used,
               data_start, data_end, n_predictions, model_mae, naive_mae, mase,
               direction_accuracy, direction_base_rate, frequency, interval_coverage,
               interval_score, naive_interval_score, interval_score_ratio) VALUES %s""",
        [
            (
                metadata["trained_at"],
                metadata["metal"],
                metadata["target"],
                int(h),
                metadata["chosen"][h],
                metadata["rows_used"],
                metadata["data_window"]["start"],
                metadata["data_window"]["end"],
                m["n_predictions"],
                m["model_mae"],
                m["naive_mae"],
                m["mase"],
                m["direction_accuracy"],
                m["direction_base_rate"],
                metadata["frequency"],
                m["interval_coverage"],
                m["interval_score"],
                m["naive_interval_score"],
                m["interval_score_ratio"],
            )
            for h, m in metadata["metrics"].items()
        ],
    )


def _record(conn, metadata: dict, forecast: dict) -> None:
    """The forecasts; the metrics too when an evaluation ran (a refit's are not new)."""
    trained_at = metadata["trained_at"]
    with conn, conn.cursor() as cur:
        if not metadata["refit_only"]:
            _record_metrics(cur, metadata)
        execute_values(
            cur,
            """INSERT INTO price_predictions (metal, target, origin_time, horizon, predicted_value,
                   last_value, chosen_model, trained_at, frequency, lower, upper) VALUES %s
               ON CONFLICT (metal, target, origin_time, horizon) DO UPDATE SET
                   predicted_value = EXCLUDED.predicted_value, last_value = EXCLUDED.last_value,
                   chosen_model = EXCLUDED.chosen_model, trained_at = EXCLUDED.trained_at,
                   frequency = EXCLUDED.frequency, lower = EXCLUDED.lower,
                   upper = EXCLUDED.upper""",
            [
                (
                    metadata["metal"],
                    metadata["target"],
                    forecast["origin_time"],
                    h,
                    value,
                    forecast["last_value"],
                    metadata["chosen"][str(h)],
                    trained_at,
                    metadata["frequency"],
                    *forecast["bounds"][h],
                )
                for h, value in forecast["values"].items()
            ],
        )


def min_rows() -> int:
    """Rows a series needs before the usable ones reach MIN_ROWS."""
    return MIN_ROWS + warmup_rows() + max(HORIZONS) + 1


class TrainingFailed(ReportableError):
    """Some models could not be trained; the others were written."""


def available_cores() -> int:
    """Cores this process may use (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def fit_in_worker(
    series: pd.DataFrame, metal: str, target: str, sampling: dict, previous: tuple | None = None
):
    """One model's computation, with BLAS/OpenMP held to one thread: parallelism comes from
    running models side by side, so a busy host is not oversubscribed. Returns
    ("ok", model, metadata, forecast, seconds), ("skipped", reason) or ("failed", text, trace)."""
    started = time.monotonic()
    with threadpool_limits(limits=1):
        try:
            model, metadata, forecast = train_series(series, metal, target, sampling, previous)
        except NotEnoughData as exc:
            return ("skipped", str(exc))
        except Exception as exc:  # reported by the parent with the others
            return ("failed", f"{type(exc).__name__}: {exc}", traceback.format_exc())
    return ("ok", model, metadata, forecast, time.monotonic() - started)


def fit_logged(parent_pid: int, *task) -> tuple[tuple, list]:
    """fit_in_worker, and what it logged in a worker process, for the parent to replay."""
    with records_for_parent(parent_pid) as records:
        result = fit_in_worker(*task)
    return result, records


def _store(settings: Settings, conn, result) -> None:
    _, model, metadata, forecast, seconds = result
    metal, target = metadata["metal"], metadata["target"]
    save_model(settings.models_dir, target, metal, model, metadata)
    _record(conn, metadata, forecast)
    first = metadata["horizons"][0]
    mase = metadata["metrics"][str(first)]["mase"]
    low, high = forecast["bounds"][first]
    log.info(
        "%s %s: %s on %d %s rows in %.1fs; 1-step %s, MASE %s, next %.4f (80%%: %.4f-%.4f)",
        metal,
        target,
        f"refitted (evaluation of {metadata['evaluated']['at']} kept)"
        if metadata["refit_only"]
        else "evaluated and trained",
        metadata["rows_used"],
        metadata["frequency"],
        seconds,
        metadata["chosen"][str(first)],
        f"{mase:.3f}" if mase is not None else "n/a",
        forecast["values"][first],
        low,
        high,
    )


def previous_evaluation(models_dir, metal: str, target: str, rows: int, frequency: str):
    """(model, metadata) of the last evaluation when a refit may keep it; None when the
    walk-forward evaluation is due (or the saved model cannot be trusted)."""
    try:
        metadata = read_metadata(models_dir, target, metal)
    except ModelIntegrityError:
        return None
    reason = evaluation_due(metadata, rows, frequency, datetime.now(UTC))
    if reason is not None:
        log.info("%s %s: walk-forward evaluation due (%s)", metal, target, reason)
        return None
    try:
        return load_model(models_dir, target, metal, metadata), metadata
    except Exception as exc:  # unreadable or not the file its metadata names: evaluate
        log.warning("%s %s: saved model not reusable (%s), evaluating", metal, target, exc)
        return None


def train_all(
    settings: Settings,
    database: Database,
    metals: tuple[str, ...] = (),
    *,
    evaluate: bool = True,
) -> int:
    """Train every (metal, target) model of `metals` (default: all), side by side in worker
    processes (one per core); return how many were written. Each model's metadata records
    what it was trained through (`trained_through`, source/ml/schedule.py). With
    `evaluate=False` (the hourly run) the walk-forward evaluation runs only where it is due;
    the other models are refitted with their last evaluation's choice and calibration. One
    model failing does not stop the others; TrainingFailed names them at the end."""
    conn = database.connect()
    try:
        tasks, marks = [], {}
        for metal in metals or settings.metals:
            history = read_history(conn, metal)
            for target in TARGETS:
                rows = history[["timestamp", target]].dropna()
                marks[(metal, target)] = mark_of(rows)
                series, sampling = training_rows(rows, min_rows())
                previous = None
                if not evaluate:
                    previous = previous_evaluation(
                        settings.models_dir, metal, target, len(series), sampling["frequency"]
                    )
                tasks.append((series, metal, target, sampling, previous))
        workers = min(len(tasks), available_cores()) or 1
        log.info("training %d model(s) in %d process(es)", len(tasks), workers)
        parent = os.getpid()
        results = Parallel(n_jobs=workers)(delayed(fit_logged)(parent, *task) for task in tasks)
        trained, failed, skipped = 0, [], 0
        for (_, metal, target, _, _), (result, records) in zip(tasks, results, strict=True):
            with log_fields(metal=metal):
                replay(records)
            if result[0] == "skipped":
                log.info(
                    "%s %s: model skipped, too little data (%s)",
                    metal,
                    target,
                    result[1],
                    extra={"file_only": True},
                )
                skipped += 1
                continue
            try:
                if result[0] == "failed":
                    raise ModelFailed(result[1], result[2])
                result[2]["trained_through"] = marks[(metal, target)]
                _store(settings, conn, result)
                trained += 1
            except Exception as exc:
                # In the log with its traceback; the console gets the one summary line.
                detail = exc.trace if isinstance(exc, ModelFailed) else traceback.format_exc()
                log.error(
                    "%s %s: training failed\n%s", metal, target, detail, extra={"file_only": True}
                )
                failed.append(f"{metal} {target} ({exc})")
                if conn.closed:
                    conn = database.connect()
                else:
                    conn.rollback()
    finally:
        conn.close()
    if skipped:  # one line, not one per model: a fresh install sees it every hour for days
        log.warning(
            "%d model(s) skipped, too little data yet (need %d usable rows; see the log file)",
            skipped,
            MIN_ROWS,
        )
    if failed:
        raise TrainingFailed(f"{len(failed)} model(s) failed: " + "; ".join(failed))
    return trained


class ModelFailed(Exception):
    """A model's computation failed in its worker; carries the worker's traceback."""

    def __init__(self, message: str, trace: str):
        super().__init__(message)
        self.trace = trace
