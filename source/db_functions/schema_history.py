"""The schema's history: each migration as the fixed text databases applied. Never edit one
(a database that applied it refuses to start: its recorded checksum no longer matches); add
a new version instead. The early texts name the four metals the schema was first made for:
that is what they did on every database that ran them."""

from __future__ import annotations

_V1_INITIAL = """
        CREATE TABLE gold_historic (
            "timestamp" timestamptz PRIMARY KEY,

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
,
            CHECK (metal = 'gold')
        );
        CREATE TABLE silver_historic (
            "timestamp" timestamptz PRIMARY KEY,

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
,
            CHECK (metal = 'silver')
        );
        CREATE TABLE platinum_historic (
            "timestamp" timestamptz PRIMARY KEY,

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
,
            CHECK (metal = 'platinum')
        );
        CREATE TABLE palladium_historic (
            "timestamp" timestamptz PRIMARY KEY,

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
,
            CHECK (metal = 'palladium')
        );
        CREATE TABLE commodities_price_data_analytics (
            "timestamp" timestamptz NOT NULL,

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
,
            PRIMARY KEY (metal, "timestamp")
        );
        CREATE INDEX ON commodities_price_data_analytics ("timestamp");
        CREATE TABLE pipeline_runs (
            run_id        bigserial   PRIMARY KEY,
            command       text        NOT NULL,
            started_at    timestamptz NOT NULL DEFAULT now(),
            finished_at   timestamptz,
            status        text        NOT NULL DEFAULT 'running',
            exit_code     integer,
            metals_ok     text[]      NOT NULL DEFAULT '{}',
            metals_failed text[]      NOT NULL DEFAULT '{}',
            rows_inserted integer     NOT NULL DEFAULT 0,
            rows_updated  integer     NOT NULL DEFAULT 0,
            api_requests  integer     NOT NULL DEFAULT 0,
            message       text
        );
"""


_V2_MODELS = """
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
_V3_BACKFILL_AND_FREQUENCY = """
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


# The analytics table becomes a LIST-partitioned table whose partitions ARE the historic
# tables: every row is stored once, a metal's rows are in both or neither by construction.
# Existing rows move over in the same transaction. Each partition has its own primary key on
# "timestamp"; no key is declared on the parent: pg_restore --clean cannot drop the inherited
# constraints such a key puts on the partitions.
_V4_PARTITIONS = """
ALTER TABLE commodities_price_data_analytics RENAME TO analytics_before_v4;
ALTER TABLE gold_historic RENAME TO gold_before_v4;
ALTER TABLE silver_historic RENAME TO silver_before_v4;
ALTER TABLE platinum_historic RENAME TO platinum_before_v4;
ALTER TABLE palladium_historic RENAME TO palladium_before_v4;
ALTER INDEX IF EXISTS gold_historic_pkey RENAME TO gold_historic_pkey_before_v4;
ALTER INDEX IF EXISTS silver_historic_pkey RENAME TO silver_historic_pkey_before_v4;
ALTER INDEX IF EXISTS platinum_historic_pkey RENAME TO platinum_historic_pkey_before_v4;
ALTER INDEX IF EXISTS palladium_historic_pkey RENAME TO palladium_historic_pkey_before_v4;
ALTER INDEX IF EXISTS commodities_price_data_analytics_pkey RENAME TO
    commodities_price_data_analytics_pkey_before_v4;
ALTER INDEX IF EXISTS commodities_price_data_analytics_timestamp_idx RENAME TO
    commodities_price_data_analytics_timestamp_idx_before_v4;
CREATE TABLE commodities_price_data_analytics (
                "timestamp" timestamptz NOT NULL,

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

            ) PARTITION BY LIST (metal);
CREATE TABLE gold_historic PARTITION OF commodities_price_data_analytics (PRIMARY KEY
    ("timestamp")) FOR VALUES IN ('gold');
INSERT INTO commodities_price_data_analytics ("timestamp", metal, currency, unit, status,
    rate_price, rate_ask, rate_bid, rate_high, rate_low, rate_change, rate_change_percent,
    source, fetched_at, raw_file, loaded_at) SELECT "timestamp", metal, currency, unit, status,
    rate_price, rate_ask, rate_bid, rate_high, rate_low, rate_change, rate_change_percent,
    source, fetched_at, raw_file, loaded_at FROM gold_before_v4;
CREATE TABLE silver_historic PARTITION OF commodities_price_data_analytics (PRIMARY KEY
    ("timestamp")) FOR VALUES IN ('silver');
INSERT INTO commodities_price_data_analytics ("timestamp", metal, currency, unit, status,
    rate_price, rate_ask, rate_bid, rate_high, rate_low, rate_change, rate_change_percent,
    source, fetched_at, raw_file, loaded_at) SELECT "timestamp", metal, currency, unit, status,
    rate_price, rate_ask, rate_bid, rate_high, rate_low, rate_change, rate_change_percent,
    source, fetched_at, raw_file, loaded_at FROM silver_before_v4;
CREATE TABLE platinum_historic PARTITION OF commodities_price_data_analytics (PRIMARY KEY
    ("timestamp")) FOR VALUES IN ('platinum');
INSERT INTO commodities_price_data_analytics ("timestamp", metal, currency, unit, status,
    rate_price, rate_ask, rate_bid, rate_high, rate_low, rate_change, rate_change_percent,
    source, fetched_at, raw_file, loaded_at) SELECT "timestamp", metal, currency, unit, status,
    rate_price, rate_ask, rate_bid, rate_high, rate_low, rate_change, rate_change_percent,
    source, fetched_at, raw_file, loaded_at FROM platinum_before_v4;
CREATE TABLE palladium_historic PARTITION OF commodities_price_data_analytics (PRIMARY KEY
    ("timestamp")) FOR VALUES IN ('palladium');
INSERT INTO commodities_price_data_analytics ("timestamp", metal, currency, unit, status,
    rate_price, rate_ask, rate_bid, rate_high, rate_low, rate_change, rate_change_percent,
    source, fetched_at, raw_file, loaded_at) SELECT "timestamp", metal, currency, unit, status,
    rate_price, rate_ask, rate_bid, rate_high, rate_low, rate_change, rate_change_percent,
    source, fetched_at, raw_file, loaded_at FROM palladium_before_v4;
INSERT INTO commodities_price_data_analytics ("timestamp", metal, currency, unit, status,
    rate_price, rate_ask, rate_bid, rate_high, rate_low, rate_change, rate_change_percent,
    source, fetched_at, raw_file, loaded_at) SELECT "timestamp", metal, currency, unit, status,
    rate_price, rate_ask, rate_bid, rate_high, rate_low, rate_change, rate_change_percent,
    source, fetched_at, raw_file, loaded_at FROM analytics_before_v4 a WHERE NOT EXISTS (SELECT
    1 FROM commodities_price_data_analytics n WHERE n.metal = a.metal AND n."timestamp" =
    a."timestamp");
DROP TABLE analytics_before_v4, gold_before_v4, silver_before_v4, platinum_before_v4,
    palladium_before_v4;
"""


