"""A small drawing surface for the report's charts, on Pillow: a plot area mapping times and
prices to pixels, ticks a reader can use, lines, bands, markers and text. Drawn at twice the
size and halved when saved, so lines and text come out smooth.

Pillow draws in well under a tenth of a second what matplotlib took a second to import;
nothing here knows about metals or forecasts (that is charts.py)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SCALE = 2  # drawn at twice the size, halved on save: smooth edges without an antialiser
HOUR, DAY = 3600.0, 86400.0
Point = tuple[float, float]  # (seconds since the epoch, value)


@lru_cache(maxsize=16)
def font(size: float) -> ImageFont.FreeTypeFont:
    """Pillow's own scalable font (Aileron): no font file to find on the host or image."""
    loaded = ImageFont.load_default(size=size * SCALE)
    assert isinstance(loaded, ImageFont.FreeTypeFont), "Pillow is built with FreeType"
    return loaded


def text_size(text: str, size: float) -> tuple[float, float]:
    """(width, height) in pixels of one or more lines of text."""
    lines = text.split("\n")
    width = max(font(size).getlength(line) for line in lines) / SCALE
    return width, len(lines) * size * 1.25


def seconds(moment: datetime) -> float:
    return moment.timestamp()


def utc(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def nice_ticks(low: float, high: float, most: int = 7) -> tuple[list[float], int]:
    """Round values between low and high, at most `most` of them (1, 2, 2.5 or 5 times a
    power of ten apart), and the decimals their labels need."""
    raw = (high - low) / most
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9)
    ticks = [(first + i) * step for i in range(int((high - low) / step) + 2)]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if f"{step:g}"[-2:] == "25" else 0)
    return [t for t in ticks if low <= t <= high], decimals


def date_ticks(start: float, end: float) -> tuple[list[float], str]:
    """Tick times between start and end on whole UTC hours, days, months or years, and the
    strftime format that says each one's full date (no offset label to read it against)."""
    span = end - start
    if span <= 3 * DAY:
        step = next(h for h in (1, 2, 3, 4, 6, 12, 24) if span / (h * HOUR) <= 8) * HOUR
        return _every(start, end, step), "%Y-%m-%d\n%H:%M"
    if span <= 120 * DAY:
        step = next(d for d in (1, 2, 3, 5, 7, 14, 28) if span / (d * DAY) <= 9) * DAY
        return _every(start, end, step), "%Y-%m-%d"
    if span <= 3 * 366 * DAY:
        months = 3 if span > 400 * DAY else 1
        return _months(start, end, months), "%Y-%m"
    years = max(1, math.ceil(span / (365 * DAY) / 10))
    first, last = utc(start).year, utc(end).year + 1
    ticks = [seconds(datetime(y, 1, 1, tzinfo=UTC)) for y in range(first, last + 1)
             if y % years == 0]
    return [t for t in ticks if start <= t <= end], "%Y"


