"""The databases backups create beside the live one, all named after it: `<live>__verify_<hex>`
(a verify's scratch copy), `<live>__restoring` (a restore being filled) and `<live>__replaced`
(the previous database, for the moment after a restore's swap). Leftovers of a killed command
are dropped by the next one; a swap cut short is put back. No other database is touched."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import psycopg2
from psycopg2 import errors, sql

from source.backups.catalog import BackupError
from source.config import Settings
from source.db_functions.connection import (
    Database,
    DatabaseUnavailable,
    ensure_database_exists,
    open_database,
)
from source.db_functions.migrations import connect_and_migrate
from source.errors import first_line

log = logging.getLogger(__name__)

MAINTENANCE_DB = "postgres"
MAX_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1: longer names are cut, and would collide
SWAP_ATTEMPTS = 5  # each waits up to 5 s (the server's own wait) for ended sessions to go
VERIFY, RESTORING, REPLACED = "verify_", "restoring", "replaced"


def derived_name(live: str, suffix: str) -> str:
    """`<live>__<suffix>`, or for a long live name its head and a hash of the whole name."""
    name = f"{live}__{suffix}"
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(live.encode()).hexdigest()[:8]
    room = MAX_NAME_BYTES - len(f"_{digest}__{suffix}".encode())
    head = live.encode()[:room].decode(errors="ignore")
    return f"{head}_{digest}__{suffix}"


def scratch_name(live: str) -> str:
    return derived_name(live, VERIFY + uuid.uuid4().hex[:8])


def leftover_kind(live: str, name: str) -> str | None:
    """What command left `name` behind for the live database `live`; None: not ours."""
    if name == derived_name(live, RESTORING):
        return "restore"
    if name == derived_name(live, REPLACED):
        return "restore (after its swap)"
    pattern = re.escape(derived_name(live, VERIFY + "0" * 8)[:-8]) + "[0-9a-f]{8}"
    return "verify" if re.fullmatch(pattern, name) else None


@contextmanager
def admin(database: Database, *, autocommit: bool = True) -> Iterator:
    """A connection to the maintenance database: CREATE, DROP and RENAME run from there."""
    conn = database.connect(dbname=MAINTENANCE_DB)
    try:
        conn.autocommit = autocommit
        yield conn
    finally:
        conn.close()


def _names(conn) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        return {name for (name,) in cur.fetchall()}


def _sessions(conn, name: str) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,))
        return cur.fetchone()[0]


def drop_if_unused(conn, name: str, kind: str) -> bool:
    """Plain DROP DATABASE: one in use is a verify or restore running elsewhere, and kept."""
    if _sessions(conn, name):
        log.info("kept database %s: in use (a %s running elsewhere)", name, kind)
        return False
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
    except errors.ObjectInUse:
        log.info("kept database %s: in use (a %s running elsewhere)", name, kind)
        return False
    except psycopg2.Error as exc:
        log.warning("cannot drop database %s, left by an interrupted %s: %s",
                    name, kind, first_line(exc))
        return False
    log.warning("dropped database %s, left by an interrupted %s", name, kind)
    return True


def _rename(cur, old: str, new: str) -> None:
    cur.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    )


def recover(database: Database) -> list[str]:
    """Put back a live database a swap left renamed, then drop every leftover of ours that
    nobody uses; returns the names dropped."""
    live = database.name
    with admin(database) as conn:
        names = _names(conn)
        replaced = derived_name(live, REPLACED)
        if live not in names and replaced in names:
            # Only the swap renames the live database, and it does so in the transaction
            # that renames the restored one in: the previous database is the one to trust.
            log.warning(
                "database %s is missing and %s exists: a restore was cut short; "
                "renaming %s back to %s", live, replaced, replaced, live,
            )
            try:
                with conn.cursor() as cur:
                    _rename(cur, replaced, live)
            except psycopg2.Error as exc:
                raise BackupError(
                    f"database {live} is missing and {replaced} holds the previous one; "
                    f"rename it back to {live} ({first_line(exc)})"
                ) from None
            names = _names(conn)
        dropped = []
        for name in sorted(names):
            kind = leftover_kind(live, name)
            if kind and drop_if_unused(conn, name, kind):
                dropped.append(name)
    return dropped


def open_for_backups(settings: Settings, *, create: bool = False) -> Database:
    """The live database, migrated, once a restore or verify killed earlier is cleaned up.
    Recovery runs first, from the maintenance database: opening the live one may create it
    empty (embedded server, demo), which must not happen while it is only renamed. `create`
    (restore): a server that lacks the database (a new one after the host was lost) gets it
    empty first, for the backup to be restored into."""
    try:
        maintenance = open_database(replace(settings, pg_database=MAINTENANCE_DB))
        live = replace(maintenance, params={**maintenance.params, "dbname": settings.pg_database})
        recover(live)
    except DatabaseUnavailable as exc:  # e.g. no access to the maintenance database
        log.info("leftovers of interrupted backups not checked: %s", exc)
    else:
        if create:
            ensure_database_exists(live)
    return connect_and_migrate(settings)


def can_swap(database: Database) -> str | None:
    """None when this role may create a database and rename the live one (CREATEDB and its
    owner); otherwise why not, for the log."""
    with admin(database) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT r.rolsuper OR r.rolcreatedb, pg_has_role(d.datdba, 'MEMBER') "
            "FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = %s",
            (database.name,),
        )
        row = cur.fetchone()
    if row is None or not row[0]:
        return "no CREATEDB privilege"
    return None if row[1] else f"not the owner of database {database.name}"


def create_like(database: Database, name: str) -> None:
    """A new, empty database with the live one's owner and access rights (who may connect)."""
    with admin(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                    (database.name,))
        (owner,) = cur.fetchone()
        cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(owner)))
        try:
            _copy_access(cur, database.name, name)
        except BaseException:
            cur.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
            raise


