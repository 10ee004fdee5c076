"""PNG charts per metal: recent prices with the latest forecasts drawn at the trading hours
they are for, and a long view of the whole history (headless matplotlib, Agg). Pure
functions of the rows they are given."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import cast

import matplotlib

matplotlib.use("Agg")  # no display on a cron host or in a container

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402

from source.facts import ForecastFacts  # noqa: E402
from source.report.text import age_parts  # noqa: E402

SIZE, DPI = (10, 4.6), 100  # 1000 x 460 px
LINE, FORECAST, STALE = "#1f4e79", "#c55a11", "#8c8c8c"
# A gap longer than this between two points is drawn as a break, not a straight line: a
# weekend is not a gap, a feed that stopped for days is.
GAP = {"hourly": pd.Timedelta(days=3), "daily": pd.Timedelta(days=6)}
UNITS = {"m": ("min", "min"), "h": ("hour", "hours"), "d": ("day", "days")}


def age_text(newest, now) -> str:
    """'45 min', '3 hours', '199 days': the same count as status's '199d'."""
    count, unit = age_parts((pd.Timestamp(now) - pd.Timestamp(newest)).total_seconds())
    one, many = UNITS[unit]
    return f"{count} {one if count == 1 else many}"


def forecast_points(forecasts: list[ForecastFacts]) -> pd.DataFrame:
    """(time, value, lower, upper, horizon, step) per forecast, at the time it is for."""
    rows = [
        {
            "time": pd.Timestamp(f.target_time),
            "value": f.predicted_value,
            "horizon": f.horizon,
            "step": "d" if f.frequency == "daily" else "h",
            "lower": f.lower,
            "upper": f.upper,
        }
        for f in forecasts
    ]
    return pd.DataFrame(rows).sort_values("time") if rows else pd.DataFrame()


def _limits(values: list[float]) -> tuple[float, float]:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.01 or 1.0
    return low - pad, high + pad


def with_breaks(prices: pd.DataFrame, resolution: str) -> pd.DataFrame:
    """The prices with a missing value inserted in every long gap, so the line breaks there."""
    if len(prices) < 2:
        return prices
    gaps = prices["timestamp"].diff() > GAP[resolution]
    if not gaps.any():
        return prices
    holes = prices.loc[gaps, ["timestamp"]].copy()
    holes["timestamp"] -= pd.Timedelta(seconds=1)
    holes["rate_price"] = float("nan")
    return pd.concat([prices, holes]).sort_values("timestamp", kind="stable")


def _price_axis(axes, currency: str, unit: str) -> None:
    """Thousands separators; cents only when the axis spans little."""
    low, high = axes.get_ylim()
    digits = 2 if high - low < 10 else 0
    axes.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:,.{digits}f}"))
    axes.set_ylabel(f"{currency} per {unit}")


def _date_axis(axes, start: pd.Timestamp, end: pd.Timestamp) -> None:
    """Every tick says its full date (ISO, UTC): no offset label to read it against."""
    span = end - start
    locator: mdates.DateLocator
    if span <= pd.Timedelta(days=3):
        locator, fmt = mdates.AutoDateLocator(minticks=4, maxticks=8), "%Y-%m-%d\n%H:%M"
    elif span <= pd.Timedelta(days=120):
        locator, fmt = mdates.AutoDateLocator(minticks=4, maxticks=9), "%Y-%m-%d"
    elif span <= pd.Timedelta(days=3 * 366):
        locator, fmt = (
            mdates.MonthLocator(bymonth=range(1, 13, 3 if span.days > 400 else 1)),
            ("%Y-%m"),
        )
    else:
        step = max(1, math.ceil(span.days / 365 / 10))
        locator, fmt = mdates.YearLocator(step), "%Y"
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.DateFormatter(fmt, tz="UTC"))
    axes.set_xlim(start, end)
    axes.set_xlabel("time (UTC)")


def _marked_points(axes, marked: pd.DataFrame, limits: tuple[float, float]) -> None:
    """Quotes kept out of the line, as crosses; one far outside the prices (a 10x tick) sits
    on the edge as a triangle with its value, so it never squashes the line."""
    styles = {
        "suspect": ("#c00000", "suspect quote (not used)"),
        "rejected": ("#7f7f7f", "rejected quote"),
    }
    low, high = limits
    label: str | None
    for mark, (colour, label) in styles.items():
        rows = marked[marked["quality"] == mark]
        inside = rows[(rows["rate_price"] >= low) & (rows["rate_price"] <= high)]
        if len(inside):
            axes.scatter(
                inside["timestamp"],
                inside["rate_price"],
                marker="x",
                s=60,
                color=colour,
                linewidths=2,
                zorder=3,
                label=label,
            )
            label = None  # one legend entry per kind
        for row in rows[(rows["rate_price"] < low) | (rows["rate_price"] > high)].itertuples():
            above = cast(float, row.rate_price) > high  # pandas-stubs: a row field is any scalar
            edge = high if above else low
            axes.scatter(
                [row.timestamp],
                [edge],
                marker="^" if above else "v",
                s=80,
                color=colour,
                zorder=3,
                clip_on=False,
                label=label,
            )
            axes.annotate(
                f"{row.rate_price:,.2f} (off the scale)",
                (row.timestamp, edge),
                color=colour,
                textcoords="offset points",
                ha="right",
                xytext=(-8, -14 if above else 6),
                fontsize=9,
            )
            label = None


