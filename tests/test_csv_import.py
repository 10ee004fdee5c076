"""import-csv: the layouts vendors ship, bad lines under both policies, idempotent re-imports,
all-or-nothing when the database fails half-way, and the real MT5 export."""

import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2.extensions
import pytest

from tests.conftest import REPO

HOURLY = REPO.parent / "shared" / "real" / "hourly"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def gold(database, columns: str = "rate_price, rate_ask, source") -> list[tuple]:
    return database.query(
        f"""SELECT to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), {columns}
              FROM gold_historic ORDER BY 1"""
    )


def importing(run_main, path: Path, *args: str, metal: str = "gold", timeout: float = 240):
    return run_main("import-csv", str(path), "--metal", metal, *args, timeout=timeout)


@pytest.mark.parametrize(
    ("text", "args"),
    [
        pytest.param(
            "time,price,ask\n2024-01-02T10:00:00Z,2050.5,2051\n2024-01-02T11:00:00Z,2051.25,\n",
            [],
            id="comma-iso-names-found",
        ),
        pytest.param(
            "Zeit;Kurs;Brief\n02.01.2024 11:00;2050.5;2051\n02.01.2024 12:00;2051.25;\n",
            [
                "--time-column",
                "Zeit",
                "--price-column",
                "Kurs",
                "--ask-column",
                "Brief",
                "--time-format",
                "%d.%m.%Y %H:%M",
                "--tz",
                "Europe/Zurich",
            ],
            id="semicolon-named-format-zone",
        ),
        pytest.param(
            "Date\tTime\tLast\tAsk\n2024-01-02\t10:00\t2050.5\t2051\n2024-01-02\t11:00\t2051.25\t\n",
            ["--date-column", "Date", "--time-column", "Time", "--price-column", "Last"],
            id="tab-split-date-and-time",
        ),
        pytest.param(
            "x|2024-01-02 10:00:00+00:00|1|2050.5|2051\nx|2024-01-02 11:00:00+00:00|2|2051.25|\n",
            [
                "--no-header",
                "--delimiter",
                "|",
                "--time-column",
                "2",
                "--price-column",
                "4",
                "--ask-column",
                "5",
            ],
            id="no-header-positions-explicit-delimiter",
        ),
        pytest.param(
            "timestamp,close\n2024-01-02 05:00,2050.5\n2024-01-02 06:00,2051.25\n",
            ["--tz", "America/New_York"],
            id="naive-local-times",
        ),
    ],
)
def test_each_supported_layout_lands_the_same_rows(run_main, database, tmp_path, text, args):
    result = importing(run_main, write(tmp_path / "prices.csv", text), *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar and no warnings without a terminal
    stored = gold(database, "rate_price, source")
    assert stored == [("2024-01-02 10:00", 2050.5, "csv"), ("2024-01-02 11:00", 2051.25, "csv")]
    if "Brief" in text or "ask" in text or "Ask" in text or "|" in text:
        assert [row[2] for row in gold(database)] == [2051.0, None]
    assert (
        database.scalar(
            "SELECT count(*) FROM commodities_price_data_analytics WHERE metal = 'gold'"
        )
        == 2
    )
    assert "2 row(s) read, 2 inserted" in result.stdout


def test_date_only_files_are_daily_prices(run_main, database, tmp_path):
    path = write(tmp_path / "daily.csv", "Date,Close\n2024-01-02,2050.5\n2024-01-03,2060\n")
    result = importing(run_main, path, "--date-column", "Date")
    assert result.returncode == 0, result.stderr
    assert [row[0] for row in gold(database)] == ["2024-01-02 00:00", "2024-01-03 00:00"]


BAD = """time,price
2024-01-02T10:00:00Z,2050.5
2024-01-02T11:00:00Z,abc

not-a-time,2051
2024-01-02T12:00:00Z,-3
2024-01-02T13:00:00Z,inf
2024-01-02T14:00:00Z,
2024-01-02T15:00:00Z,2052
"""


def test_bad_lines_are_skipped_counted_and_named_by_line_number(run_main, database, tmp_path):
    result = importing(run_main, write(tmp_path / "bad.csv", BAD))
    assert result.returncode == 3
    assert [row[1] for row in gold(database)] == [2050.5, 2052.0]
    assert "5 bad line(s) skipped" in result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("main.py import-csv: 5 bad line(s) skipped: line 3: price 'abc'")
    assert "line 5: time 'not-a-time' is not a valid time" in line
    log = run_main.log_text()
    for expected in [
        "bad.csv line 3: price 'abc' is not a number",
        "bad.csv line 5: time 'not-a-time' is not a valid time",
        "bad.csv line 6: price '-3' is not positive",
        "bad.csv line 7: price 'inf' is not finite",
        "bad.csv line 8: price is missing",
    ]:
        assert expected in log
    assert database.query("SELECT command, status, exit_code FROM pipeline_runs") == [
        ("import_csv", "partial", 3)
    ]


def test_strict_refuses_the_whole_file(run_main, database, tmp_path):
    result = importing(run_main, write(tmp_path / "bad.csv", BAD), "--strict")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "main.py: 5 bad line(s) in bad.csv, first line 3: price 'abc' is not a number; "
        "nothing loaded (--strict)"
    ]
    assert gold(database) == []


