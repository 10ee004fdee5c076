"""Pure rendering of a job's record into Prometheus metrics, and their two ways out: an atomic
textfile for node_exporter and a push to a Pushgateway. Names are an interface (listed in
docs/operations.md, Metrics): alert rules use them; add, never rename."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from source.facts import BackupFacts, ModelFacts

PREFIX = "commodities"
LAST_SUCCESS = f"{PREFIX}_job_last_success_timestamp_seconds"
OFFSITE_NEWEST = f"{PREFIX}_offsite_newest_data_timestamp_seconds"
QUOTE_TIME = f"{PREFIX}_metal_last_quote_timestamp_seconds"
FAILING = f"{PREFIX}_metal_failed_runs_in_a_row"
INFO = f"{PREFIX}_metal_info"
REQUESTS_THIS_MONTH = f"{PREFIX}_api_requests_this_month"
PUSH_TIMEOUT_SECONDS = 3.0

Previous = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _gauge(registry: CollectorRegistry, name: str, help_text: str, labels=()) -> Gauge:
    return Gauge(name, help_text, labelnames=labels, registry=registry)


def job_registry(record, now: float, previous: Previous | None = None) -> CollectorRegistry:
    """The job's metrics. `previous` (a textfile's earlier values) carries forward what this
    run could not know: the last success after a failure, and the database's facts when it was
    down. Without it (a push) those metrics are left out, and the Pushgateway keeps its own."""
    previous = previous or {}
    registry = CollectorRegistry()
    job = {"job": record.job}

    def job_gauge(name: str, help_text: str, value: float | None) -> None:
        if value is not None:
            _gauge(registry, f"{PREFIX}_job_{name}", help_text, ["job"]).labels(**job).set(value)

    success = now if record.exit_code == 0 else previous.get(_key(LAST_SUCCESS, job))
    job_gauge("last_success_timestamp_seconds", "End of the last run that exited 0.", success)
    job_gauge("last_run_timestamp_seconds", "End of the last run, whatever its outcome.", now)
    job_gauge("duration_seconds", "How long the last run took.", now - record.started)
    job_gauge("exit_code", "Exit code of the last run (0 ok, 3 partial, ...).", record.exit_code)
    job_gauge("rows_inserted", "Rows the last run inserted.", record.rows_inserted)
    job_gauge("api_requests", "Metals.Dev requests the last run made.", record.api_requests)
    if record.job == "pipeline":
        _metal_metrics(registry, record, previous)
    # With BACKUP_S3_URL: what the bucket holds (carried forward when it could not be read).
    offsite = record.offsite_newest or previous.get(_key(OFFSITE_NEWEST, job))
    if offsite is not None:
        help_text = "Newest data in the bucket (a backup or a landed file), epoch seconds."
        _gauge(registry, OFFSITE_NEWEST, help_text, ["job"]).labels(**job).set(offsite)
    return registry


def _metal_metrics(registry: CollectorRegistry, record, previous: Previous) -> None:
    metals = record.metals or ()
    quotes = _gauge(registry, QUOTE_TIME, "Time of the newest stored quote (the API's).", ["metal"])
    failing = _gauge(registry, FAILING, "Hourly runs in a row this metal failed.", ["metal"])
    info = _gauge(
        registry, INFO, "1 per commodity: the currency and unit its prices are kept in.",
        ["metal", "currency", "unit"],
    )
    for metal, (currency, unit) in _units(record, previous, metals).items():
        info.labels(metal=metal, currency=currency, unit=unit).set(1)
    for metal in metals:
        labels = {"metal": metal}
        quote = (record.quotes or {}).get(metal, previous.get(_key(QUOTE_TIME, labels)))
        if quote is not None:
            quotes.labels(**labels).set(quote)
        if record.streaks is not None:
            streak = record.streaks.get(metal, 0)
        elif record.metals_failed is None:
            streak = previous.get(_key(FAILING, labels))
        elif metal in record.metals_failed:  # database down: count on from the last file
            streak = previous.get(_key(FAILING, labels), 0) + 1
        else:
            streak = 0
        if streak is not None:
            failing.labels(**labels).set(streak)
    month = record.requests_this_month
    if month is None:
        month = previous.get(_key(REQUESTS_THIS_MONTH, {}))
    if month is not None:
        _gauge(registry, REQUESTS_THIS_MONTH, "Metals.Dev requests this calendar month (UTC).").set(
            month
        )
    if record.monthly_quota:
        used = month or 0
        remaining = 0 if record.quota_exhausted else max(record.monthly_quota - used, 0)
        _gauge(registry, f"{PREFIX}_api_quota_requests", "Requests the plan allows a month.").set(
            record.monthly_quota
        )
        _gauge(registry, f"{PREFIX}_api_quota_remaining", "Requests left this month.").set(
            remaining
        )


def _units(record, previous: Previous, metals) -> dict[str, tuple[str, str]]:
    """Each metal's (currency, unit): from the database, else carried forward from the last
    file (the database down)."""
    units = dict(record.units or {})
    for (name, labels), _ in previous.items():
        found = dict(labels)
        if name == INFO and found.get("metal") in metals and found["metal"] not in units:
            units[found["metal"]] = (found.get("currency", ""), found.get("unit", ""))
    return units


def backup_metrics(registry: CollectorRegistry, backups: BackupFacts) -> None:
    """The newest backup's time, verification and size, from the backup catalogue; whether
    it has a copy off the host, when a bucket is configured."""
    _gauge(registry, f"{PREFIX}_backups", "Backups kept.").set(backups.count)
    newest = backups.newest
    if newest is None:
        return
    _gauge(registry, f"{PREFIX}_backup_newest_timestamp_seconds", "Newest backup's time.").set(
        newest.created_at
    )
    _gauge(
        registry, f"{PREFIX}_backup_newest_verified", "1 if the newest backup verified, else 0."
    ).set(1 if newest.verified else 0)
    _gauge(registry, f"{PREFIX}_backup_newest_size_bytes", "Newest backup's size.").set(
        newest.size_bytes
    )
    if newest.offsite is not None:
        _gauge(
            registry, f"{PREFIX}_backup_newest_offsite", "1 if the newest backup has a checked "
            "copy in the bucket (BACKUP_S3_URL), else 0."
        ).set(1 if newest.offsite else 0)


def model_metrics(registry: CollectorRegistry, models: list[ModelFacts]) -> None:
    """Skill and interval coverage per metal, target and horizon, from the models' metadata."""
    labels = ["metal", "target", "horizon"]
    mase = _gauge(registry, f"{PREFIX}_model_mase", "Walk-forward MAE / naive MAE.", labels)
    coverage = _gauge(
        registry, f"{PREFIX}_model_interval_coverage", "Share inside the 80% interval.", labels
    )
    for model in models:
        for horizon, skill in model.by_horizon.items():
            key = {"metal": model.metal, "target": model.target, "horizon": str(horizon)}
            if skill.mase is not None:
                mase.labels(**key).set(skill.mase)
            if skill.interval_coverage is not None:
                coverage.labels(**key).set(skill.interval_coverage)


def _key(name: str, labels: dict) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def read_previous(path: Path) -> Previous:
    """The values in an earlier textfile, or nothing if there is none (or it is unreadable)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    values: Previous = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[_key(sample.name, sample.labels)] = sample.value
    except ValueError:
        return {}
    return values


def write_textfile(directory: Path, name: str, registry: CollectorRegistry) -> Path:
    """Atomically (a temporary file renamed over the old one: a scrape never sees half a file)
    and readable by node_exporter's own user, whatever the job's private umask."""
    if not directory.is_dir():
        directory.mkdir(parents=True)
        directory.chmod(0o755)
    path = directory / f"{PREFIX}_{name}.prom"
    old_umask = os.umask(0o022)
    try:
        write_to_textfile(str(path), registry)
    finally:
        os.umask(old_umask)
    return path


def push(gateway: str, job: str, registry: CollectorRegistry) -> None:
    """POST to the Pushgateway, grouped by `job` alone (a CronJob pod's name would make a new
    group every run): metrics left out keep their earlier values there."""
    pushadd_to_gateway(gateway, job=job, registry=registry, timeout=PUSH_TIMEOUT_SECONDS)
