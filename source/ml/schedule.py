"""When the hourly run retrains: only the metals whose models' input changed since their
training. A model's metadata records what it was trained through (`trained_through`: the
number of good rows with its target and the newest one's time); the hourly run compares that
with the table and skips a metal whose models all match. `python main.py train` always trains.

Reads one aggregate per metal and the metadata files: no pandas or scikit-learn is imported,
so a run with nothing new costs about what a `--no-train` run does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from source.config import Settings
from source.db_functions.connection import Database
from source.db_functions.migrations import historic_sql
from source.ml.registry import ModelIntegrityError, model_paths, read_metadata


def mark(rows: int, newest: datetime | None) -> dict:
    """What a model is trained through: rows and the newest row's time (UTC, ISO 8601)."""
    shown = newest.astimezone(UTC).isoformat() if rows and newest is not None else None
    return {"rows": int(rows), "newest": shown}


def mark_of(series) -> dict:
    """The mark of a (timestamp, target) frame without missing values, as trained on."""
    newest = series["timestamp"].max().to_pydatetime() if len(series) else None
    return mark(len(series), newest)


def stored_marks(cur, metals: tuple[str, ...]) -> dict[tuple[str, str], dict]:
    """The mark of each (metal, target) as the table holds it now: its good rows only, as the
    training reads them."""
    marks = {}
    for metal in metals:
        cur.execute(
            'SELECT count(rate_price), max("timestamp") FILTER (WHERE rate_price IS NOT NULL), '
            'count(rate_ask), max("timestamp") FILTER (WHERE rate_ask IS NOT NULL) '
            f"FROM {historic_sql(metal)} WHERE quality = 'ok'"
        )
        price_rows, price_newest, ask_rows, ask_newest = cur.fetchone()
        marks[(metal, "rate_price")] = mark(price_rows, price_newest)
        marks[(metal, "rate_ask")] = mark(ask_rows, ask_newest)
    return marks


def is_current(models_dir, metal: str, target: str, stored: dict) -> bool:
    """True when the model exists and was trained through exactly what the table holds (or
    there is nothing to train on)."""
    if stored["rows"] == 0:
        return True
    try:
        metadata = read_metadata(models_dir, target, metal)
    except ModelIntegrityError:
        return False
    model_file, _ = model_paths(models_dir, target, metal)
    return metadata.get("trained_through") == stored and model_file.is_file()


def metals_to_retrain(settings: Settings, database: Database) -> tuple[str, ...]:
    """The metals the hourly run trains: those with a model whose input changed."""
    conn = database.connect()
    try:
        with conn, conn.cursor() as cur:
            marks = stored_marks(cur, settings.metals)
    finally:
        conn.close()
    return metals_to_train(settings.models_dir, marks)


def metals_to_train(models_dir, marks: dict[tuple[str, str], dict]) -> tuple[str, ...]:
    """The metals, in order, with a model whose input changed (or that has none yet)."""
    stale = [
        metal
        for (metal, target), stored in marks.items()
        if not is_current(models_dir, metal, target, stored)
    ]
    return tuple(dict.fromkeys(stale))


# Between walk-forward evaluations (which choose each horizon's model and calibrate the
# intervals) a model is refitted on the new rows with the last evaluation's choice and
# calibration. The evaluation runs again once a day, or sooner when this many rows arrived
# since it ran: a week of hourly quotes, about 0.2% of ten years, a share of the calibration
# window too small to move its quantiles much.
EVALUATE_EVERY = timedelta(hours=24)
EVALUATE_AFTER_ROWS = 168


def evaluation(at: datetime, rows: int, frequency: str) -> dict:
    """The metadata's record of a walk-forward evaluation: when, on how many rows."""
    return {"at": at.astimezone(UTC).isoformat(), "rows_used": int(rows), "frequency": frequency}


def evaluation_due(previous: dict | None, rows: int, frequency: str, now: datetime) -> str | None:
    """Why the walk-forward evaluation must run for a model of `rows` rows at `frequency`
    (None: the refit may keep the last one). `previous` is the model's metadata, if any."""
    previous = previous or {}
    done = previous.get("evaluated")
    if not done:
        return "no evaluation recorded"
    if done.get("frequency") != frequency or previous.get("frequency") != frequency:
        return "the sampling frequency changed"
    if rows < done["rows_used"]:
        return "fewer rows than it was evaluated on"
    if rows - done["rows_used"] >= EVALUATE_AFTER_ROWS:
        return f"{rows - done['rows_used']} new rows since the evaluation"
    if now - datetime.fromisoformat(done["at"]) >= EVALUATE_EVERY:
        return "the evaluation is a day old"
    return None
