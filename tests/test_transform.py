import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from source.metals_dev import ApiError, AuthError, MalformedResponse, parse_payload
from source.transform import (
    HISTORIC_COLUMNS,
    spot_to_frame,
    timeseries_to_frames,
    to_snake_case,
)

FIXTURES = Path(__file__).parent / "fixtures"
FETCHED = datetime(2024, 5, 28, 14, 33, tzinfo=UTC)


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def spot(payload: dict) -> pd.DataFrame:
    return spot_to_frame(
        payload,
        metal="gold",
        endpoint="/metal/spot",
        source="api",
        fetched_at=FETCHED,
        raw_file="x",
    )


@pytest.mark.parametrize(
    ("raw", "snake"),
    [
        ("rate.price", "rate_price"),
        ("rate.change_percent", "rate_change_percent"),
        ("rate.changePercent", "rate_change_percent"),
        ("Rate Price", "rate_price"),
    ],
)
def test_to_snake_case(raw, snake):
    assert to_snake_case(raw) == snake


def test_spot_payload_becomes_one_snake_case_row_keyed_by_api_timestamp():
    frame = spot(load("spot_gold.json"))
    assert list(frame.columns) == HISTORIC_COLUMNS
    row = frame.iloc[0]
    assert row["timestamp"] == pd.Timestamp("2024-05-28T14:32:03.512Z")
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert (row["rate_price"], row["rate_ask"], row["rate_bid"]) == (2355.97, 2356.53, 2355.41)
    assert (row["rate_change"], row["rate_change_percent"]) == (7.68, 0.33)
    assert (row["metal"], row["currency"], row["unit"], row["source"]) == (
        "gold",
        "USD",
        "toz",
        "api",
    )


def test_missing_price_is_a_malformed_payload_naming_metal_and_endpoint():
    payload = load("spot_gold.json")
    del payload["rate"]["price"]
    with pytest.raises(
        MalformedResponse, match=r"^gold: GET /metal/spot: missing field 'rate_price'"
    ):
        spot(payload)


def test_unparseable_timestamp_is_malformed():
    payload = load("spot_gold.json") | {"timestamp": "yesterday"}
    with pytest.raises(MalformedResponse, match="timestamp"):
        spot(payload)


def test_payload_for_another_metal_is_rejected():
    payload = load("spot_gold.json") | {"metal": "silver"}
    with pytest.raises(MalformedResponse, match="silver"):
        spot(payload)


def test_failure_inside_http_200_is_an_api_error():
    body = (FIXTURES / "failure_1101.json").read_bytes()
    with pytest.raises(AuthError, match="1101") as caught:
        parse_payload(body, metal="gold", endpoint="/metal/spot", http_status=200)
    assert caught.value.code == 1101


@pytest.mark.parametrize("body", [b"<html>Bad gateway</html>", b"[1, 2]", b'{"status": "maybe"}'])
def test_bodies_that_are_not_success_json_are_malformed(body):
    with pytest.raises(MalformedResponse, match=r"^gold: GET /metal/spot: HTTP 200"):
        parse_payload(body, metal="gold", endpoint="/metal/spot")


def test_error_status_without_failure_body_is_an_api_error():
    with pytest.raises(ApiError, match="HTTP 404"):
        parse_payload(b"{}", metal="gold", endpoint="/metal/spot", http_status=404)


def test_timeseries_gives_one_daily_frame_per_metal_with_price_only():
    frames = timeseries_to_frames(
        load("timeseries.json"),
        metals=("gold", "silver"),
        endpoint="/timeseries",
        fetched_at=FETCHED,
        raw_file=None,
    )
    assert set(frames) == {"gold", "silver"}
    gold = frames["gold"]
    assert list(gold["rate_price"]) == [2062.4, 2070.1]
    assert list(gold["timestamp"]) == [
        pd.Timestamp("2024-01-01", tz="UTC"),
        pd.Timestamp("2024-01-02", tz="UTC"),
    ]
    assert gold["rate_ask"].isna().all()
    assert set(gold["source"]) == {"backfill"}
