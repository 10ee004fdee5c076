"""Any commodity the API quotes, by configuration, on the database a team already has: copper
(quoted per tonne) beside gold (per troy ounce), each in its own unit."""

import json
import re

import pytest

from source.config import SPOT_UNITS
from source.db_functions.connection import quote_identifier
from source.db_functions.migrations import apply_migrations, commodity_definition, historic_sql
from tests.conftest import REPO

FIVE = "gold,silver,platinum,palladium,copper"


def _release_before(database) -> None:
    """A database made by the release before commodities as data: migrations 1-8."""
    conn = database.connect()
    try:
        assert apply_migrations(conn, up_to=8) == list(range(1, 9))
    finally:
        conn.close()


def test_copper_on_an_existing_database_gets_its_table_and_loads_in_tonnes(
    run_main, database, sandbox
):
    _release_before(database)
    assert run_main("--no-train").returncode == 0  # the four, as before
    sandbox.hour_offset += 1
    done = run_main("--no-train", METALS=FIVE)
    assert done.returncode == 0, done.stderr
    assert database.query(
        "SELECT metal, unit, count(*) FROM commodities_price_data_analytics "
        "GROUP BY metal, unit ORDER BY metal"
    ) == [
        ("copper", "mt", 1),
        ("gold", "toz", 2),
        ("palladium", "toz", 2),
        ("platinum", "toz", 2),
        ("silver", "toz", 2),
    ]
    assert database.scalar("SELECT count(*) FROM copper_historic") == 1
    assert database.scalar("SELECT checksum IS NOT NULL FROM commodities WHERE metal = 'copper'")
    assert database.scalar("SELECT count(*) FROM price_ranges WHERE metal = 'copper'") == 4
    partial = "SELECT count(*) FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s"
    marks = "%WHERE ((quality <> 'ok'::text) OR (quality_decision <> 'rule'::text))"
    assert database.scalar(partial, ("copper_historic", marks)) == 1
    # Status says each commodity's unit.
    status = run_main("status", METALS=FIVE)
    assert "PRICES (per commodity)" in status.stdout
    copper = next(line for line in status.stdout.splitlines() if line.startswith("  copper"))
    assert copper.endswith("USD/mt")
    facts = json.loads(run_main("status", "--json", METALS=FIVE).stdout)
    units = {m["metal"]: m["unit"] for m in facts["metals"]}
    assert units == {
        "gold": "toz",
        "silver": "toz",
        "platinum": "toz",
        "palladium": "toz",
        "copper": "mt",
    }


def test_a_commodity_taken_out_of_metals_is_not_fetched_and_keeps_its_rows(
    run_main, database, sandbox
):
    assert run_main("--no-train", METALS=FIVE).returncode == 0
    sandbox.requests.clear()
    sandbox.hour_offset += 1
    assert run_main("--no-train", METALS="gold").returncode == 0
    asked = {r["params"].get("metal") for r in sandbox.requests if r["path"].endswith("/spot")}
    assert asked == {"gold"}
    assert database.scalar("SELECT count(*) FROM copper_historic") == 1


def test_an_unknown_name_is_refused_before_any_request(run_main, sandbox):
    done = run_main("--no-train", METALS="gold,tin")
    assert done.returncode == 2
    assert "unknown metal(s) tin; choose from the API's spot metals" in done.stderr
    assert sandbox.requests == []


def test_a_quote_in_another_unit_is_refused_for_that_commodity_only(run_main, database, sandbox):
    assert run_main("--no-train", METALS=FIVE).returncode == 0
    sandbox.hour_offset += 1
    in_ounces = sandbox.prices.quote("copper", sandbox.current_hour()) | {"unit": "toz"}
    sandbox.add_fault("copper", 200, in_ounces)
    done = run_main("--no-train", METALS=FIVE)
    assert done.returncode == 3, done.stderr  # partial: the others loaded
    assert "copper" in done.stderr
    assert database.scalar("SELECT count(*) FROM copper_historic") == 1
    assert database.scalar("SELECT count(*) FROM gold_historic") == 2
    assert database.query("SELECT DISTINCT unit FROM copper_historic") == [("mt",)]


def assert_copper_per_tonne(database) -> None:
    """Copper's daily (backfilled) and spot prices are both per tonne, side by side."""
    spot, daily = database.query(
        "SELECT max(rate_price) FILTER (WHERE source = 'api'), "
        "max(rate_price) FILTER (WHERE source = 'backfill') FROM copper_historic"
    )[0]
    assert database.query("SELECT DISTINCT unit FROM copper_historic") == [("mt",)]
    assert 0.8 < daily / spot < 1.25  # both per tonne (per ounce it would be 1/32150th)


def test_backfill_converts_ounce_prices_to_the_unit_copper_is_kept_in(run_main, database, sandbox):
    """/timeseries quotes every metal per ounce; copper's rows are per tonne since its first
    spot quote, so its daily prices are converted, not mixed in."""
    assert SPOT_UNITS["copper"] == "mt"
    assert run_main("--no-train", METALS=FIVE).returncode == 0
    done = run_main("backfill", "--start", "2026-02-01", "--end", "2026-02-03", METALS=FIVE)
    assert done.returncode == 0, done.stderr
    assert_copper_per_tonne(database)


