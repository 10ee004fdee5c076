"""status, report and the analyst views, as the person on call and the analyst see them."""

import json
import os
import shutil
from datetime import UTC, datetime

import psycopg2
import pytest

from source.db_functions.migrations import MIGRATIONS, apply_migrations

METALS = ("gold", "silver", "platinum", "palladium")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Gold on two days with known extremes (UTC).
KNOWN = [
    ("2026-03-02 09:00", 100.0),
    ("2026-03-02 12:00", 130.0),
    ("2026-03-02 15:00", 90.0),
    ("2026-03-02 23:00", 110.0),
    ("2026-03-03 01:00", 120.0),
    ("2026-03-03 02:00", 95.0),
    ("2026-03-04 08:00", 101.0),
]


def migrated(database) -> None:
    conn = database.connect()
    try:
        apply_migrations(conn)
    finally:
        conn.close()


def insert_known(database) -> None:
    for stamp, price in KNOWN:
        database.query(
            """INSERT INTO gold_historic ("timestamp", metal, currency, unit, rate_price, source)
               VALUES (%s::timestamp AT TIME ZONE 'UTC', 'gold', 'USD', 'toz', %s, 'csv')""",
            (stamp, price),
        )


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_daily_ohlc_has_the_known_answers(database):
    migrated(database)
    insert_known(database)
    rows = database.query(
        "SELECT day::text, open, high, low, close, high_at, low_at, rows FROM daily_ohlc "
        "WHERE metal = 'gold' ORDER BY day"
    )
    assert rows == [
        (
            "2026-03-02",
            100.0,
            130.0,
            90.0,
            110.0,
            utc("2026-03-02 12:00"),
            utc("2026-03-02 15:00"),
            4,
        ),
        (
            "2026-03-03",
            120.0,
            120.0,
            95.0,
            95.0,
            utc("2026-03-03 01:00"),
            utc("2026-03-03 02:00"),
            2,
        ),
        (
            "2026-03-04",
            101.0,
            101.0,
            101.0,
            101.0,
            utc("2026-03-04 08:00"),
            utc("2026-03-04 08:00"),
            1,
        ),
    ]


def test_price_ranges_has_the_known_answers(database):
    migrated(database)
    insert_known(database)
    rows = database.query(
        "SELECT period, high, high_at, low, low_at FROM price_ranges_at(%s) WHERE metal = 'gold'",
        (utc("2026-03-04 10:30"),),  # a Wednesday
    )
    assert rows == [
        ("today", 101.0, utc("2026-03-04 08:00"), 101.0, utc("2026-03-04 08:00")),
        ("yesterday", 120.0, utc("2026-03-03 01:00"), 95.0, utc("2026-03-03 02:00")),
        ("this week", 130.0, utc("2026-03-02 12:00"), 90.0, utc("2026-03-02 15:00")),
        ("last 7 days", 130.0, utc("2026-03-02 12:00"), 90.0, utc("2026-03-02 15:00")),
    ]
    empty = database.query(
        "SELECT period, high FROM price_ranges_at(%s) WHERE metal = 'silver'",
        (utc("2026-03-04 10:30"),),
    )
    assert [row[1] for row in empty] == [None] * 4  # no silver rows: no range, no error


def test_a_read_only_user_can_query_the_views(database):
    migrated(database)
    insert_known(database)
    database.query(
        """DO $$ BEGIN
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analyst') THEN
               CREATE ROLE analyst LOGIN;
             END IF; END $$;
           GRANT SELECT ON ALL TABLES IN SCHEMA public TO analyst;"""
    )
    conn = psycopg2.connect(dbname=database.name, **{**database.server, "user": "analyst"})
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM daily_ohlc")
            assert cur.fetchone()[0] == 3
            cur.execute("SELECT count(*) FROM price_ranges")
            assert cur.fetchone()[0] == 4 * len(METALS)
    finally:
        conn.close()


# -- status -------------------------------------------------------------------------------------


def test_status_on_an_empty_database_says_so(run_main, sandbox):
    result = run_main("status", METALS_DEV_API_KEY="")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"main.py: database {run_main.env['PGDATABASE']} is empty: no run has loaded anything "
        "yet (try `python main.py`, or `--demo`)"
    ]
    assert sandbox.requests == []


