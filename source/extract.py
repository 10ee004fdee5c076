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
from typing import TypeVar

import pandas as pd

from source.config import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_METALS, MIB, Settings
from source.db_functions.coverage import record_coverage
from source.errors import ReportableError, first_line
from source.facts import ApiUsage
from source.files import (
    FileTooLarge,
    NotARegularFile,
    atomic_write,
    free_bytes,
    read_regular_file,
)
from source.log_setup import in_this_context, log_fields, mask_secrets
from source.metals_dev import (
    MalformedResponse,
    MetalsDevClient,
    MetalsDevError,
    RawResponse,
    parse_payload,
)
from source.transform import (
    LoadJob,
    check_units,
    empty_frame,
    in_unit,
    spot_to_frame,
    timeseries_days,
    timeseries_to_frames,
)

log = logging.getLogger(__name__)

INCOMING, LOADED, REJECTED = "incoming", "loaded", "rejected"
ENDPOINTS = {"spot": "/metal/spot", "timeseries": "/timeseries"}  # the kinds a run replays
_NAME = re.compile(r"^(?P<time>\d{8}T\d{12}Z)_(?P<kind>[a-z]+)_(?P<metal>[a-z]+)\.json$")
_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
T = TypeVar("T")


class LowDiskSpace(ReportableError):
    """DATA_DIR has too little room to land responses: no request is spent (exit 1)."""


def require_free_space(data_dir: Path, needed: int) -> None:
    """Refuse to start fetching when DATA_DIR could not hold the responses."""
    free = free_bytes(data_dir)
    if free < needed:
        raise LowDiskSpace(
            f"DATA_DIR {data_dir} has {free / MIB:.1f} MiB free, less than the "
            f"{needed / MIB:.1f} MiB needed to land responses (DATA_DIR_MIN_FREE_BYTES); "
            "no request sent"
        )


def make_client(settings: Settings) -> MetalsDevClient:
    """The API client of a run: every response is landed under DATA_DIR before parsing."""
    return MetalsDevClient(
        settings.base_url,
        settings.api_key or "",
        timeout=settings.http_timeout,
        max_attempts=settings.http_max_attempts,
        backoff=settings.http_backoff,
        land=partial(land_or_keep, settings.data_dir, secrets=settings.secrets),
        reject=partial(land_or_keep, settings.data_dir, area=REJECTED, secrets=settings.secrets),
        max_body_bytes=settings.max_response_bytes,
        ready=partial(require_free_space, settings.data_dir, settings.free_space_needed),
    )


def raw_file_name(raw: RawResponse) -> str:
    return f"{raw.fetched_at.strftime(_TIME_FORMAT)}_{raw.kind}_{raw.metal}.json"


def land_raw_response(
    data_dir: Path, raw: RawResponse, *, area: str = INCOMING, secrets: tuple[str, ...] = ()
) -> Path:
    """Write the body as received to incoming/ (or rejected/<day>/ for a failed attempt),
    atomically: temp file, fsync, rename. A secret the server echoed back is masked,
    whatever its encoding."""
    directory = Path(data_dir) / area
    if area != INCOMING:
        directory = directory / raw.fetched_at.strftime("%Y-%m-%d")
    directory.mkdir(parents=True, exist_ok=True)
    target = atomic_write(directory / raw_file_name(raw), mask_secrets(raw.body, secrets))
    log.info(
        "%s: landed %d bytes from %s (HTTP %d) as %s",
        raw.metal,
        len(raw.body),
        raw.endpoint,
        raw.http_status,
        target,
    )
    return target


def land_or_keep(data_dir: Path, raw: RawResponse, **options) -> Path | None:
    """land_raw_response; when the disk refuses (full, read-only), None: the response is
    then loaded from memory, so a fetched price is not lost for want of a raw file."""
    try:
        return land_raw_response(data_dir, raw, **options)
    except OSError as exc:  # its message names the path that failed
        kept = options.get("area", INCOMING) == INCOMING
        log.warning(
            "%s: could not land the response from %s under %s: %s; %s",
            raw.metal,
            raw.endpoint,
            data_dir,
            exc,
            "loading it from memory, no raw file kept" if kept else "the refused body is not kept",
        )
        return None


def _landed_day(name: str) -> str:
    """The UTC day a landed file's name says it was fetched, else today."""
    landed = parse_landed_name(name)
    return (landed[2] if landed else datetime.now(UTC)).strftime("%Y-%m-%d")


def _free_name(directory: Path, name: str) -> Path:
    """`name` in directory, or name.1.json, name.2.json...: a kept file is never replaced."""
    target, stem, count = directory / name, name.removesuffix(".json"), 0
    while os.path.lexists(target):
        count += 1
        target = directory / f"{stem}.{count}.json"
    return target


