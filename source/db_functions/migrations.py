"""Versioned schema migrations, applied in order and recorded in `schema_migrations`."""

from __future__ import annotations

import logging

from source.config import KNOWN_METALS, Settings
from source.db_functions.connection import Database, open_database

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

# Which (day, metal) a /timeseries answer covered, loaded in the same transaction as its rows,
# so a rerun of a backfill skips them (a day can lack a metal: asked once is enough).
_BACKFILL_AND_FREQUENCY = """
    CREATE TABLE backfill_coverage (
        day         date        NOT NULL,
        metal       text        NOT NULL,
        raw_file    text,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (day, metal)
    );
    ALTER TABLE model_runs ADD COLUMN frequency text NOT NULL DEFAULT 'hourly';
    ALTER TABLE price_predictions ADD COLUMN frequency text NOT NULL DEFAULT 'hourly';
"""

_ALL_COLUMNS = (
    '"timestamp", metal, currency, unit, status, rate_price, rate_ask, rate_bid, rate_high, '
    "rate_low, rate_change, rate_change_percent, source, fetched_at, raw_file, loaded_at"
)


def _partitioned_schema() -> str:
    """The analytics table becomes a LIST-partitioned table whose partitions ARE the historic
    tables: every row is stored once, a metal's rows are in both or neither by construction,
    and a load writes half as much. Existing rows move over in the same transaction."""
    old_indexes = [f"{historic_table(m)}_pkey" for m in KNOWN_METALS] + [
        f"{ANALYTICS_TABLE}_pkey",
        f"{ANALYTICS_TABLE}_timestamp_idx",
    ]
    statements = [f"ALTER TABLE {ANALYTICS_TABLE} RENAME TO analytics_before_v4"]
    statements += [f"ALTER TABLE {historic_table(m)} RENAME TO {m}_before_v4" for m in KNOWN_METALS]
    statements += [
        f"ALTER INDEX IF EXISTS {name} RENAME TO {name}_before_v4" for name in old_indexes
    ]
    # Each partition has its own primary key on "timestamp" (the historic table's key);
    # with one partition per metal that makes (metal, "timestamp") unique in the analytics
    # table. No key is declared on the parent: pg_restore --clean cannot drop the inherited
    # constraints such a key puts on the partitions.
    statements.append(
        f"""CREATE TABLE {ANALYTICS_TABLE} (
                "timestamp" timestamptz NOT NULL,
                {_PRICE_COLUMNS}
            ) PARTITION BY LIST (metal)"""
    )
    for metal in KNOWN_METALS:
        statements.append(
            f"CREATE TABLE {historic_table(metal)} PARTITION OF {ANALYTICS_TABLE} "
            f"""(PRIMARY KEY ("timestamp")) FOR VALUES IN ('{metal}')"""
        )
        statements.append(
            f"INSERT INTO {ANALYTICS_TABLE} ({_ALL_COLUMNS}) "
            f"SELECT {_ALL_COLUMNS} FROM {metal}_before_v4"
        )
    # Rows only the old analytics table held (there should be none) are kept too.
    statements.append(
        f"INSERT INTO {ANALYTICS_TABLE} ({_ALL_COLUMNS}) "
        f"SELECT {_ALL_COLUMNS} FROM analytics_before_v4 a WHERE NOT EXISTS "
        f"""(SELECT 1 FROM {ANALYTICS_TABLE} n WHERE n.metal = a.metal """
        """AND n."timestamp" = a."timestamp")"""
    )
    statements.append(
        "DROP TABLE analytics_before_v4, " + ", ".join(f"{m}_before_v4" for m in KNOWN_METALS)
    )
    return ";\n".join(statements) + ";"


def _analyst_views() -> str:
    """daily_ohlc and price_ranges (price_ranges_at(t) for any moment, e.g. in tests)."""
    metals = ", ".join(f"('{m}')" for m in KNOWN_METALS)
    extreme = """LEFT JOIN LATERAL (
            SELECT a.rate_price, a."timestamp" FROM {table} a
             WHERE a.metal = m.metal AND a."timestamp" >= p.starts AND a."timestamp" < p.ends
             ORDER BY a.rate_price {order}, a."timestamp" LIMIT 1) {alias} ON true"""
    return f"""
    CREATE VIEW daily_ohlc AS
    SELECT metal,
           ("timestamp" AT TIME ZONE 'UTC')::date AS day,
           (array_agg(rate_price ORDER BY "timestamp"))[1] AS open,
           max(rate_price) AS high,
           min(rate_price) AS low,
           (array_agg(rate_price ORDER BY "timestamp" DESC))[1] AS close,
           (array_agg("timestamp" ORDER BY rate_price DESC, "timestamp"))[1] AS high_at,
           (array_agg("timestamp" ORDER BY rate_price, "timestamp"))[1] AS low_at,
           count(*) AS rows
      FROM {ANALYTICS_TABLE}
     GROUP BY metal, ("timestamp" AT TIME ZONE 'UTC')::date;

    CREATE FUNCTION price_ranges_at(at timestamptz)
    RETURNS TABLE (metal text, period text, starts timestamptz, ends timestamptz,
                   high double precision, high_at timestamptz,
                   low double precision, low_at timestamptz)
    LANGUAGE sql STABLE AS $$
      WITH midnight AS (
        SELECT date_trunc('day', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS today,
               date_trunc('week', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS monday),
      periods (period, starts, ends, position) AS (
        SELECT 'today', today, at + interval '1 microsecond', 1 FROM midnight
        UNION ALL SELECT 'yesterday', today - interval '1 day', today, 2 FROM midnight
        UNION ALL SELECT 'this week', monday, at + interval '1 microsecond', 3 FROM midnight
        UNION ALL SELECT 'last 7 days', at - interval '7 days', at + interval '1 microsecond', 4
          FROM midnight)
      SELECT m.metal, p.period, p.starts, p.ends, hi.rate_price, hi."timestamp",
             lo.rate_price, lo."timestamp"
        FROM (VALUES {metals}) AS m(metal)
        CROSS JOIN periods p
        {extreme.format(table=ANALYTICS_TABLE, order="DESC", alias="hi")}
        {extreme.format(table=ANALYTICS_TABLE, order="ASC", alias="lo")}
       ORDER BY m.metal, p.position
    $$;

    CREATE VIEW price_ranges AS SELECT * FROM price_ranges_at(now());
"""


