"""One PNG per metal: recent prices with the latest forecasts drawn ahead of the last point
(headless matplotlib, Agg). Pure function of the rows it is given."""

from __future__ import annotations

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


def draw_chart(
    path: Path,
    *,
    metal: str,
    currency: str,
    unit: str,
    history: pd.DataFrame,
    forecasts: list[dict],
) -> Path:
    """history: timestamp, rate_price (newest window); forecasts: rate_price, latest origin."""
    figure, axes = plt.subplots(figsize=(10, 4.6), dpi=100, layout="constrained")
    if len(history):
        axes.plot(
            history["timestamp"], history["rate_price"], color="#1f4e79", lw=1.4, label="price"
        )
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
    if not len(history) and not len(points):
        axes.text(0.5, 0.5, "no prices yet", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(f"{metal.capitalize()} — price in {currency} per {unit}")
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
