"""backups_main.py against a real PostgreSQL holding rows loaded by main.py."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from source.files import sha256_of
from tests.conftest import REPO, held_lock

TABLES = (
    "gold_historic",
    "silver_historic",
    "platinum_historic",
    "palladium_historic",
    "commodities_price_data_analytics",
)


def backups(runner, *args, **env):
    return runner(*args, script="backups_main.py", **env)


def fingerprint(database) -> dict:
    """Row count and an md5 of every row, per table."""
    rows = "string_agg(t::text, '|' ORDER BY t.\"timestamp\", t.metal)"
    return {
        table: database.query(f"SELECT count(*), md5(coalesce({rows}, '')) FROM {table} t")[0]
        for table in TABLES
    }


def only_backup(runner):
    (path,) = [
        p for p in (runner.cwd / "backups").iterdir() if p.is_dir() and not p.name.startswith(".")
    ]
    return path


def test_create_writes_dump_models_and_a_true_manifest(loaded, database):
    result = backups(loaded)
    assert result.returncode == 0, result.stderr
    backup = only_backup(loaded)
    assert {p.name for p in backup.iterdir()} >= {"database.dump", "models.tar.gz", "manifest.json"}
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["id"] == backup.name
    for name in ("database.dump", "models.tar.gz"):
        assert manifest["files"][name] == {
            "sha256": sha256_of(backup / name),
            "size": (backup / name).stat().st_size,
        }
    assert manifest["row_counts"]["gold_historic"] == 2
    assert manifest["row_counts"]["commodities_price_data_analytics"] == 8
    assert manifest["server_version"].startswith("PostgreSQL")
    assert "dumping" in loaded.log_text() and "pg_dump" in loaded.log_text()

    listing = backups(loaded, "list")
    assert listing.returncode == 0
    (line,) = [row for row in listing.stdout.splitlines() if row.startswith(backup.name)]
    assert line.endswith(")") and " restored " in line


def test_verify_passes_and_catches_a_truncated_dump(loaded):
    assert backups(loaded, "create", "--no-verify").returncode == 0
    assert backups(loaded, "verify").returncode == 0
    backup = only_backup(loaded)
    dump = backup / "database.dump"
    dump.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])

    result = backups(loaded, "verify", backup.name)
    assert result.returncode == 1
    assert "database.dump is" in result.stderr and "manifest says" in result.stderr

    # Even with a manifest rewritten to match, a truncated dump must not verify.
    manifest = json.loads((backup / "manifest.json").read_text())
    manifest["files"]["database.dump"] = {"sha256": sha256_of(dump), "size": dump.stat().st_size}
    (backup / "manifest.json").write_text(json.dumps(manifest))
    result = backups(loaded, "verify", backup.name)
    assert result.returncode == 1
    assert "database.dump does not restore" in result.stderr
    assert "FAILED" in backups(loaded, "list").stdout


def test_restore_brings_back_rows_and_models_exactly(loaded, database):
    before = fingerprint(database)
    model_file = loaded.cwd / "trained_models" / "model_rate_price" / "gold.joblib"
    model_bytes = model_file.read_bytes()
    assert backups(loaded).returncode == 0
    backup_id = only_backup(loaded).name

    database.query("DELETE FROM gold_historic")
    database.query("DELETE FROM commodities_price_data_analytics WHERE metal = 'silver'")
    model_file.unlink()
    models = loaded.cwd / "trained_models"
    (models / "model_rate_ask").mkdir()  # trained after the backup: not in it
    (models / "model_rate_ask" / "gold.json").write_text("{}")
    (models / "demo").mkdir()  # the demo's models are never in a real backup: kept
    (models / "demo" / "kept.json").write_text("{}")
    assert fingerprint(database) != before

    result = backups(loaded, "restore", backup_id)
    assert result.returncode == 0, result.stderr
    assert fingerprint(database) == before
    assert model_file.read_bytes() == model_bytes
    assert sorted(p.name for p in models.iterdir()) == ["demo", "model_rate_price"]
    assert (models / "demo" / "kept.json").exists()
    log = loaded.log_text()
    assert "restore: gold_historic: 0 -> 2 rows" in log


def test_restore_swaps_models_into_a_volume_mount_point(loaded):
    # Under Compose and Kubernetes MODELS_DIR is a volume's mount point (which cannot be
    # renamed) in a read-only /app. Here: the folder bind-mounted onto itself, in a private
    # mount namespace that ends with the command.
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("needs root for a private mount namespace (unshare -m)")
    assert backups(loaded).returncode == 0
    models = loaded.cwd / "trained_models"
    model_file = models / "model_rate_price" / "gold.joblib"
    model_bytes = model_file.read_bytes()
    model_file.write_bytes(b"trained later")
    mounted = 'mount --bind "$1" "$1" && shift && exec "$@"'
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", mounted, "sh", str(models), sys.executable,
         str(REPO / "backups_main.py"), "restore", only_backup(loaded).name],
        cwd=loaded.cwd, env=loaded.env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert model_file.read_bytes() == model_bytes


def test_restore_refuses_a_backup_that_does_not_verify(loaded, database):
    assert backups(loaded).returncode == 0
    backup = only_backup(loaded)
    (backup / "models.tar.gz").write_bytes(b"garbage")
    database.query("DELETE FROM gold_historic")
    result = backups(loaded, "restore", backup.name)
    assert result.returncode == 1
    assert "refusing to restore" in result.stderr
    assert database.scalar("SELECT count(*) FROM gold_historic") == 0


def test_unknown_backup_id_is_a_usage_error(loaded):
    result = backups(loaded, "restore", "20000101T000000Z")
    assert result.returncode == 2
    assert "no backup" in result.stderr


def test_retention_keeps_exactly_backup_keep(loaded):
    for _ in range(3):
        assert backups(loaded, "create", "--no-verify", BACKUP_KEEP="2").returncode == 0
        time.sleep(1.05)  # IDs have one-second resolution
    ids = sorted(p.name for p in (loaded.cwd / "backups").iterdir() if p.is_dir())
    assert len(ids) == 2


def test_prune_never_deletes_the_only_verified_backup(loaded):
    assert backups(loaded, "create").returncode == 0  # verified
    verified = only_backup(loaded).name
    for _ in range(2):
        time.sleep(1.05)
        assert backups(loaded, "create", "--no-verify", BACKUP_KEEP="5").returncode == 0
    assert backups(loaded, "prune", BACKUP_KEEP="1").returncode == 0
    remaining = sorted(p.name for p in (loaded.cwd / "backups").iterdir() if p.is_dir())
    assert len(remaining) == 2 and verified in remaining


def test_a_killed_backup_leaves_nothing_that_list_shows(loaded, tmp_path):
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    slow = fake_bin / "pg_dump"  # reports a newer version, so it is chosen, then hangs
    slow.write_text(
        "#!/bin/sh\n"
        '[ "$1" = "--version" ] && echo "pg_dump (PostgreSQL) 99.0" && exit 0\n'
        "sleep 120\n"
    )
    slow.chmod(0o755)
    env = {**loaded.env, "PG_BIN_DIR": str(fake_bin)}
    process = subprocess.Popen(
        [sys.executable, str(REPO / "backups_main.py")],
        cwd=loaded.cwd,
        env=env,
        start_new_session=True,
    )
    backup_dir = loaded.cwd / "backups"
    deadline = time.monotonic() + 60
    while not list(backup_dir.glob(".partial-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert list(backup_dir.glob(".partial-*")), "the backup was not caught half-way"

    assert "no backups" in backups(loaded, "list").stdout
    assert backups(loaded, "prune").returncode == 0
    assert not list(backup_dir.glob(".partial-*"))


def test_a_second_backup_while_one_runs_exits_75(loaded):
    lock = loaded.cwd / "backups" / ".backup.lock"
    lock.parent.mkdir()
    with held_lock(lock):
        result = backups(loaded)
    assert result.returncode == 75
    assert not [p for p in lock.parent.iterdir() if p.is_dir()]


def fake_tool(directory, version: str, name: str = "pg_dump"):
    directory.mkdir(parents=True, exist_ok=True)
    tool = directory / name
    tool.write_text(f'#!/bin/sh\necho "{name} (PostgreSQL) {version}"\n')
    tool.chmod(0o755)
    return tool


@pytest.mark.parametrize(("server", "chosen"), [(15, "path"), (17, "wheel"), (18, "wheel")])
def test_pg_dump_is_the_servers_own_major_when_installed(tmp_path, monkeypatch, server, chosen):
    from source.backups import pgtools
    from source.db_functions.connection import Database

    fake_tool(tmp_path / "path", "15.18")
    fake_tool(tmp_path / "wheel", "18.6")
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    monkeypatch.setattr(pgtools, "_embedded_bin_dir", lambda: tmp_path / "wheel")
    tool = pgtools.find_tool("pg_dump", server, Database(params={}, description="test"))
    assert tool.path == tmp_path / chosen / "pg_dump"


def test_tools_that_would_not_restore_are_refused_with_what_to_install(tmp_path, monkeypatch):
    # The reproduced case: server 16, client tools 15 on PATH, the wheel's 18. pg_restore 18
    # sets transaction_timeout, which 16 rejects: every backup would fail to restore.
    from source.backups import pgtools
    from source.db_functions.connection import Database

    fake_tool(tmp_path / "path", "15.18")
    fake_tool(tmp_path / "wheel", "18.6")
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    monkeypatch.setattr(pgtools, "_embedded_bin_dir", lambda: tmp_path / "wheel")
    with pytest.raises(pgtools.PgToolError) as raised:
        pgtools.find_tool("pg_dump", 16, Database(params={}, description="test"))
    assert str(raised.value).startswith(
        "backups of a PostgreSQL 16 server need pg_dump 16 (found: pg_dump 15"
    )
    assert "install postgresql-client-16 or set PG_BIN_DIR" in str(raised.value)

    fake_tool(tmp_path / "old", "14.2")
    database = Database(params={}, description="test", bin_dir=tmp_path / "old")
    with pytest.raises(pgtools.PgToolError, match="need pg_dump 15 \\(found: pg_dump 14"):
        pgtools.find_tool("pg_dump", 15, database)


def test_demo_option_works_before_or_after_the_command():
    from source.commands.backups import BACKUPS

    build_parser = BACKUPS.build_parser
    assert build_parser().parse_args(["--demo", "list"]).demo is True
    assert build_parser().parse_args(["list", "--demo"]).demo is True
    assert build_parser().parse_args(["list"]).demo is False


@pytest.mark.parametrize("filtered", [True, False], ids=["python>=3.11.4", "python-3.11.2"])
def test_a_models_archive_cannot_write_outside_the_models_folder(tmp_path, monkeypatch, filtered):
    import io
    import tarfile

    from source.backups.catalog import BackupError
    from source.backups.restore import extract_safely

    if not filtered:  # Debian bookworm's Python 3.11.2 has no extraction filters
        monkeypatch.delattr(tarfile, "data_filter")
    archive = tmp_path / "models.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        entry = tarfile.TarInfo("models/../../escaped.json")
        entry.size = 2
        tar.addfile(entry, io.BytesIO(b"{}"))
    target = tmp_path / "a" / "b"
    target.mkdir(parents=True)
    with tarfile.open(archive) as tar, pytest.raises((BackupError, tarfile.TarError)):
        extract_safely(tar, target)
    assert not (tmp_path / "escaped.json").exists()
