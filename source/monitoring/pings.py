"""Dead-man's switch pings in the healthchecks.io protocol (self-hosted Healthchecks and other
services speak it too): `<url>/start` when a job starts, `<url>` when it exits 0, and
`<url>/<exit code>` otherwise, with the job's one-line summary as the body."""

from __future__ import annotations

import time

import requests

CONNECT_TIMEOUT, READ_TIMEOUT = 2.0, 2.0
ATTEMPTS = 2  # a refused or reset connection is tried once more, half a second later


def check_url(template: str, job: str) -> str | None:
    """The check a job pings: `{job}` in the URL names one check per job; a URL without it is
    the hourly job's check alone (the backup needs a check of its own)."""
    if "{job}" in template:
        return template.replace("{job}", job)
    return template if job == "pipeline" else None


def ping_url(url: str, event: str | int) -> str:
    """`start`, 0 (success) or an exit code, as the path the protocol gives it."""
    base = url.rstrip("/")
    if event == "start":
        return f"{base}/start"
    return base if event == 0 else f"{base}/{event}"


def send(url: str, body: str = "", session: requests.Session | None = None) -> None:
    """POST the ping; raise requests.RequestException after the last attempt fails."""
    http = session or requests
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = http.post(
                url, data=body.encode(), timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
            response.raise_for_status()
            return
        except (requests.ConnectionError, requests.HTTPError) as exc:
            status = getattr(exc.response, "status_code", None)
            retry = status is None or status >= 500
            if attempt == ATTEMPTS or not retry or isinstance(exc, requests.ConnectTimeout):
                raise
            time.sleep(0.5)
