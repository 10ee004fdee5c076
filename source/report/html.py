"""`main.py report`: index.html (inline CSS, no script, no network) beside one PNG per metal,
showing the same facts and warnings as `status`."""

from __future__ import annotations

from html import escape
from pathlib import Path

import pandas as pd

from source.report.charts import age_text, draw_chart
from source.report.text import _age, _number

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#1b1b1b}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem}
.meta{color:#555}.ok{background:#e6f4ea;border-left:4px solid #1e8e3e;padding:.6rem 1rem}
.warn{background:#fdecea;border-left:4px solid #c5221f;padding:.6rem 1rem}
.warn li{margin:.2rem 0}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.good{color:#1e8e3e;font-weight:600}
figure{margin:1rem 0}img{max-width:100%;height:auto;border:1px solid #ddd}
"""


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _when(iso: str | None) -> str:
    return escape(iso[:16].replace("T", " ")) if iso else "-"


def _prices(facts: dict) -> str:
    rows = [
        [
            escape(m["metal"]),
            _number(m["latest_price"]),
            _number(m["latest_ask"]),
            _when(m["quote_time"]),
            _age(m["quote_age_seconds"]),
            f"{m['rows']:,}",
            " / ".join(str(m["rows_by_source"][s]) for s in ("api", "backfill", "csv", "demo")),
        ]
        for m in facts["metals"]
    ]
    unit = f"{facts['currency']}/{facts['unit']}"
    return _table(
        [
            "metal",
            f"price ({unit})",
            "ask",
            "quote (UTC)",
            "age",
            "rows",
            "api / backfill / csv / demo",
        ],
        rows,
    )


def _ranges(facts: dict) -> str:
    rows = [
        [
            escape(r["metal"]),
            escape(r["period"]),
            _number(r["high"]),
            _when(r["high_at"]),
            _number(r["low"]),
            _when(r["low_at"]),
        ]
        for r in facts["ranges"]
        if r["high"] is not None
    ]
    return _table(["metal", "period", "high", "at (UTC)", "low", "at (UTC)"], rows)


def _models(facts: dict) -> str:
    rows = []
    for model in facts["models"]:
        if not model["trained"]:
            rows.append(
                [escape(f"{model['metal']} {model['target']}"), "not trained yet"] + [""] * 4
            )
            continue
        cells = []
        for skill in model["by_horizon"].values():
            mark = ' class="good"' if skill["beats_naive"] else ""
            cells.append(
                f"<span{mark}>{_number(skill['mase'], 3)}</span> / "
                f"{_number(skill['direction_accuracy'], 2)} / "
                f"{_number(skill.get('interval_coverage'), 2)}"
            )
        rows.append(
            [
                escape(f"{model['metal']} {model['target']}"),
                *cells,
                escape(model["frequency"]),
                _number(model["rows_used"], 0),
                _when(model["trained_at"]),
            ]
        )
    horizons = next(
        (list(m["by_horizon"]) for m in facts["models"] if m["trained"]), ["1", "6", "24"]
    )
    return _table(
        [
            "model",
            *[f"h{h}: MASE / direction / 80% coverage" for h in horizons],
            "steps",
            "rows",
            "trained (UTC)",
        ],
        rows,
    )


def _runs(facts: dict) -> str:
    rows = [
        [
            f"#{run['run_id']}",
            _when(run["started_at"]),
            escape(run["command"]),
            escape(run["status"]),
            "-" if run["duration_seconds"] is None else f"{run['duration_seconds']:.0f} s",
            str(run["api_requests"]),
            escape(", ".join(run["metals_failed"]) or "-"),
        ]
        for run in facts["runs"]["recent"]
    ]
    return _table(
        ["run", "started (UTC)", "command", "outcome", "took", "requests", "failed"], rows
    )


def _backups(facts: dict) -> str:
    newest = facts["backups"]["newest"]
    if newest is None:
        return "<p>No backup yet.</p>"
    state = newest["level"] if newest["verified"] else "NOT verified"
    where = {True: ", copied off the host", False: ", NOT off the host", None: ""}
    return (
        f"<p>{facts['backups']['count']} backup(s); newest <code>{escape(newest['id'])}</code>, "
        f"{_age(newest['age_seconds'])} old, {escape(state)}{where[newest.get('offsite')]}.</p>"
    )


def _quality(facts: dict) -> str:
    marks = facts.get("quality") or {}
    text = (
        f"<p>{marks.get('suspect', 0)} suspect and {marks.get('rejected', 0)} rejected quote(s) "
        "are kept but left out of the models, the views and the chart lines "
        "(<code>python main.py quality</code> lists them).</p>"
    )
    rows = [
        [escape(r["metal"]), _number(r["price"]), _when(r["time"]), escape(r["reason"] or "")]
        for r in marks.get("undecided", [])
    ]
    if rows:
        text += "<p>Waiting for the next quotes:</p>" + _table(
            ["metal", "price", "time (UTC)", "why"], rows
        )
    return text


def _verdict(facts: dict) -> str:
    if facts["healthy"]:
        return '<div class="ok">Healthy: nothing needs a look.</div>'
    items = "".join(f"<li>{escape(w)}</li>" for w in facts["warnings"])
    return f'<div class="warn"><strong>Needs a look:</strong><ul>{items}</ul></div>'


def _caption(metal: str, history, now) -> str:
    if history is None or history.newest is None:
        return f"{escape(metal.capitalize())}: no quote yet."
    marked = history.marked
    notes = [
        f"{(marked['quality'] == mark).sum()} {mark} quote(s) marked, not used"
        for mark in ("suspect", "rejected")
        if len(marked) and (marked["quality"] == mark).any()
    ]
    shown = "the last 7 days of quotes" if history.resolution == "hourly" else (
        "daily closes of the last 180 days")
    return escape(
        f"{metal.capitalize()}: last quote {pd.Timestamp(history.newest):%Y-%m-%d %H:%M} UTC, "
        f"{age_text(history.newest, now)} ago; {shown} before it"
        + "".join(f"; {note}" for note in notes)
        + "."
    )


def write_report(facts: dict, history: dict, out: Path, now=None) -> Path:
    """Write the charts and index.html into `out`; return the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for metal in (m["metal"] for m in facts["metals"]):
        forecasts = [
            f for f in facts["forecasts"] if f["metal"] == metal and f["target"] == "rate_price"
        ]
        chart = draw_chart(
            out / f"{metal}.png",
            metal=metal,
            currency=facts["currency"],
            unit=facts["unit"],
            history=history[metal],
            forecasts=forecasts,
            now=now,
        )
        figures.append(
            f'<figure><img src="{escape(chart.name)}" width="1000" height="460" '
            f'alt="{escape(metal)} price history and forecasts">'
            f"<figcaption>{_caption(metal, history[metal], now)}</figcaption></figure>"
        )
    api = f"{facts['runs']['api_requests_this_month']:,} API request(s) this month (counted here)"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Commodities pipeline — {escape(facts["database"])}</title>
<style>{STYLE}</style></head>
<body>
<h1>Commodities pipeline</h1>
<p class="meta">Database <code>{escape(facts["database"])}</code> · generated
{_when(facts["generated_at"])} UTC · {api}</p>
{_verdict(facts)}
<h2>Latest prices</h2>{_prices(facts)}
<h2>Charts</h2>{"".join(figures)}
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