def test_a_reimport_adds_nothing_and_a_corrected_file_updates_in_place(
    run_main, database, tmp_path
):
    lines = [
        f"2024-01-{day:02d}T{hour:02d}:00:00Z,{2000 + day + hour / 100}"
        for day in range(1, 4)
        for hour in range(24)
    ]
    path = write(tmp_path / "prices.csv", "time,price\n" + "\n".join(lines) + "\n")
    assert importing(run_main, path).returncode == 0
    before = gold(database)
    assert len(before) == 72

    assert SET_ASIDE not in run_main.log_text()  # 72 rows: not worth taking the table for
    again = importing(run_main, path)
    assert again.returncode == 0 and "0 inserted, 0 updated, 72 unchanged" in again.stdout
    assert gold(database) == before

    lines[5] = lines[5].rsplit(",", 1)[0] + ",1999.5"  # the vendor corrected one price
    lines.append("2024-01-04T00:00:00Z,2004")
    corrected = importing(run_main, write(path, "time,price\n" + "\n".join(lines) + "\n"))
    assert "1 inserted, 1 updated, 71 unchanged" in corrected.stdout
    assert gold(database)[5][1] == 1999.5 and len(gold(database)) == 73


def test_repeated_times_and_unsorted_files_keep_the_last_line(run_main, database, tmp_path):
    text = "time,price\n2024-01-02T11:00:00Z,2\n2024-01-02T10:00:00Z,1\n2024-01-02T11:00:00Z,3\n"
    result = importing(run_main, write(tmp_path / "dups.csv", text))
    assert result.returncode == 0, result.stderr
    assert [row[1] for row in gold(database)] == [1.0, 3.0]
    assert "1 repeated time(s) (last line wins)" in result.stdout


def test_a_csv_never_replaces_a_full_quote_from_the_api(run_main, database, tmp_path):
    assert run_main("--no-train", "--metals", "gold").returncode == 0
    (stamp, price, ask, source) = database.query(
        """SELECT "timestamp", rate_price, rate_ask, source FROM gold_historic"""
    )[0]
    iso = stamp.isoformat()
    path = write(tmp_path / "clash.csv", f"time,price\n{iso},{price + 10}\n")
    result = importing(run_main, path)
    assert result.returncode == 0, result.stderr
    assert database.query("""SELECT rate_price, rate_ask, source FROM gold_historic""") == [
        (price, ask, "api")
    ]


def test_a_failure_half_way_leaves_the_tables_as_they_were(run_main, database, tmp_path):
    lines = [f"2024-01-01T00:00:00Z,{1}"] + [
        f"2024-{month:02d}-01T{hour:02d}:00:00Z,{1000 + hour}"
        for month in range(2, 13)
        for hour in range(24)
    ]
    path = write(tmp_path / "prices.csv", "time,price\n" + "\n".join(lines) + "\n")
    assert (
        importing(
            run_main,
            path.parent / write(path.parent / "one.csv", "time,price\n2023-01-01T00:00:00Z,5\n"),
        ).returncode
        == 0
    )
    database.query(  # the database refuses a row near the end of the file
        """CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW."timestamp" >= '2024-12-01 20:00+00' THEN
               RAISE EXCEPTION 'disk full'; END IF; RETURN NEW; END $$;
           CREATE TRIGGER refuse BEFORE INSERT ON gold_historic
           FOR EACH ROW EXECUTE FUNCTION refuse();"""
    )
    result = importing(run_main, path, "--chunk-rows", "50")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "main.py: prices.csv: nothing loaded, the database failed: disk full"
    ]
    assert gold(database) == [("2023-01-01 00:00", 5.0, None, "csv")]  # only the earlier file
    assert database.query("SELECT status FROM pipeline_runs ORDER BY run_id") == [
        ("success",),
        ("failed",),
    ]


