"""Pure functions: Metals.Dev payloads -> pandas DataFrames shaped like the `*_historic` tables."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from source.errors import MalformedResponse, WrongUnits

RATE_COLUMNS = [
    "rate_price",
    "rate_ask",
    "rate_bid",
    "rate_high",
    "rate_low",
    "rate_change",
    "rate_change_percent",
]
HISTORIC_COLUMNS = [
    "timestamp",
    "metal",
    "currency",
    "unit",
    "status",
    *RATE_COLUMNS,
    "source",
    "fetched_at",
    "raw_file",
]


@dataclass
class LoadJob:
    """Rows for one load transaction and the raw files they came from: what extract hands
    the load stage (the job that runs both passes it on; neither imports the other)."""

    metal: str  # the metal, or "all" for a /timeseries window holding several
    frame: pd.DataFrame
    raw_files: list[Path] = field(default_factory=list)
    replayed: bool = False  # landed by an earlier run
    also: Callable | None = None  # more SQL for the same transaction, given the cursor


def to_snake_case(name: str) -> str:
    """`rate.changePercent` -> `rate_change_percent`; `Rate Price` -> `rate_price`."""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    name = re.sub(r"[^0-9a-zA-Z]+", "_", name)
    return name.strip("_").lower()


def _require(frame: pd.DataFrame, columns: list[str], metal: str, endpoint: str) -> None:
    for column in columns:
        if column not in frame.columns or frame[column].isna().any():
            raise MalformedResponse(metal, endpoint, f"missing field {column!r}")


def quotes_to_frame(
    quotes: list[dict],
    *,
    metal: str,
    endpoint: str,
    source: str,
    fetched_at: datetime,
    raw_file: str | None,
) -> pd.DataFrame:
    """Flatten spot-shaped quotes into historic rows, validated, one row per API timestamp."""
    if not quotes:
        raise MalformedResponse(metal, endpoint, "no quotes in payload")
    frame = pd.json_normalize(quotes, sep=".")
    frame.columns = [to_snake_case(c) for c in frame.columns]
    _require(frame, ["timestamp", "metal", "currency", "unit", "rate_price"], metal, endpoint)
    wrong_metal = set(frame["metal"].astype(str).str.lower()) - {metal}
    if wrong_metal:
        raise MalformedResponse(metal, endpoint, f"payload is for {sorted(wrong_metal)}")
    for column in RATE_COLUMNS:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        else:
            frame[column] = np.nan
    if frame["rate_price"].isna().any() or (frame["rate_price"] <= 0).any():
        raise MalformedResponse(metal, endpoint, "rate.price is not a positive number")
    # API timestamps are ISO-8601 in UTC; anything unparseable is a malformed payload.
    frame["timestamp"] = pd.to_datetime(
        frame["timestamp"], utc=True, errors="coerce", format="ISO8601"
    )
    if frame["timestamp"].isna().any():
        raise MalformedResponse(metal, endpoint, "timestamp is not an ISO-8601 time")
    frame["metal"] = metal
    frame["status"] = frame["status"] if "status" in frame.columns else "success"
    frame["source"] = source
    frame["fetched_at"] = pd.Timestamp(fetched_at)
    frame["raw_file"] = raw_file
    frame = frame[HISTORIC_COLUMNS].drop_duplicates("timestamp", keep="last")
    return frame.sort_values("timestamp", ignore_index=True)


# How many troy ounces each weight unit the API speaks holds: /timeseries quotes every metal
# per troy ounce, while /metal/spot quotes base metals per metric tonne (copper: "mt").
TROY_OUNCES_PER = {"toz": 1.0, "g": 1 / 31.1034768, "kg": 1000 / 31.1034768}
TROY_OUNCES_PER["mt"] = 1000 * TROY_OUNCES_PER["kg"]
_PRICES = ["rate_price", "rate_ask", "rate_bid", "rate_high", "rate_low", "rate_change"]


def in_unit(frame: pd.DataFrame, unit: str) -> pd.DataFrame:
    """The frame's prices per `unit` (a weight unit of TROY_OUNCES_PER); one in a unit this
    does not know is returned as it is, for the load to refuse rather than mix."""
    frame = frame.copy()
    for given in set(frame["unit"]) - {unit}:
        if given not in TROY_OUNCES_PER or unit not in TROY_OUNCES_PER:
            continue
        rows = frame["unit"] == given
        factor = TROY_OUNCES_PER[unit] / TROY_OUNCES_PER[given]
        frame.loc[rows, _PRICES] = frame.loc[rows, _PRICES].astype("float64") * factor
        frame.loc[rows, "unit"] = unit
    return frame


def check_units(frame: pd.DataFrame, *, currency: str, unit: str | None, metal: str, endpoint: str):
    """Refuse prices in another currency or unit than configured, rather than mix them in.
    Without a UNIT each commodity keeps the unit of its first quote (the load refuses a
    quote in another, for that commodity alone)."""
    wanted_units = [("currency", currency, "CURRENCY")]
    if unit is not None:
        wanted_units.append(("unit", unit, "UNIT"))
    for column, wanted, name in wanted_units:
        found = sorted(set(frame[column].astype(str)) - {wanted})
        if found:
            raise WrongUnits(
                metal, endpoint, f"{column} {found[0]!r} is not the configured {name} {wanted!r}"
            )


def spot_to_frame(payload: dict, **kwargs) -> pd.DataFrame:
    """One `/metal/spot` payload -> a one-row frame."""
    return quotes_to_frame([payload], **kwargs)


def history_to_frame(payload: dict, **kwargs) -> pd.DataFrame:
    """A sandbox `/sandbox/history` payload (a list of spot quotes) -> frame."""
    quotes = payload.get("quotes")
    if not isinstance(quotes, list):
        raise MalformedResponse(kwargs["metal"], kwargs["endpoint"], "missing field 'quotes'")
    if not all(isinstance(quote, dict) for quote in quotes):
        raise MalformedResponse(kwargs["metal"], kwargs["endpoint"], "a quote is not an object")
    return quotes_to_frame(quotes, **kwargs)


def _price_or_none(value) -> float | None:
    """A positive finite number, else None (real bodies carry ints; keys can be absent)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if np.isfinite(value) and value > 0 else None