# daily_ohlc and price_ranges (price_ranges_at(t) for any moment, e.g. in tests).
_V5_ANALYST_VIEWS = """
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
      FROM commodities_price_data_analytics
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
        FROM (VALUES ('gold'), ('silver'), ('platinum'), ('palladium')) AS m(metal)
        CROSS JOIN periods p
        LEFT JOIN LATERAL (
            SELECT a.rate_price, a."timestamp" FROM commodities_price_data_analytics a
             WHERE a.metal = m.metal AND a."timestamp" >= p.starts AND a."timestamp" < p.ends
             ORDER BY a.rate_price DESC, a."timestamp" LIMIT 1) hi ON true
        LEFT JOIN LATERAL (
            SELECT a.rate_price, a."timestamp" FROM commodities_price_data_analytics a
             WHERE a.metal = m.metal AND a."timestamp" >= p.starts AND a."timestamp" < p.ends
             ORDER BY a.rate_price ASC, a."timestamp" LIMIT 1) lo ON true
       ORDER BY m.metal, p.position
    $$;

    CREATE VIEW price_ranges AS SELECT * FROM price_ranges_at(now());
"""


_V6_INTERVALS = """
    ALTER TABLE price_predictions ADD COLUMN lower double precision,
                                  ADD COLUMN upper double precision;
    ALTER TABLE model_runs ADD COLUMN interval_coverage double precision,
                           ADD COLUMN interval_score double precision,
                           ADD COLUMN naive_interval_score double precision,
                           ADD COLUMN interval_score_ratio double precision;
"""


