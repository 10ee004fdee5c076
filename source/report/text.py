"""`main.py status`: the facts as compact plain text (no colour: it is read in mail and pipes),
or as the JSON object of `--json`."""

from __future__ import annotations

import json

from source.facts import SOURCES, ForecastFacts, StatusFacts


def age_parts(seconds: float) -> tuple[int, str]:
    """(count, 'm'|'h'|'d'): the one rounding every age on the page and in status uses."""
    minutes = int(max(seconds, 0) // 60)
    if minutes < 120:
        return minutes, "m"
    return (minutes // 60, "h") if minutes < 48 * 60 else (minutes // 1440, "d")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    count, unit = age_parts(seconds)
    return f"{count}{unit}"


def when(iso: str | None) -> str:
    """'2026-03-04 10:00' from an ISO time, '-' for none."""
    return iso[:16].replace("T", " ") if iso else "-"


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _metals(facts: StatusFacts) -> list[str]:
    mixed = facts.unit is None  # commodities in several units: each line says its own
    unit = "per commodity" if mixed else f"{facts.currency}/{facts.unit}"
    lines = [
        f"PRICES ({unit})",
        f"  {'metal':<10} {'price':>11} {'ask':>11} {'quote (UTC)':<17} "
        f"{'age':>5} {'rows':>8}  api/backfill/csv/demo",
    ]
    for m in facts.metals:
        if m.quote_time is None:
            lines.append(f"  {m.metal:<10} no prices yet")
            continue
        sources = "/".join(str(m.rows_by_source[s]) for s in SOURCES)
        lines.append(
            f"  {m.metal:<10} {_number(m.latest_price):>11} {_number(m.latest_ask):>11} "
            f"{when(m.quote_time):<17} {_age(m.quote_age_seconds):>5} "
            f"{m.rows:>8,}  {sources}" + (f"  {m.currency}/{m.unit}" if mixed else "")
        )
    return lines


def _ranges(facts: StatusFacts) -> list[str]:
    lines = ["RANGES (high / low)"]
    by_metal: dict[str, list] = {}
    for row in facts.ranges:
        by_metal.setdefault(row.metal, []).append(row)
    for metal, rows in by_metal.items():
        parts = [
            f"{r.period} {_number(r.high)}/{_number(r.low)}" for r in rows if r.high is not None
        ]
        lines.append(f"  {metal:<10} {'; '.join(parts) or '-'}")
    return lines


def _runs(facts: StatusFacts) -> list[str]:
    runs, usage = facts.runs, facts.api_usage
    lines = [
        f"RUNS (API requests this month: {runs.api_requests_this_month:,}"
        + (
            f"; API /usage: {usage.used:,} of {usage.total:,} "
            f"used, {usage.remaining:,} left, plan {usage.plan}"
            if usage
            else ""
        )
        + ")"
    ]
    if not runs.recent:
        return [*lines, "  no runs yet"]
    for run in runs.recent:
        duration = "-" if run.duration_seconds is None else f"{run.duration_seconds:.0f}s"
        failed = f" failed: {', '.join(run.metals_failed)}" if run.metals_failed else ""
        lines.append(
            f"  #{run.run_id:<5} {when(run.started_at)} "
            f"{run.command:<10} {run.status:<11} {duration:>6} "
            f"{run.api_requests:>3} req{failed}"
        )
    return lines


def _models(facts: StatusFacts) -> list[str]:
    lines = [
        "MODELS (MASE < 1 beats persistence, marked *; direction accuracy where it made calls;"
        " 80% interval coverage)"
    ]
    for model in facts.models:
        name = f"{model.metal} {model.target}"
        if not model.trained:
            lines.append(f"  {name:<22} not trained yet")
            continue
        skill = "  ".join(
            f"h{h}: {_number(s.mase, 3)}{'*' if s.beats_naive else ''}"
            f" dir {_number(s.direction_accuracy, 2)}"
            f" cov {_number(s.interval_coverage, 2)}"
            for h, s in model.by_horizon.items()
        )
        lines.append(
            f"  {name:<22} {skill}  ({model.frequency}, {_number(model.rows_used, 0)} "
            f"rows, trained {when(model.trained_at)})"
        )
    return lines


def horizon_text(forecast: ForecastFacts) -> str:
    """'+6h', '+1d': steps ahead, counted in trading hours (or days)."""
    return f"+{forecast.horizon}{'d' if forecast.frequency == 'daily' else 'h'}"


def price_forecasts(facts: StatusFacts) -> list[ForecastFacts]:
    """The rate_price forecasts shown (status and the report's table)."""
    return [f for f in facts.forecasts if f.target == "rate_price"]


def _forecasts(facts: StatusFacts) -> list[str]:
    rows = price_forecasts(facts)
    if not rows:
        return []
    lines = [
        "FORECASTS (rate_price; 80% interval; STALE: quotes newer than its target exist)",
        f"  {'metal':<10} {'ahead':>5} {'for (UTC)':<16} {'forecast':>11} {'80% low':>11} "
        f"{'80% high':>11}  made at (UTC)",
    ]
    for f in rows:
        lines.append(
            f"  {f.metal:<10} {horizon_text(f):>5} {when(f.target_time):<16} "
            f"{_number(f.predicted_value):>11} {_number(f.lower):>11} "
            f"{_number(f.upper):>11}  {when(f.origin_time)}" + ("  STALE" if f.stale else "")
        )
    return lines


def _backups(facts: StatusFacts) -> list[str]:
    newest = facts.backups.newest
    if newest is None:
        return ["BACKUPS", "  none yet"]
    state = (
        newest.level
        if newest.verified
        else ("NOT VERIFIED" if newest.verified is None else "VERIFY FAILED")
    )
    where = {True: ", copied off the host", False: ", NOT off the host", None: ""}
    return [
        f"BACKUPS ({facts.backups.count})",
        f"  newest {newest.id}, {_age(newest.age_seconds)} old, {state}{where[newest.offsite]}",
    ]


def _quality(facts: StatusFacts) -> list[str]:
    marks = facts.quality
    lines = [
        f"QUALITY: {marks.suspect} suspect, {marks.rejected} rejected "
        "quote(s) kept out of models, views and charts"
    ]
    for quote in marks.undecided:
        lines.append(
            f"  undecided: {quote.metal} {quote.price:,.2f} at {quote.time[:16]} ({quote.reason})"
        )
    return lines


def render_text(facts: StatusFacts) -> str:
    verdict = "HEALTHY" if facts.healthy else f"{len(facts.warnings)} WARNING(S)"
    demo = " (demo: SYNTHETIC prices)" if facts.demo else ""
    lines = [
        f"commodities pipeline - {facts.database}{demo} - {facts.generated_at[:19]}Z - {verdict}"
    ]
    lines += [f"  ! {w}" for w in facts.warnings]
    lines += [f"  note: {n}" for n in facts.notes]
    for section in (_metals, _ranges, _forecasts, _runs, _models, _backups, _quality):
        lines += ["", *section(facts)]
    return "\n".join(lines)


def render_json(facts: StatusFacts) -> str:
    """The `--json` object: the keys docs/status.md lists."""
    return json.dumps(facts.to_json(), default=str, indent=2)
