"""The extract stage: concurrent fetches, atomic raw landing, and replay of landed files
that an earlier run fetched but did not load.

Layout under DATA_DIR:
    incoming/  landed, not yet loaded (the next run loads them)
    loaded/YYYY-MM-DD/  loaded; kept
    rejected/YYYY-MM-DD/  error bodies and malformed payloads; kept for inspection
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pandas as pd

from source.config import KNOWN_METALS, Settings
from source.db_functions.coverage import record_coverage
from source.files import atomic_write
from source.load import LoadJob
from source.metals_dev import MetalsDevClient, MetalsDevError, RawResponse, parse_payload
from source.transform import (
    check_units,
    empty_frame,
    history_to_frame,
    spot_to_frame,
    timeseries_days,
    timeseries_to_frames,
)

log = logging.getLogger(__name__)

INCOMING, LOADED, REJECTED = "incoming", "loaded", "rejected"
ENDPOINTS = {"spot": "/metal/spot", "timeseries": "/timeseries", "history": "/sandbox/history"}
_NAME = re.compile(r"^(?P<time>\d{8}T\d{12}Z)_(?P<kind>[a-z]+)_(?P<metal>[a-z]+)\.json$")
_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"


def make_client(settings: Settings) -> MetalsDevClient:
    """The API client of a run: every response is landed under DATA_DIR before parsing."""
    return MetalsDevClient(
        settings.base_url,
        settings.api_key or "",
        timeout=settings.http_timeout,
        max_attempts=settings.http_max_attempts,
        backoff=settings.http_backoff,
        land=partial(land_raw_response, settings.data_dir, secrets=settings.secrets),
        reject=partial(
            land_raw_response, settings.data_dir, area=REJECTED, secrets=settings.secrets
        ),
    )


def raw_file_name(raw: RawResponse) -> str:
    return f"{raw.fetched_at.strftime(_TIME_FORMAT)}_{raw.kind}_{raw.metal}.json"


def land_raw_response(
    data_dir: Path, raw: RawResponse, *, area: str = INCOMING, secrets: tuple[str, ...] = ()
) -> Path:
    """Write the body as received to incoming/ (or rejected/<day>/ for a failed attempt),
    atomically: temp file, fsync, rename. A secret the server echoed back is masked."""
    directory = Path(data_dir) / area
    if area != INCOMING:
        directory = directory / raw.fetched_at.strftime("%Y-%m-%d")
    directory.mkdir(parents=True, exist_ok=True)
    body = raw.body
    for secret in secrets:
        body = body.replace(secret.encode(), b"***")
    target = atomic_write(directory / raw_file_name(raw), body)
    log.info(
        "%s: landed %d bytes from %s (HTTP %d) as %s",
        raw.metal,
        len(raw.body),
        raw.endpoint,
        raw.http_status,
        target,
    )
    return target


def _archive(data_dir: Path, path: Path, area: str) -> Path:
    match = _NAME.match(path.name)
    day = (
        datetime.strptime(match["time"], _TIME_FORMAT).strftime("%Y-%m-%d")
        if match
        else datetime.now(UTC).strftime("%Y-%m-%d")
    )
    directory = Path(data_dir) / area / day
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / path.name
    os.replace(path, target)
    return target


def mark_loaded(data_dir: Path, job: LoadJob) -> None:
    """Move a job's raw files out of incoming/ once their rows are committed."""
    for path in job.raw_files:
        try:
            _archive(data_dir, path, LOADED)
        except OSError as exc:  # harmless: the next run reloads it and the upsert changes nothing
            log.warning("%s: could not move %s to %s/: %s", job.metal, path, LOADED, exc)


def mark_rejected(data_dir: Path, path: Path | None) -> None:
    if path is not None and path.exists():
        target = _archive(data_dir, path, REJECTED)
        log.info("kept the rejected response as %s", target)


def mark_job_rejected(data_dir: Path, job: LoadJob) -> None:
    for path in job.raw_files:
        mark_rejected(data_dir, path)


def frames_from_payload(
    kind: str,
    metal: str,
    payload: dict,
    *,
    fetched_at: datetime,
    raw_file: Path | None,
    source: str,
) -> dict:
    """Turn a landed spot or history payload into {metal: frame}."""
    common = {
        "endpoint": ENDPOINTS[kind],
        "fetched_at": fetched_at,
        "raw_file": str(raw_file) if raw_file else None,
    }
    to_frame = spot_to_frame if kind == "spot" else history_to_frame
    return {metal: to_frame(payload, metal=metal, source=source, **common)}


