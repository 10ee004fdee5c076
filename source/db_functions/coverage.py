"""What a backfill already covered: days the API answered for, or days holding a price."""

from __future__ import annotations

from datetime import date

from psycopg2.extras import execute_values

from source.db_functions.migrations import ANALYTICS_TABLE


def record_coverage(cur, days: list[date], metals: tuple[str, ...], raw_file: str | None) -> None:
    """Remember that the API answered for these days (run inside the load's transaction)."""
    execute_values(
        cur,
        "INSERT INTO backfill_coverage (day, metal, raw_file) VALUES %s "
        "ON CONFLICT (day, metal) DO UPDATE SET raw_file = EXCLUDED.raw_file, "
        "recorded_at = now()",
        [(day, metal, raw_file) for day in days for metal in metals],
    )


def missing_days(conn, start: date, end: date, metals: tuple[str, ...]) -> list[date]:
    """Days in [start, end] where some metal has neither a recorded answer nor a price row."""
    with conn, conn.cursor() as cur:
        cur.execute(
            f"""
            SELECT d::date
              FROM generate_series(%(start)s::timestamp, %(end)s::timestamp, interval '1 day') AS d
             WHERE EXISTS (
                   SELECT 1 FROM unnest(%(metals)s::text[]) AS m(metal)
                    WHERE NOT EXISTS (SELECT 1 FROM backfill_coverage c
                                       WHERE c.day = d::date AND c.metal = m.metal)
                      AND NOT EXISTS (SELECT 1 FROM {ANALYTICS_TABLE} a
                                       WHERE a.metal = m.metal
                                         AND a."timestamp" >= d::date::timestamp AT TIME ZONE 'UTC'
                                         AND a."timestamp" < (d::date + 1)::timestamp
                                                             AT TIME ZONE 'UTC'))
             ORDER BY 1""",
            {"start": start, "end": end, "metals": list(metals)},
        )
        return [row[0] for row in cur.fetchall()]
