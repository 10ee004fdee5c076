"""A job's record while it runs, and what happens to it at the end: metrics written or pushed,
the healthcheck pinged. Steps add what they know with `record(...)`, the runner what lies
outside the job (the backup catalogue, the models' skill); nothing here touches the database,
the backups or the models."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from source.config import Settings
from source.errors import EXIT_FAILURE
from source.facts import BackupFacts, ModelFacts
from source.log_setup import in_this_context, redact

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# The delivery modules (metrics, pings) and their libraries (prometheus_client, requests) are
# imported where a job delivers, not here: the readers (status, report) load this module
# through the command table and must start quickly.

log = logging.getLogger("monitoring")


@dataclass
class JobRecord:
    """What a job tells its monitors; filled in by the steps as they learn it."""

    job: str  # pipeline, backfill, import_csv, train, backup
    started: float  # epoch seconds
    ping: bool = False  # the scheduled jobs (hourly run, backup create) ping their check
    exit_code: int | None = None
    summary: str | None = None
    rows_inserted: int = 0
    api_requests: int = 0
    metals: tuple[str, ...] = ()
    metals_failed: tuple[str, ...] | None = None
    # From the database, when it could be read at the end of the run (else carried forward).
    quotes: dict[str, float] | None = None
    units: dict[str, tuple[str, str]] | None = None  # metal: (currency, unit) of its rows
    streaks: dict[str, int] | None = None
    requests_this_month: int | None = None
    monthly_quota: int | None = None
    quota_exhausted: bool = False
    models_changed: bool = False
    offsite_newest: float | None = None  # the newest data in the bucket, epoch seconds
    # Given by the runner at the end: the catalogue after a backup job, the skill of the
    # models after a job changed them.
    backups: BackupFacts | None = None
    models: list[ModelFacts] | None = None
    failed_monitors: set[str] = field(default_factory=set)


_CURRENT: ContextVar[JobRecord | None] = ContextVar("monitored_job", default=None)


def active() -> bool:
    """True while a monitored job runs (steps gather extra facts only then)."""
    return _CURRENT.get() is not None


def record(
    *,
    summary: str | None = None,
    rows_inserted: int | None = None,
    api_requests: int | None = None,
    metals_failed: tuple[str, ...] | None = None,
    quotes: dict[str, float] | None = None,
    units: dict[str, tuple[str, str]] | None = None,
    streaks: dict[str, int] | None = None,
    requests_this_month: int | None = None,
    quota_exhausted: bool | None = None,
    models_changed: bool | None = None,
    offsite_newest: float | None = None,
) -> None:
    """Add what a step learnt to the running job's record (a name it does not know is a
    TypeError); those left out (None) stay as they are. Nothing happens outside a monitored
    job."""
    current = _CURRENT.get()
    if current is None:
        return
    given = {
        "summary": summary,
        "rows_inserted": rows_inserted,
        "api_requests": api_requests,
        "metals_failed": metals_failed,
        "quotes": quotes,
        "units": units,
        "streaks": streaks,
        "requests_this_month": requests_this_month,
        "quota_exhausted": quota_exhausted,
        "models_changed": models_changed,
        "offsite_newest": offsite_newest,
    }
    for name, value in given.items():
        if value is not None:
            setattr(current, name, value)


def _wanted(settings: Settings) -> bool:
    return bool(settings.metrics_dir or settings.pushgateway_url or settings.healthcheck_url)


@contextmanager
def monitored(
    settings: Settings, job: str | None, *, ping: bool = False, clock: Callable = time.time
) -> Iterator[JobRecord | None]:
    """Around a job: the start ping, then at the end (whatever the outcome, SIGTERM included)
    its metrics and the closing ping. The demo reports to nobody."""
    if job is None or settings.demo or not _wanted(settings):
        yield None
        return
    current = JobRecord(job, clock(), ping=ping, metals=settings.metals,
                        monthly_quota=settings.monthly_quota)
    _ping(settings, current, "start")
    token = _CURRENT.set(current)
    try:
        yield current
    except SystemExit as exc:  # SIGTERM: 143
        current.exit_code = exc.code if isinstance(exc.code, int) else EXIT_FAILURE
        raise
    except KeyboardInterrupt:
        current.exit_code = 130
        raise
    except BaseException:
        current.exit_code = EXIT_FAILURE
        raise
    finally:
        _CURRENT.reset(token)
        if current.exit_code is None:
            current.exit_code = EXIT_FAILURE
        deliver(settings, current, clock())


def deliver(settings: Settings, current: JobRecord, now: float) -> None:
    """Textfile first (local, fast), then the Pushgateway and the closing ping side by side,
    so that two slow monitors cost the time of one."""
    if settings.metrics_dir:
        _guard(current, "metrics file", lambda: _write_textfiles(settings, current, now))
    with ThreadPoolExecutor(max_workers=2) as pool:
        if settings.pushgateway_url:
            push = in_this_context(_guard)  # its warning line carries the job and run id
            pool.submit(push, current, "Pushgateway", lambda: _push(settings, current, now))
        pool.submit(in_this_context(_ping), settings, current, current.exit_code)


def _add_side_metrics(registry: CollectorRegistry, current: JobRecord) -> None:
    """Backup jobs also report the backup catalogue: the newest backup's time, state, size."""
    from source.monitoring import metrics

    if current.backups is not None:
        metrics.backup_metrics(registry, current.backups)


def _write_textfiles(settings: Settings, current: JobRecord, now: float) -> None:
    from prometheus_client import CollectorRegistry

    from source.monitoring import metrics

    directory = settings.metrics_dir
    assert directory is not None, "deliver() writes the textfiles only when METRICS_DIR is set"
    previous = metrics.read_previous(directory / f"{metrics.PREFIX}_{current.job}.prom")
    registry = metrics.job_registry(current, now, previous)
    _add_side_metrics(registry, current)
    metrics.write_textfile(directory, current.job, registry)
    if current.models is not None:  # one file for the models, whichever job trained them
        models = CollectorRegistry()
        metrics.model_metrics(models, current.models)
        metrics.write_textfile(directory, "models", models)


def _push(settings: Settings, current: JobRecord, now: float) -> None:
    from source.monitoring import metrics

    registry = metrics.job_registry(current, now)
    _add_side_metrics(registry, current)
    if current.models is not None:
        metrics.model_metrics(registry, current.models)
    url = settings.pushgateway_url
    assert url is not None, "deliver() pushes only when PUSHGATEWAY_URL is set"
    metrics.push(url, current.job, registry)


def _ping(settings: Settings, current: JobRecord, event: str | int) -> None:
    if not (current.ping and settings.healthcheck_url):
        return
    from source.monitoring import pings

    url = pings.check_url(settings.healthcheck_url, current.job)
    if url is None:
        return
    body = "" if event == "start" else redact(current.summary or "", settings.secrets)
    _guard(current, "healthcheck", lambda: pings.send(pings.ping_url(url, event), body))


def _guard(current: JobRecord, monitor: str, action: Callable[[], None]) -> None:
    """Run a delivery; a failure is one warning line per monitor and run, never an error."""
    import requests

    try:
        action()
    except (OSError, ValueError, requests.RequestException) as exc:
        reason = type(exc).__name__
        detail = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
        if isinstance(detail, str | OSError):
            reason += f": {detail}"
        already = monitor in current.failed_monitors
        current.failed_monitors.add(monitor)
        log.warning(
            "monitoring: %s unavailable (%s); the job's outcome is unchanged",
            monitor, reason, extra={"file_only": already},
        )
