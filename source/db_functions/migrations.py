"""Versioned schema migrations, applied in order and recorded in `schema_migrations`."""

from __future__ import annotations

import logging

from source.config import KNOWN_METALS

log = logging.getLogger(__name__)

ANALYTICS_TABLE = "commodities_price_data_analytics"
_MIGRATION_LOCK_KEY = 7_245_001  # any constant; serialises concurrent migrators

_PRICE_COLUMNS = """
    metal               text             NOT NULL,
    currency            text             NOT NULL,
    unit                text             NOT NULL,
    status              text             NOT NULL DEFAULT 'success',
    rate_price          double precision NOT NULL CHECK (rate_price > 0),
    rate_ask            double precision,
    rate_bid            double precision,
    rate_high           double precision,
    rate_low            double precision,
    rate_change         double precision,
    rate_change_percent double precision,
    source              text             NOT NULL
                        CHECK (source IN ('api', 'backfill', 'csv', 'demo')),
    fetched_at          timestamptz,
    raw_file            text,
    loaded_at           timestamptz      NOT NULL DEFAULT now()
"""


def historic_table(metal: str) -> str:
    if metal not in KNOWN_METALS:
        raise ValueError(f"unknown metal {metal!r}")
    return f"{metal}_historic"


def _initial_schema() -> str:
    historic = "".join(
        f"""
        CREATE TABLE {historic_table(metal)} (
            "timestamp" timestamptz PRIMARY KEY,
            {_PRICE_COLUMNS},
            CHECK (metal = '{metal}')
        );"""
        for metal in KNOWN_METALS
    )
    return (
        historic
        + f"""
        CREATE TABLE {ANALYTICS_TABLE} (
            "timestamp" timestamptz NOT NULL,
            {_PRICE_COLUMNS},
            PRIMARY KEY (metal, "timestamp")
        );
        CREATE INDEX ON {ANALYTICS_TABLE} ("timestamp");
        CREATE TABLE pipeline_runs (
            run_id        bigserial   PRIMARY KEY,
            command       text        NOT NULL,
            started_at    timestamptz NOT NULL DEFAULT now(),
            finished_at   timestamptz,
            status        text        NOT NULL DEFAULT 'running',
            exit_code     integer,
            metals_ok     text[]      NOT NULL DEFAULT '{{}}',
            metals_failed text[]      NOT NULL DEFAULT '{{}}',
            rows_inserted integer     NOT NULL DEFAULT 0,
            rows_updated  integer     NOT NULL DEFAULT 0,
            api_requests  integer     NOT NULL DEFAULT 0,
            message       text
        );
    """
    )


_MODEL_TABLES = """
    CREATE TABLE model_runs (
        model_run_id  bigserial        PRIMARY KEY,
        trained_at    timestamptz      NOT NULL,
        metal         text             NOT NULL,
        target        text             NOT NULL,
        horizon       integer          NOT NULL,
        chosen_model  text             NOT NULL,
        rows_used     integer          NOT NULL,
        data_start    timestamptz,
        data_end      timestamptz,
        n_predictions integer          NOT NULL,
        model_mae     double precision,
        naive_mae     double precision,
        mase          double precision,
        direction_accuracy double precision,
        direction_base_rate double precision
    );
    CREATE INDEX ON model_runs (metal, target, trained_at DESC);
    CREATE TABLE price_predictions (
        metal         text             NOT NULL,
        target        text             NOT NULL,
        origin_time   timestamptz      NOT NULL,
        horizon       integer          NOT NULL,
        predicted_value double precision NOT NULL,
        last_value    double precision NOT NULL,
        chosen_model  text             NOT NULL,
        trained_at    timestamptz      NOT NULL,
        PRIMARY KEY (metal, target, origin_time, horizon)
    );
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "historic tables, analytics table, run ledger", _initial_schema()),
    (2, "model runs and price predictions", _MODEL_TABLES),
]


def apply_migrations(conn) -> list[int]:
    """Apply pending migrations in one transaction; return the versions applied."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        cur.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer     PRIMARY KEY,
                   name       text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        cur.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in cur.fetchall()}
        applied = []
        for version, name, statements in MIGRATIONS:
            if version in done:
                continue
            cur.execute(statements)
            cur.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
            applied.append(version)
            log.info("applied migration %d: %s", version, name)
    return applied
