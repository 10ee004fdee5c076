"""A local stand-in for Metals.Dev on 127.0.0.1, used by `--demo` and by the tests.

It speaks the documented shapes (`/metal/spot`, `/latest`, `/timeseries`) with synthetic,
deterministic prices, tagged `"synthetic": true`, plus `/sandbox/history` (hourly spot quotes)
so a demo can seed enough history to train on. Faults and delays can be injected.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast
from urllib.parse import parse_qs, urlparse

import numpy as np

from source.config import SPOT_UNITS

ANCHOR = datetime(2020, 1, 1, tzinfo=UTC)
BASE_PRICES = {
    "gold": 2000.0,
    "silver": 24.0,
    "platinum": 1000.0,
    "palladium": 1200.0,
    "copper": 9500.0,
}
SPREAD = {"gold": 0.0004, "silver": 0.0015, "platinum": 0.002, "palladium": 0.003, "copper": 0.0006}
TROY_OUNCES_PER_TONNE = 1_000_000 / 31.1034768
_AR_COEFFICIENT = (
    0.3  # hourly returns are autocorrelated, so the demo models have something to find
)
_HOURLY_VOLATILITY = 0.0015
_MEAN_REVERSION = 2e-4
MAX_TIMESERIES_DAYS = 30  # the API's documented limit per /timeseries request


@dataclass
class Fault:
    status: int
    body: bytes
    remaining: int | None = None  # None: every request
    headers: dict[str, str] | None = None


def _iso(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


class PriceModel:
    """Deterministic synthetic hourly prices per metal since ANCHOR (AR(1) log-returns)."""

    def __init__(self):
        self._paths: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def path(self, metal: str, hours: int) -> np.ndarray:
        with self._lock:
            cached = self._paths.get(metal)
            if cached is None or len(cached) <= hours:
                size = max(hours + 24 * 60, 24 * 365 * 8)
                seed = sum(map(ord, metal))
                shocks = np.random.default_rng(seed).normal(0.0, _HOURLY_VOLATILITY, size)
                log_prices = np.empty(size)
                level, previous = 0.0, 0.0
                for i, shock in enumerate(shocks):
                    # AR(1) returns with a weak pull back to the base price keep levels plausible.
                    previous = _AR_COEFFICIENT * previous + shock - _MEAN_REVERSION * level
                    level += previous
                    log_prices[i] = level
                cached = BASE_PRICES[metal] * np.exp(log_prices)
                self._paths[metal] = cached
            return cached

    def quote(self, metal: str, hour: int, currency: str = "USD") -> dict:
        path = self.path(metal, hour)
        price = float(path[hour])
        day_ago = float(path[max(hour - 24, 0)])
        window = path[max(hour - 23, 0) : hour + 1]
        half_spread = price * SPREAD[metal] / 2
        return {
            "status": "success",
            "timestamp": _iso(ANCHOR + timedelta(hours=hour)),
            "currency": currency,
            "unit": SPOT_UNITS.get(metal, "toz"),
            "metal": metal,
            "synthetic": True,
            "rate": {
                "price": round(price, 4),
                "ask": round(price + half_spread, 4),
                "bid": round(price - half_spread, 4),
                "high": round(float(window.max()), 4),
                "low": round(float(window.min()), 4),
                "change": round(price - day_ago, 4),
                "change_percent": round((price / day_ago - 1) * 100, 4),
            },
        }


def hour_of(day: date) -> int:
    """The sandbox's hour index of a UTC midnight: what /timeseries quotes for that day."""
    return int(
        (datetime(day.year, day.month, day.day, tzinfo=UTC) - ANCHOR).total_seconds() // 3600
    )


def _failure(code: int, message: str) -> dict:
    return {"status": "failure", "error_code": code, "error_message": message}