def _every(start: float, end: float, step: float) -> list[float]:
    first = math.ceil(start / step) * step
    return [first + i * step for i in range(int((end - first) // step) + 1)]


def _months(start: float, end: float, months: int) -> list[float]:
    moment = utc(start).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    ticks = []
    while seconds(moment) <= end:
        if seconds(moment) >= start and (moment.month - 1) % months == 0:
            ticks.append(seconds(moment))
        year, month = divmod(moment.month, 12)
        moment = moment.replace(year=moment.year + year, month=month + 1)
    return ticks


@dataclass
class Area:
    """Where the plot sits on the canvas and what it spans: pixels from data."""

    left: float
    top: float
    right: float
    bottom: float
    x0: float
    x1: float
    y0: float
    y1: float

    def x(self, value: float) -> float:
        return self.left + (value - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def y(self, value: float) -> float:
        return self.bottom - (value - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    def at(self, point: Point) -> tuple[float, float]:
        return self.x(point[0]), self.y(point[1])


class Canvas:
    """An RGB picture of width x height pixels; every coordinate given in those pixels."""

    def __init__(self, width: int, height: int, transparent: bool = False) -> None:
        self.size = (width, height)
        pixels = (width * SCALE, height * SCALE)
        if transparent:  # a layer for `paste_clipped`
            self.image = Image.new("RGBA", pixels, (0, 0, 0, 0))
            self.draw = ImageDraw.Draw(self.image)
        else:
            self.image = Image.new("RGB", pixels, "white")
            self.draw = ImageDraw.Draw(self.image, "RGBA")  # RGBA fills blend into the picture

    @staticmethod
    def _scaled(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(x * SCALE, y * SCALE) for x, y in points]

    def line(self, points: Sequence[tuple[float, float]], colour: str, width: float,
             dash: tuple[float, float] | None = None) -> None:
        points = drawable(points)
        if len(points) < 2:
            return
        if dash is None:
            self.draw.line(self._scaled(points), fill=colour, width=round(width * SCALE),
                           joint="curve")
            return
        for piece in _dashes(points, *dash):
            self.draw.line(self._scaled(piece), fill=colour, width=round(width * SCALE))

    def polygon(self, points: Sequence[tuple[float, float]], colour: tuple[int, ...]) -> None:
        points = drawable(points)
        if len(points) >= 3:
            self.draw.polygon(self._scaled(points), fill=colour)

    def rectangle(self, box: tuple[float, float, float, float], outline: str,
                  width: float) -> None:
        self.draw.rectangle([v * SCALE for v in box], outline=outline, width=round(width * SCALE))

    def marker(self, x: float, y: float, kind: str, size: float, colour: str) -> None:
        """kind: 'o' a dot, 'x' a cross, '^' / 'v' a triangle pointing up or down."""
        r = size / 2
        if not (math.isfinite(x) and math.isfinite(y)):
            return
        if kind == "o":
            self.draw.ellipse([(x - r) * SCALE, (y - r) * SCALE, (x + r) * SCALE, (y + r) * SCALE],
                              fill=colour)
        elif kind == "x":
            for a, b in (((x - r, y - r), (x + r, y + r)), ((x - r, y + r), (x + r, y - r))):
                self.line([a, b], colour, 2.6)
        else:
            tip = -r if kind == "^" else r
            self.polygon([(x, y + tip), (x - r, y - tip), (x + r, y - tip)], rgba(colour, 1.0))

    def text(self, x: float, y: float, text: str, size: float, colour: str = "#1b1b1b",
             align: str = "l", valign: str = "t", backing: bool = False) -> None:
        """Lines of text; (x, y) is their left, middle or right ('l', 'm', 'r') and top,
        middle or bottom ('t', 'm', 'b'); with `backing` on a faint white box, readable over
        a line."""
        lines = text.split("\n")
        width, height = text_size(text, size)
        top = y - {"t": 0.0, "m": height / 2, "b": height}[valign]
        if backing:
            left = x - {"l": 0.0, "m": width / 2, "r": width}[align]
            self.draw.rectangle([(left - 3) * SCALE, top * SCALE, (left + width + 3) * SCALE,
                                 (top + height) * SCALE], fill=(255, 255, 255, 200))
        for i, line in enumerate(lines):
            middle = top + (i + 0.5) * size * 1.25
            self.draw.text((x * SCALE, middle * SCALE), line, fill=colour, font=font(size),
                           anchor=align + "m")

    def vertical_text(self, x: float, y: float, text: str, size: float) -> None:
        """One line turned a quarter left, centred on (x, y): an axis's label."""
        self._paste_centred("#1b1b1b", _turned(text, size, 255, 90, margin=2), x, y)

    def watermark(self, area: Area, text: str) -> None:
        """Large faint tilted text across the plot: a picture copied out still says it."""
        tilted = _turned(text, 80.0, 16, 12, margin=4, resample=Image.Resampling.BICUBIC)
        self._paste_centred("black", tilted, (area.left + area.right) / 2,
                            (area.top + area.bottom) / 2)

    def _paste_centred(self, colour: str, mask: Image.Image, x: float, y: float) -> None:
        """`colour` through `mask` (a turned text), centred on (x, y)."""
        self.image.paste(colour, (round(x * SCALE - mask.width / 2),
                                  round(y * SCALE - mask.height / 2)), mask)

    def layer(self) -> Canvas:
        """A transparent canvas the size of this one, for `paste_clipped`."""
        return Canvas(*self.size, transparent=True)

    def paste_clipped(self, layer: Canvas, area: Area) -> None:
        """What was drawn on `layer` inside `area` only: data never spills over the axes."""
        left, top, right, bottom = (round(v * SCALE)
                                    for v in (area.left, area.top, area.right, area.bottom))
        region = layer.image.crop((left, top, right, bottom))
        self.image.paste(region, (left, top), region)

    def save(self, path: Path) -> Path:
        # zlib level 1: the same pixels, a little bigger, written in a fraction of the time
        self.image.reduce(SCALE).save(path, format="PNG", compress_level=1)
        return path


def _turned(text: str, size: float, ink: int, angle: float, *, margin: int,
            resample: Image.Resampling = Image.Resampling.NEAREST) -> Image.Image:
    """One line of text as a grey mask (`ink` of 255), turned `angle` degrees left."""
    width, height = text_size(text, size)
    layer = Image.new("L", (math.ceil(width * SCALE) + 2 * margin, math.ceil(height * SCALE)), 0)
    ImageDraw.Draw(layer).text((margin, layer.height / 2), text, fill=ink, font=font(size),
                               anchor="lm")
    return layer.rotate(angle, expand=True, resample=resample)


def drawable(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points without infinite ones, held within a few picture sizes of it: a value a
    billion times the others would make a dashed line of a billion dashes."""
    reach = 10_000.0
    return [(min(max(x, -reach), reach), min(max(y, -reach), reach))
            for x, y in points if math.isfinite(x) and math.isfinite(y)]


def rgba(colour: str, alpha: float) -> tuple[int, int, int, int]:
    """'#1f4e79' and an opacity as Pillow's (r, g, b, a)."""
    value = colour.lstrip("#")
    return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16), round(alpha * 255))


def _dashes(points: Sequence[tuple[float, float]], on: float,
            off: float) -> list[list[tuple[float, float]]]:
    """The pieces of a polyline drawn `on` pixels, skipped `off`, along its whole length."""
    pieces: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = [points[0]]
    drawing, left = True, on
    for (xa, ya), (xb, yb) in zip(points, points[1:], strict=False):
        length = math.hypot(xb - xa, yb - ya)
        done = 0.0
        while length - done > left:
            done += left
            point = (xa + (xb - xa) * done / length, ya + (yb - ya) * done / length)
            if drawing:
                current.append(point)
                pieces.append(current)
            current = [point]
            drawing, left = not drawing, (on if not drawing else off)
        left -= length - done
        if drawing:
            current.append((xb, yb))
        else:
            current = [(xb, yb)]
    if drawing and len(current) > 1:
        pieces.append(current)
    return pieces


def segments(points: Sequence[Point], gap: timedelta) -> list[list[Point]]:
    """The points split wherever two neighbours are more than `gap` apart: a weekend is not
    a gap, a feed that stopped for days is, and the line breaks there."""
    runs: list[list[Point]] = []
    limit = gap.total_seconds()
    for point in points:
        if runs and point[0] - runs[-1][-1][0] <= limit:
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs
