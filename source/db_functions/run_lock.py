"""One run at a time per database, across hosts: a session-level advisory lock held for the
whole run (the file lock in DATA_DIR still guards a host while the database is down)."""

from __future__ import annotations

from contextlib import contextmanager

from source.db_functions.connection import Database
from source.errors import EXIT_LOCKED, ReportableError

RUN_LOCK_KEY = 7_245_002  # any constant shared by every host running this pipeline


class RunLocked(ReportableError):
    exit_code = EXIT_LOCKED


@contextmanager
def database_run_lock(database: Database):
    """Hold the run lock for the block, on a session of its own (yielded: closing it early
    releases the lock, as a restore does just before its swap); RunLocked (exit 75) when
    another run holds it."""
    conn = database.connect()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK_KEY,))
            if not cur.fetchone()[0]:
                raise RunLocked(
                    f"another run holds the lock of database {database.name} "
                    "(on this or another host); exiting"
                )
        yield conn
    finally:
        conn.close()  # ends the session, which releases the lock (also if we are killed)
