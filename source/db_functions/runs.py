"""The run ledger: one `pipeline_runs` row per run, opened at start and closed at the end."""

from __future__ import annotations


def open_run(conn, command: str) -> int:
    """Start a ledger row. Called under the run lock, so a row still 'running' was killed."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE pipeline_runs SET status = 'interrupted', message = 'process ended before "
            "recording an outcome (killed?)' WHERE status = 'running'"
        )
        cur.execute("INSERT INTO pipeline_runs (command) VALUES (%s) RETURNING run_id", (command,))
        return cur.fetchone()[0]


def close_run(
    conn,
    run_id: int,
    *,
    status: str,
    exit_code: int,
    metals_ok: list[str],
    metals_failed: list[str],
    rows_inserted: int,
    rows_updated: int,
    api_requests: int,
    message: str | None,
) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(
            """UPDATE pipeline_runs
                  SET finished_at = now(), status = %s, exit_code = %s, metals_ok = %s,
                      metals_failed = %s, rows_inserted = %s, rows_updated = %s,
                      api_requests = %s, message = %s
                WHERE run_id = %s""",
            (
                status,
                exit_code,
                metals_ok,
                metals_failed,
                rows_inserted,
                rows_updated,
                api_requests,
                message,
                run_id,
            ),
        )
