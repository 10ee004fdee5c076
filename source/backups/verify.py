"""`backups_main.py verify`: checksums match the manifest, the models archive reads completely
and holds only what a restore may extract, and the dump restores into a scratch database with
the row counts the manifest recorded. A backup that verifies is one that restores."""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path, PurePosixPath

import psycopg2
from psycopg2 import sql

from source.backups.catalog import READ_ONLY, RESTORED, Backup, record_verification
from source.backups.databases import scratch_name
from source.backups.manifest import DATABASE_DUMP, MODELS_ARCHIVE, checksum_problems, read_manifest
from source.backups.pgtools import PgToolError, find_tool, libpq_env, run_tool
from source.backups.store import LocalStore
from source.db_functions.connection import Database
from source.errors import first_line

log = logging.getLogger(__name__)


def unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why a restore must not extract this member, or None: it stays inside `models/` and
    is a plain file or folder (no absolute path, no `..`, no link, no device)."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith("/") or ".." in parts or parts[:1] != ("models",):
        return f"{member.name!r} points outside the models folder"
    if not (member.isfile() or member.isdir()):
        return f"{member.name!r} is a link or a special file"
    return None


def archive_problems(path: Path) -> list[str]:
    """Every member is safe to extract and reads to the end (a truncated gzip fails here)."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                if problem := unsafe_member(member):
                    return [f"{MODELS_ARCHIVE} holds an unsafe entry: {problem}"]
                if member.isfile():
                    handle = archive.extractfile(member)
                    while handle and handle.read(1 << 20):
                        pass
    except (OSError, tarfile.TarError, EOFError) as exc:
        return [f"{MODELS_ARCHIVE} does not read completely: {exc}"]
    return []


def _admin(database: Database, statement) -> None:
    conn = database.connect(dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def _counts_in(database: Database, dbname: str, tables) -> dict[str, int]:
    conn = database.connect(dbname=dbname)
    try:
        with conn, conn.cursor() as cur:
            counts = {}
            for table in tables:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
                counts[table] = cur.fetchone()[0]
            return counts
    finally:
        conn.close()


def restore_test_problems(
    database: Database, backup_dir: Path, manifest: dict
) -> tuple[list[str], str]:
    """Restore the dump into a throwaway database and compare row counts with the manifest;
    without CREATEDB, read the whole archive instead. (problems, level reached)"""
    dump = backup_dir / DATABASE_DUMP
    pg_restore = find_tool("pg_restore", int(manifest.get("server_major", 0)), database)
    scratch = scratch_name(database.name)  # a killed verify's is dropped by the next command
    try:
        _admin(database, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    except psycopg2.Error as exc:
        # No CREATEDB privilege: still read the whole archive, which catches truncation.
        log.warning(
            "verify: cannot create a scratch database (%s); reading the dump only", exc.pgerror
        )
        try:
            run_tool(pg_restore, ["--file", "/dev/null", str(dump)], libpq_env(database))
        except PgToolError as error:
            return [f"{DATABASE_DUMP} does not read completely: {error}"], READ_ONLY
        return [], READ_ONLY
    try:
        run_tool(
            pg_restore,
            ["--no-owner", "--no-privileges", "--exit-on-error", "--dbname", scratch, str(dump)],
            libpq_env(database, scratch),
        )
        expected = manifest.get("row_counts", {})
        actual = _counts_in(database, scratch, expected)
        return [
            f"table {table}: {actual[table]} rows restored, manifest says {count}"
            for table, count in expected.items()
            if actual[table] != count
        ], RESTORED
    except (PgToolError, psycopg2.Error) as exc:
        return [f"{DATABASE_DUMP} does not restore: {first_line(exc)}"], RESTORED
    finally:
        _admin(
            database,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)),
        )


def verify_backup(database: Database, backup: Backup) -> tuple[list[str], str | None]:
    """(every problem found, level reached); the result is recorded beside the backup."""
    level, path = None, backup.local_path
    try:
        manifest = read_manifest(path)
    except ValueError as exc:
        problems = [str(exc)]
    else:
        problems = checksum_problems(path, manifest)
        if not problems:
            problems = archive_problems(path / MODELS_ARCHIVE)
            restore_problems, level = restore_test_problems(database, path, manifest)
            problems += restore_problems
    record_verification(LocalStore(path.parent), backup.id, not problems, problems, level)
    if problems:
        log.error("backup %s does NOT verify: %s", backup.id, "; ".join(problems))
    elif level == RESTORED:
        log.info(
            "backup %s verified: checksums match, dump restored with matching row counts", backup.id
        )
    else:
        log.warning(
            "backup %s verified read only: checksums match and the dump reads to the end, but "
            "it was not restored (grant CREATEDB to verify by restore)",
            backup.id,
        )
    return problems, level