class SandboxServer:
    """`with SandboxServer() as api: api.base_url` -> a Metals.Dev-shaped server on 127.0.0.1."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        delay: float = 0.0,
        hour_offset: int = 0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        host: str = "127.0.0.1",
        port: int = 0,
        on_request: Callable[[str, dict], None] | None = None,
    ):
        self.api_key = api_key  # None: any non-empty key is accepted
        self.delay = delay
        self.delays: dict[str, float] = {}  # per metal, on top of `delay`
        self.hour_offset = hour_offset  # move the sandbox clock, e.g. to publish a new quote
        self.clock = clock  # tests pass a fixed time
        self.usage_total = 10_000  # the plan's monthly requests, as /usage reports them
        self.prices = PriceModel()
        self.faults: dict[str, list[Fault]] = {}
        self.requests: list[dict] = []  # path, params (without the key), start, end
        self.served: list[tuple[str, int, bytes]] = []  # path, status, body: sent in full
        self._lock = threading.Lock()
        self.on_request = on_request  # told of each request as it arrives (without the key)
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        # typeshed lets an AF_INET address's host be bytes; the server's is a str
        host, port = cast(tuple[str, int], self._httpd.server_address[:2])
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> SandboxServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- test controls -----------------------------------------------------------------------

    def add_fault(
        self,
        metal: str,
        status: int,
        body: dict | bytes,
        times: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        """Answer requests for `metal` with this response (`times` times, or always)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.faults.setdefault(metal, []).append(Fault(status, raw, times, headers))

    def current_hour(self) -> int:
        elapsed = self.clock() - ANCHOR
        return int(elapsed.total_seconds() // 3600) + self.hour_offset

    # -- serving -------------------------------------------------------------------------------

    def _take_fault(self, metal: str) -> Fault | None:
        with self._lock:
            queue = self.faults.get(metal) or []
            if not queue:
                return None
            fault = queue[0]
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    queue.pop(0)
            return fault

    def respond(self, path: str, params: dict[str, str]) -> tuple[int, bytes, dict]:
        """(status, body, extra headers) for one request."""
        if not params.get("api_key") or (self.api_key and params["api_key"] != self.api_key):
            body = _failure(1101, "Unauthorized. The API Key provided is invalid.")
            return 401, json.dumps(body).encode(), {}
        metal = params.get("metal", "all")
        fault = self._take_fault(metal) or self._take_fault("*")
        if fault is not None:
            return fault.status, fault.body, fault.headers or {}
        handler = {
            "/v1/metal/spot": self._spot,
            "/v1/latest": self._latest,
            "/v1/timeseries": self._timeseries,
            "/v1/sandbox/history": self._history,
            "/usage": self._usage,  # outside /v1, like the real one
        }.get(path)
        if handler is None:
            return 404, json.dumps(_failure(1000, f"Unknown endpoint {path}")).encode(), {}
        try:
            status, body = handler(params)
        except (KeyError, ValueError) as exc:
            status, body = 400, _failure(1001, f"Invalid parameters: {exc}")
        return status, json.dumps(body).encode(), {}

    def _spot(self, params):
        metal = params["metal"]
        if metal not in BASE_PRICES:
            return 400, _failure(1002, f"Unknown metal {metal}")
        return 200, self.prices.quote(metal, self.current_hour(), params.get("currency", "USD"))

    def _usage(self, params):
        used = sum(1 for r in self.requests if r["path"] != "/usage")
        total = self.usage_total
        return 200, {
            "status": "success",
            "timestamp": _iso(self.clock()),
            "plan": "Sandbox",
            "total": total,
            "used": used,
            "remaining": max(total - used, 0),
        }

    def _per_toz(self, metal: str, hour: int) -> float:
        """A metal's price per troy ounce, as /latest and /timeseries quote every metal."""
        price = self.prices.quote(metal, hour)["rate"]["price"]
        if SPOT_UNITS.get(metal) == "mt":
            return round(price / TROY_OUNCES_PER_TONNE, 6)
        return price

    def _history(self, params):
        metal, hours = params["metal"], min(int(params.get("hours", 24)), 24 * 365 * 3)
        now = self.current_hour()
        quotes = [self.prices.quote(metal, h) for h in range(max(now - hours, 0), now)]
        return 200, {"status": "success", "synthetic": True, "quotes": quotes}

    def _latest(self, params):
        hour = self.current_hour()
        metals = {m: self._per_toz(m, hour) for m in BASE_PRICES}
        stamp = _iso(ANCHOR + timedelta(hours=hour))
        return 200, {
            "status": "success",
            "currency": params.get("currency", "USD"),
            "unit": params.get("unit", "toz"),
            "metals": metals,
            "currencies": {"EUR": 1.08},
            "timestamps": {"metal": stamp, "currency": stamp},
        }

    def _timeseries(self, params):
        start = date.fromisoformat(params["start_date"])
        end = date.fromisoformat(params["end_date"])
        if end < start or (end - start).days + 1 > MAX_TIMESERIES_DAYS:
            return 400, _failure(2105, "The date range must be between 1 and 30 days.")
        rates = {}
        for offset in range((end - start).days + 1):
            day = start + timedelta(days=offset)
            hour = hour_of(day)
            if 0 <= hour <= self.current_hour():
                metals = {m: self._per_toz(m, hour) for m in BASE_PRICES}
                rates[day.isoformat()] = {
                    "currencies": {"EUR": 1.08, "USD": 1},
                    "date": day.isoformat(),
                    "metals": metals,
                }
        return 200, {
            "status": "success",
            "currency": params.get("currency", "USD"),
            "unit": params.get("unit", "toz"),
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "rates": rates,
        }

    def _handler_class(self):
        sandbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                started = time.monotonic()
                url = urlparse(self.path)
                params = {k: v[-1] for k, v in parse_qs(url.query).items()}
                public = {k: v for k, v in params.items() if k != "api_key"}
                if sandbox.on_request:
                    sandbox.on_request(url.path, public)
                pause = sandbox.delay + sandbox.delays.get(params.get("metal", ""), 0.0)
                if pause:
                    time.sleep(pause)
                status, body, headers = sandbox.respond(url.path, params)
                # Recorded before answering: a client that has its answer finds it recorded.
                with sandbox._lock:
                    sandbox.requests.append(
                        {
                            "path": url.path,
                            "params": public,
                            "start": started,
                            "end": time.monotonic(),
                        }
                    )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client stopped reading (e.g. a body over its size limit)
                with sandbox._lock:
                    sandbox.served.append((url.path, status, body))

            def log_message(self, *args):  # keep request lines (which carry the key) out of stderr
                pass

        return Handler


def main(argv: list[str] | None = None) -> int:
    """`python -m source.sandbox`: serve the sandbox until stopped, e.g. as a container that
    stands in for Metals.Dev on a compose network. Logs one line per request, never the key."""
    import argparse
    import os
    import signal

    parser = argparse.ArgumentParser(prog="python -m source.sandbox", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--hour-offset", type=int, default=0, help="hours added to the clock (a later quote)"
    )
    parser.add_argument(
        "--api-key-file", help="accept only the key in this file (default: any key)"
    )
    args = parser.parse_args(argv)
    key = None
    if args.api_key_file:
        with open(args.api_key_file) as handle:
            key = handle.read().strip()

    def announce(path: str, params: dict) -> None:
        print(f"GET {path} {' '.join(f'{k}={v}' for k, v in sorted(params.items()))}", flush=True)

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    sandbox = SandboxServer(
        api_key=key, delay=args.delay, host=args.host, port=args.port, on_request=announce,
        hour_offset=args.hour_offset,
    )
    with sandbox:
        print(f"sandbox: serving on {args.host}:{args.port} (pid {os.getpid()})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