def timeseries_days(payload: dict) -> list[date]:
    """The days a `/timeseries` payload answered for (whatever metals each day holds)."""
    rates = payload.get("rates")
    if not isinstance(rates, dict):
        return []
    days = []
    for key, day in rates.items():
        try:
            days.append(
                date.fromisoformat(str(day.get("date", key)) if isinstance(day, dict) else key)
            )
        except ValueError:
            continue
    return sorted(set(days))


def timeseries_to_frames(
    payload: dict,
    *,
    metals: tuple[str, ...],
    endpoint: str,
    fetched_at: datetime,
    raw_file: str | None,
    source: str = "backfill",
) -> dict[str, pd.DataFrame]:
    """A `/timeseries` payload -> one frame per metal; only `rate_price` is known for these rows.

    Real bodies include weekends and holidays and a day can lack a metal: what is there
    loads, a missing or non-numeric value is left out."""
    rates = payload.get("rates")
    if not isinstance(rates, dict):
        raise MalformedResponse("all", endpoint, "missing field 'rates'")
    frames = {}
    for metal in metals:
        quotes = []
        for key, day in sorted(rates.items()):
            if not isinstance(day, dict) or not isinstance(day.get("metals"), dict):
                continue
            price = _price_or_none(day["metals"].get(metal))
            if price is not None:
                quotes.append(
                    {
                        "timestamp": day.get("date", key),
                        "metal": metal,
                        "currency": payload.get("currency", "USD"),
                        "unit": payload.get("unit", "toz"),
                        "rate": {"price": price},
                    }
                )
        if quotes:
            frames[metal] = quotes_to_frame(
                quotes,
                metal=metal,
                endpoint=endpoint,
                source=source,
                fetched_at=fetched_at,
                raw_file=raw_file,
            )
    return frames


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype="object") for column in HISTORIC_COLUMNS})