def timeseries_job(
    payload: dict, *, raw_file: Path, fetched_at: datetime, replayed: bool = False
) -> LoadJob:
    """One job for a whole /timeseries window: every metal it holds, in one transaction,
    which also records the days the API answered for (so a rerun skips them)."""
    frames = timeseries_to_frames(
        payload,
        metals=KNOWN_METALS,
        endpoint=ENDPOINTS["timeseries"],
        fetched_at=fetched_at,
        raw_file=str(raw_file),
    )
    frame = pd.concat(frames.values(), ignore_index=True) if frames else empty_frame()
    also = partial(_record_days, days=timeseries_days(payload), raw_file=str(raw_file))
    return LoadJob("all", frame, [raw_file], replayed=replayed, also=also)


def _record_days(cur, *, days, raw_file: str) -> None:
    record_coverage(cur, days, KNOWN_METALS, raw_file)


def replay_landed(data_dir: Path, *, source: str) -> list[LoadJob]:
    """Jobs for files landed by earlier runs but never loaded (database down, crash).

    Every metal in a file is loaded, whatever this run's --metals: nothing fetched is lost."""
    jobs = []
    for path in sorted((Path(data_dir) / INCOMING).glob("*.json")):
        match = _NAME.match(path.name)
        if match is None:
            log.warning("ignoring unexpected file in %s: %s", INCOMING, path.name)
            continue
        kind, metal = match["kind"], match["metal"]
        fetched_at = datetime.strptime(match["time"], _TIME_FORMAT).replace(tzinfo=UTC)
        try:
            payload = parse_payload(path.read_bytes(), metal=metal, endpoint=ENDPOINTS[kind])
            if kind == "timeseries":
                found = []
                if timeseries_days(payload):
                    job = timeseries_job(
                        payload, raw_file=path, fetched_at=fetched_at, replayed=True
                    )
                    found = [job]
            else:
                frames = frames_from_payload(
                    kind,
                    metal,
                    payload,
                    fetched_at=fetched_at,
                    raw_file=path,
                    source=source,
                )
                found = [LoadJob(m, f, [path], replayed=True) for m, f in frames.items()]
        except MetalsDevError as exc:
            log.error("replay of %s failed: %s", path.name, exc)
            mark_rejected(data_dir, path)
            continue
        if not found:  # e.g. a timeseries answering for no day at all
            log.warning("replay of %s: no prices in it", path.name)
            mark_rejected(data_dir, path)
            continue
        jobs.extend(found)
        log.info("%s: replaying %s, landed by an earlier run but not loaded", metal, path.name)
    return jobs


def fetch_spot_prices(
    client: MetalsDevClient,
    metals: tuple[str, ...],
    *,
    currency: str,
    unit: str,
    source: str,
    data_dir: Path,
    submit: Callable[[LoadJob], None],
) -> dict[str, Exception]:
    """Fetch every metal concurrently; submit a LoadJob per success; return {metal: error}."""

    def fetch_one(metal: str) -> None:
        fetched = None
        try:
            fetched = client.spot(metal, currency)
            frame = spot_to_frame(
                fetched.payload,
                metal=metal,
                endpoint=ENDPOINTS["spot"],
                source=source,
                fetched_at=fetched.raw.fetched_at,
                raw_file=str(fetched.landed_path),
            )
            check_units(frame, currency=currency, unit=unit, metal=metal, endpoint="/metal/spot")
        except MetalsDevError as exc:
            mark_rejected(data_dir, exc.landed_path or (fetched and fetched.landed_path))
            raise
        log.info(
            "%s: transformed %d row(s), quote time %s",
            metal,
            len(frame),
            frame["timestamp"].iloc[-1],
        )
        submit(LoadJob(metal, frame, [fetched.landed_path]))

    errors: dict[str, Exception] = {}
    with ThreadPoolExecutor(max_workers=len(metals), thread_name_prefix="fetch") as pool:
        futures = {metal: pool.submit(fetch_one, metal) for metal in metals}
        for metal, future in futures.items():
            error = future.exception()
            if error is not None:
                errors[metal] = error
                shown = error if isinstance(error, MetalsDevError) else repr(error)
                log.error("%s: fetch failed: %s", metal, shown)
    return errors