# Every row gets a quality mark (existing ones `ok`); the analyst views read `ok` rows only;
# quality_events keeps every change of a mark. The partial indexes are on each partition, not
# the parent: pg_restore --clean (before PostgreSQL 17) cannot drop the partitions' share of
# an index declared on the parent.
_V7_QUALITY_MARKS = """
    ALTER TABLE commodities_price_data_analytics
        ADD COLUMN quality text NOT NULL DEFAULT 'ok'
            CHECK (quality IN ('ok', 'suspect', 'rejected')),
        ADD COLUMN quality_decision text NOT NULL DEFAULT 'rule',
        ADD COLUMN quality_reason text;
    CREATE INDEX ON gold_historic ("timestamp") WHERE quality <> 'ok';
    CREATE INDEX ON silver_historic ("timestamp") WHERE quality <> 'ok';
    CREATE INDEX ON platinum_historic ("timestamp") WHERE quality <> 'ok';
    CREATE INDEX ON palladium_historic ("timestamp") WHERE quality <> 'ok';
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

    CREATE OR REPLACE VIEW daily_ohlc AS
    SELECT metal,
           ("timestamp" AT TIME ZONE 'UTC')::date AS day,
           (array_agg(rate_price ORDER BY "timestamp"))[1] AS open,
           max(rate_price) AS high,
           min(rate_price) AS low,
           (array_agg(rate_price ORDER BY "timestamp" DESC))[1] AS close,
           (array_agg("timestamp" ORDER BY rate_price DESC, "timestamp"))[1] AS high_at,
           (array_agg("timestamp" ORDER BY rate_price, "timestamp"))[1] AS low_at,
           count(*) AS rows
      FROM commodities_price_data_analytics
     WHERE quality = 'ok'
     GROUP BY metal, ("timestamp" AT TIME ZONE 'UTC')::date;

    CREATE OR REPLACE FUNCTION price_ranges_at(at timestamptz)
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
        FROM (VALUES ('gold'), ('silver'), ('platinum'), ('palladium')) AS m(metal)
        CROSS JOIN periods p
        LEFT JOIN LATERAL (
            SELECT a.rate_price, a."timestamp" FROM commodities_price_data_analytics a
             WHERE a.metal = m.metal AND a.quality = 'ok' AND a."timestamp" >= p.starts AND
                 a."timestamp" < p.ends
             ORDER BY a.rate_price DESC, a."timestamp" LIMIT 1) hi ON true
        LEFT JOIN LATERAL (
            SELECT a.rate_price, a."timestamp" FROM commodities_price_data_analytics a
             WHERE a.metal = m.metal AND a.quality = 'ok' AND a."timestamp" >= p.starts AND
                 a."timestamp" < p.ends
             ORDER BY a.rate_price ASC, a."timestamp" LIMIT 1) lo ON true
       ORDER BY m.metal, p.position
    $$;

    CREATE OR REPLACE VIEW price_ranges AS SELECT * FROM price_ranges_at(now());
"""


# The ledger's command column takes the job's name, as the metrics' `job` label does: the
# hourly run was recorded as `run`, the CSV import as `import-csv`.
_V8_JOB_NAMES = """
    UPDATE pipeline_runs SET command = 'pipeline' WHERE command = 'run';
    UPDATE pipeline_runs SET command = 'import_csv' WHERE command = 'import-csv';
"""


# Each applied migration is recorded with the checksum of its text (rows recorded before
# this version get theirs on the first start of the code that brings it).
_V9_CHECKSUMS = """
    ALTER TABLE schema_migrations ADD COLUMN checksum text;
"""


# The commodities the database holds a table for: the four of migrations 1, 4 and 7 (no
# checksum: their tables come from those migrations), then each configured later, with the
# checksum of the commodity definition it was made by (COMMODITY_DEFINITION). price_ranges
# lists them from here rather than from a list fixed in the function.
_V10_COMMODITIES = """
    CREATE TABLE commodities (
        metal      text        PRIMARY KEY,
        checksum   text,
        added_at   timestamptz NOT NULL DEFAULT now()
    );
    INSERT INTO commodities (metal) VALUES ('gold'), ('silver'), ('platinum'), ('palladium');
    CREATE OR REPLACE FUNCTION price_ranges_at(at timestamptz)
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
        FROM commodities m
        CROSS JOIN periods p
        LEFT JOIN LATERAL (
            SELECT a.rate_price, a."timestamp" FROM commodities_price_data_analytics a
             WHERE a.metal = m.metal AND a.quality = 'ok' AND a."timestamp" >= p.starts AND
                 a."timestamp" < p.ends
             ORDER BY a.rate_price DESC, a."timestamp" LIMIT 1) hi ON true
        LEFT JOIN LATERAL (
            SELECT a.rate_price, a."timestamp" FROM commodities_price_data_analytics a
             WHERE a.metal = m.metal AND a.quality = 'ok' AND a."timestamp" >= p.starts AND
                 a."timestamp" < p.ends
             ORDER BY a.rate_price ASC, a."timestamp" LIMIT 1) lo ON true
       ORDER BY m.metal, p.position
    $$;
"""