def _forecast(axes, forecasts: list[ForecastFacts], stale: bool) -> list[float]:
    """The forecast line from its origin through each horizon, its 80% band; the values."""
    points = forecast_points(forecasts)
    origin = pd.Timestamp(forecasts[0].origin_time)
    last = float(forecasts[0].last_value)
    colour = STALE if stale else FORECAST
    made = f"made {origin:%Y-%m-%d %H:%M} UTC"
    label = (f"STALE forecast ({made})" if stale else f"forecast ({made}): ") + (
        ""
        if stale
        else ", ".join(f"+{r.horizon}{r.step} {r.value:,.2f}" for r in points.itertuples())
    )
    axes.plot(
        [origin, *points["time"]],
        [last, *points["value"]],
        color=colour,
        ls="--",
        marker="o",
        ms=5,
        label=label,
    )
    values = [last, *points["value"]]
    bands = points.dropna(subset=["lower", "upper"])
    if len(bands):
        axes.fill_between(
            bands["time"],
            bands["lower"],
            bands["upper"],
            color=colour,
            alpha=0.15,
            label="80% interval",
        )
        values += [*bands["lower"], *bands["upper"]]
    return values


def _title(metal: str, history, now, synthetic: bool) -> str:
    newest = pd.Timestamp(history.newest)
    title = f"{metal.capitalize()}: last quote {newest:%Y-%m-%d %H:%M} UTC"
    title += f" ({age_text(newest, now)} ago)"
    if history.quotes < 24:
        title += f", {history.quotes} quote{'s' if history.quotes != 1 else ''} so far"
    return title + (" - SYNTHETIC demo prices" if synthetic else "")


def _figure():
    """One axes; its title is given y=1.0 (nothing sits above the axes), which spares
    matplotlib measuring the x axis on every draw to find where the title goes."""
    return plt.subplots(figsize=SIZE, dpi=DPI)


def _labels(axis, low: float, high: float) -> list[str]:
    """The tick labels an axis will draw between low and high (no drawing needed)."""
    locs = [v for v in axis.get_major_locator()() if low <= v <= high]
    formatter = axis.get_major_formatter()
    formatter.set_locs(locs)
    return [formatter(v, i) for i, v in enumerate(locs)]


def _fit(figure, axes, legend) -> None:
    """Margins measured from the texts themselves, once: what constrained layout finds by
    drawing the whole figure before drawing it again (half the time of writing a chart)."""
    renderer = figure.canvas.get_renderer()
    px = DPI / 72  # pixels per point
    width, height = figure.bbox.width, figure.bbox.height
    pad = plt.rcParams["figure.constrained_layout.w_pad"] * DPI
    tick = (plt.rcParams["xtick.major.size"] + plt.rcParams["xtick.major.pad"]) * px
    label_pad = plt.rcParams["axes.labelpad"] * px

    def size(text, font) -> tuple[float, float]:
        lines = text.split("\n")
        widths = [
            renderer.get_text_width_height_descent(line, font, ismath=False)[0] for line in lines
        ]
        return max(widths, default=0.0), len(lines) * font.get_size_in_points() * px * 1.2

    tick_font = FontProperties(size=plt.rcParams["ytick.labelsize"])
    label_font = FontProperties(size=plt.rcParams["axes.labelsize"])
    title_font = FontProperties(size=plt.rcParams["axes.titlesize"])
    y_ticks = _labels(axes.yaxis, *axes.get_ylim())
    y_width = max((size(t, tick_font)[0] for t in y_ticks), default=0.0)
    left = pad + size(axes.get_ylabel(), label_font)[1] + label_pad + y_width + tick
    x0, x1 = axes.get_xlim()
    x_ticks = [
        (v, t)
        for v, t in zip(
            [v for v in axes.xaxis.get_major_locator()() if x0 <= v <= x1],
            _labels(axes.xaxis, x0, x1),
            strict=False,
        )
    ]
    x_height = max((size(t, tick_font)[1] for _, t in x_ticks), default=0.0)
    right = pad
    if x_ticks:  # the last tick's label may reach past the axes
        v, t = x_ticks[-1]
        inner = width - left - right
        reach = left + (v - x0) / (x1 - x0) * inner + size(t, tick_font)[0] / 2
        right += max(0.0, reach - (width - right))
    bottom = pad + x_height + tick + label_pad + size(axes.get_xlabel(), label_font)[1]
    if legend is not None:
        bottom += legend.get_window_extent(renderer).height + pad
    top = pad + size(axes.get_title(), title_font)[1] + plt.rcParams["axes.titlepad"] * px
    figure.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height
    )


