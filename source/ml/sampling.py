"""Which rows a model trains on when a metal's history mixes granularities (pure functions).

After a backfill a metal has daily rows followed by hourly ones. A model's step is one row,
so a one-day gap and a one-hour gap must not be mixed into the same series. The rule:

1. When the newest rows are hourly and the trailing hourly stretch is long enough to train
   on, use that stretch alone, at hourly steps (it starts after the last run of three or
   more consecutive gaps of 12 hours or more; a weekend or an outage is one long gap).
2. Otherwise resample everything to one row per UTC day (the day's last observation) and
   train at daily steps: horizons are then days.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HOURLY, DAILY = "hourly", "daily"
LONG_GAP = pd.Timedelta(hours=12)
DAILY_RUN = 3  # this many long gaps in a row mark a daily stretch, not a weekend


def trailing_hourly_start(timestamps: pd.Series) -> int | None:
    """Index where the trailing hourly stretch starts, or None if the newest rows are daily."""
    gaps = pd.Series(timestamps).diff().to_numpy()
    long = gaps >= LONG_GAP.to_timedelta64()
    recent = gaps[-24:][1:] if len(gaps) > 24 else gaps[1:]
    if len(recent) == 0 or np.median(recent) >= LONG_GAP.to_timedelta64():
        return None
    run = 0
    for i in range(len(long) - 1, 0, -1):
        run = run + 1 if long[i] else 0
        if run == DAILY_RUN:
            return i + DAILY_RUN - 1  # the last row of the daily stretch opens the series
    return 0


def daily_closes(series: pd.DataFrame) -> pd.DataFrame:
    """One row per UTC day: the last observation of that day."""
    day = series["timestamp"].dt.floor("D")
    return series.groupby(day, sort=True).tail(1).reset_index(drop=True)


def training_rows(series: pd.DataFrame, min_rows: int) -> tuple[pd.DataFrame, dict]:
    """(rows to train on, description for the model metadata) from a sorted (timestamp, value)
    frame, following the rule in this module's docstring."""
    series = series.reset_index(drop=True)
    start = trailing_hourly_start(series["timestamp"]) if len(series) > 1 else None
    if start is not None and len(series) - start >= min_rows:
        chosen, frequency = series.iloc[start:].reset_index(drop=True), HOURLY
    else:
        chosen, frequency = daily_closes(series), DAILY
    if start is None and frequency == DAILY and len(chosen) == len(series):
        rule = "daily rows only"
    elif frequency == HOURLY and start == 0:
        rule = "hourly rows only"
    elif frequency == HOURLY:
        rule = f"the trailing hourly stretch ({start} older, sparser rows left out)"
    else:
        rule = "resampled to one row per UTC day (last observation): too few hourly rows"
    return chosen, {
        "frequency": frequency,
        "rule": rule,
        "rows_available": len(series),
        "rows_used": len(chosen),
        "first_used": chosen["timestamp"].iloc[0].isoformat() if len(chosen) else None,
    }