def _archive(data_dir: Path, path: Path, area: str) -> Path:
    """Move a landed file (or whatever stands at its path: a link is moved, not followed)
    to area/<day>/."""
    directory = Path(data_dir) / area / _landed_day(path.name)
    if path.parent == directory:
        return path  # landed there already (a failed attempt's body)
    directory.mkdir(parents=True, exist_ok=True)
    # loaded/ may be replaced (the same response loaded again); rejected/ keeps every one.
    target = _free_name(directory, path.name) if area == REJECTED else directory / path.name
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
    """Move a refused response to rejected/<day>/ so that no later run tries it again."""
    if path is None or not os.path.lexists(path):
        return
    try:
        target = _archive(data_dir, path, REJECTED)
    except OSError as exc:  # it stays in incoming/: the next run refuses it again
        log.warning("could not move %s to %s/: %s", path, REJECTED, exc)
        return
    log.info("kept the rejected response as %s", target)


def mark_job_rejected(data_dir: Path, job: LoadJob) -> None:
    for path in job.raw_files:
        mark_rejected(data_dir, path)


def set_aside(data_dir: Path, path: Path, reason: str) -> None:
    """Move something found in incoming/ that is not a landed file to rejected/<day>/, as it
    is (a link is renamed, never followed), in one warning line."""
    try:
        target = _archive(data_dir, path, REJECTED)
    except OSError as exc:
        log.warning("%s in %s/ is %s; could not set it aside: %s", path.name, INCOMING, reason, exc)
        return
    log.warning("%s in %s/ is %s: set aside as %s", path.name, INCOMING, reason, target)


