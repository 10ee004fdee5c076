"""`python -m source.db_init` (the compose `init` service, from the app image): as the database
superuser, create or refresh the app's least-privilege role and a read-only role for BI tools.
Idempotent: safe on every start. Passwords come from *_FILE secrets and travel as query
parameters, never on a command line or in a log.

Environment: PGHOST, PGPORT, PGUSER (the superuser), PGPASSWORD(_FILE) (its password),
PGDATABASE (default commodities), APP_DB_PASSWORD_FILE, READER_DB_PASSWORD_FILE (optional).
"""

from __future__ import annotations

import os
import sys

import psycopg2
from psycopg2 import sql

from source.config import ConfigError, read_environment, read_secret_file
from source.errors import first_line

APP_ROLE = "commodities_app"
READER_ROLE = "commodities_reader"


def _ensure_role(cur, role: str, password: str | None, attributes: str) -> None:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    statement = sql.SQL(f"{verb} ROLE {{}} {attributes}").format(sql.Identifier(role))
    if password:
        statement = statement + sql.SQL(" PASSWORD {}").format(sql.Literal(password))
    cur.execute(statement)


def init_roles(params: dict, database: str, app_password: str, reader_password: str | None):
    """Roles, database ownership and read-only grants; returns what was done, for the log."""
    admin = psycopg2.connect(dbname="postgres", **params)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            _ensure_role(cur, APP_ROLE, app_password, "LOGIN CREATEDB NOSUPERUSER NOCREATEROLE")
            _ensure_role(cur, READER_ROLE, reader_password, "LOGIN NOSUPERUSER NOCREATEDB")
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(database), sql.Identifier(APP_ROLE)
                    )
                )
            cur.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(database), sql.Identifier(APP_ROLE)
                )
            )
    finally:
        admin.close()
    grant_read_only(params, database)


def grant_read_only(params: dict, database: str) -> None:
    """SELECT on every table and view, now and those the app role creates later."""
    conn = psycopg2.connect(dbname=database, **params)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            reader, app, db = (sql.Identifier(n) for n in (READER_ROLE, APP_ROLE, database))
            cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, reader))
            cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(reader))
            cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(reader))
            cur.execute(
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public "
                    "GRANT SELECT ON TABLES TO {}"
                ).format(app, reader)
            )
    finally:
        conn.close()


def _secret(env: dict, name: str, required: bool) -> str | None:
    path = env.get(name)
    if not path:
        if required:
            raise ConfigError(f"{name} is not set")
        return None
    return read_secret_file(name, path)


def main() -> int:
    try:
        env = read_environment()
        params = {
            k: v
            for k, v in {
                "host": env.get("PGHOST"),
                "port": env.get("PGPORT"),
                "user": env.get("PGUSER", "postgres"),
                "password": env.get("PGPASSWORD"),
            }.items()
            if v
        }
        database = env.get("PGDATABASE", "commodities")
        app_password = _secret(env, "APP_DB_PASSWORD_FILE", required=True)
        assert app_password is not None, "a required secret that is not set raises ConfigError"
        init_roles(
            params,
            database,
            app_password,
            _secret(env, "READER_DB_PASSWORD_FILE", required=False),
        )
    except ConfigError as exc:
        print(f"db_init: configuration error: {exc}", file=sys.stderr)
        return 2
    except psycopg2.Error as exc:
        print(f"db_init: {first_line(exc)}", file=sys.stderr)
        return 1
    print(f"db_init: roles {APP_ROLE} (owner of {database}) and {READER_ROLE} (read-only) ready")
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
