"""The real client, with its real retries, against a real HTTP server on 127.0.0.1."""

import socket
import time

import pytest

from source.metals_dev import (
    ApiError,
    AuthError,
    MalformedResponse,
    MetalsDevClient,
    QuotaExceeded,
    TransientError,
)
from tests.conftest import TEST_API_KEY


def client_for(url: str, landed: list | None = None, attempts: int = 4) -> MetalsDevClient:
    def land(raw):
        if landed is not None:
            landed.append(raw)

    return MetalsDevClient(
        url, TEST_API_KEY, timeout=2, max_attempts=attempts, backoff=0.01, land=land
    )


def test_transient_errors_are_retried_until_success(sandbox):
    sandbox.add_fault("gold", 503, b"upstream down", times=2)
    client = client_for(sandbox.base_url)
    fetched = client.spot("gold")
    assert fetched.payload["metal"] == "gold"
    assert client.request_count == 3


def test_retries_are_bounded(sandbox):
    sandbox.add_fault("gold", 500, b"boom")
    client = client_for(sandbox.base_url, attempts=3)
    with pytest.raises(TransientError, match=r"^gold: GET /metal/spot: HTTP 500$"):
        client.spot("gold")
    assert client.request_count == 3


def test_rate_limit_is_transient(sandbox):
    sandbox.add_fault(
        "gold", 429, {"status": "failure", "error_code": 1300, "error_message": "slow"}, times=1
    )
    client = client_for(sandbox.base_url)
    assert client.spot("gold").payload["status"] == "success"
    assert client.request_count == 2


def test_invalid_key_is_not_retried_and_stops_further_requests(sandbox):
    client = MetalsDevClient(sandbox.base_url, "wrong-key", max_attempts=4, backoff=0.01)
    with pytest.raises(AuthError, match="1101"):
        client.spot("gold")
    with pytest.raises(AuthError, match="not sent"):
        client.spot("silver")
    assert client.request_count == 1


def test_quota_exceeded_inside_http_200_stops_the_run(sandbox):
    sandbox.add_fault(
        "gold", 200, {"status": "failure", "error_code": 1203, "error_message": "Quota exceeded"}
    )
    client = client_for(sandbox.base_url)
    with pytest.raises(QuotaExceeded, match="1203"):
        client.spot("gold")
    with pytest.raises(QuotaExceeded, match="not sent"):
        client.spot("silver")
    assert client.request_count == 1


def test_non_json_body_is_landed_then_reported_with_metal_and_endpoint(sandbox):
    sandbox.add_fault("silver", 200, b"<html>maintenance</html>")
    landed = []
    with pytest.raises(
        MalformedResponse, match=r"^silver: GET /metal/spot: HTTP 200, body is not JSON"
    ):
        client_for(sandbox.base_url, landed).spot("silver")
    assert [raw.body for raw in landed] == [b"<html>maintenance</html>"]


def test_connection_errors_never_put_the_key_in_the_message():
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = client_for(f"http://127.0.0.1:{port}/v1", attempts=2)
    with pytest.raises(TransientError) as caught:
        client.spot("gold")
    assert TEST_API_KEY not in str(caught.value)
    assert client.request_count == 0  # refused: neither attempt reached the API


def test_the_key_is_sent_as_query_parameter_and_not_echoed_in_the_request_log(sandbox):
    client_for(sandbox.base_url).spot("platinum", "EUR")
    (request,) = sandbox.requests
    assert request["path"] == "/v1/metal/spot"
    assert request["params"] == {"metal": "platinum", "currency": "EUR"}


def test_retry_after_is_honoured(sandbox):
    sandbox.add_fault("gold", 429, b"slow down", times=1, headers={"Retry-After": "1"})
    client = client_for(sandbox.base_url)  # its own backoff is 0.01 s
    started = time.monotonic()
    client.spot("gold")
    assert time.monotonic() - started >= 0.95
    assert client.request_count == 2


def test_timeseries_speaks_the_documented_shape(sandbox):
    from source.transform import timeseries_to_frames

    fetched = client_for(sandbox.base_url).timeseries("2024-01-01", "2024-01-30")
    assert fetched.raw.endpoint == "/timeseries" and fetched.raw.metal == "all"
    frames = timeseries_to_frames(
        fetched.payload,
        metals=("gold", "silver"),
        endpoint="/timeseries",
        fetched_at=fetched.raw.fetched_at,
        raw_file=None,
    )
    assert len(frames["gold"]) == 30 and frames["gold"]["rate_ask"].isna().all()


def test_timeseries_longer_than_30_days_is_an_api_error(sandbox):
    with pytest.raises(ApiError, match="30 days"):
        client_for(sandbox.base_url).timeseries("2024-01-01", "2024-03-01")