_INTERVALS = """
    ALTER TABLE price_predictions ADD COLUMN lower double precision,
                                  ADD COLUMN upper double precision;
    ALTER TABLE model_runs ADD COLUMN interval_coverage double precision,
                           ADD COLUMN interval_score double precision,
                           ADD COLUMN naive_interval_score double precision,
                           ADD COLUMN interval_score_ratio double precision;
"""


def _quality_marks() -> str:
    """Every row gets a quality mark (existing ones `ok`); the analyst views read `ok` rows
    only; quality_events keeps every change of a mark (rule or person) for `quality`."""
    views = _analyst_views()
    views = views.replace(
        f"      FROM {ANALYTICS_TABLE}\n     GROUP BY",
        f"      FROM {ANALYTICS_TABLE}\n     WHERE quality = 'ok'\n     GROUP BY",
    ).replace(
        'WHERE a.metal = m.metal AND a."timestamp" >= p.starts',
        "WHERE a.metal = m.metal AND a.quality = 'ok' AND a.\"timestamp\" >= p.starts",
    )
    views = views.replace("CREATE VIEW", "CREATE OR REPLACE VIEW").replace(
        "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"
    )
    # On each partition, not the parent: pg_restore --clean (before PostgreSQL 17) cannot drop
    # the partitions' share of an index declared on the parent.
    indexes = "\n    ".join(
        f"CREATE INDEX ON {historic_table(m)} (\"timestamp\") WHERE quality <> 'ok';"
        for m in KNOWN_METALS
    )
    return f"""
    ALTER TABLE {ANALYTICS_TABLE}
        ADD COLUMN quality text NOT NULL DEFAULT 'ok'
            CHECK (quality IN ('ok', 'suspect', 'rejected')),
        ADD COLUMN quality_decision text NOT NULL DEFAULT 'rule',
        ADD COLUMN quality_reason text;
    {indexes}
    CREATE TABLE quality_events (
        event_id    bigserial   PRIMARY KEY,
        metal       text        NOT NULL,
        "timestamp" timestamptz NOT NULL,
        price       double precision NOT NULL,
        quality     text        NOT NULL,
        decision    text        NOT NULL,
        reason      text,
        decided_by  text        NOT NULL,
        decided_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ON quality_events (metal, "timestamp");
    {views}
"""


# The ledger's command column takes the job's name, as the metrics' `job` label does: the
# hourly run was recorded as `run`, the CSV import as `import-csv`.
_JOB_NAMES = """
    UPDATE pipeline_runs SET command = 'pipeline' WHERE command = 'run';
    UPDATE pipeline_runs SET command = 'import_csv' WHERE command = 'import-csv';
"""


# With BACKUP_S3_URL: how many landed files the run copied to the bucket, or why it could not
# (NULL, NULL: no bucket configured, or a row from before).
_OFFSITE_COPY = """
    ALTER TABLE pipeline_runs ADD COLUMN offsite_copied integer, ADD COLUMN offsite_error text;
"""


MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "historic tables, analytics table, run ledger", _initial_schema()),
    (2, "model runs and price predictions", _MODEL_TABLES),
    (3, "backfill coverage; model frequency", _BACKFILL_AND_FREQUENCY),
    (4, "historic tables become the partitions of the analytics table", _partitioned_schema()),
    (5, "analyst views daily_ohlc and price_ranges", _analyst_views()),
    (6, "80% price intervals", _INTERVALS),
    (7, "quality marks; analyst views read good rows only", _quality_marks()),
    (8, "one name per job in the run ledger", _JOB_NAMES),
    (9, "the run ledger records the copy of its landed files to the bucket", _OFFSITE_COPY),
]


def pending_migrations(cur) -> list[int]:
    """The versions this database lacks, without changing it (all of them before the first
    migration)."""
    cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not cur.fetchone()[0]:
        return [version for version, _, _ in MIGRATIONS]
    cur.execute("SELECT version FROM schema_migrations")
    done = {row[0] for row in cur.fetchall()}
    return [version for version, _, _ in MIGRATIONS if version not in done]


def apply_migrations(conn, up_to: int | None = None) -> list[int]:
    """Apply pending migrations (up to a version) in one transaction; return those applied."""
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
            if version in done or (up_to is not None and version > up_to):
                continue
            cur.execute(statements)
            cur.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
            applied.append(version)
            log.info("applied migration %d: %s", version, name)
    return applied


def connect_and_migrate(settings: Settings) -> Database:
    """Open (or start) the database and bring its schema up to date."""
    database = open_database(settings)
    conn = database.connect()
    try:
        apply_migrations(conn)
    finally:
        conn.close()
    return database
