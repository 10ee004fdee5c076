"""The only module that speaks HTTP to the Metals.Dev API.

Every response body is handed to a landing callback (raw JSON on disk) before it is parsed.
Transient failures (connection errors, timeouts, HTTP 429 and 5xx) are retried with
exponential backoff and jitter; API errors are not. The API key travels as a query
parameter, so no URL is ever put into a message. Its errors (MetalsDevError and kin) are
defined in source.errors, below the transforms that raise some of them, and imported from
here by the client's callers.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import requests
import urllib3
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_when_event_set,
)

from source.config import DEFAULT_MAX_RESPONSE_BYTES
from source.errors import (
    ApiError,
    AuthError,
    MalformedResponse,
    MetalsDevError,
    QuotaExceeded,
    ResponseTooLarge,
    TransientError,
    WrongUnits,  # noqa: F401 (raised by the transforms, caught by the client's callers)
)
from source.shutdown import STOP_REQUESTED

log = logging.getLogger(__name__)

ERROR_INVALID_KEY = 1101
ERROR_QUOTA_EXCEEDED = 1203
MAX_RETRY_AFTER_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 30.0
MAX_JSON_DEPTH = 64  # real bodies nest 3 deep
_CHUNK_BYTES = 64 << 10  # read at a time while a body streams in


@dataclass(frozen=True)
class RawResponse:
    """One HTTP response exactly as received, with what is needed to replay it later."""

    kind: str  # "spot", "timeseries", ...: the first word of the landed file's name
    metal: str  # the metal asked for, or "all"
    endpoint: str
    http_status: int
    body: bytes
    fetched_at: datetime


@dataclass(frozen=True)
class Fetched:
    raw: RawResponse
    payload: dict
    landed_path: Path | None


def parse_payload(body: bytes, *, metal: str, endpoint: str, http_status: int = 200) -> dict:
    """Decode a response body and raise the matching error unless it is a success payload.

    Whoever wrote the body, only JSON nested at most MAX_JSON_DEPTH deep with finite numbers
    gets through; anything else is a MalformedResponse, never another exception."""
    payload = _decode_json(body, metal=metal, endpoint=endpoint, http_status=http_status)
    if not isinstance(payload, dict):
        raise MalformedResponse(metal, endpoint, f"HTTP {http_status}, JSON body is not an object")
    status = payload.get("status")
    if status == "failure" or (status is None and http_status >= 400):
        code = payload.get("error_code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        message = str(payload.get("error_message") or f"HTTP {http_status}")
        classes: dict[int | None, type[ApiError]] = {
            ERROR_INVALID_KEY: AuthError,
            ERROR_QUOTA_EXCEEDED: QuotaExceeded,
        }
        error_class = classes.get(code, ApiError)
        raise error_class(metal, endpoint, code, message)
    if status != "success":
        raise MalformedResponse(
            metal, endpoint, f"HTTP {http_status}, unexpected status {status!r}"
        )
    return payload


class _NotFinite(ValueError):
    """A number JSON itself does not allow (NaN, Infinity) or that overflows a float."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf
        raise _NotFinite(text)
    return value


def _finite_int(text: str) -> int:
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise _NotFinite(text[:20] + "...") from None
    return value


def _refuse_constant(text: str):
    raise _NotFinite(text)


# A JSON string (escapes and all) or a bracket: strings are skipped, brackets counted.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether brackets nest deeper than `limit`, found in one pass without recursion."""
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = text[match.start()]
        if token in "[{":
            depth += 1
            if depth > limit:
                return True
        elif token in "]}":
            depth -= 1
    return False


