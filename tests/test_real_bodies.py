"""Contract tests: every real Metals.Dev body in ../shared/real/metals_dev/ (see its
SOURCES.md), served from 127.0.0.1 and read through the real client and transform, is
handled as its status says."""

import json
from datetime import UTC, datetime

import pytest

from source.metals_dev import (
    AuthError,
    MalformedResponse,
    MetalsDevClient,
    QuotaExceeded,
    WrongUnits,
)
from source.transform import check_units, spot_to_frame, timeseries_to_frames
from tests.conftest import REPO, TEST_API_KEY

REAL = REPO.parent / "shared" / "real" / "metals_dev"
pytestmark = pytest.mark.skipif(
    not REAL.is_dir(), reason="../shared/real is not beside the checkout"
)
FETCHED = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)


def body(name: str) -> bytes:
    return (REAL / name).read_bytes()


def client(sandbox) -> MetalsDevClient:
    return MetalsDevClient(sandbox.base_url, TEST_API_KEY, timeout=2, max_attempts=1)


def frame_of(fetched, metal: str):
    return spot_to_frame(
        fetched.payload,
        metal=metal,
        endpoint="/metal/spot",
        source="api",
        fetched_at=FETCHED,
        raw_file=None,
    )


@pytest.mark.parametrize(
    ("name", "timestamp", "price", "change_percent"),
    [
        ("spot_gold_1.json", "2023-07-05 07:10:01.933000+00:00", 1923.76, None),
        ("spot_gold_2.json", "2025-11-19 01:44:01.865000+00:00", 4065.65, -0.04),
    ],
)
def test_real_spot_bodies_become_one_row(sandbox, name, timestamp, price, change_percent):
    sandbox.add_fault("gold", 200, body(name))
    frame = frame_of(client(sandbox).spot("gold"), "gold")
    check_units(frame, currency="USD", unit="toz", metal="gold", endpoint="/metal/spot")
    (row,) = frame.to_dict("records")
    assert str(row["timestamp"]) == timestamp and row["rate_price"] == price
    if change_percent is not None:
        assert row["rate_change_percent"] == change_percent
    assert all(isinstance(row[c], float) for c in ("rate_ask", "rate_bid", "rate_high"))


def test_copper_per_tonne_is_refused_not_mixed_in(sandbox):
    sandbox.add_fault("gold", 200, body("spot_copper_1.json"))
    fetched = client(sandbox).spot("gold")
    with pytest.raises(MalformedResponse, match=r"payload is for \['copper'\]"):
        frame_of(fetched, "gold")
    copper = frame_of(fetched, "copper")  # read as what it is, its unit is refused
    with pytest.raises(WrongUnits, match="unit 'mt' is not the configured UNIT 'toz'"):
        check_units(copper, currency="USD", unit="toz", metal="copper", endpoint="/metal/spot")


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("failure_1101.json", AuthError, "Unauthorized. The API Key provided is invalid."),
        ("failure_1203_1.json", QuotaExceeded, "Your plan quota for the month is exhausted."),
        ("failure_1203_2.json", QuotaExceeded, "including the grace usage is exceeded"),
    ],
)
def test_real_failure_bodies_raise_their_error(sandbox, name, error, message):
    sandbox.add_fault("gold", 200, body(name))
    with pytest.raises(error, match=message):
        client(sandbox).spot("gold")


def test_real_timeseries_bodies_load_what_is_there(sandbox):
    for name, expected in [
        ("timeseries_1.json", {"gold": 10, "silver": 10, "platinum": 10, "palladium": 10}),
        ("timeseries_2.json", {"gold": 2, "silver": 2, "palladium": 1}),
    ]:
        sandbox.faults.clear()
        sandbox.add_fault("all", 200, body(name))
        fetched = client(sandbox).timeseries("2023-01-01", "2023-01-10")
        frames = timeseries_to_frames(
            fetched.payload,
            metals=("gold", "silver", "platinum", "palladium"),
            endpoint="/timeseries",
            fetched_at=FETCHED,
            raw_file=None,
        )
        assert {m: len(f) for m, f in frames.items()} == expected, name
        for frame in frames.values():
            assert frame["rate_ask"].isna().all() and (frame["rate_price"] > 0).all()


def test_the_real_usage_body_outside_v1(sandbox):
    sandbox.add_fault("all", 200, body("usage_1.json"))
    usage = client(sandbox).usage()
    assert (usage["plan"], usage["total"], usage["used"], usage["remaining"]) == (
        "Platinum",
        50000,
        1990,
        48010,
    )
    assert sandbox.requests[-1]["path"] == "/usage"


@pytest.mark.parametrize(
    "name",
    [
        "latest_1.json",
        "latest_2.json",
        "latest_3.json",
        "latest_4.json",
        "latest_5.json",
        "currencies_1.json",
        "authority_lbma_1.json",
        "authority_mcx_1.json",
    ],
)
def test_bodies_of_endpoints_the_pipeline_does_not_use_still_parse(name):
    from source.metals_dev import parse_payload

    payload = parse_payload(body(name), metal="all", endpoint="/other")
    assert payload["status"] == "success" and json.loads(body(name)) == payload
