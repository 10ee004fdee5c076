"""PNG charts per metal: recent prices with the latest forecasts drawn at the trading hours
they are for, and a long view of the whole history. Drawn with Pillow (report.canvas): the
report no longer imports matplotlib or pandas, which took longer than the whole report does
now. Pure functions of the rows they are given."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from source.facts import ForecastFacts
from source.report import canvas as draw
from source.report.canvas import Area, Canvas, Point, rgba
from source.report.history import PriceHistory
from source.report.text import age_parts

SIZE = (1000, 460)
LINE, FORECAST, STALE, INK = "#1f4e79", "#c55a11", "#8c8c8c", "#1b1b1b"
# A gap longer than this between two points is drawn as a break, not a straight line: a
# weekend is not a gap, a feed that stopped for days is.
GAP = {"hourly": timedelta(days=3), "daily": timedelta(days=6)}
UNITS = {"m": ("min", "min"), "h": ("hour", "hours"), "d": ("day", "days")}
TICK, LABEL, TITLE, NOTE = 13.0, 13.0, 16.0, 12.0  # text sizes, pixels
PAD, TICK_LENGTH = 8.0, 5.0
MARKED = {"suspect": ("#c00000", "suspect quote (not used)"),
          "rejected": ("#7f7f7f", "rejected quote")}


def age_text(newest: datetime, now: datetime) -> str:
    """'45 min', '3 hours', '199 days': the same count as status's '199d'."""
    count, unit = age_parts((now - newest).total_seconds())
    one, many = UNITS[unit]
    return f"{count} {one if count == 1 else many}"


def _moment(iso: str) -> float:
    """A facts file's ISO time as seconds since the epoch."""
    return draw.seconds(datetime.fromisoformat(iso))


def _limits(values: Sequence[float | None]) -> tuple[float, float]:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    low, high = min(finite), max(finite)
    pad = (high - low) * 0.08 or abs(high) * 0.01 or 1.0
    return low - pad, high + pad


@dataclass
class Entry:
    """One legend line: its glyph ('line', 'dashed', 'band', 'x', '^'), colour, words."""

    glyph: str
    colour: str
    label: str