def _decode_json(body: bytes, *, metal: str, endpoint: str, http_status: int):
    """json.loads with the limits: bounded depth (checked first, so the decoder's own recursion
    never runs deep) and finite numbers only."""
    prefix = f"HTTP {http_status}, "
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
        if json_depth_exceeds(text):
            raise MalformedResponse(
                metal, endpoint, f"{prefix}JSON nested deeper than {MAX_JSON_DEPTH} levels"
            )
        return json.loads(
            text,
            parse_float=_finite_float,
            parse_int=_finite_int,
            parse_constant=_refuse_constant,
        )
    except _NotFinite as exc:
        raise MalformedResponse(
            metal, endpoint, f"{prefix}body holds a number that is not finite ({exc})"
        ) from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedResponse(
            metal, endpoint, f"{prefix}body is not JSON ({len(body)} bytes)"
        ) from None


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as delta-seconds or as an HTTP date (RFC 9110), capped; None if absent."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - now).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _never_sent(exc: requests.RequestException) -> bool:
    """No connection was made (refused, unknown host, connect timeout): the API never saw it."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectTimeout) or isinstance(
        reason, urllib3.exceptions.ConnectTimeoutError
    )


class MetalsDevClient:
    """A thread-safe client: one requests.Session, bounded retries, a request counter."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff: float = 1.0,
        land: Callable[[RawResponse], Path | None] | None = None,
        reject: Callable[[RawResponse], Path | None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_body_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        ready: Callable[[], None] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.land = land  # every body, before it is parsed
        self.reject = reject  # bodies of failed attempts (429, 5xx): kept for inspection
        self.clock = clock
        self.max_body_bytes = max_body_bytes  # read no further: the body is refused
        self.ready = ready  # raises when no request may be spent (e.g. no room to land it)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "commodities-pipeline/0.1"
        self._lock = threading.Lock()
        self.request_count = 0
        self._halted: ApiError | None = None

    def close(self) -> None:
        self.session.close()

    def check_ready(self) -> None:
        """Raise (before any request is spent) if the bodies could not be landed."""
        if self.ready is not None:
            self.ready()

    # -- endpoints -------------------------------------------------------------------------

    def spot(self, metal: str, currency: str = "USD") -> Fetched:
        """GET /metal/spot for one metal."""
        return self.fetch("spot", metal, "/metal/spot", {"metal": metal, "currency": currency})

    def timeseries(self, start: str, end: str, currency: str = "USD", unit: str = "toz") -> Fetched:
        """GET /timeseries for at most 30 days (the API's limit)."""
        params = {"start_date": start, "end_date": end, "currency": currency, "unit": unit}
        return self.fetch("timeseries", "all", "/timeseries", params)

    def usage(self) -> dict:
        """GET /usage (outside /v1): plan, total, used, remaining. Not landed: not a price."""
        root = self.base_url.removesuffix("/v1")
        raw = self._get_once("usage", "all", "/usage", {}, base=root)
        return parse_payload(raw.body, metal="all", endpoint="/usage", http_status=raw.http_status)

    # -- mechanics -------------------------------------------------------------------------

    def fetch(self, kind: str, metal: str, endpoint: str, params: dict) -> Fetched:
        """Request with retries, land the body, then parse it (raising MetalsDevError). The
        endpoints above call it; the demo calls it for the sandbox's own /sandbox/history."""
        if self._halted is not None:
            raise type(self._halted)(
                metal, endpoint, self._halted.code, "not sent: " + self._halted.detail
            )
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.max_attempts) | stop_when_event_set(STOP_REQUESTED),
            wait=self._wait,
            before_sleep=self._log_retry,
            # A stop request cuts the backoff short. tenacity types `sleep` as returning None;
            # it ignores the bool Event.wait returns.
            sleep=STOP_REQUESTED.wait,  # type: ignore[arg-type]
            reraise=True,
        )
        raw = retrying(self._get_once, kind, metal, endpoint, params)
        landed = self.land(raw) if self.land else None
        try:
            payload = parse_payload(
                raw.body, metal=metal, endpoint=endpoint, http_status=raw.http_status
            )
        except MetalsDevError as exc:
            exc.landed_path = landed
            if isinstance(exc, AuthError | QuotaExceeded):
                self._halted = exc
            raise
        return Fetched(raw=raw, payload=payload, landed_path=landed)

    def _get_once(
        self, kind: str, metal: str, endpoint: str, params: dict, base: str | None = None
    ) -> RawResponse:
        if STOP_REQUESTED.is_set():
            raise MetalsDevError(metal, endpoint, "not sent: the run is stopping")
        try:
            with self.session.get(
                (base or self.base_url) + endpoint,
                params={"api_key": self._api_key, **params},
                timeout=self.timeout,
                stream=True,
            ) as response:  # leaving it early closes the connection: the rest is never read
                body, complete = self._read_body(response)
        except requests.RequestException as exc:
            if not _never_sent(exc):  # sent, no (whole) answer: the API may have counted it
                self._count_request()
            if isinstance(exc, requests.Timeout):
                detail = f"timed out after {self.timeout:g}s"
            else:
                detail = type(exc).__name__
            raise TransientError(metal, endpoint, detail) from None
        self._count_request()
        raw = RawResponse(
            kind=kind,
            metal=metal,
            endpoint=endpoint,
            http_status=response.status_code,
            body=body,
            fetched_at=self.clock(),
        )
        if not complete:
            raise self._too_large(raw)
        if response.status_code == 429 or response.status_code >= 500:
            error = TransientError(
                metal,
                endpoint,
                f"HTTP {response.status_code}",
                retry_after=retry_after_seconds(
                    response.headers.get("Retry-After"), raw.fetched_at
                ),
            )
            error.landed_path = self.reject(raw) if self.reject else None  # kept, not replayed
            raise error
        return raw

    def _read_body(self, response: requests.Response) -> tuple[bytes, bool]:
        """At most max_body_bytes of the body, read as it streams in; False if there was more."""
        chunks, size = [], 0
        for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
            room = self.max_body_bytes - size
            if len(chunk) > room:
                chunks.append(chunk[:room])
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), True

    def _too_large(self, raw: RawResponse) -> ResponseTooLarge:
        """The refusal of an oversized body (malformed: not retried), its start kept."""
        kept = self.reject(raw) if self.reject else None
        detail = (
            f"HTTP {raw.http_status}, body larger than MAX_RESPONSE_BYTES "
            f"({self.max_body_bytes} bytes), not read further"
        )
        if kept is not None:
            detail += f"; its first {len(raw.body)} bytes kept, truncated, as {kept}"
        error = ResponseTooLarge(raw.metal, raw.endpoint, detail)
        error.landed_path = kept
        return error

    def _count_request(self) -> None:
        """Only requests that reached the API count toward the month's quota."""
        with self._lock:
            self.request_count += 1

    def _wait(self, state: RetryCallState) -> float:
        # Exponential backoff plus random jitter, capped; never sooner than Retry-After says.
        exponential = min(self.backoff * 2 ** (state.attempt_number - 1), MAX_BACKOFF_SECONDS)
        delay = exponential + random.uniform(0, self.backoff)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        return max(delay, retry_after or 0.0)

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s; retrying in %.1fs (attempt %d of %d)",
            error,
            delay,
            state.attempt_number + 1,
            self.max_attempts,
        )