def _save(figure, axes, path: Path, synthetic: bool) -> Path:
    axes.grid(alpha=0.3)
    if synthetic:  # a picture copied out of the page still says what it is
        axes.text(
            0.5,
            0.5,
            "SYNTHETIC",
            transform=axes.transAxes,
            ha="center",
            va="center",
            fontsize=60,
            color="#000000",
            alpha=0.06,
            rotation=12,
            zorder=0,
        )
    legend = None
    if axes.get_legend_handles_labels()[0]:  # below the axes: it never hides the data
        legend = figure.legend(
            loc="lower center", ncols=2, frameon=False, bbox_to_anchor=(0.5, 0), borderaxespad=0.5
        )
    _fit(figure, axes, legend)
    # zlib level 1: the same pixels, a tenth bigger, written in a third of the time
    figure.savefig(path, pil_kwargs={"compress_level": 1})
    plt.close(figure)
    return path


def draw_chart(
    path: Path,
    *,
    metal: str,
    currency: str,
    unit: str,
    history,
    forecasts: list[ForecastFacts],
    now,
    synthetic: bool = False,
) -> Path:
    """The recent view. history: a report.history.PriceHistory with at least one quote;
    forecasts: rate_price ones of the latest origin (with target_time and stale)."""
    with warnings.catch_warnings():  # nothing from matplotlib may reach the console
        warnings.simplefilter("ignore")
        return _draw_recent(path, metal, currency, unit, history, forecasts, now, synthetic)


def _draw_recent(path, metal, currency, unit, history, forecasts, now, synthetic) -> Path:
    prices = history.prices
    figure, axes = _figure()
    values = list(prices["rate_price"])
    label = "price" if history.resolution == "hourly" else "daily close"
    if len(prices):
        shown = with_breaks(prices, history.resolution)
        axes.plot(
            shown["timestamp"],
            shown["rate_price"],
            color=LINE,
            lw=1.4,
            label=label,
            marker="o" if len(prices) <= 48 else None,
            ms=4,
        )
        last = prices.iloc[-1]
        axes.annotate(
            f"{last.rate_price:,.2f}\n{last.timestamp:%Y-%m-%d %H:%M}",
            (last.timestamp, last.rate_price),
            textcoords="offset points",
            xytext=(-6, 10),
            ha="right",
            fontsize=9,
            color=LINE,
        )
    start = prices["timestamp"].min() if len(prices) else pd.Timestamp(history.newest)
    end = pd.Timestamp(history.newest)
    # A forecast is drawn where it belongs: made within the view (a stale one greyed out);
    # one made long before the view would only stretch it (the table beside says it).
    if forecasts and pd.Timestamp(forecasts[0].origin_time) >= start:
        stale = any(f.stale for f in forecasts)
        values += _forecast(axes, forecasts, stale)
        end = max(end, *(pd.Timestamp(f.target_time) for f in forecasts))
    if values or len(history.marked):
        limits = _limits(values or list(history.marked["rate_price"]))
        axes.set_ylim(*limits)
        _marked_points(axes, history.marked, limits)
    pad = max((end - start) * 0.04, pd.Timedelta(hours=12))
    _date_axis(axes, start - pad, end + pad)
    _price_axis(axes, currency, unit)
    axes.set_title(_title(metal, history, now, synthetic), y=1.0)
    return _save(figure, axes, path, synthetic)


def draw_long_view(
    path: Path, *, metal: str, currency: str, unit: str, history, synthetic: bool = False
) -> Path:
    """The whole history as daily closes (history.daily), its extremes labelled."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        daily = history.daily
        figure, axes = _figure()
        shown = with_breaks(daily, "daily")
        axes.plot(shown["timestamp"], shown["rate_price"], color=LINE, lw=1.0, label="daily close")
        axes.set_ylim(*_limits(list(daily["rate_price"])))
        start, end = daily["timestamp"].min(), daily["timestamp"].max()
        middle = start + (end - start) / 2
        for row, where in (
            (daily.loc[daily["rate_price"].idxmax()], "high"),
            (daily.loc[daily["rate_price"].idxmin()], "low"),
        ):
            # Written towards the middle and away from the line, so it stays inside the axes.
            right = row.timestamp > middle
            axes.annotate(
                f"{where} {row.rate_price:,.2f} ({row.timestamp:%Y-%m-%d})",
                (row.timestamp, row.rate_price),
                textcoords="offset points",
                xytext=(-10 if right else 10, 0 if where == "high" else -10),
                ha="right" if right else "left",
                va="top" if where == "low" else "center",
                fontsize=9,
                color=LINE,
            )
        pad = max((end - start) * 0.02, pd.Timedelta(days=1))
        _date_axis(axes, start - pad, end + pad)
        _price_axis(axes, currency, unit)
        years = (end - start).days / 365.25
        span = f"{years:.0f} years" if years >= 2 else f"{(end - start).days} days"
        axes.set_title(
            f"{metal.capitalize()}: the whole history, {span} of daily closes "
            f"({start:%Y-%m-%d} to {end:%Y-%m-%d})" + (" - SYNTHETIC" if synthetic else ""),
            y=1.0,
        )
        return _save(figure, axes, path, synthetic)