@dataclass
class Plot:
    """One chart being drawn: the frame laid out around the texts it will hold, a layer for
    the data (clipped to the axes), then what sits over it."""

    title: str
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    y_label: str
    legend: list[Entry] = field(default_factory=list)
    synthetic: bool = False

    def __post_init__(self) -> None:
        self.canvas = Canvas(*SIZE)
        self.x_ticks, self.x_format = draw.date_ticks(*self.x_range)
        self.y_ticks, decimals = draw.nice_ticks(*self.y_range)
        if self.y_range[1] - self.y_range[0] < 10:  # cents only when the axis spans little
            decimals = max(decimals, 2)
        self.y_texts = [f"{v:,.{decimals}f}" for v in self.y_ticks]
        self.x_texts = [draw.utc(v).strftime(self.x_format) for v in self.x_ticks]
        self.x_height = max((draw.text_size(t, TICK)[1] for t in self.x_texts),
                            default=TICK * 1.25)
        self.area = self._layout()
        self.data = self.canvas.layer()

    def _legend_columns(self) -> tuple[int, float]:
        widths = [34 + draw.text_size(e.label, LABEL)[0] for e in self.legend]
        column = max(widths, default=0.0) + 24
        return (2, column) if 2 * column <= SIZE[0] - 2 * PAD else (1, column)

    def _legend_height(self) -> float:
        if not self.legend:
            return 0.0
        columns, _ = self._legend_columns()
        return math.ceil(len(self.legend) / columns) * LABEL * 1.5 + PAD

    def _layout(self) -> Area:
        """Margins measured from the texts themselves: every label inside the picture."""
        width, height = SIZE
        y_width = max((draw.text_size(t, TICK)[0] for t in self.y_texts), default=0.0)
        left = PAD + LABEL * 1.25 + 6 + y_width + TICK_LENGTH + 4
        bottom = PAD + LABEL * 1.25 + 6 + self.x_height + TICK_LENGTH + 4 + self._legend_height()
        top = PAD + TITLE * 1.25 + 8
        right = PAD
        area = Area(left, top, width - right, height - bottom, *self.x_range, *self.y_range)
        if self.x_ticks:  # the last tick's label may reach past the picture
            reach = area.x(self.x_ticks[-1]) + draw.text_size(self.x_texts[-1], TICK)[0] / 2
            area.right -= max(0.0, reach - (width - PAD))
        return area

    def compose(self) -> None:
        """Grid, the data layer, the frame and the ticks: what annotations are drawn over."""
        area, canvas = self.area, self.canvas
        for value in self.x_ticks:
            canvas.line([(area.x(value), area.top), (area.x(value), area.bottom)], "#e2e2e2", 1)
        for value in self.y_ticks:
            canvas.line([(area.left, area.y(value)), (area.right, area.y(value))], "#e2e2e2", 1)
        if self.synthetic:
            canvas.watermark(area, "SYNTHETIC")
        canvas.paste_clipped(self.data, area)
        canvas.rectangle((area.left, area.top, area.right, area.bottom), INK, 1)
        for value, text in zip(self.x_ticks, self.x_texts, strict=True):
            x = area.x(value)
            canvas.line([(x, area.bottom), (x, area.bottom + TICK_LENGTH)], INK, 1)
            canvas.text(x, area.bottom + TICK_LENGTH + 4, text, TICK, align="m")
        for value, text in zip(self.y_ticks, self.y_texts, strict=True):
            y = area.y(value)
            canvas.line([(area.left - TICK_LENGTH, y), (area.left, y)], INK, 1)
            canvas.text(area.left - TICK_LENGTH - 4, y, text, TICK, align="r", valign="m")
        canvas.text((area.left + area.right) / 2, area.bottom + TICK_LENGTH + 10 + self.x_height,
                    "time (UTC)", LABEL, align="m")
        canvas.vertical_text(PAD + LABEL * 0.6, (area.top + area.bottom) / 2, self.y_label, LABEL)

    def save(self, path: Path) -> Path:
        """The title and the legend (below the axes: it never hides the data), then the file."""
        canvas, area = self.canvas, self.area
        canvas.text((area.left + area.right) / 2, PAD, self.title, TITLE, align="m")
        if self.legend:
            columns, column = self._legend_columns()
            rows = math.ceil(len(self.legend) / columns)
            x0 = (SIZE[0] - columns * column) / 2 + 12
            y0 = SIZE[1] - PAD - rows * LABEL * 1.5
            for i, entry in enumerate(self.legend):
                x, y = x0 + (i % columns) * column, y0 + (i // columns + 0.5) * LABEL * 1.5
                _glyph(canvas, x, y, entry)
                canvas.text(x + 34, y, entry.label, LABEL, align="l", valign="m")
        return canvas.save(path)


def _glyph(canvas: Canvas, x: float, y: float, entry: Entry) -> None:
    if entry.glyph == "band":
        canvas.polygon([(x, y - 6), (x + 28, y - 6), (x + 28, y + 6), (x, y + 6)],
                       rgba(entry.colour, 0.15))
    elif entry.glyph in ("line", "dashed"):
        canvas.line([(x, y), (x + 28, y)], entry.colour, 2,
                    dash=(6, 4) if entry.glyph == "dashed" else None)
        if entry.glyph == "dashed":
            canvas.marker(x + 14, y, "o", 7, entry.colour)
    else:
        canvas.marker(x + 14, y, entry.glyph, 11, entry.colour)


def _marked_entries(marked: Sequence[tuple[datetime, float, str]],
                    y_range: tuple[float, float]) -> list[Entry]:
    """The legend lines of the marks (known before the layout, which makes room for them)."""
    entries = []
    for mark, (colour, label) in MARKED.items():
        values = [v for _, v, quality in marked if quality == mark]
        if values:
            inside = any(y_range[0] <= v <= y_range[1] for v in values)
            entries.append(Entry("x" if inside else "^", colour, label))
    return entries


def _marked_points(plot: Plot, marked: Sequence[tuple[datetime, float, str]]) -> None:
    """Quotes kept out of the line, as crosses; one far outside the prices (a 10x tick) sits
    on the edge as a triangle with its value, so it never squashes the line. Labels that
    would run into another on the same edge are left out (the caption counts the marks)."""
    area, (low, high) = plot.area, plot.y_range
    taken: dict[bool, list[tuple[float, float]]] = {True: [], False: []}  # per edge: extents
    for mark, (colour, _) in MARKED.items():
        rows = [(draw.seconds(t), v) for t, v, quality in marked if quality == mark]
        for point in (r for r in rows if low <= r[1] <= high):
            plot.canvas.marker(*area.at(point), "x", 11, colour)
        for t, value in (r for r in rows if not low <= r[1] <= high):
            above = value > high
            x, y = area.x(t), area.top if above else area.bottom
            plot.canvas.marker(x, y, "^" if above else "v", 12, colour)
            label = f"{value:,.2f} (off the scale)"
            width = draw.text_size(label, NOTE)[0]
            for align, extent in (("r", (x - 10 - width, x - 10)), ("l", (x + 10, x + 10 + width))):
                if all(extent[1] + 6 < a or extent[0] > b + 6 for a, b in taken[above]):
                    taken[above].append(extent)
                    plot.canvas.text(extent[0] if align == "l" else extent[1],
                                     y + (4 if above else -4), label, NOTE, colour, align=align,
                                     valign="t" if above else "b", backing=True)
                    break


def _forecast_points(forecasts: list[ForecastFacts]) -> list[tuple[float, ForecastFacts]]:
    """Each forecast at the time it is for, in time order."""
    return sorted(((_moment(f.target_time), f) for f in forecasts),
                  key=lambda pair: pair[0])


def _forecast_entries(forecasts: list[ForecastFacts], stale: bool) -> list[Entry]:
    origin = datetime.fromisoformat(forecasts[0].origin_time)
    colour = STALE if stale else FORECAST
    made = f"made {origin:%Y-%m-%d %H:%M} UTC"
    step = "d" if forecasts[0].frequency == "daily" else "h"
    values = ", ".join(f"+{f.horizon}{step} {_value_text(f.predicted_value)}"
                       for _, f in _forecast_points(forecasts))
    label = f"STALE forecast ({made})" if stale else f"forecast ({made}): {values}"
    entries = [Entry("dashed", colour, label)]
    if any(f.lower is not None and f.upper is not None for f in forecasts):
        entries.append(Entry("band", colour, "80% interval"))
    return entries


def _forecast_values(forecasts: list[ForecastFacts]) -> list[float | None]:
    """The values the axis makes room for: none more than half the last price away from it
    (an absurd forecast runs off the edge instead of squashing the prices to a line)."""
    last = forecasts[0].last_value
    values = (v for f in forecasts for v in (f.predicted_value, f.lower, f.upper))
    return [last, *(v for v in values if v is not None and abs(v - last) <= abs(last) / 2)]


def _value_text(value: float) -> str:
    return f"{value:,.2f}" if abs(value) < 1e9 else f"{value:.3g}"  # 'inf', '1e+300'


def _draw_forecast(plot: Plot, forecasts: list[ForecastFacts], stale: bool) -> None:
    """The forecast line from its origin through each horizon, over its 80% band."""
    area, colour = plot.area, STALE if stale else FORECAST
    points = _forecast_points(forecasts)
    bands = [(t, f) for t, f in points if f.lower is not None and f.upper is not None]
    if bands:
        upper = [area.at((t, f.upper)) for t, f in bands]  # type: ignore[arg-type]
        lower = [area.at((t, f.lower)) for t, f in reversed(bands)]  # type: ignore[arg-type]
        plot.data.polygon(upper + lower, rgba(colour, 0.15))
    origin = _moment(forecasts[0].origin_time)
    line = [area.at((origin, forecasts[0].last_value)),
            *(area.at((t, f.predicted_value)) for t, f in points)]
    plot.data.line(line, colour, 2, dash=(7, 4))
    for x, y in line:
        plot.data.marker(x, y, "o", 7, colour)


def _title(metal: str, newest: datetime, quotes: int, now: datetime, synthetic: bool) -> str:
    title = f"{metal.capitalize()}: last quote {newest.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    title += f" ({age_text(newest, now)} ago)"
    if quotes < 24:
        title += f", {quotes} quote{'s' if quotes != 1 else ''} so far"
    return title + (" - SYNTHETIC demo prices" if synthetic else "")


def _price_line(plot: Plot, prices: Sequence[Point], resolution: str, width: float) -> None:
    area = plot.area
    for run in draw.segments(prices, GAP[resolution]):
        plot.data.line([area.at(p) for p in run], LINE, width)
    if len(prices) <= 48:  # few points: each one shown
        for point in prices:
            plot.data.marker(*area.at(point), "o", 6, LINE)


def draw_chart(
    path: Path,
    *,
    metal: str,
    currency: str,
    unit: str,
    history: PriceHistory,
    forecasts: list[ForecastFacts],
    now: datetime,
    synthetic: bool = False,
) -> Path:
    """The recent view. history: a report.history.PriceHistory with at least one quote;
    forecasts: rate_price ones of the latest origin (with target_time and stale)."""
    assert history.newest is not None, "draw_chart draws a history with at least one quote"
    prices = [(draw.seconds(t), v) for t, v in history.prices]
    values: list[float | None] = [v for _, v in prices]
    start = prices[0][0] if prices else draw.seconds(history.newest)
    end = draw.seconds(history.newest)
    legend = [Entry("line", LINE, "price" if history.resolution == "hourly" else "daily close")]
    legend = legend if prices else []
    # A forecast is drawn where it belongs: made within the view (a stale one greyed out);
    # one made long before the view would only stretch it (the table beside says it).
    shown = bool(forecasts) and _moment(forecasts[0].origin_time) >= start
    stale = any(f.stale for f in forecasts)
    if shown:
        values += _forecast_values(forecasts)
        end = max(end, *(t for t, _ in _forecast_points(forecasts)))
        legend += _forecast_entries(forecasts, stale)
    low, high = _limits(values or [v for _, v, _ in history.marked])
    pad = max((end - start) * 0.04, 12 * 3600.0)
    legend += _marked_entries(history.marked, (low, high))
    title = _title(metal, history.newest, history.quotes, now, synthetic)
    plot = Plot(title, (start - pad, end + pad), (low, high), f"{currency} per {unit}", legend,
                synthetic)
    if prices:
        _price_line(plot, prices, history.resolution, 2)
    if shown:
        _draw_forecast(plot, forecasts, stale)
    plot.compose()
    _marked_points(plot, history.marked)
    if prices:
        t, value = prices[-1]
        x, y = plot.area.at((t, value))
        label = f"{value:,.2f}\n{draw.utc(t):%Y-%m-%d %H:%M}"
        top = max(y - 12 - draw.text_size(label, NOTE)[1], plot.area.top + 3)  # in the axes
        plot.canvas.text(x - 8, top, label, NOTE, LINE, align="r", valign="t", backing=True)
    return plot.save(path)


def draw_long_view(
    path: Path, *, metal: str, currency: str, unit: str, history: PriceHistory,
    synthetic: bool = False
) -> Path:
    """The whole history as daily closes (history.daily), its extremes labelled."""
    assert history.daily is not None, "draw_long_view draws a history long enough for one"
    daily = [(draw.seconds(t), v) for t, v in history.daily]
    start, end = daily[0][0], daily[-1][0]
    pad = max((end - start) * 0.02, 86400.0)
    days = round((end - start) / 86400)
    span = f"{days / 365.25:.0f} years" if days / 365.25 >= 2 else f"{days} days"
    title = (f"{metal.capitalize()}: the whole history, {span} of daily closes "
             f"({draw.utc(start):%Y-%m-%d} to {draw.utc(end):%Y-%m-%d})")
    title += " - SYNTHETIC" if synthetic else ""
    plot = Plot(title, (start - pad, end + pad), _limits([v for _, v in daily]),
                f"{currency} per {unit}", [Entry("line", LINE, "daily close")], synthetic)
    _price_line(plot, daily, "daily", 1.4)
    plot.compose()
    middle = start + (end - start) / 2
    for where, point in (("high", max(daily, key=lambda p: p[1])),
                         ("low", min(daily, key=lambda p: p[1]))):
        # Written towards the middle and away from the line, so it stays inside the axes.
        x, y = plot.area.at(point)
        right = point[0] > middle
        plot.canvas.text(x + (-12 if right else 12), y,
                         f"{where} {point[1]:,.2f} ({draw.utc(point[0]):%Y-%m-%d})", NOTE, LINE,
                         align="r" if right else "l", valign="m", backing=True)
    return plot.save(path)