def test_a_backfill_before_the_first_hourly_run_keeps_copper_per_tonne(
    run_main, database, sandbox
):
    """With no copper rows yet the backfill's ounce prices go in per tonne, the unit its spot
    quotes come in, so the first hourly run's quote loads beside them rather than refused."""
    done = run_main("backfill", "--start", "2026-02-01", "--end", "2026-02-03", METALS=FIVE)
    assert done.returncode == 0, done.stderr
    hourly = run_main("--no-train", METALS=FIVE)
    assert hourly.returncode == 0, hourly.stderr
    assert_copper_per_tonne(database)
    assert database.query("SELECT DISTINCT unit FROM gold_historic") == [("toz",)]


def test_a_commodity_name_reaches_sql_only_quoted(database):
    assert historic_sql("copper") == '"copper_historic"'
    hostile = 'x"; DROP TABLE gold_historic; --'
    assert quote_identifier(hostile) == '"x""; DROP TABLE gold_historic; --"'
    conn = database.connect()
    try:  # the quoting is PostgreSQL's own (quote_ident), not an approximation of it
        with conn, conn.cursor() as cur:
            for name in ('copper_historic', 'a"b', "Gold", "x'; --", "ü"):
                cur.execute("SELECT quote_ident(%s)", (name,))
                assert quote_identifier(name) in (cur.fetchone()[0], f'"{name}"')
    finally:
        conn.close()
    with pytest.raises(ValueError, match="unknown metal"):
        historic_sql('gold_historic; DROP TABLE x')
    assert "Literal('copper')" in repr(commodity_definition("copper"))


def test_no_module_but_migrations_spells_a_historic_table_name():
    """Every statement on a commodity's table takes its name from historic_sql."""
    spelled = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "source").rglob("*.py"))
        if path.name != "migrations.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\{[^}]*\}_historic|_historic['\"]\s*%|\+ *['\"]_historic", line)
    ]
    assert spelled == []


def test_done_when_five_metals_run_end_to_end_on_a_database_of_the_release_before(
    run_main, database, sandbox
):
    """Hourly runs, backfill, status, report, train, backup and restore with copper in mt
    beside gold in toz, on a database made before commodities were data."""
    _release_before(database)
    assert run_main("--no-train").returncode == 0
    for _ in range(3):
        sandbox.hour_offset += 1
        assert run_main("--no-train", METALS=FIVE).returncode == 0
    backfill = run_main("backfill", "--start", "2026-01-01", "--end", "2026-03-01", METALS=FIVE)
    assert backfill.returncode == 0, backfill.stderr
    trained = run_main("train", METALS=FIVE)
    assert trained.returncode == 0, trained.stderr
    report = run_main("report", "--out", "out", METALS=FIVE)
    assert report.returncode == 0, report.stderr
    page = (run_main.cwd / "out" / "index.html").read_text()
    assert "USD/mt" in page and "USD/toz" in page
    assert list((run_main.cwd / "out").glob("*copper*"))
    before = database.query("SELECT metal, unit, count(*) FROM copper_historic GROUP BY 1, 2")
    created = run_main(script="backups_main.py", METALS=FIVE)
    assert created.returncode == 0, created.stderr
    database.query("DELETE FROM copper_historic")
    restored = run_main("restore", "latest", script="backups_main.py", METALS=FIVE)
    assert restored.returncode == 0, restored.stderr
    after = database.query("SELECT metal, unit, count(*) FROM copper_historic GROUP BY 1, 2")
    assert after == before and before[0][:2] == ("copper", "mt")
    assert database.query("SELECT DISTINCT unit FROM gold_historic") == [("toz",)]


def test_status_right_after_a_metal_is_added_says_it_has_no_prices_yet(run_main, database):
    assert run_main("--no-train").returncode == 0
    status = run_main("status", METALS=FIVE)
    assert status.returncode in (0, 1), status.stderr
    assert "  copper     no prices yet" in status.stdout
    for reader in (["report"], ["quality"], ["status", "--json"]):  # readers make nothing
        assert run_main(*reader, METALS=FIVE).returncode in (0, 1), reader
    assert database.scalar("SELECT to_regclass('copper_historic') IS NULL")
    assert database.scalar("SELECT count(*) FROM commodities WHERE metal = 'copper'") == 0


def test_a_table_without_its_commodities_row_is_recorded_not_made_again(database):
    from source.db_functions.migrations import add_commodities

    conn = database.connect()
    try:
        apply_migrations(conn)
        assert add_commodities(conn, ["gold", "copper"]) == ["copper"]
        assert add_commodities(conn, ["copper"]) == []
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM commodities WHERE metal = 'copper'")
        assert add_commodities(conn, ["copper"]) == ["copper"]
    finally:
        conn.close()
    assert database.scalar("SELECT count(*) FROM commodities WHERE metal = 'copper'") == 1