# With BACKUP_S3_URL: how many landed files the run copied to the bucket, or why it could not
# (NULL, NULL: no bucket configured, or a row from before).
_V11_OFFSITE_COPY = """
    ALTER TABLE pipeline_runs ADD COLUMN offsite_copied integer, ADD COLUMN offsite_error text;
"""

# The quotes the rule or a person took a second look at (status, report and `quality` list
# them) found by an index instead of a scan of every row: a handful of entries per commodity.
# Made on the analytics table, so every partition has it, those made later included.
_V12_DECISIONS_INDEX = """
    CREATE INDEX ON commodities_price_data_analytics ("timestamp")
        WHERE quality_decision <> 'rule';
"""

# The quotes marked or decided on (migration 7's `quality <> 'ok'`, migration 12's
# `quality_decision <> 'rule'`) found by one partial index per partition instead of two. The
# share of an index declared on the parent cannot be dropped per partition, so a first import
# (first_load.py) had to keep migration 12's and test its condition on every row it copied
# (measured on a million rows: 1.64 s for COPY and rebuild with it, 1.51 s with this one,
# dropped and built again with the key). A query with either condition uses it (each implies
# the OR). Only `("timestamp") WHERE <that condition>` indexes are replaced, found by their
# definition, not their generated names (an operator's own index on other columns stays); a
# partition that has the new one already keeps just that.
_V13_ONE_MARKS_INDEX = """
    DO $$
    DECLARE
        found regclass;
        part regclass;
    BEGIN
        FOR found IN SELECT indexrelid::regclass FROM pg_index
                      WHERE indrelid = 'commodities_price_data_analytics'::regclass
                        AND indnatts = 1 AND pg_get_indexdef(indexrelid, 1, false) = '"timestamp"'
                        AND pg_get_expr(indpred, indrelid) = '(quality_decision <> ''rule''::text)'
        LOOP
            EXECUTE format('DROP INDEX %s', found);
        END LOOP;
        FOR part IN SELECT inhrelid::regclass FROM pg_inherits
                     WHERE inhparent = 'commodities_price_data_analytics'::regclass
        LOOP
            FOR found IN SELECT indexrelid::regclass FROM pg_index
                          WHERE indrelid = part AND indnatts = 1
                            AND pg_get_indexdef(indexrelid, 1, false) = '"timestamp"'
                            AND pg_get_expr(indpred, indrelid) = '(quality <> ''ok''::text)'
            LOOP
                EXECUTE format('DROP INDEX %s', found);
            END LOOP;
            IF NOT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = part AND indnatts = 1
                              AND pg_get_indexdef(indexrelid, 1, false) = '"timestamp"'
                              AND pg_get_expr(indpred, indrelid) = '((quality <> ''ok''::text) '
                                  'OR (quality_decision <> ''rule''::text))') THEN
                EXECUTE format('CREATE INDEX ON %s ("timestamp") '
                               'WHERE quality <> ''ok'' OR quality_decision <> ''rule''', part);
            END IF;
        END LOOP;
    END $$;
"""

# What one commodity needs, applied when a configured commodity has none yet: its historic
# table as a partition of the analytics table (so the analytics table, daily_ohlc and
# price_ranges hold it), and the partial index migration 13 gave each partition. {table} and
# {metal} are filled by psycopg2.sql (an Identifier and a Literal), never by str.format.
COMMODITY_DEFINITION = """
    CREATE TABLE {table} PARTITION OF commodities_price_data_analytics
        (PRIMARY KEY ("timestamp")) FOR VALUES IN ({metal});
    CREATE INDEX ON {table} ("timestamp") WHERE quality <> 'ok' OR quality_decision <> 'rule';
"""

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "historic tables, analytics table, run ledger", _V1_INITIAL),
    (2, "model runs and price predictions", _V2_MODELS),
    (3, "backfill coverage; model frequency", _V3_BACKFILL_AND_FREQUENCY),
    (4, "historic tables become the partitions of the analytics table", _V4_PARTITIONS),
    (5, "analyst views daily_ohlc and price_ranges", _V5_ANALYST_VIEWS),
    (6, "80% price intervals", _V6_INTERVALS),
    (7, "quality marks; analyst views read good rows only", _V7_QUALITY_MARKS),
    (8, "one name per job in the run ledger", _V8_JOB_NAMES),
    (9, "each applied migration's checksum", _V9_CHECKSUMS),
    (10, "the commodities held; price_ranges lists them", _V10_COMMODITIES),
    (11, "the run ledger records the copy of its landed files to the bucket", _V11_OFFSITE_COPY),
    (12, "an index of the quotes taken a second look at", _V12_DECISIONS_INDEX),
    (13, "one index per partition of the quotes marked or decided on", _V13_ONE_MARKS_INDEX),
)
