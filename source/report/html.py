"""`main.py report`: index.html (inline CSS, no script, no network) beside one PNG per metal,
showing the same facts and warnings as `status`."""

from __future__ import annotations

from datetime import UTC
from html import escape
from pathlib import Path

from source.facts import SOURCES, ForecastFacts, StatusFacts
from source.report.charts import MARKED, age_text, draw_chart, draw_long_view
from source.report.history import PriceHistory
from source.report.text import _age, _number, horizon_text, price_forecasts

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#1b1b1b}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem}
.meta{color:#555}.ok{background:#e6f4ea;border-left:4px solid #1e8e3e;padding:.6rem 1rem}
.warn{background:#fdecea;border-left:4px solid #c5221f;padding:.6rem 1rem}
.warn li{margin:.2rem 0}
table{border-collapse:collapse;width:100%;margin:.5rem 0;font-variant-numeric:tabular-nums}
th,td{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.good{color:#1e8e3e;font-weight:600}
figure{margin:1rem 0}img{max-width:100%;height:auto;border:1px solid #ddd}
.card{border:1px solid #ddd;border-left:4px solid #999;padding:.8rem 1rem;margin:1rem 0;
background:#fafafa}.stale{color:#8c8c8c}
.synthetic{background:#fff4e5;border-left:4px solid #e8710a;padding:.6rem 1rem}
"""


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _when(iso: str | None) -> str:
    return escape(iso[:16].replace("T", " ")) if iso else "-"


def _prices(facts: StatusFacts) -> str:
    rows = [
        [
            escape(m.metal),
            escape(f"{m.currency}/{m.unit}" if m.currency else "-"),
            _number(m.latest_price),
            _number(m.latest_ask),
            _when(m.quote_time),
            _age(m.quote_age_seconds),
            f"{m.rows:,}",
            " / ".join(str(m.rows_by_source[s]) for s in SOURCES),
        ]
        for m in facts.metals
    ]
    return _table(
        [
            "metal",
            "in",
            "price",
            "ask",
            "quote (UTC)",
            "age",
            "rows",
            "api / backfill / csv / demo",
        ],
        rows,
    )


def _ranges(facts: StatusFacts) -> str:
    rows = [
        [
            escape(r.metal),
            escape(r.period),
            _number(r.high),
            _when(r.high_at),
            _number(r.low),
            _when(r.low_at),
        ]
        for r in facts.ranges
        if r.high is not None
    ]
    if not rows:
        return "<p>No quotes today, yesterday, this week or in the last 7 days.</p>"
    return _table(["metal", "period", "high", "at (UTC)", "low", "at (UTC)"], rows)


def _models(facts: StatusFacts) -> str:
    """One row per model and horizon: narrow enough for any window."""
    if not any(model.trained for model in facts.models):
        return (
            "<p>No model trained yet: each hourly run trains once a metal has enough history "
            "(or <code>python main.py train</code>).</p>"
        )
    rows = []
    for model in facts.models:
        name = escape(f"{model.metal} {model.target}")
        if not model.trained:
            rows.append([name, "not trained yet"] + [""] * 6)
            continue
        for horizon, skill in model.by_horizon.items():
            mark = ' class="good"' if skill.beats_naive else ""
            rows.append(
                [
                    name,
                    escape(f"+{horizon}"),
                    f"<span{mark}>{_number(skill.mase, 3)}</span>",
                    _number(skill.direction_accuracy, 2),
                    _number(skill.interval_coverage, 2),
                    escape(model.frequency),
                    _number(model.rows_used, 0),
                    _when(model.trained_at),
                ]
            )
    return _table(
        ["model", "ahead", "MASE", "direction", "80% coverage", "steps", "rows",
         "trained (UTC)"],
        rows,
    )


def _forecasts(facts: StatusFacts) -> str:
    """The latest rate_price forecasts with their 80% bounds and when they were made."""
    rows = [
        [
            escape(f.metal),
            escape(horizon_text(f)),
            _when(f.target_time),
            _number(f.predicted_value),
            _number(f.lower),
            _number(f.upper),
            _when(f.origin_time),
            '<span class="stale">STALE: newer quotes exist</span>' if f.stale else "current",
        ]
        for f in price_forecasts(facts)
    ]
    if not rows:
        return "<p>No forecasts yet: they are made when the models train.</p>"
    return _table(
        ["metal", "ahead", "for (UTC)", "forecast", "80% lower", "80% upper", "made at (UTC)",
         "state"],
        rows,
    )


def _runs(facts: StatusFacts) -> str:
    rows = [
        [
            f"#{run.run_id}",
            _when(run.started_at),
            escape(run.command),
            escape(run.status),
            "-" if run.duration_seconds is None else f"{run.duration_seconds:.0f} s",
            str(run.api_requests),
            escape(", ".join(run.metals_failed) or "-"),
        ]
        for run in facts.runs.recent
    ]
    return _table(
        ["run", "started (UTC)", "command", "outcome", "took", "requests", "failed"], rows
    )


def _backups(facts: StatusFacts) -> str:
    newest = facts.backups.newest
    if newest is None:
        return "<p>No backup yet.</p>"
    state = newest.level if newest.verified else "NOT verified"
    where = {True: ", copied off the host", False: ", NOT off the host", None: ""}
    return (
        f"<p>{facts.backups.count} backup(s); newest <code>{escape(newest.id)}</code>, "
        f"{_age(newest.age_seconds)} old, {escape(state or '')}{where[newest.offsite]}.</p>"
    )


def _quality(facts: StatusFacts) -> str:
    marks = facts.quality
    text = (
        f"<p>{marks.suspect} suspect and {marks.rejected} rejected quote(s) "
        "are kept but left out of the models, the views and the chart lines "
        "(<code>python main.py quality</code> lists them).</p>"
    )
    rows = [
        [escape(q.metal), _number(q.price), _when(q.time), escape(q.reason or "")]
        for q in marks.undecided
    ]
    if rows:
        text += "<p>Waiting for the next quotes:</p>" + _table(
            ["metal", "price", "time (UTC)", "why"], rows
        )
    return text


def _verdict(facts: StatusFacts) -> str:
    if facts.healthy:
        return '<div class="ok">Healthy: nothing needs a look.</div>'
    items = "".join(f"<li>{escape(w)}</li>" for w in facts.warnings)
    return f'<div class="warn"><strong>Needs a look:</strong><ul>{items}</ul></div>'


def _caption(metal: str, history: PriceHistory, now, forecasts: list[ForecastFacts]) -> str:
    counts = {mark: sum(1 for *_, q in history.marked if q == mark) for mark in MARKED}
    notes = [f"{count} {mark} quote(s) marked, not used" for mark, count in counts.items() if count]
    if history.quotes < 24:
        notes.insert(0, f"{history.quotes} quote{'s' if history.quotes != 1 else ''} so far")
    if forecasts and forecasts[0].stale:
        notes.append(
            f"the latest forecast, made {_when(forecasts[0].origin_time)} UTC, is stale "
            "(newer quotes exist; see Forecasts)"
        )
    shown = "the last 7 days of quotes" if history.resolution == "hourly" else (
        "daily closes of the last 180 days")
    if history.quotes < 24 and history.resolution == "hourly":
        shown = "every quote so far"
    assert history.newest is not None, "_charts captions only a history that has rows"
    return escape(
        f"{metal.capitalize()}: last quote {history.newest.astimezone(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{age_text(history.newest, now)} ago; {shown} before it"
        + "".join(f"; {note}" for note in notes)
        + "."
    )


def _no_rows_card(metal: str) -> str:
    return (
        f'<div class="card"><strong>{escape(metal.capitalize())}</strong>: no quotes yet. The '
        "next hourly run (<code>python main.py</code>) brings one; "
        "<code>python main.py import-csv</code> or <code>backfill</code> bring history.</div>"
    )


def _figure(src: str, alt: str, caption: str) -> str:
    return (
        f'<figure><img src="{escape(src)}" width="1000" height="460" alt="{escape(alt)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _charts(facts: StatusFacts, history: dict[str, PriceHistory], out: Path, now) -> str:
    """Per metal: the recent view and, for a long history, the whole of it; or a card."""
    parts = []
    synthetic = facts.demo
    for metal_facts in facts.metals:
        metal, seen = metal_facts.metal, history[metal_facts.metal]
        if seen.newest is None:
            parts.append(_no_rows_card(metal))
            continue
        currency = metal_facts.currency or facts.currency
        unit = metal_facts.unit or facts.unit
        assert unit is not None, "a metal with rows has their unit"
        forecasts = [f for f in price_forecasts(facts) if f.metal == metal]
        chart = draw_chart(out / f"{metal}.png", metal=metal, currency=currency, unit=unit,
                           history=seen, forecasts=forecasts, now=now, synthetic=synthetic)
        parts.append(_figure(chart.name, f"{metal} recent prices and forecasts",
                             _caption(metal, seen, now, forecasts)))
        if seen.daily is not None and len(seen.daily) > 1:
            assert seen.oldest is not None, "daily closes are read from the oldest quote on"
            long_view = draw_long_view(out / f"{metal}-history.png", metal=metal,
                                       currency=currency, unit=unit, history=seen,
                                       synthetic=synthetic)
            parts.append(_figure(long_view.name, f"{metal} daily closes, whole history",
                                 escape(f"{metal.capitalize()}: every daily close since "
                                        f"{seen.oldest.astimezone(UTC):%Y-%m-%d}.")))
    return "".join(parts)


def write_report(
    facts: StatusFacts, history: dict[str, PriceHistory], out: Path, now=None
) -> Path:
    """Write the charts and index.html into `out`; return the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    figures = _charts(facts, history, out, now)
    api = f"{facts.runs.api_requests_this_month:,} API request(s) this month (counted here)"
    synthetic = (
        '<p class="synthetic"><strong>Demo: SYNTHETIC prices</strong> from the local sandbox '
        "feed, in their own database. Not market data.</p>" if facts.demo else ""
    )
    notes = "".join(f'<p class="meta">Note: {escape(n)}</p>' for n in facts.notes)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Commodities pipeline{" demo (synthetic)" if facts.demo else ""} — \
{escape(facts.database)}</title>
<style>{STYLE}</style></head>
<body>
<h1>Commodities pipeline</h1>
<p class="meta">Database <code>{escape(facts.database)}</code> · generated
{_when(facts.generated_at)} UTC · {api}</p>
{synthetic}{notes}{_verdict(facts)}
<h2>Latest prices</h2>{_prices(facts)}
<h2>Charts</h2>{figures}
<h2>Forecasts</h2>
<p class="meta">Steps ahead count trading hours (Sunday 22:00 to Friday 22:00 UTC) or weekdays;
the true price should fall between the 80% bounds four times in five.</p>{_forecasts(facts)}
<h2>Ranges</h2>{_ranges(facts)}
<h2>Models</h2>
<p class="meta">MASE below 1 (green) beats the persistence forecast; direction accuracy counts
the up/down calls the model made.</p>{_models(facts)}
<h2>Recent runs</h2>{_runs(facts)}
<h2>Backups</h2>{_backups(facts)}
<h2>Quality</h2>{_quality(facts)}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