def _copy_access(cur, live: str, name: str) -> None:
    """The live database's privileges (e.g. CONNECT revoked from PUBLIC) onto `name`."""
    cur.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, "
        "a.privilege_type, a.is_grantable "
        "FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s", (live,),
    )
    grants = cur.fetchall()
    if not grants:  # no privileges set: the defaults, as for any new database
        return
    on = sql.Identifier(name)
    cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(on))
    for grantee, privilege, grantable in grants:
        cur.execute(
            sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege), on,
                sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                sql.SQL(" WITH GRANT OPTION" if grantable else ""),
            )
        )


# Grants on schemas, tables/views/sequences and the default privileges of the live database:
# the dump is restored with --no-privileges (its roles may not exist on another server), so
# what readers were granted here is carried over to the copy that replaces it.
_GRANTEE = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"
_OBJECT_GRANTS = f"""
    SELECT 'SCHEMA', quote_ident(n.nspname), {_GRANTEE}, a.privilege_type, a.is_grantable
      FROM pg_namespace n, aclexplode(n.nspacl) a
     WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
       AND a.grantee <> n.nspowner
    UNION ALL
    SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
           quote_ident(n.nspname) || '.' || quote_ident(c.relname), {_GRANTEE},
           a.privilege_type, a.is_grantable
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
     WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
       AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND a.grantee <> c.relowner"""
_DEFAULT_GRANTS = f"""
    SELECT pg_get_userbyid(d.defaclrole), quote_ident(n.nspname),
           CASE d.defaclobjtype WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES'
                WHEN 'f' THEN 'FUNCTIONS' WHEN 'T' THEN 'TYPES' ELSE 'SCHEMAS' END,
           {_GRANTEE}, a.privilege_type
      FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace,
           aclexplode(d.defaclacl) a
     WHERE a.grantee <> d.defaclrole"""


def copy_object_grants(database: Database, name: str) -> int:
    """Grant on `name`'s schemas and tables what the live database grants (e.g. SELECT to a
    read-only role), and its default privileges; returns how many were carried over."""
    live = database.connect()
    try:
        with live, live.cursor() as cur:
            cur.execute(_OBJECT_GRANTS)
            grants = cur.fetchall()
            cur.execute(_DEFAULT_GRANTS)
            defaults = cur.fetchall()
    finally:
        live.close()
    copy = database.connect(dbname=name)
    try:
        with copy, copy.cursor() as cur:
            for kind, target, grantee, privilege, grantable in grants:
                cur.execute(sql.SQL("GRANT {} ON {} {} TO {}{}").format(
                    sql.SQL(privilege), sql.SQL(kind), sql.SQL(target), _role(grantee),
                    sql.SQL(" WITH GRANT OPTION" if grantable else "")))
            for role, schema, kind, grantee, privilege in defaults:
                cur.execute(sql.SQL(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT {} ON {} TO {}"
                ).format(sql.Identifier(role), sql.SQL(schema), sql.SQL(privilege),
                         sql.SQL(kind), _role(grantee)))
    finally:
        copy.close()
    return len(grants) + len(defaults)


def _role(name: str):
    return sql.SQL("PUBLIC") if name == "PUBLIC" else sql.Identifier(name)


def drop_own(database: Database, name: str) -> None:
    """Drop a database this command created (its sessions, if any, are ours)."""
    with admin(database) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _end_sessions(conn, name: str) -> int:
    """Terminate every session on `name` (the run lock's included); returns how many ended."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        ended = 0
        for (pid,) in cur.fetchall():
            try:
                cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
                ended += bool(cur.fetchone()[0])
            except psycopg2.Error as exc:  # e.g. another role's session: the rename says so
                log.warning("restore: cannot end session %d on %s: %s", pid, name, first_line(exc))
        return ended


def _try_swap(database: Database, new: str, replaced: str) -> str | None:
    """One attempt; None when done, else why the server refused (sessions still there)."""
    live = database.name
    with admin(database) as conn:
        ended = _end_sessions(conn, live) + _end_sessions(conn, new)
        if ended:
            log.info("restore: ended %d session(s) on %s for the swap", ended, live)
        conn.autocommit = False
        try:
            with conn, conn.cursor() as cur:
                _rename(cur, live, replaced)
                _rename(cur, new, live)
        except errors.ObjectInUse as exc:
            return first_line(exc)
    return None


def swap_in(database: Database, new: str, release: Callable[[], None]) -> None:
    """Make `new` the live database: in ONE transaction live -> `<live>__replaced` and `new`
    -> live (never a moment without the live name), then drop the replaced one. `release`
    closes our run lock's session; others on the live database are ended (an hourly run
    ended so reloads its landed files next time)."""
    live, replaced = database.name, derived_name(database.name, REPLACED)
    release()
    try:
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            refused = _try_swap(database, new, replaced)
            if refused is None:
                break
            log.info("restore: swap attempt %d of %d: %s", attempt, SWAP_ATTEMPTS, refused)
        else:
            raise BackupError(f"could not swap the restored database in: {refused}")
    except psycopg2.Error as exc:
        raise BackupError(f"could not swap the restored database in: {first_line(exc)}") from None
    log.info("restore: %s is now the restored database; dropping the previous one", live)
    with admin(database) as conn, conn.cursor() as cur:
        try:
            cur.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(replaced)))
        except psycopg2.Error as exc:  # the next backup command drops it
            log.warning("restore: the previous database stays as %s for now: %s",
                        replaced, first_line(exc))
