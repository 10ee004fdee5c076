"""Settings read once at start-up from the environment, a `.env` file and `*_FILE` secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

# The metals the API quotes at /metal/spot: its /latest list less the exchanges' and fixings'
# prices (lbma_gold_am, lme_copper, ...). METALS may name these only, refused before any
# request otherwise; each becomes a table named after it (<metal>_historic).
KNOWN_METALS = (
    "gold",
    "silver",
    "platinum",
    "palladium",
    "copper",
    "aluminum",
    "lead",
    "nickel",
    "zinc",
)
DEFAULT_METALS = ("gold", "silver", "platinum", "palladium")
# The unit /metal/spot quotes a commodity in when it is not the troy ounce (copper's real body
# says "mt"); /latest and /timeseries quote every metal per troy ounce.
SPOT_UNITS = {"copper": "mt"}
DEMO_METALS = (*DEFAULT_METALS, "copper")  # the demo shows a commodity quoted per tonne
LOG_FORMATS = ("text", "json")
# Monitor URLs count as secrets: a healthchecks.io ping URL is its own key, and a Pushgateway
# URL may carry credentials. Never logged; each may come from NAME_FILE too.
SECRET_NAMES = (
    "METALS_DEV_API_KEY",
    "PGPASSWORD",
    "HEALTHCHECK_URL",
    "PUSHGATEWAY_URL",
    "AWS_SECRET_ACCESS_KEY",
    "BACKUP_AGE_IDENTITY",  # the age identity (private keys) that decrypts backups
)
# Every variable the project reads (each secret also as NAME_FILE); tests clear them all.
VARIABLES = (
    "METALS_DEV_API_KEY",
    "METALS_DEV_BASE_URL",
    "METALS",
    "CURRENCY",
    "UNIT",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "EMBEDDED_PG_DIR",
    "PG_BIN_DIR",
    "DATA_DIR",
    "LOG_DIR",
    "LOG_FORMAT",
    "MODELS_DIR",
    "BACKUP_DIR",
    "BACKUP_KEEP",
    "HTTP_TIMEOUT",
    "HTTP_MAX_ATTEMPTS",
    "HTTP_BACKOFF",
    "MAX_RESPONSE_BYTES",
    "DATA_DIR_MIN_FREE_BYTES",
    "METRICS_DIR",
    "PUSHGATEWAY_URL",
    "HEALTHCHECK_URL",
    "METALS_DEV_MONTHLY_QUOTA",
    "BACKUP_S3_URL",
    "BACKUP_KEEP_REMOTE",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_PROFILE",
    "BACKUP_AGE_RECIPIENTS",
    "BACKUP_AGE_RECIPIENTS_FILE",
) + tuple(f"{name}_FILE" for name in SECRET_NAMES)
DEMO_API_KEY = "demo-key-not-secret"
DEMO_DATABASE = "commodities_demo"
DEFAULT_DATABASE = "commodities"
DEMO_SUBDIR = "demo"  # under DATA_DIR, MODELS_DIR and BACKUP_DIR
MIB = 1 << 20
# Real bodies are under 2 KB; a body past this is refused while it streams in.
DEFAULT_MAX_RESPONSE_BYTES = 4 * MIB


class ConfigError(Exception):
    """A configuration problem the user must fix; reported in one line with exit code 2."""


@dataclass(frozen=True)
class S3Access:
    """Where and how to reach an S3-compatible store: the standard AWS variables, read with
    the rest of the settings (so `.env` and *_FILE work for them too). Unset ones are left to
    boto3's own chain (profiles, instance roles)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    profile: str | None = None


