"""Backfill from /timeseries: window planning, idempotent reruns, real bodies, API errors, and
what training makes of daily rows followed by hourly ones."""

import json
from datetime import date, timedelta

import pandas as pd
import pytest

from source.backfill import BackfillUsageError, Window, plan_windows, resolve_range
from source.ml.sampling import DAILY, HOURLY, training_rows
from source.sandbox import hour_of
from tests.conftest import REPO

REAL = REPO.parent / "shared" / "real" / "metals_dev"
METALS = ("gold", "silver", "platinum", "palladium")
QUOTA = {
    "status": "failure",
    "error_code": 1203,
    "error_message": "Your plan quota for the month is exhausted.",
}


def days(first: str, count: int) -> list[date]:
    start = date.fromisoformat(first)
    return [start + timedelta(days=i) for i in range(count)]


def timeseries_requests(sandbox) -> list[tuple[str, str]]:
    return [
        (r["params"]["start_date"], r["params"]["end_date"])
        for r in sandbox.requests
        if r["path"] == "/v1/timeseries"
    ]


def rows(database, metal: str) -> int:
    return database.scalar(f"SELECT count(*) FROM {metal}_historic")


# -- planning (pure) --------------------------------------------------------------------------


def test_91_days_make_three_full_windows_and_one_day():
    windows = plan_windows(days("2024-01-01", 91))
    assert windows == [
        Window(date(2024, 1, 1), date(2024, 1, 30)),
        Window(date(2024, 1, 31), date(2024, 2, 29)),
        Window(date(2024, 3, 1), date(2024, 3, 30)),
        Window(date(2024, 3, 31), date(2024, 3, 31)),
    ]
    assert all(w.days <= 30 for w in windows)


def test_only_missing_days_are_planned_in_consecutive_runs():
    wanted = days("2024-01-01", 5) + days("2024-01-20", 3)
    assert plan_windows(wanted) == [
        Window(date(2024, 1, 1), date(2024, 1, 5)),
        Window(date(2024, 1, 20), date(2024, 1, 22)),
    ]


def test_end_defaults_to_yesterday_utc_and_bad_ranges_are_refused():
    today = date(2026, 11, 28)
    assert resolve_range("2026-11-01", None, today) == (date(2026, 11, 1), date(2026, 11, 27))
    for start, end, message in [
        ("2026-13-01", None, "not a date"),
        ("2026-11-29", None, "in the future"),
        ("2026-11-10", "2026-11-01", "is after --end"),
        ("2026-11-01", "2026-12-01", "--end 2026-12-01 is in the future"),
    ]:
        with pytest.raises(BackfillUsageError, match=message):
            resolve_range(start, end, today)


# -- end to end against the sandbox -----------------------------------------------------------


def test_backfill_fetches_one_window_per_30_days_and_lands_the_right_values(
    run_main, database, sandbox
):
    result = run_main("backfill", "--start", "2024-01-01", "--end", "2024-03-31")
    assert result.returncode == 0, result.stderr
    assert sorted(timeseries_requests(sandbox)) == [  # fetched concurrently, in any order
        ("2024-01-01", "2024-01-30"),
        ("2024-01-31", "2024-02-29"),
        ("2024-03-01", "2024-03-30"),
        ("2024-03-31", "2024-03-31"),
    ]
    assert {m: rows(database, m) for m in METALS} == dict.fromkeys(METALS, 91)
    assert "4/4 window(s) loaded" in result.stdout and "4 API request(s)" in result.stdout
    assert "364 row(s) inserted" in result.stdout

    for day in (date(2024, 1, 1), date(2024, 2, 15), date(2024, 3, 31)):
        expected = sandbox.prices.quote("gold", hour_of(day))["rate"]["price"]
        stored = database.query(
            "SELECT rate_price, rate_ask, source FROM gold_historic "
            "WHERE \"timestamp\" = %s::date::timestamp AT TIME ZONE 'UTC'",
            (day,),
        )
        assert stored == [(expected, None, "backfill")]
    assert database.query("SELECT command, status, api_requests FROM pipeline_runs") == [
        ("backfill", "success", 4)
    ]
    landed = sorted((run_main.cwd / "source" / "data" / "loaded").rglob("*_timeseries_all.json"))
    assert len(landed) == 4 and not list((run_main.cwd / "source/data/incoming").glob("*"))