def keys(database, table: str = "gold_historic") -> list[tuple]:
    """The table's constraints and indexes, by name and definition, as the catalogue has them."""
    return database.query(
        """SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = %s::regclass
           UNION ALL
           SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index
            WHERE indrelid = %s::regclass
           ORDER BY 1, 2""",
        (table, table),
    )


def hourly(path: Path, hours, price=lambda hour: 1000 + hour % 7 / 2) -> Path:
    start = datetime(2001, 1, 1, tzinfo=UTC)
    with path.open("w") as handle:
        handle.write("time,price\n")
        for hour in hours:
            handle.write(f"{(start + timedelta(hours=hour)).isoformat()},{price(hour)}\n")
    return path


SET_ASIDE = "gold_historic was empty: loaded without its key, which was built again in"
# A lock on a table that the import's connection waits for (granted: holds).
IMPORT_LOCK = """SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                  WHERE a.application_name = 'commodities-pipeline' AND l.granted = %s
                    AND l.relation = %s::regclass AND l.mode = %s"""


@contextmanager
def holding(database, statement: str, params=()):
    """Another session that ran `statement` and keeps its transaction open (its locks held)
    until the block ends, then commits."""
    conn = database.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
        yield
        conn.commit()
    finally:
        conn.close()


def start_import(run_main, path: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, str(REPO / "main.py"), "import-csv", str(path), "--metal", "gold"]
    return subprocess.Popen(
        [*command, *args],
        cwd=run_main.cwd,
        env=run_main.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_first_import_loads_without_the_key_and_ends_with_it(run_main, database, tmp_path):
    database.migrate()
    before = keys(database)
    assert any(name == "gold_historic_pkey" for name, _ in before)
    # A tick 5% off the price before it: marked by the rule after the key is back.
    path = hourly(
        tmp_path / "first.csv", range(30_000), lambda h: 1050 if h == 20_000 else 1000 + h % 7 / 2
    )
    result = importing(run_main, path, "--chunk-rows", "10000")
    assert result.returncode == 0, result.stderr
    assert "30,000 inserted" in result.stdout and "1 marked suspect" in result.stdout
    assert SET_ASIDE in run_main.log_text()
    assert keys(database) == before
    # Every column as an upsert would have written it (the COPY leaves some to defaults).
    assert database.query(
        """SELECT metal, currency, unit, status, rate_price, rate_ask, rate_bid, rate_high,
                  rate_low, rate_change, rate_change_percent, source, raw_file,
                  fetched_at IS NOT NULL, loaded_at IS NOT NULL, quality, quality_decision
             FROM gold_historic ORDER BY "timestamp" LIMIT 1"""
    ) == [
        ("gold", "USD", "toz", "success", 1000.0, None, None, None, None, None, None, "csv")
        + (str(path.resolve()), True, True, "ok", "rule")
    ]
    # The key is the one an overlapping import's upsert (ON CONFLICT) needs.
    later = hourly(tmp_path / "later.csv", range(29_990, 30_010), lambda hour: 999)
    again = importing(run_main, later)
    assert again.returncode == 0, again.stderr
    assert "10 inserted, 10 updated" in again.stdout
    assert database.scalar("SELECT count(*) FROM gold_historic") == 30_010


@pytest.mark.parametrize(
    ("hours", "rows", "set_aside"),
    [
        pytest.param(
            [*range(10_000, 20_000), *range(10_000)], 20_000, True, id="later-chunk-goes-back"
        ),
        pytest.param(
            [*range(10_000), *range(9_999, 19_999)], 19_999, True, id="chunk-repeats-a-time"
        ),
        # Staged from its first chunk on: nothing goes straight in, the table is not taken.
        pytest.param([*range(19_999, -1, -1)], 20_000, False, id="first-chunk-goes-back"),
    ],
)
def test_a_first_import_out_of_order_lands_every_row_and_ends_with_the_key(
    run_main, database, tmp_path, hours, rows, set_aside
):
    database.migrate()
    before = keys(database)
    result = importing(run_main, hourly(tmp_path / "p.csv", hours), "--chunk-rows", "10000")
    assert result.returncode == 0, result.stderr
    assert database.scalar("SELECT count(*) FROM gold_historic") == rows
    assert (SET_ASIDE in run_main.log_text()) is set_aside
    assert keys(database) == before


def test_a_first_import_waits_briefly_for_a_reader_then_keeps_the_key(run_main, database, tmp_path):
    database.migrate()
    before = keys(database)
    reader = database.connect()  # e.g. a report reading the analytics table
    try:
        with reader.cursor() as cur:
            cur.execute("SELECT count(*) FROM commodities_price_data_analytics")
        started = time.monotonic()
        path = hourly(tmp_path / "p.csv", range(20_000))
        result = importing(run_main, path, "--chunk-rows", "10000", timeout=60)
        waited = time.monotonic() - started
        assert reader.status == psycopg2.extensions.STATUS_IN_TRANSACTION  # still reading
    finally:
        reader.close()
    assert result.returncode == 0, result.stderr
    assert "20,000 inserted" in result.stdout
    log = run_main.log_text()
    assert "gold_historic is in use by another session: loading with its key in place" in log
    assert SET_ASIDE not in log
    assert 2 <= waited < 30  # LOCK_WAIT, and the import itself
    assert keys(database) == before


def test_rows_committed_while_a_first_import_waits_for_the_table_keep_the_key(
    run_main, database, tmp_path
):
    """Another session's load, committed while the import waits for the table: the table is
    no longer empty, so the key stays (dropped, the rows would have gone in twice)."""
    database.migrate()
    before = keys(database)
    start = datetime(2001, 1, 1, tzinfo=UTC)
    loading = """INSERT INTO gold_historic ("timestamp", metal, currency, unit, rate_price,
                     source) VALUES (%s, 'gold', 'USD', 'toz', 999, 'api')"""
    with holding(database, loading, (start + timedelta(hours=100),)):  # e.g. the hourly run
        process = start_import(run_main, hourly(tmp_path / "p.csv", range(20_000)))
        lock = (False, "gold_historic", "AccessExclusiveLock")
        wait_until(lambda: database.scalar(IMPORT_LOCK, lock) == 1)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "19,999 inserted" in stdout
    assert database.scalar("SELECT count(*) FROM gold_historic") == 20_000
    assert SET_ASIDE not in run_main.log_text()
    assert keys(database) == before


def test_after_a_first_import_takes_the_table_its_other_statements_wait_as_long_as_needed(
    run_main, database, tmp_path
):
    """The 2 s limit is for taking the table only: the quality marks written later wait for
    a lock held longer than that (here a session holding quality_events for 3 s)."""
    database.migrate()
    with holding(database, "LOCK TABLE quality_events IN SHARE MODE"):
        path = hourly(tmp_path / "p.csv", range(20_000), lambda h: 1050 if h == 15_000 else 1000)
        process = start_import(run_main, path)
        lock = (False, "quality_events", "RowExclusiveLock")
        wait_until(lambda: database.scalar(IMPORT_LOCK, lock) == 1)
        time.sleep(3)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "1 marked suspect" in stdout
    assert SET_ASIDE in run_main.log_text()


@pytest.mark.parametrize(
    "addition",
    [
        pytest.param(
            "CREATE INDEX ON commodities_price_data_analytics (rate_price)",
            id="an-index-of-the-analytics-table",
        ),
        pytest.param(
            "".join(
                f"ALTER TABLE {m}_historic DROP CONSTRAINT {m}_historic_pkey;"
                for m in ("gold", "silver", "platinum", "palladium")
            )
            + 'ALTER TABLE commodities_price_data_analytics ADD PRIMARY KEY (metal, "timestamp")',
            id="a-key-of-the-analytics-table",
        ),
    ],
)
def test_a_first_import_keeps_what_the_analytics_table_gives_its_partitions(
    run_main, database, tmp_path, addition
):
    """What a partition has from the analytics table cannot be dropped on its own: it stays."""
    database.migrate()
    database.query(addition)
    before = keys(database)
    result = importing(run_main, hourly(tmp_path / "p.csv", range(20_000)))
    assert result.returncode == 0, result.stderr
    assert database.scalar("SELECT count(*) FROM gold_historic") == 20_000
    assert keys(database) == before


@pytest.mark.parametrize("chunk_rows", ["2000", "20000"], ids=["keyed", "key-set-aside"])
def test_a_connection_killed_mid_import_loads_nothing(run_main, database, tmp_path, chunk_rows):
    path = tmp_path / "big.csv"
    with path.open("w") as handle:
        handle.write("time,price\n")
        start = datetime(2001, 1, 1, tzinfo=UTC)
        for i in range(300_000):
            handle.write(f"{(start + timedelta(minutes=i)).isoformat()},{1000 + i % 97}\n")
    database.migrate()
    before = keys(database)
    process = start_import(run_main, path, "--chunk-rows", chunk_rows)
    # Killed while it copies: with the key set aside, while it holds the table for that.
    held = "EXISTS" if chunk_rows == "20000" else "NOT EXISTS"
    deadline, killed = time.monotonic() + 60, False
    while not killed and time.monotonic() < deadline and process.poll() is None:
        killed = bool(
            database.query(
                f"""SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a
                WHERE a.application_name = 'commodities-pipeline' AND a.query LIKE 'COPY%%'
                  AND {held} (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted
                     AND l.relation = 'gold_historic'::regclass
                     AND l.mode = 'AccessExclusiveLock')"""
            )
        )
        time.sleep(0.02)
    _, stderr = process.communicate(timeout=120)
    assert killed, "the import finished before its connection could be killed"
    assert process.returncode == 1
    # Our one line is the last; psycopg2 itself may print the server's message before it.
    assert stderr.splitlines()[-1] in {
        f"main.py: big.csv: nothing loaded, the database failed: {reason}"
        for reason in (
            "terminating connection due to administrator command",
            "server closed the connection unexpectedly",
        )
    }
    assert database.scalar("SELECT count(*) FROM gold_historic") == 0
    assert keys(database) == before  # the dropped key came back with the rollback


def test_usage_errors_are_one_line_exit_2(run_main, tmp_path):
    path = write(tmp_path / "p.csv", "when,price\n2024-01-01,1\n")
    for args, message in [
        (["--metal", "tin"], "unknown metal 'tin'"),
        (["--metal", "gold", "--price-column", "close"], "no column 'close' for --price-column"),
        (["--metal", "gold"], "no time column found"),
        (["--metal", "gold", "--time-column", "when", "--tz", "Mars/Base"], "not a time zone"),
    ]:
        result = run_main("import-csv", str(path), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1 and message in result.stderr
    missing = run_main("import-csv", str(tmp_path / "nope.csv"), "--metal", "gold")
    assert missing.returncode == 2 and "no such file" in missing.stderr


@pytest.mark.skipif(not HOURLY.is_dir(), reason="../shared/real is not beside the checkout")
def test_the_real_mt5_export_imports_whole_and_reimports_as_unchanged(run_main, database):
    path = HOURLY / "XAUUSD_H1.csv"
    first = importing(run_main, path, "--price-column", "close", "--tz", "Etc/GMT-2")
    assert first.returncode == 0, first.stderr
    assert "51,189 row(s) read, 51,189 inserted" in first.stdout
    assert database.scalar("SELECT count(*) FROM gold_historic") == 51_189
    # The file's first bar, 2007-06-22 03:00 server time (UTC+2), is 01:00 UTC.
    assert gold(database, "rate_price")[0] == ("2007-06-22 01:00", 653.9)
    again = importing(run_main, path, "--price-column", "close", "--tz", "Etc/GMT-2")
    assert "0 inserted, 0 updated, 51,189 unchanged" in again.stdout