def test_readers_never_migrate_a_schema_behind_and_say_so(run_main, database, sandbox):
    conn = database.connect()
    try:
        apply_migrations(conn, up_to=6)
    finally:
        conn.close()
    missing = ", ".join(str(version) for version, _, _ in MIGRATIONS if version > 6)
    for command in (["status"], ["status", "--json"], ["report"], ["quality"]):
        result = run_main(*command, METALS_DEV_API_KEY="")
        assert result.returncode == 1, command
        assert result.stderr.splitlines() == [
            f"main.py: database {database.name} lacks schema migration(s) {missing}: status, "
            "report and quality only read; the next writing command (`python main.py`, backfill, "
            "import-csv, train) migrates it"
        ], command
    assert database.scalar("SELECT max(version) FROM schema_migrations") == 6
    assert sandbox.requests == []


def test_status_with_the_database_down_is_one_line(run_main):
    result = run_main("status", PGHOST="127.0.0.1", PGPORT="1")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot connect to PostgreSQL" in result.stderr


def test_status_is_healthy_after_a_run_and_a_backup_and_needs_no_key(run_main, sandbox):
    assert run_main("--no-train").returncode == 0
    assert run_main(script="backups_main.py").returncode == 0
    sandbox.requests.clear()
    result = run_main("status", METALS_DEV_API_KEY="")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HEALTHY" in result.stdout.splitlines()[0]
    for metal in METALS:
        assert f"  {metal:<10}" in result.stdout
    assert "restored" in result.stdout  # the backup's verification level
    assert sandbox.requests == []


def test_status_imports_no_data_science_or_http_library(run_main):
    """status must start quickly: nothing of pandas, numpy, matplotlib, scikit-learn, joblib,
    requests or prometheus_client is imported on its path (`python -X importtime`)."""
    assert run_main("--no-train").returncode == 0
    result = run_main("status", PYTHONPROFILEIMPORTTIME="1")
    assert result.returncode in (0, 1), result.stderr
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "psycopg2" in imported  # the measurement works
    heavy = {"pandas", "numpy", "matplotlib", "sklearn", "joblib", "requests", "prometheus_client"}
    assert imported & heavy == set()


def test_status_warns_about_backups_and_a_failing_metal(run_main, sandbox, tmp_path):
    sandbox.add_fault("silver", 200, b"not json")
    for hour in range(3):
        sandbox.hour_offset = hour
        assert run_main("--no-train").returncode == 3
    old = run_main.cwd / "backups" / "20200101T000000Z"
    old.mkdir(parents=True)
    (old / "manifest.json").write_text("{}")
    result = run_main("status")
    assert result.returncode == 1
    warnings = [line for line in result.stdout.splitlines() if line.startswith("  ! ")]
    assert warnings == [
        "  ! newest backup 20200101T000000Z is older than 7 hours",
        "  ! newest backup 20200101T000000Z is not verified",
        "  ! silver failed the last 3 runs in a row",
    ]


def test_status_json_holds_the_numbers_of_the_tables(run_main, database, sandbox):
    assert run_main("--no-train").returncode == 0
    sandbox.hour_offset += 1
    assert run_main("--no-train", "--metals", "gold").returncode == 0
    facts = json.loads(run_main("status", "--json").stdout)
    assert set(facts) >= {
        "generated_at",
        "database",
        "currency",
        "unit",
        "metals",
        "ranges",
        "runs",
        "models",
        "forecasts",
        "backups",
        "api_usage",
        "warnings",
        "healthy",
    }
    rows = {m["metal"]: m["rows"] for m in facts["metals"]}
    assert rows == {m: database.scalar(f"SELECT count(*) FROM {m}_historic") for m in METALS}
    assert facts["metals"][0]["rows_by_source"]["api"] == 2
    assert facts["runs"]["api_requests_this_month"] == database.scalar(
        "SELECT sum(api_requests) FROM pipeline_runs"
    )
    assert [r["run_id"] for r in facts["runs"]["recent"]] == [2, 1]
    assert facts["healthy"] is False and facts["warnings"] == ["no backup yet"]
    latest = database.query(
        'SELECT rate_price FROM gold_historic ORDER BY "timestamp" DESC LIMIT 1'
    )
    assert facts["metals"][0]["latest_price"] == latest[0][0]


