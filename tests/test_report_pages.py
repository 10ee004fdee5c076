"""The report as a new user first sees it, in real Chromium at 1400 px: a fresh install after
one run (one quote per metal) beside a commodity with no rows, and 19 years of real imported
hourly history followed by one new quote, with the forecast made before that quote."""

import os

import pytest

from tests.conftest import REAL_HOURLY
from tests.test_status_report import CHROMIUM

WIDTH = 1400


@pytest.fixture(scope="module")
def browser():
    """One Chromium for every page of this module."""
    if CHROMIUM is None:  # CI installs it: there the test must run
        message = "Debian's chromium is not installed (.ci/run installs it)"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def look_at(browser, index, shot):
    """Open the page at 1400 px: (text, [image src, natural width], problems, scroll width)."""
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(request.url))
    try:
        page.goto(index.as_uri())
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])"
        )
        scroll = page.evaluate("document.documentElement.scrollWidth")
        text = page.inner_text("body")
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    return text, images, problems, scroll


def report(run_main, out, **env):
    result = run_main("report", "--out", str(out), METALS_DEV_API_KEY="", **env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no matplotlib warning, nothing
    return out / "index.html"


def test_a_fresh_install_after_one_run(run_main, browser, tmp_path):
    assert run_main("--no-train", "--metals", "gold,silver,platinum").returncode == 0
    index = report(run_main, tmp_path / "report")
    names = sorted(p.name for p in index.parent.iterdir())
    assert names == ["gold.png", "index.html", "platinum.png", "silver.png"]  # no empty chart
    text, images, problems, scroll = look_at(browser, index, tmp_path / "fresh.png")
    assert problems == [] and scroll <= WIDTH
    assert all(width == 1000 for _, width in images)
    assert "Gold: last quote 2026-03-04 10:00 UTC" in text and "1 quote so far" in text
    assert "Palladium: no quotes yet." in text
    assert "No forecasts yet" in text
    assert "No quotes today, yesterday, this week or in the last 7 days." in text  # not headers
    print(f"look at: {tmp_path}")


def test_nineteen_years_of_history_then_one_new_quote(run_main, database, browser, tmp_path):
    real = REAL_HOURLY / "XAUUSD_H1.csv"
    if not real.is_file():
        pytest.skip(f"{real} is not here")
    path = real
    imported = run_main("import-csv", str(path), "--metal", "gold", "--price-column", "close",
                        "--tz", "Etc/GMT-2", "--metals", "gold")
    assert imported.returncode == 2  # --metals beside --metal: refused, one line
    imported = run_main("import-csv", str(path), "--metal", "gold", "--price-column", "close",
                        "--tz", "Etc/GMT-2")
    assert imported.returncode == 0, imported.stderr
    newest = database.scalar('SELECT max("timestamp") FROM gold_historic')
    # The forecasts made at the end of the import (as `train` writes them), then one quote
    # on the Monday after: those forecasts are stale now.
    database.query(
        """INSERT INTO price_predictions (metal, target, origin_time, horizon, predicted_value,
                  lower, upper, last_value, chosen_model, trained_at, frequency)
           SELECT 'gold', 'rate_price', %s, h, 4540 + h, 4520 - h, 4560 + 2 * h, 4538.31,
                  'ridge', now(), 'hourly' FROM unnest(ARRAY[1, 6, 24]) AS h""",
        (newest,),
    )
    database.query(
        """INSERT INTO gold_historic ("timestamp", metal, currency, unit, rate_price, source)
           VALUES (%s + interval '58 hours', 'gold', 'USD', 'toz', 4551.2, 'api')""",
        (newest,),
    )
    index = report(run_main, tmp_path / "report", METALS="gold")
    assert (index.parent / "gold-history.png").is_file()
    text, images, problems, scroll = look_at(browser, index, tmp_path / "history.png")
    assert problems == [] and scroll <= WIDTH
    assert sorted(src for src, _ in images) == ["gold-history.png", "gold.png"]
    assert "Gold: every daily close since 2007-06-22." in text
    assert f"made {newest:%Y-%m-%d %H:%M} UTC, is stale" in text
    assert "STALE: newer quotes exist" in text
    # +1h from Friday 21:00 UTC is the first trading hour after the weekend.
    assert "2026-05-17 22:00" in text
    print(f"look at: {tmp_path}")


def test_ages_read_the_same_in_status_and_on_the_charts():
    from datetime import UTC, datetime, timedelta

    from source.report.charts import age_text
    from source.report.text import _age

    now = datetime(2026, 12, 1, tzinfo=UTC)
    for age in (timedelta(minutes=5), timedelta(hours=30), timedelta(days=199, hours=20)):
        short, words = _age(age.total_seconds()), age_text(now - age, now)
        assert words.split()[0] == short[:-1], (short, words)
