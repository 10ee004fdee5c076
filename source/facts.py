"""The status facts as types: what `status`, `status --json`, the report and the metrics show,
gathered once by `source.status` (the database), `source.ml.registry` (the models' metadata)
and the backup catalogue. Times are ISO 8601 strings in UTC, as `--json` prints them; ages are
seconds. `StatusFacts.to_json()` is the `--json` object: each field below is one of its keys
(docs/status.md lists them), in this order. A field marked `NOT_IN_JSON` is for the metrics
only."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

NOT_IN_JSON = {"json": False}
SOURCES = ("api", "backfill", "csv", "demo")  # where a stored row came from (rows_by_source)


def to_plain(value: Any) -> Any:
    """Dataclasses as dicts (fields in order, those marked NOT_IN_JSON left out), recursively;
    a dataclass with its own `to_json` decides its shape."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        own = getattr(value, "to_json", None)
        if own is not None:
            return own()
        return _fields(value)
    if isinstance(value, list | tuple):
        return [to_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    return value


def _fields(value: Any) -> dict[str, Any]:
    return {
        f.name: to_plain(getattr(value, f.name))
        for f in dataclasses.fields(value)
        if f.metadata.get("json", True)
    }


@dataclass
class MetalFacts:
    """One metal's newest good quote and its rows (currency and unit None: no rows yet)."""

    metal: str
    currency: str | None
    unit: str | None
    latest_price: float | None
    latest_ask: float | None
    quote_time: str | None
    quote_age_seconds: float | None
    rows: int
    rows_by_source: dict[str, int]  # api, backfill, csv, demo


@dataclass
class RangeFacts:
    """High and low with when, for one metal and period (today, yesterday, this week, last 7
    days); high and low None when the period holds no quote."""

    metal: str
    period: str
    starts: str | None
    ends: str | None
    high: float | None
    high_at: str | None
    low: float | None
    low_at: str | None


@dataclass
class ForecastFacts:
    """The latest forecast of one metal, target and horizon, with its 80% interval."""

    metal: str
    target: str
    horizon: int
    origin_time: str
    predicted_value: float
    lower: float | None  # None: made before intervals were
    upper: float | None
    last_value: float
    frequency: str  # hourly or daily: what a step of `horizon` is
    target_time: str  # the trading hour (or weekday) it is for
    stale: bool  # quotes at or after its run's first target time exist


@dataclass
class RunRow:
    """One run in the ledger (pipeline_runs)."""

    run_id: int
    command: str
    started_at: str | None
    finished_at: str | None
    status: str
    exit_code: int | None
    api_requests: int
    metals_failed: list[str]
    rows_inserted: int
    duration_seconds: float | None


@dataclass
class RunFacts:
    recent: list[RunRow]  # the last 10, newest first
    api_requests_this_month: int  # counted in the ledger, this calendar month (UTC)
    last_successful_run: str | None  # the last hourly run that succeeded, or partly
    last_successful_run_age_seconds: float | None
    # With BACKUP_S3_URL: why the newest run that tried could not copy its landed files to the
    # bucket (None: it could, or no run tried).
    offsite_error: str | None = None


@dataclass
class UndecidedQuote:
    """A suspect quote still waiting for the next quotes to confirm or clear it."""

    metal: str
    time: str
    price: float
    quality: str
    decision: str
    reason: str | None


@dataclass
class QualityFacts:
    undecided: list[UndecidedQuote]
    suspect: int  # quotes kept as suspect
    rejected: int  # quotes kept as rejected


@dataclass
class HorizonSkill:
    """A model's walk-forward skill at one horizon."""

    mase: float | None
    direction_accuracy: float | None
    beats_naive: bool  # MASE below 1
    chosen: str | None  # the model family chosen for this horizon
    interval_coverage: float | None  # share of true values inside the 80% interval
    interval_score_ratio: float | None


@dataclass
class ModelFacts:
    """One metal's model of one target, from its metadata file; untrained: only metal,
    target and trained (false) are in the JSON."""

    metal: str
    target: str
    trained: bool
    trained_at: str | None = None
    rows_used: int | None = None
    frequency: str = "hourly"
    by_horizon: dict[str, HorizonSkill] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        if not self.trained:
            return {"metal": self.metal, "target": self.target, "trained": False}
        return _fields(self)


@dataclass
class NewestBackup:
    id: str
    age_seconds: float
    verified: bool | None  # None: never verified; False: verification failed
    level: str | None  # how far the verification went (restored, read only, ...)
    size_bytes: int
    offsite: bool | None  # copied to the bucket; None: no bucket configured
    created_at: float = field(default=0.0, metadata=NOT_IN_JSON)  # epoch seconds


@dataclass
class BackupFacts:
    count: int
    newest: NewestBackup | None


@dataclass
class ApiUsage:
    """The API's own /usage answer (`status --api`)."""

    plan: str | None
    total: int | None
    used: int | None
    remaining: int | None


@dataclass
class MonitorFacts:
    """What the hourly run's monitors read from the database once the run is recorded."""

    quotes: dict[str, float]  # metal: its newest quote's time, epoch seconds
    streaks: dict[str, int]  # metal: hourly runs in a row it failed
    requests_this_month: int
    units: dict[str, tuple[str, str]] = field(default_factory=dict)  # metal: (currency, unit)


@dataclass
class StatusFacts:
    """Everything status and the report show; `warnings` empty means healthy."""

    generated_at: str
    database: str
    demo: bool
    currency: str  # of the stored rows (the settings' only where there are none)
    unit: str | None  # None: the commodities are kept in several units (each metal says its own)
    notes: list[str]  # e.g. CURRENCY/UNIT ignored because the rows say otherwise
    metals: list[MetalFacts]
    runs: RunFacts
    forecasts: list[ForecastFacts]
    ranges: list[RangeFacts]
    quality: QualityFacts
    models: list[ModelFacts]
    backups: BackupFacts
    api_usage: ApiUsage | None
    failing_streaks: dict[str, int]  # metal: hourly runs in a row it failed
    warnings: list[str] = field(default_factory=list)
    healthy: bool = True

    def to_json(self) -> dict[str, Any]:
        return _fields(self)
