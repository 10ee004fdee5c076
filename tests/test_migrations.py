"""Migration 4 turns the historic tables into the partitions of the analytics table: rows of
an existing installation survive it, and the keys still hold. Every applied migration is
recorded with its text's checksum; one whose text changed afterwards is refused at start-up."""

import re

import psycopg2
import pytest
from psycopg2 import sql

from source.db_functions import migrations
from source.db_functions.migrations import (
    MIGRATIONS,
    MigrationEdited,
    apply_migrations,
    checksum,
    commodity_definition,
)

OLD_ROW = """INSERT INTO {table} ("timestamp", metal, currency, unit, rate_price, rate_ask, source)
              VALUES ('2024-05-28 14:32:03.512+00', %s, 'USD', 'toz', %s, %s, 'api')"""


def test_rows_of_a_version_3_database_survive_the_move_to_partitions(database):
    conn = database.connect()
    try:
        assert apply_migrations(conn, up_to=3) == [1, 2, 3]
        with conn, conn.cursor() as cur:
            for metal, price in (("gold", 2355.97), ("silver", 31.52)):
                for table in (f"{metal}_historic", "commodities_price_data_analytics"):
                    cur.execute(OLD_ROW.format(table=table), (metal, price, price * 2))
        assert apply_migrations(conn) == [v for v, _, _ in MIGRATIONS if v > 3]
    finally:
        conn.close()
    assert database.query(
        "SELECT metal, rate_price, rate_ask FROM commodities_price_data_analytics ORDER BY 1"
    ) == [("gold", 2355.97, 4711.94), ("silver", 31.52, 63.04)]
    # Migration 7: rows of an existing installation are marked ok, and the views read them.
    assert database.query(
        "SELECT DISTINCT quality, quality_decision FROM commodities_price_data_analytics"
    ) == [("ok", "rule")]
    assert database.scalar("SELECT count(*) FROM daily_ohlc") == 2
    assert database.scalar("SELECT count(*) FROM gold_historic") == 1
    assert database.query(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'commodities_price_data_analytics'::regclass ORDER BY 1"""
    ) == [("gold_historic",), ("palladium_historic",), ("platinum_historic",), ("silver_historic",)]


MARKS_INDEX = "((quality <> 'ok'::text) OR (quality_decision <> 'rule'::text))"
COMMODITY_DEFINITION_V12 = """
    CREATE TABLE {table} PARTITION OF commodities_price_data_analytics
        (PRIMARY KEY ("timestamp")) FOR VALUES IN ({metal});
    CREATE INDEX ON {table} ("timestamp") WHERE quality <> 'ok';
"""


def test_one_index_per_partition_finds_marked_and_decided_quotes(database):
    """Migration 13 on a database of migration 12: the two partial indexes (one per partition,
    one on the parent) become one per partition, which both conditions use; a partition that
    has it already keeps just that one."""
    conn = database.connect()
    try:
        assert apply_migrations(conn, up_to=12)[-1] == 12
        with conn, conn.cursor() as cur:
            # copper as that release made a commodity's table; nickel as this one does
            cur.execute(
                sql.SQL(COMMODITY_DEFINITION_V12).format(
                    table=sql.Identifier("copper_historic"), metal=sql.Literal("copper")
                )
            )
            cur.execute(commodity_definition("nickel"))
            cur.execute(
                "CREATE INDEX operators_own ON silver_historic (rate_price) WHERE quality <> 'ok'"
            )
        with conn, conn.cursor() as cur:
            cur.execute(OLD_ROW.format(table="gold_historic"), ("gold", 1.0, 1.5))
            cur.execute(
                "UPDATE gold_historic SET quality = 'suspect', quality_decision = 'pending'"
            )
        assert apply_migrations(conn) == [13]
    finally:
        conn.close()
    indexes = database.query(
        """SELECT c.relname, pg_get_indexdef(i.indexrelid, 1, false),
                  pg_get_expr(i.indpred, i.indrelid)
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
            WHERE i.indpred IS NOT NULL ORDER BY 1, 2"""
    )
    assert indexes == [
        (f"{metal}_historic", '"timestamp"', MARKS_INDEX)
        for metal in ("copper", "gold", "nickel", "palladium", "platinum", "silver")
    ] + [("silver_historic", "rate_price", "(quality <> 'ok'::text)")]  # an operator's own
    for condition in ("quality <> 'ok'", "quality_decision <> 'rule'"):
        plan = database.query(
            f"""SET enable_seqscan = off;
                EXPLAIN SELECT "timestamp" FROM commodities_price_data_analytics
                 WHERE metal = 'gold' AND {condition}"""
        )
        assert re.search(r"\bgold_historic_timestamp_idx\b", str(plan)), plan
        found = f"SELECT count(*) FROM commodities_price_data_analytics WHERE {condition}"
        assert database.scalar(found) == 1


def test_keys_hold_across_both_tables(database):
    database.migrate()
    database.query(OLD_ROW.format(table="gold_historic"), ("gold", 1.0, 1.5))
    with pytest.raises(psycopg2.errors.UniqueViolation):  # same (metal, timestamp)
        database.query(OLD_ROW.format(table="commodities_price_data_analytics"), ("gold", 2.0, 2.5))
    with pytest.raises(psycopg2.errors.CheckViolation):  # a silver row in gold's table
        database.query(OLD_ROW.format(table="gold_historic"), ("silver", 2.0, 2.5))
    database.query(OLD_ROW.format(table="commodities_price_data_analytics"), ("silver", 3.0, 3.5))
    assert database.scalar("SELECT count(*) FROM silver_historic") == 1


def test_ledger_rows_of_an_older_database_take_the_job_names(database):
    """Migration 8: the hourly run was recorded as `run`, the CSV import as `import-csv`; both
    now carry their job's one name, as the metrics' `job` label does."""
    conn = database.connect()
    try:
        apply_migrations(conn, up_to=7)
        with conn, conn.cursor() as cur:
            for command in ("run", "import-csv", "backfill", "train", "quality accept"):
                cur.execute("INSERT INTO pipeline_runs (command) VALUES (%s)", (command,))
        assert apply_migrations(conn) == [v for v, _, _ in MIGRATIONS if v > 7]
    finally:
        conn.close()
    assert database.query("SELECT command FROM pipeline_runs ORDER BY run_id") == [
        ("pipeline",),
        ("import_csv",),
        ("backfill",),
        ("train",),
        ("quality accept",),
    ]


def test_each_applied_migration_is_recorded_with_its_checksum(database):
    database.migrate()
    assert database.query("SELECT version, checksum FROM schema_migrations ORDER BY 1") == [
        (version, checksum(text)) for version, _, text in MIGRATIONS
    ]


def test_a_database_of_the_release_before_checksums_gets_them_on_first_start(database):
    """Its rows were recorded without checksums: the first start records this release's, and
    from then on an edit is refused."""
    database.migrate(8)
    assert database.migrate() == [v for v, _, _ in MIGRATIONS if v > 8]
    assert database.scalar("SELECT count(*) FROM schema_migrations WHERE checksum IS NULL") == 0
    assert database.migrate() == []


def test_texts_are_fixed_strings_not_built_from_each_other():
    """No migration is another's text passed through a replace: each is its own literal."""
    texts = [text for _, _, text in MIGRATIONS]
    assert len(set(texts)) == len(texts)
    assert [version for version, _, _ in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_an_edited_applied_migration_is_refused_naming_it(database, monkeypatch):
    database.migrate()
    edited = [
        (v, n, t.replace("WHERE quality = 'ok'", "") if v == 7 else t) for v, n, t in MIGRATIONS
    ]
    edited.append((len(MIGRATIONS) + 1, "a later one, never run", "CREATE TABLE never_run ();"))
    monkeypatch.setattr(migrations, "MIGRATIONS", tuple(edited))
    with pytest.raises(MigrationEdited) as refused:
        database.migrate()
    assert "migration 7 (quality marks; analyst views read good rows only)" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert database.scalar("SELECT to_regclass('never_run') IS NULL")  # nothing ran


def test_main_refuses_to_start_on_an_edited_migration(run_main, database):
    """From the command line: one line naming the migration, exit 1, no run recorded."""
    database.migrate()
    database.query("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 5")
    done = run_main("--no-train")
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "migration 5 (analyst views daily_ohlc and price_ranges)" in done.stderr
    assert database.scalar("SELECT count(*) FROM pipeline_runs") == 0