def test_status_api_shows_the_plan_and_warns_near_the_quota(run_main, sandbox):
    assert run_main("--no-train").returncode == 0
    sandbox.usage_total = 4  # all 4 used
    facts = json.loads(run_main("status", "--json", "--api").stdout)
    assert facts["api_usage"] == {"plan": "Sandbox", "total": 4, "used": 4, "remaining": 0}
    assert "API quota 4/4 used (above 80%)" in facts["warnings"]
    assert [r["path"] for r in sandbox.requests][-1] == "/usage"
    no_key = run_main("status", "--api", METALS_DEV_API_KEY="")
    assert no_key.returncode == 2 and "METALS_DEV_API_KEY is not set" in no_key.stderr


# -- report -------------------------------------------------------------------------------------


@pytest.fixture
def report(run_main, database, sandbox):
    from tests.test_pipeline import insert_hourly_history

    assert run_main("--no-train").returncode == 0
    for metal in METALS:
        insert_hourly_history(database, metal, 400)
    assert run_main("train").returncode == 0
    out = run_main.cwd / "report"
    result = run_main("report", "--out", str(out), METALS_DEV_API_KEY="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"report written to {out / 'index.html'}"
    return out


def test_the_report_writes_a_page_and_one_sensible_chart_per_metal(report):
    from PIL import Image

    # January's history and March's quote span more than four weeks: a long view beside each.
    assert sorted(p.name for p in report.iterdir()) == sorted(
        ["index.html", *(f"{m}.png" for m in METALS), *(f"{m}-history.png" for m in METALS)]
    )
    for metal in METALS:
        with Image.open(report / f"{metal}.png") as image:
            assert image.format == "PNG" and image.size == (1000, 460)
        assert 20_000 < (report / f"{metal}.png").stat().st_size < 400_000
    page = (report / "index.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_the_report_imports_neither_pandas_nor_matplotlib(report, run_main):
    """The report is drawn with Pillow from plain rows: importing pandas and matplotlib took
    longer than the whole report takes now (`python -X importtime`)."""
    result = run_main("report", "--out", str(report), PYTHONPROFILEIMPORTTIME="1")
    assert result.returncode == 0, result.stderr
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "PIL" in imported  # the measurement works
    assert imported & {"pandas", "matplotlib", "sklearn", "requests"} == set()


@pytest.mark.timeout(60)
def test_a_chart_with_an_infinite_or_absurd_forecast_is_drawn_without_it(tmp_path):
    from PIL import Image

    from source.facts import ForecastFacts
    from source.report.charts import LINE, draw_chart
    from source.report.history import PriceHistory

    start = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    prices = [(datetime.fromtimestamp(start + h * 3600, UTC), 2000.0 + h) for h in range(48)]
    newest = prices[-1][0]
    forecasts = [
        ForecastFacts("gold", "rate_price", h, newest.isoformat(), value, value, value, 2047.0,
                      "hourly", datetime.fromtimestamp(newest.timestamp() + h * 3600,
                                                       UTC).isoformat(), False)
        for h, value in ((1, 2048.0), (6, 1e300), (24, float("inf")))
    ]
    history = PriceHistory(prices, [], newest, "hourly", 48, prices[0][0])
    path = draw_chart(tmp_path / "gold.png", metal="gold", currency="USD", unit="toz",
                      history=history, forecasts=forecasts, now=newest)
    with Image.open(path) as image:
        colours = {rgb for _, rgb in image.convert("RGB").getcolors(1_000_000)}
    assert tuple(int(LINE[i:i + 2], 16) for i in (1, 3, 5)) in colours  # the prices are there


def test_the_report_in_a_real_browser(report, tmp_path):
    if CHROMIUM is None:  # CI installs it: there the test must run
        message = "Debian's chromium is not installed (.ci/run installs it)"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            problems = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("requestfailed", lambda request: problems.append(request.url))
            page.goto((report / "index.html").as_uri())
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])"
            )
            text = page.inner_text("body")
            shot = tmp_path / "report-screenshot.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert sorted(images) == sorted(
        [[f"{m}.png", 1000] for m in METALS] + [[f"{m}-history.png", 1000] for m in METALS]
    )
    for metal in METALS:
        assert metal in text
        # The last quote (the sandbox's, in March) is months before the clock: each chart still
        # shows the prices before it and says how old it is.
        assert f"{metal.capitalize()}: last quote 2026-03-04 10:00 UTC, " in text
    assert "days ago; daily closes of the last 180 days before it" in text
    assert "Needs a look" in text and "no backup yet" in text
    assert shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
