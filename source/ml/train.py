"""The training stage: for every metal and target, evaluate walk-forward, fit the deployed
model, save it with metadata, and write metrics (`model_runs`) and forecasts
(`price_predictions`) to the database."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from psycopg2.extras import execute_values

from source.config import Settings
from source.db_functions.connection import Database
from source.db_functions.migrations import historic_table
from source.errors import ReportableError
from source.ml.evaluation import MIN_ROWS, Dataset, NotEnoughData, fit_final, walk_forward
from source.ml.features import HORIZONS, warmup_rows
from source.ml.models import GBM_MAX_ROWS, SHRINKAGE
from source.ml.registry import library_versions, save_model
from source.ml.sampling import DAILY, HOURLY, training_rows

log = logging.getLogger(__name__)

TARGETS = ("rate_price", "rate_ask")


def read_history(conn, metal: str) -> pd.DataFrame:
    with conn.cursor() as cur:
        cur.execute(
            f'SELECT "timestamp", rate_price, rate_ask FROM {historic_table(metal)} '
            'ORDER BY "timestamp"'
        )
        rows = cur.fetchall()
    frame = pd.DataFrame(rows, columns=["timestamp", "rate_price", "rate_ask"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.astype({"rate_price": "float64", "rate_ask": "float64"})


def train_series(series: pd.DataFrame, metal: str, target: str, sampling: dict | None = None):
    """Evaluate and fit on a (timestamp, target) frame; return model, metadata, forecasts."""
    sampling = sampling or {"frequency": HOURLY, "rule": "as given", "rows_used": len(series)}
    data = Dataset.from_series(series[target], series["timestamp"])
    metrics = walk_forward(data)
    model = fit_final(data)
    origin_time = series["timestamp"].iloc[-1]
    last_value = float(series[target].iloc[-1])
    returns = model.predict_returns(data.last_features)[0]
    forecasts = {
        h: last_value * float(np.exp(r)) for h, r in zip(data.horizons, returns, strict=True)
    }
    metadata = {
        "metal": metal,
        "target": target,
        "trained_at": datetime.now(UTC).isoformat(),
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
        "metrics": {str(h): m for h, m in metrics.items()},
        "library_versions": library_versions(),
    }
    return (
        model,
        metadata,
        {"origin_time": origin_time, "last_value": last_value, "values": forecasts},
    )


def _record(conn, metadata: dict, forecast: dict) -> None:
    trained_at = metadata["trained_at"]
    with conn, conn.cursor() as cur:
        execute_values(
            cur,
            """INSERT INTO model_runs (trained_at, metal, target, horizon, chosen_model, rows_used,
                   data_start, data_end, n_predictions, model_mae, naive_mae, mase,
                   direction_accuracy, direction_base_rate, frequency) VALUES %s""",
            [
                (
                    trained_at,
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
                )
                for h, m in metadata["metrics"].items()
            ],
        )
        execute_values(
            cur,
            """INSERT INTO price_predictions (metal, target, origin_time, horizon, predicted_value,
                   last_value, chosen_model, trained_at, frequency) VALUES %s
               ON CONFLICT (metal, target, origin_time, horizon) DO UPDATE SET
                   predicted_value = EXCLUDED.predicted_value, last_value = EXCLUDED.last_value,
                   chosen_model = EXCLUDED.chosen_model, trained_at = EXCLUDED.trained_at,
                   frequency = EXCLUDED.frequency""",
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
                )
                for h, value in forecast["values"].items()
            ],
        )


def min_rows() -> int:
    """Rows a series needs before the usable ones reach MIN_ROWS."""
    return MIN_ROWS + warmup_rows() + max(HORIZONS) + 1


class TrainingFailed(ReportableError):
    """Some models could not be trained; the others were written."""


def train_one(settings: Settings, conn, history: pd.DataFrame, metal: str, target: str) -> bool:
    """Train, save and record one model; False when there is too little data."""
    started = time.monotonic()
    series, sampling = training_rows(history[["timestamp", target]].dropna(), min_rows())
    try:
        model, metadata, forecast = train_series(series, metal, target, sampling)
    except NotEnoughData as exc:
        log.warning("%s %s: model skipped, too little data (%s)", metal, target, exc)
        return False
    save_model(settings.models_dir, target, metal, model, metadata)
    _record(conn, metadata, forecast)
    first = str(metadata["horizons"][0])
    mase = metadata["metrics"][first]["mase"]
    log.info(
        "%s %s: trained on %d %s rows in %.1fs; 1-step %s, MASE %s, next %.4f",
        metal,
        target,
        len(series),
        metadata["frequency"],
        time.monotonic() - started,
        metadata["chosen"][first],
        f"{mase:.3f}" if mase is not None else "n/a",
        forecast["values"][metadata["horizons"][0]],
    )
    return True


def train_all(settings: Settings, database: Database) -> int:
    """Train every (metal, target) model; return how many were written.

    One model failing does not stop the others; TrainingFailed names them at the end."""
    conn = database.connect()
    trained, failed = 0, []
    try:
        for metal in settings.metals:
            history = read_history(conn, metal)
            for target in TARGETS:
                try:
                    trained += train_one(settings, conn, history, metal, target)
                except Exception as exc:
                    # In the log with its traceback; the console gets the one summary line.
                    log.error(
                        "%s %s: training failed",
                        metal,
                        target,
                        exc_info=True,
                        extra={"file_only": True},
                    )
                    failed.append(f"{metal} {target} ({type(exc).__name__}: {exc})")
                    if conn.closed:
                        conn = database.connect()
                    else:
                        conn.rollback()
    finally:
        conn.close()
    if failed:
        raise TrainingFailed(f"{len(failed)} model(s) failed: " + "; ".join(failed))
    return trained