def parse_landed_name(name: str) -> tuple[str, str, datetime] | None:
    """(kind, metal, fetch time) of a name this pipeline gives a landed file, else None."""
    match = _NAME.match(name)
    if match is None or match["kind"] not in ENDPOINTS:
        return None
    if (match["kind"] == "timeseries") != (match["metal"] == "all"):
        return None
    try:
        fetched_at = datetime.strptime(match["time"], _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:  # e.g. a month 13
        return None
    return match["kind"], match["metal"], fetched_at


def _readable(metal: str, endpoint: str, convert: Callable[[], T]) -> T:
    """convert(); an error that the payload's shape provokes is a MalformedResponse, so a
    body either loads or is refused with a reason, whatever it holds."""
    try:
        return convert()
    except MetalsDevError:
        raise
    except Exception as exc:
        detail = f"payload not readable ({type(exc).__name__}: {first_line(exc)})"
        raise MalformedResponse(metal, endpoint, detail) from None


def frames_from_payload(
    metal: str,
    payload: dict,
    *,
    fetched_at: datetime,
    raw_file: Path | None,
    source: str,
    endpoint: str = ENDPOINTS["spot"],
    to_frame: Callable[..., pd.DataFrame] = spot_to_frame,
) -> dict:
    """Turn a spot payload into {metal: frame}; `to_frame` reads another payload of
    spot-shaped quotes (the demo's sandbox history)."""
    common = {
        "endpoint": endpoint,
        "fetched_at": fetched_at,
        "raw_file": str(raw_file) if raw_file else None,
    }
    return _readable(
        metal,
        endpoint,
        lambda: {metal: to_frame(payload, metal=metal, source=source, **common)},
    )


def timeseries_job(
    payload: dict,
    *,
    metals: tuple[str, ...],
    raw_file: Path | None,
    fetched_at: datetime,
    replayed: bool = False,
    units: dict[str, str] | None = None,
) -> LoadJob:
    """One job for a whole /timeseries window: the configured metals it holds (the body
    carries every metal the API quotes), in one transaction, which also records the days the
    API answered for them (so a rerun skips them). Without a raw file (the disk refused it)
    the rows load from memory. `units`: the unit each metal's rows are kept in (copper per
    tonne), which its prices are converted to (the body quotes every metal per ounce)."""
    name = str(raw_file) if raw_file else None

    def convert() -> tuple[pd.DataFrame, list]:
        frames = timeseries_to_frames(
            payload,
            metals=metals,
            endpoint=ENDPOINTS["timeseries"],
            fetched_at=fetched_at,
            raw_file=name,
        )
        kept = units or {}
        frames = {m: in_unit(f, kept[m]) if m in kept else f for m, f in frames.items()}
        frame = pd.concat(frames.values(), ignore_index=True) if frames else empty_frame()
        return frame, timeseries_days(payload)

    frame, days = _readable("all", ENDPOINTS["timeseries"], convert)
    also = partial(_record_days, days=days, metals=metals, raw_file=name)
    return LoadJob("all", frame, [raw_file] if raw_file else [], replayed=replayed, also=also)


def _record_days(cur, *, days, metals: tuple[str, ...], raw_file: str | None) -> None:
    record_coverage(cur, days, metals, raw_file)


def _incoming_entries(data_dir: Path) -> list[Path]:
    """Everything in incoming/, whatever it is, in name (so fetch time) order."""
    incoming = Path(data_dir) / INCOMING
    try:
        with os.scandir(incoming) as entries:
            return sorted(Path(entry.path) for entry in entries)
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.error("cannot list %s: %s; nothing replayed", incoming, exc)
        return []


def _jobs_of_landed(
    path: Path, body: bytes, kind: str, metal: str, fetched_at, source: str, metals, units_of
) -> list[LoadJob]:
    """The LoadJobs of one landed body (raising MetalsDevError when it cannot load)."""
    payload = parse_payload(body, metal=metal, endpoint=ENDPOINTS[kind])
    if kind == "timeseries":
        if not timeseries_days(payload):
            return []
        return [
            timeseries_job(
                payload,
                metals=metals,
                raw_file=path,
                fetched_at=fetched_at,
                replayed=True,
                units=units_of() if units_of else None,
            )
        ]
    frames = frames_from_payload(
        metal, payload, fetched_at=fetched_at, raw_file=path, source=source
    )
    return [LoadJob(m, f, [path], replayed=True) for m, f in frames.items()]


def replay_landed(
    data_dir: Path,
    *,
    source: str,
    metals: tuple[str, ...] = DEFAULT_METALS,
    units_of: Callable[[], dict[str, str]] | None = None,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> list[LoadJob]:
    """Jobs for files landed by earlier runs but never loaded (database down, crash).

    A spot file is loaded whatever this run's --metals: nothing fetched is lost; a
    /timeseries file, which carries every metal the API quotes, for the configured `metals`
    (each converted to the unit its rows are kept in: `units_of()`, asked only when such a
    file is found, so a locked table never holds up a run that has none to replay).
    Only regular files named as this pipeline names them are read, links never followed;
    anything else, and any body that cannot load, goes to rejected/ and the run goes on."""
    jobs = []
    for path in _incoming_entries(data_dir):
        landed = parse_landed_name(path.name)
        if landed is None:
            set_aside(data_dir, path, "not named like a landed response")
            continue
        kind, metal, fetched_at = landed
        try:
            body = read_regular_file(path, max_bytes)
        except FileTooLarge as exc:
            set_aside(data_dir, path, f"{exc} (MAX_RESPONSE_BYTES)")
            continue
        except NotARegularFile as exc:
            set_aside(data_dir, path, str(exc))
            continue
        try:
            found = _readable(
                metal,
                ENDPOINTS[kind],
                partial(
                    _jobs_of_landed, path, body, kind, metal, fetched_at, source, metals, units_of
                ),
            )
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


def _with_metal(fetch: Callable[[str], None]) -> Callable[[str], None]:
    def run(metal: str) -> None:
        with log_fields(metal=metal):
            fetch(metal)

    return run


def fetch_spot_prices(
    client: MetalsDevClient,
    metals: tuple[str, ...],
    *,
    currency: str,
    unit: str | None,
    source: str,
    data_dir: Path,
    submit: Callable[[LoadJob], None],
) -> dict[str, BaseException]:
    """Fetch every metal concurrently; submit a LoadJob per success; return {metal: error}.
    Nothing is sent when DATA_DIR has no room for the answers (LowDiskSpace)."""
    client.check_ready()

    def fetch_one(metal: str) -> None:
        fetched = None
        try:
            fetched = client.spot(metal, currency)
            frame = frames_from_payload(
                metal,
                fetched.payload,
                fetched_at=fetched.raw.fetched_at,
                raw_file=fetched.landed_path,
                source=source,
            )[metal]
            check_units(frame, currency=currency, unit=unit, metal=metal, endpoint="/metal/spot")
        except MetalsDevError as exc:
            mark_rejected(data_dir, exc.landed_path or (fetched.landed_path if fetched else None))
            raise
        log.info(
            "%s: transformed %d row(s), quote time %s",
            metal,
            len(frame),
            frame["timestamp"].iloc[-1],
        )
        landed = [fetched.landed_path] if fetched.landed_path else []  # [] : from memory
        submit(LoadJob(metal, frame, landed))

    errors: dict[str, BaseException] = {}
    with ThreadPoolExecutor(max_workers=len(metals), thread_name_prefix="fetch") as pool:
        # Each fetch thread logs with the run's fields (job, run id) and its own metal.
        futures = {
            metal: pool.submit(in_this_context(_with_metal(fetch_one)), metal) for metal in metals
        }
        for metal, future in futures.items():
            error = future.exception()
            if error is not None:
                errors[metal] = error
                shown = error if isinstance(error, MetalsDevError) else repr(error)
                with log_fields(metal=metal):
                    log.error("%s: fetch failed: %s", metal, shown)
    return errors


def api_usage(settings: Settings) -> ApiUsage | None:
    """The API's own /usage answer (`status --api`), or None, with the reason logged, when it
    cannot be had."""
    client = make_client(settings)
    try:
        answer = client.usage()
    except MetalsDevError as exc:
        log.warning("API usage unavailable: %s", exc)
        return None
    finally:
        client.close()
    return ApiUsage(
        plan=answer.get("plan"),
        total=answer.get("total"),
        used=answer.get("used"),
        remaining=answer.get("remaining"),
    )
