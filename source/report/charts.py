"""One PNG per metal: recent prices with the latest forecasts drawn ahead of the last point
(headless matplotlib, Agg). Pure function of the rows it is given."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a cron host or in a container

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

HISTORY = {"hourly": pd.Timedelta(days=7), "daily": pd.Timedelta(days=180)}
STEP = {"hourly": pd.Timedelta(hours=1), "daily": pd.Timedelta(days=1)}


def forecast_points(forecasts: list[dict]) -> pd.DataFrame:
    """(time, value, horizon) of each forecast: origin + horizon steps."""
    rows = [
        {
            "time": pd.Timestamp(f["origin_time"]) + f["horizon"] * STEP[f["frequency"]],
            "value": f["predicted_value"],
            "horizon": f["horizon"],
            "step": "d" if f["frequency"] == "daily" else "h",
            "lower": f.get("lower"),
            "upper": f.get("upper"),
        }
        for f in forecasts
    ]
    return pd.DataFrame(rows).sort_values("time") if rows else pd.DataFrame()


def age_text(newest, now) -> str:
    """'3 h', '2 days', for 'last quote … (… ago)'."""
    hours = max((pd.Timestamp(now) - pd.Timestamp(newest)).total_seconds() / 3600, 0)
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} days"


def _limits(values: list[float]) -> tuple[float, float]:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.01 or 1.0
    return low - pad, high + pad


def _marked_points(axes, marked: pd.DataFrame, limits: tuple[float, float]) -> None:
    """Quotes kept out of the line, as crosses; one far outside the prices (a 10x tick) sits
    on the edge as a triangle with its value, so it never squashes the line."""
    styles = {"suspect": ("#c00000", "suspect quote (not used)"), "rejected": ("#7f7f7f",
                                                                            "rejected quote")}
    low, high = limits
    for mark, (colour, label) in styles.items():
        rows = marked[marked["quality"] == mark]
        inside = rows[(rows["rate_price"] >= low) & (rows["rate_price"] <= high)]
        if len(inside):
            axes.scatter(inside["timestamp"], inside["rate_price"], marker="x", s=60,
                         color=colour, linewidths=2, zorder=3, label=label)
            label = None  # one legend entry per kind
        for row in rows[(rows["rate_price"] < low) | (rows["rate_price"] > high)].itertuples():
            above = row.rate_price > high
            edge = high if above else low
            axes.scatter([row.timestamp], [edge], marker="^" if above else "v", s=80,
                         color=colour, zorder=3, clip_on=False, label=label)
            axes.annotate(f"{row.rate_price:,.2f} (off the scale)", (row.timestamp, edge),
                          color=colour, textcoords="offset points", ha="right",
                          xytext=(-8, -14 if above else 6), fontsize=9)
            label = None


def draw_chart(
    path: Path,
    *,
    metal: str,
    currency: str,
    unit: str,
    history,
    forecasts: list[dict],
    now,
) -> Path:
    """history: a status.PriceHistory (good prices of the newest stretch, marked quotes, the
    newest quote's time); forecasts: rate_price, latest origin."""
    prices = history.prices
    figure, axes = plt.subplots(figsize=(10, 4.6), dpi=100, layout="constrained")
    values = list(prices["rate_price"])
    if len(prices):
        axes.plot(prices["timestamp"], prices["rate_price"], color="#1f4e79", lw=1.4,
                  label="price" if history.resolution == "hourly" else "daily close")
    points = forecast_points(forecasts)
    if len(points):
        start = pd.Timestamp(forecasts[0]["origin_time"])
        last = float(forecasts[0]["last_value"])
        axes.plot(
            [start, *points["time"]],
            [last, *points["value"]],
            color="#c55a11",
            ls="--",
            marker="o",
            ms=5,
            label="forecast "
            + ", ".join(f"+{r.horizon}{r.step} {r.value:,.2f}" for r in points.itertuples()),
        )
        values += [last, *points["value"]]
        bands = points.dropna(subset=["lower", "upper"])
        if len(bands):
            axes.fill_between(
                bands["time"],
                bands["lower"],
                bands["upper"],
                color="#c55a11",
                alpha=0.15,
                label="80% interval",
            )
            values += [*bands["lower"], *bands["upper"]]
    if any(v is not None and math.isfinite(float(v)) for v in values):
        limits = _limits(values)
        axes.set_ylim(*limits)
        _marked_points(axes, history.marked, limits)
    elif len(history.marked):
        _marked_points(axes, history.marked, _limits(list(history.marked["rate_price"])))
    if not values and not len(history.marked):
        axes.text(0.5, 0.5, "no prices yet", ha="center", va="center", transform=axes.transAxes)
    title = f"{metal.capitalize()} — price in {currency} per {unit}"
    if history.newest is not None:
        title += (
            f" — last quote {pd.Timestamp(history.newest):%Y-%m-%d %H:%M} UTC "
            f"({age_text(history.newest, now)} ago)"
        )
    axes.set_title(title)
    axes.set_ylabel(f"price ({currency}/{unit})")
    axes.set_xlabel("time (UTC)")
    locator = mdates.AutoDateLocator(maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # below the axes: it never hides the data
        figure.legend(loc="outside lower center", ncols=3, frameon=False)
    figure.savefig(path)
    plt.close(figure)
    return path
