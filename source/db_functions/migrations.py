"""Versioned schema migrations, applied in order and recorded in `schema_migrations` with the
checksum of their text: a migration whose text changed after a database applied it is refused
at start-up (MigrationEdited, exit 1), before anything else runs."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

from psycopg2 import sql

from source.config import KNOWN_METALS, Settings
from source.db_functions.connection import Database, open_database, quote_identifier
from source.db_functions.schema_history import COMMODITY_DEFINITION, MIGRATIONS
from source.errors import EXIT_FAILURE, ReportableError

log = logging.getLogger(__name__)

ANALYTICS_TABLE = "commodities_price_data_analytics"
_MIGRATION_LOCK_KEY = 7_245_001  # any constant; serialises concurrent migrators


class MigrationEdited(ReportableError):
    """An applied migration's text is not the text the database ran: the release is broken,
    not the configuration (exit 1). Restore the migration's text; add a new version instead."""

    exit_code = EXIT_FAILURE


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def historic_table(metal: str) -> str:
    """A commodity's table name; only the API's spot metals (lower-case letters) have one."""
    if metal not in KNOWN_METALS:
        raise ValueError(f"unknown metal {metal!r}")
    return f"{metal}_historic"


def historic_sql(metal: str) -> str:
    """The commodity's table as SQL text, quoted (for statements; messages use the name)."""
    return quote_identifier(historic_table(metal))


def commodity_definition(metal: str) -> sql.Composed:
    """The statements that give one commodity its table: its name reaches SQL as the quoted
    identifier of `historic_sql` (the table) and a Literal (the partition's value)."""
    return sql.SQL(COMMODITY_DEFINITION).format(
        table=sql.SQL(historic_sql(metal)), metal=sql.Literal(metal)
    )


def add_commodities(conn, metals: Iterable[str]) -> list[str]:
    """Give each configured commodity that has none yet its table, in one transaction under
    the migrators' lock (callers that write hold the run lock too), recorded in `commodities`
    with the definition's checksum; return those added. Nothing is ever dropped: a commodity
    taken out of METALS keeps its table and rows."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        cur.execute("SELECT metal FROM commodities")
        held = {row[0] for row in cur.fetchall()}
        added = []
        for metal in dict.fromkeys(metals):
            if metal in held:
                continue
            # A table without its row: e.g. a restore of a backup older than the commodity
            # (pg_restore --clean leaves what the dump does not hold). It is recorded as is.
            cur.execute("SELECT to_regclass(%s) IS NULL", (historic_table(metal),))
            if cur.fetchone()[0]:
                cur.execute(commodity_definition(metal))
            cur.execute(
                "INSERT INTO commodities (metal, checksum) VALUES (%s, %s)",
                (metal, checksum(COMMODITY_DEFINITION)),
            )
            added.append(metal)
            log.info("added commodity %s: table %s", metal, historic_table(metal))
    return added


def _has_checksums(cur) -> bool:
    cur.execute(
        """SELECT EXISTS (SELECT 1 FROM pg_attribute
                           WHERE attrelid = 'schema_migrations'::regclass
                             AND attname = 'checksum' AND NOT attisdropped)"""
    )
    return cur.fetchone()[0]


def _recorded(cur) -> dict[int, str | None]:
    """{version: checksum} of the applied migrations (None: recorded before checksums)."""
    if _has_checksums(cur):
        cur.execute("SELECT version, checksum FROM schema_migrations")
    else:
        cur.execute("SELECT version, NULL FROM schema_migrations")
    return dict(cur.fetchall())


def refuse_edited(recorded: dict[int, str | None], migrations=MIGRATIONS) -> None:
    """Raise MigrationEdited, naming the first applied migration whose text changed."""
    for version, name, text in migrations:
        kept = recorded.get(version)
        if kept is not None and kept != checksum(text):
            raise MigrationEdited(
                f"migration {version} ({name}) was applied with another text than this "
                "release's: restore its text (a change goes in a new migration); nothing was run"
            )


def tables_present(cur, metals: tuple[str, ...]) -> tuple[str, ...]:
    """The metals that have their table: one just added to METALS has none until the next
    writing command creates it (a reader never does)."""
    cur.execute(
        "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name || '_historic') "
        "IS NOT NULL",
        (list(metals),),
    )
    found = {row[0] for row in cur.fetchall()}
    return tuple(metal for metal in metals if metal in found)


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
    """Apply pending migrations (up to a version) in one transaction; return those applied.
    Applied migrations are checked against their recorded checksums first; those recorded
    before checksums existed get the checksum of this release's text."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        cur.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer     PRIMARY KEY,
                   name       text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        recorded = _recorded(cur)
        refuse_edited(recorded, MIGRATIONS)
        applied = []
        for version, name, statements in MIGRATIONS:
            if version in recorded or (up_to is not None and version > up_to):
                continue
            cur.execute(statements)
            cur.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
            applied.append(version)
            log.info("applied migration %d: %s", version, name)
        # Only rows without one are written: a role that may only read the ledger of
        # migrations starts as before once every checksum is recorded.
        unrecorded = {v for v, kept in recorded.items() if kept is None} | set(applied)
        if unrecorded and _has_checksums(cur):
            for version, _, text in MIGRATIONS:
                if version in unrecorded:
                    cur.execute(
                        """UPDATE schema_migrations SET checksum = %s
                            WHERE version = %s AND checksum IS NULL""",
                        (checksum(text), version),
                    )
    return applied


def connect_and_migrate(settings: Settings, metals: Iterable[str] | None = None) -> Database:
    """Open (or start) the database, bring its schema up to date and give each configured
    commodity (or each of `metals`) its table."""
    database = open_database(settings)
    conn = database.connect()
    try:
        apply_migrations(conn)
        add_commodities(conn, settings.metals if metals is None else metals)
    finally:
        conn.close()
    return database