def test_a_rerun_makes_no_request_and_force_refetches_without_duplicates(
    run_main, database, sandbox
):
    assert run_main("backfill", "--start", "2024-01-01", "--end", "2024-03-31").returncode == 0
    sandbox.requests.clear()

    again = run_main("backfill", "--start", "2024-01-01", "--end", "2024-03-31")
    assert again.returncode == 0, again.stderr
    assert timeseries_requests(sandbox) == []
    assert "4 already present" in again.stdout and "0 API request(s)" in again.stdout
    assert rows(database, "silver") == 91

    forced = run_main("backfill", "--start", "2024-01-01", "--end", "2024-03-31", "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(timeseries_requests(sandbox)) == 4
    assert rows(database, "silver") == 91
    assert database.scalar("SELECT count(*) FROM commodities_price_data_analytics") == 4 * 91
    assert database.scalar("SELECT sum(api_requests) FROM pipeline_runs") == 8


def test_extending_the_range_fetches_only_the_new_days(run_main, sandbox):
    assert run_main("backfill", "--start", "2024-01-01", "--end", "2024-01-20").returncode == 0
    sandbox.requests.clear()
    assert run_main("backfill", "--start", "2024-01-01", "--end", "2024-02-10").returncode == 0
    assert timeseries_requests(sandbox) == [("2024-01-21", "2024-02-10")]


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real is not beside the checkout")
def test_a_real_body_with_a_metal_missing_on_a_day_loads_what_is_there(run_main, database, sandbox):
    body = (REAL / "timeseries_2.json").read_bytes()  # palladium absent on 2017-01-02
    sandbox.add_fault("all", 200, body)
    result = run_main("backfill", "--start", "2017-01-01", "--end", "2017-01-02")
    assert result.returncode == 0, result.stderr
    stored = {m: rows(database, m) for m in METALS}
    expected = {"gold": 0, "silver": 0, "platinum": 0, "palladium": 0}
    for day in json.loads(body)["rates"].values():
        for metal in day["metals"]:
            if metal in expected:
                expected[metal] += 1
    assert stored == expected and stored["gold"] == 2 and stored["palladium"] == 1
    # The API answered for both days: a rerun asks again for nothing.
    sandbox.requests.clear()
    assert run_main("backfill", "--start", "2017-01-01", "--end", "2017-01-02").returncode == 0
    assert timeseries_requests(sandbox) == []


def test_quota_exhausted_stops_the_backfill_and_keeps_loaded_windows(run_main, database, sandbox):
    assert run_main("backfill", "--start", "2024-01-01", "--end", "2024-01-30").returncode == 0
    sandbox.add_fault("all", 200, QUOTA)
    result = run_main("backfill", "--start", "2024-01-01", "--end", "2024-04-30")
    assert result.returncode == 1
    assert "Metals.Dev monthly quota exceeded (error 1203)" in run_main.log_text()
    # stderr (what cron mails): the quota line and the summary, not a line per window.
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and "Metals.Dev monthly quota exceeded (error 1203)" in lines[0]
    assert lines[1] == "main.py backfill: 4 window(s) failed; see the log"
    assert rows(database, "gold") == 30  # January stays loaded
    rejected = list((run_main.cwd / "source" / "data" / "rejected").rglob("*.json"))
    assert rejected and b"1203" in rejected[0].read_bytes()
    # After 1203 no further request is sent: at most the ones already in flight.
    assert len(timeseries_requests(sandbox)) <= 1 + 4


def test_an_invalid_key_is_a_configuration_error(run_main, database):
    result = run_main("backfill", "--start", "2024-01-01", METALS_DEV_API_KEY="wrong-key-123")
    assert result.returncode == 2
    assert "Metals.Dev rejected the API key (error 1101)" in run_main.log_text()
    assert rows(database, "gold") == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2024-02-30"], "--start '2024-02-30' is not a date like 2024-01-31"),
        (["--start", "2024-03-01", "--end", "2024-02-01"], "--start 2024-03-01 is after --end"),
        (["--start", "2999-01-01"], "--start 2999-01-01 is in the future"),
    ],
)
def test_bad_dates_exit_2_with_one_line_and_no_request(run_main, sandbox, args, message):
    result = run_main("backfill", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert sandbox.requests == []


def test_a_window_that_failed_to_load_is_replayed_not_refetched(run_main, database, sandbox):
    assert run_main("backfill", "--start", "2024-01-01", "--end", "2024-01-02").returncode == 0
    database.query(
        """CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'database trouble'; END $$;
           CREATE TRIGGER refuse BEFORE INSERT ON gold_historic
           FOR EACH ROW EXECUTE FUNCTION refuse();"""
    )
    failed = run_main("backfill", "--start", "2024-01-03", "--end", "2024-01-10")
    assert failed.returncode == 1
    assert rows(database, "silver") == 2  # the window is all or nothing
    assert len(list((run_main.cwd / "source/data/incoming").glob("*_timeseries_all.json"))) == 1

    database.query("DROP TRIGGER refuse ON gold_historic")
    sandbox.requests.clear()
    replayed = run_main("backfill", "--start", "2024-01-03", "--end", "2024-01-10")
    assert replayed.returncode == 0, replayed.stderr
    assert timeseries_requests(sandbox) == []  # the landed response was enough
    assert rows(database, "gold") == 10 and rows(database, "silver") == 10
    assert "replaying" in run_main.log_text()


# -- training on daily rows followed by hourly ones ---------------------------------------------


def mixed_history(daily: int, hourly: int) -> pd.DataFrame:
    stamps = pd.date_range("2022-01-01", periods=daily, freq="D", tz="UTC")
    stamps = stamps.append(
        pd.date_range(stamps[-1] + pd.Timedelta(hours=7), periods=hourly, freq="h", tz="UTC")
    )
    return pd.DataFrame({"timestamp": stamps, "rate_price": range(1, len(stamps) + 1)})


def test_enough_trailing_hourly_rows_train_hourly_on_them_alone():
    chosen, info = training_rows(mixed_history(730, 1000), min_rows=400)
    assert info["frequency"] == HOURLY and info["rows_available"] == 1730
    assert len(chosen) <= 1001 and chosen["timestamp"].diff().max() <= pd.Timedelta(hours=7)


def test_too_few_hourly_rows_resample_everything_to_daily():
    chosen, info = training_rows(mixed_history(730, 48), min_rows=400)
    assert info["frequency"] == DAILY
    assert chosen["timestamp"].dt.floor("D").is_unique
    assert len(chosen) == 730 + 2  # the hourly rows add their last day and the next one
    assert chosen["rate_price"].iloc[-1] == 730 + 48  # a day is its last observation


def test_weekend_gaps_do_not_cut_an_hourly_series():
    stamps = pd.date_range("2024-01-01", periods=24 * 60, freq="h", tz="UTC")
    stamps = stamps[stamps.day_of_week < 5]
    frame = pd.DataFrame({"timestamp": stamps, "rate_price": 1.0})
    chosen, info = training_rows(frame, min_rows=400)
    assert info["frequency"] == HOURLY and len(chosen) == len(frame)


def test_models_after_a_backfill_and_one_hourly_run_are_daily(run_main, database):
    backfill = run_main("backfill", "--start", "2023-01-01", "--end", "2024-12-31")
    assert backfill.returncode == 0, backfill.stderr
    hourly = run_main("--metals", "gold")
    assert hourly.returncode == 0, hourly.stderr
    metadata = json.loads(
        (run_main.cwd / "trained_models" / "model_rate_price" / "gold.json").read_text()
    )
    assert metadata["frequency"] == "daily" and metadata["horizon_unit"] == "days"
    assert metadata["sampling"]["rows_available"] == 731 + 1
    assert metadata["rows_used"] == 732  # 731 backfilled days + the day of the live quote
    assert database.query("SELECT DISTINCT frequency FROM price_predictions") == [("daily",)]
    # rate_ask exists for the live quote only: that model is skipped, not trained on nothing.
    assert not (run_main.cwd / "trained_models" / "model_rate_ask" / "gold.json").exists()