@dataclass(frozen=True)
class Settings:
    api_key: str | None = field(repr=False)
    base_url: str
    metals: tuple[str, ...]
    currency: str
    unit: str | None  # None: each commodity's unit is its first quote's
    pg_host: str | None
    pg_port: int | None
    pg_user: str | None
    pg_password: str | None = field(repr=False)
    pg_database: str
    embedded_pg_dir: Path
    pg_bin_dir: Path | None
    data_dir: Path
    log_dir: Path
    models_dir: Path
    backup_dir: Path
    backup_keep: int
    http_timeout: float
    http_max_attempts: int
    http_backoff: float
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    min_free_bytes: int | None = None  # None: room for a response per metal (at least 4)
    metrics_dir: Path | None = None
    pushgateway_url: str | None = field(default=None, repr=False)
    healthcheck_url: str | None = field(default=None, repr=False)
    monthly_quota: int | None = None  # requests the API plan allows a month, when known
    backup_s3_url: str | None = None  # s3://bucket/prefix: every backup is copied there too
    backup_keep_remote: int = 56  # two weeks at four a day
    s3: S3Access = field(default_factory=lambda: S3Access(), repr=False)
    # age public keys (age1...): when set, every backup file is stored encrypted to them.
    backup_age_recipients: tuple[str, ...] = ()
    # The age identity file's text (AGE-SECRET-KEY-... lines): what decrypts backups.
    backup_age_identity: str | None = field(default=None, repr=False)
    demo: bool = False
    log_format: str = "text"  # or "json": one JSON object a line, for a log shipper

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never reach a log line, a file or an error message."""
        values = (
            self.api_key,
            self.pg_password,
            self.healthcheck_url,
            self.pushgateway_url,
            self.s3.secret_access_key,
            *age_secret_keys(self.backup_age_identity or ""),
        )
        return tuple(s for s in values if s and len(s) >= 4)

    @property
    def free_space_needed(self) -> int:
        """Bytes DATA_DIR must have free before a run spends a request (0: no check)."""
        if self.min_free_bytes is not None:
            return self.min_free_bytes
        return max(len(self.metals), 4) * self.max_response_bytes

    @property
    def source_tag(self) -> str:
        return "demo" if self.demo else "api"

    def with_metals(self, metals: str | None) -> Settings:
        return self if metals is None else replace(self, metals=parse_metals(metals))


def read_environment(
    environ: Mapping[str, str] | None = None, env_file: Path | None = None
) -> dict:
    """Merge `.env` (lowest), the process environment, then `NAME_FILE` secrets (highest)."""
    environ = os.environ if environ is None else environ
    env_file = Path(".env") if env_file is None else env_file
    merged: dict[str, str] = {}
    if env_file.is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(environ)
    for name in SECRET_NAMES:
        file_name = merged.get(f"{name}_FILE")
        if file_name:
            merged[name] = read_secret_file(f"{name}_FILE", file_name)
    return merged


def read_secret_file(variable: str, path: str) -> str:
    """A secret from a file; ConfigError in one line, with the fix, when it cannot be read."""
    try:
        return Path(path).read_text().strip()
    except PermissionError:
        raise ConfigError(
            f"cannot read {variable} ({path}): permission denied for uid {os.getuid()}; "
            "make the file readable by it (Docker Compose: chmod 644 secrets/*, the secrets "
            "folder's mode 700 keeps them private on the host; see README, Deployment)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {variable} ({path}): {exc.strerror}") from None


def parse_metals(text: str) -> tuple[str, ...]:
    metals = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    unknown = [m for m in metals if m not in KNOWN_METALS]
    if not metals or unknown:
        raise ConfigError(
            f"unknown metal(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from the API's spot metals {', '.join(KNOWN_METALS)}"
        )
    return metals


def _number(env: Mapping[str, str], name: str, default: str, kind: type, minimum: float):
    raw = env.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    demo: bool = False,
    require_api_key: bool = True,
    env_file: Path | None = None,
) -> Settings:
    """Build Settings; raise ConfigError with a one-line message when something is wrong."""
    env = read_environment(environ, env_file)
    api_key = env.get("METALS_DEV_API_KEY") or None
    if demo:
        api_key = DEMO_API_KEY
    elif require_api_key and not api_key:
        raise ConfigError(
            "METALS_DEV_API_KEY is not set (set it, or METALS_DEV_API_KEY_FILE, "
            "or try `python main.py --demo`)"
        )
    pg_port = env.get("PGPORT")
    return Settings(
        api_key=api_key,
        base_url=_base_url(env.get("METALS_DEV_BASE_URL", "https://api.metals.dev/v1")),
        metals=parse_metals(env.get("METALS") or ",".join(DEMO_METALS if demo else DEFAULT_METALS)),
        currency=env.get("CURRENCY", "USD").upper(),
        unit=env.get("UNIT") or None,
        # The demo always uses the embedded server, whatever PGHOST says.
        pg_host=None if demo else (env.get("PGHOST") or None),
        pg_port=int(_number(env, "PGPORT", pg_port, int, 1)) if pg_port else None,
        pg_user=env.get("PGUSER") or None,
        pg_password=env.get("PGPASSWORD") or None,
        pg_database=DEMO_DATABASE if demo else env.get("PGDATABASE", DEFAULT_DATABASE),
        embedded_pg_dir=Path(env.get("EMBEDDED_PG_DIR", "pgdata")),
        pg_bin_dir=Path(env["PG_BIN_DIR"]) if env.get("PG_BIN_DIR") else None,
        # Demo responses land apart from real ones, so a real run never replays them.
        data_dir=Path(env.get("DATA_DIR", "source/data")) / (DEMO_SUBDIR if demo else ""),
        log_dir=Path(env.get("LOG_DIR", "logs")),
        # Demo models and backups live apart too: trying the demo on a production host must
        # not overwrite the real models, and a demo backup must not hold them.
        models_dir=Path(env.get("MODELS_DIR", "trained_models")) / (DEMO_SUBDIR if demo else ""),
        backup_dir=Path(env.get("BACKUP_DIR", "backups")) / (DEMO_SUBDIR if demo else ""),
        backup_keep=_number(env, "BACKUP_KEEP", "28", int, 1),
        http_timeout=_number(env, "HTTP_TIMEOUT", "10", float, 0.1),
        http_max_attempts=_number(env, "HTTP_MAX_ATTEMPTS", "4", int, 1),
        http_backoff=_number(env, "HTTP_BACKOFF", "1", float, 0),
        max_response_bytes=_number(
            env, "MAX_RESPONSE_BYTES", str(DEFAULT_MAX_RESPONSE_BYTES), int, 1024
        ),
        min_free_bytes=(
            _number(env, "DATA_DIR_MIN_FREE_BYTES", "0", int, 0)
            if env.get("DATA_DIR_MIN_FREE_BYTES")
            else None
        ),
        metrics_dir=Path(env["METRICS_DIR"]) if env.get("METRICS_DIR") else None,
        pushgateway_url=env.get("PUSHGATEWAY_URL") or None,
        healthcheck_url=env.get("HEALTHCHECK_URL") or None,
        monthly_quota=(
            _number(env, "METALS_DEV_MONTHLY_QUOTA", "0", int, 1)
            if env.get("METALS_DEV_MONTHLY_QUOTA")
            else None
        ),
        backup_s3_url=_s3_url(env.get("BACKUP_S3_URL")),
        backup_keep_remote=_number(env, "BACKUP_KEEP_REMOTE", "56", int, 1),
        s3=S3Access(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            profile=env.get("AWS_PROFILE") or None,
        ),
        backup_age_recipients=_age_recipients(env),
        backup_age_identity=env.get("BACKUP_AGE_IDENTITY") or None,
        demo=demo,
        log_format=_log_format(env.get("LOG_FORMAT") or "text"),
    )


def age_secret_keys(text: str) -> list[str]:
    """The keys of an age identity file (one AGE-SECRET-KEY-... a line; # comments)."""
    return [line.strip() for line in text.splitlines() if line.strip().startswith("AGE-SECRET-")]


def _age_recipients(env: Mapping[str, str]) -> tuple[str, ...]:
    """BACKUP_AGE_RECIPIENTS (comma- or space-separated) or the lines of
    BACKUP_AGE_RECIPIENTS_FILE (as age -R reads them: one key a line, # comments)."""
    text = env.get("BACKUP_AGE_RECIPIENTS") or ""
    if env.get("BACKUP_AGE_RECIPIENTS_FILE"):
        body = read_secret_file("BACKUP_AGE_RECIPIENTS_FILE", env["BACKUP_AGE_RECIPIENTS_FILE"])
        text += "\n" + "\n".join(line.split("#")[0] for line in body.splitlines())
    keys = tuple(dict.fromkeys(k for k in text.replace(",", " ").split() if k))
    wrong = [k for k in keys if not (k.startswith("age1") and len(k) == 62)]
    if wrong:
        shown = wrong[0] if not wrong[0].startswith("AGE-SECRET-") else "a secret key (!)"
        raise ConfigError(
            f"BACKUP_AGE_RECIPIENTS must hold age public keys (age1..., 62 characters, from "
            f"age-keygen -y), got {shown}"
        )
    return keys


def _log_format(value: str) -> str:
    if value.lower() not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be text or json, got {value!r}")
    return value.lower()


def _base_url(value: str) -> str:
    """An http(s) URL with a host, checked before any request (requests would retry a bad one)."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"METALS_DEV_BASE_URL must be an http(s) URL like https://api.metals.dev/v1, "
            f"got {value!r}"
        )
    return value.strip().rstrip("/")


def check_folder(variable: str, folder: Path) -> None:
    """A folder the command writes to exists or can be made, and is writable: else one line."""
    # Made private whatever the umask, like everything the jobs write (raw answers, backups).
    previous = os.umask(0o077)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{variable}: cannot create {folder} ({exc.strerror}); set {variable} to a "
            "writable folder"
        ) from None
    finally:
        os.umask(previous)
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{variable}: {folder} is not a writable folder for uid {os.getuid()}; set "
            f"{variable} to one"
        )


def _s3_url(value: str | None) -> str | None:
    """`s3://bucket` or `s3://bucket/prefix`, checked before any backup work."""
    if not value:
        return None
    if not value.startswith("s3://") or not value[5:].split("/")[0]:
        raise ConfigError(f"BACKUP_S3_URL must look like s3://bucket/prefix, got {value!r}")
    return value.rstrip("/")
