"""Backups encrypted at rest with age (BACKUP_AGE_RECIPIENTS, BACKUP_AGE_IDENTITY_FILE), against
the real PostgreSQL, Debian's `age`/`age-keygen` CLI and the SeaweedFS S3 server."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from source.config import ConfigError, load_settings
from source.files import sha256_of
from tests.test_backups import backups, fingerprint, only_backup
from tests.test_offsite_backups import (  # noqa: F401 (the fixtures remote and store)
    objects,
    quotes,
    remote,
    store,
    vendor_import,
)

AGE, AGE_KEYGEN = shutil.which("age"), shutil.which("age-keygen")
pytestmark = pytest.mark.skipif(
    not (AGE and AGE_KEYGEN), reason="Debian's age is not installed (.ci/run installs it)"
)
PLAINTEXT_MAGIC = (b"PGDMP", b"\x1f\x8b")  # pg_dump's custom format, gzip


def keygen(path: Path) -> str:
    """A new identity file made by age-keygen; returns its public key."""
    subprocess.run([AGE_KEYGEN, "-o", str(path)], check=True, capture_output=True)
    return subprocess.run(
        [AGE_KEYGEN, "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def keys(loaded, tmp_path):
    """`loaded` set up to encrypt to a fresh key; the identity file beside it, not configured."""
    identity = tmp_path / "identity.txt"
    public = keygen(identity)
    loaded.env["BACKUP_AGE_RECIPIENTS"] = public
    loaded.identity, loaded.public = identity, public
    return loaded


def test_every_backup_file_is_age_and_the_standard_cli_decrypts_it(keys, tmp_path):
    result = backups(keys)
    assert result.returncode == 0, result.stderr
    assert "encrypted (age) to 1 recipient(s)" in result.stdout
    backup = only_backup(keys)
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["encryption"] == {
        "format": "age",
        "recipients": [keys.public],
        "files": ["database.dump", "models.tar.gz"],
    }
    for name in ("database.dump", "models.tar.gz"):
        stored = (backup / name).read_bytes()
        assert stored.startswith(b"age-encryption.org/v1\n")
        assert not stored.startswith(PLAINTEXT_MAGIC)
        entry = manifest["files"][name]
        assert entry["sha256"] == sha256_of(backup / name) and entry["size"] == len(stored)
        plain = tmp_path / f"{name}.plain"
        subprocess.run(
            [AGE, "-d", "-i", str(keys.identity), "-o", str(plain), str(backup / name)], check=True
        )
        assert plain.read_bytes().startswith(PLAINTEXT_MAGIC)
        assert entry["plaintext"] == {"sha256": sha256_of(plain), "size": plain.stat().st_size}
    assert not [p for p in backup.parent.iterdir() if p.name.startswith(".partial")]
    verification = json.loads((backup / "verification.json").read_text())
    assert verification["ok"] and verification["level"] == "restored"  # on the plaintext
    listing = backups(keys, "list").stdout.splitlines()
    assert "STORED" in listing[0] and " age (1 key) " in listing[1], listing


def test_verify_without_the_identity_checks_what_is_stored(keys):
    assert backups(keys).returncode == 0
    backup = only_backup(keys)
    result = backups(keys, "verify", backup.name)
    assert result.returncode == 0, result.stderr
    assert "matches the manifest" in result.stdout and "need the identity" in result.stdout

    keys.env["BACKUP_AGE_IDENTITY_FILE"] = str(keys.identity)
    result = backups(keys, "verify", backup.name)
    assert result.returncode == 0, result.stderr
    assert "verified (restored)" in result.stdout
    assert not [p for p in backup.parent.iterdir() if p.name.startswith(".d")]  # no plaintext

    dump = backup / "database.dump"
    dump.write_bytes(dump.read_bytes()[:-10])
    del keys.env["BACKUP_AGE_IDENTITY_FILE"]
    result = backups(keys, "verify", backup.name)
    assert result.returncode == 1 and "database.dump is" in result.stderr


def test_wrong_or_missing_identity_is_one_line_and_the_database_untouched(keys, database, tmp_path):
    assert backups(keys).returncode == 0
    backup_id = only_backup(keys).name
    database.query("DELETE FROM gold_historic")
    before = fingerprint(database)

    result = backups(keys, "restore", backup_id)
    assert result.returncode == 2, result.stderr
    assert (
        len(result.stderr.strip().splitlines()) == 1 and "BACKUP_AGE_IDENTITY_FILE" in result.stderr
    )

    other = tmp_path / "other.txt"
    keygen(other)
    result = backups(keys, "restore", backup_id, BACKUP_AGE_IDENTITY_FILE=str(other))
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "does not decrypt" in result.stderr
    assert "AGE-SECRET-KEY" not in result.stderr + keys.log_text()
    assert fingerprint(database) == before


def test_rotation_one_identity_file_with_both_keys_restores_old_and_new(keys, database, tmp_path):
    assert backups(keys).returncode == 0
    old_id = only_backup(keys).name
    old_rows = fingerprint(database)
    newer = tmp_path / "newer.txt"
    keys.env["BACKUP_AGE_RECIPIENTS"] = keygen(newer)
    database.query("DELETE FROM silver_historic")
    new_rows = fingerprint(database)
    assert backups(keys).returncode == 0
    both = tmp_path / "both.txt"
    both.write_text(keys.identity.read_text() + newer.read_text())
    keys.env["BACKUP_AGE_IDENTITY_FILE"] = str(both)
    ids = sorted(p.name for p in (keys.cwd / "backups").iterdir() if p.name[0].isdigit())
    assert len(ids) == 2 and ids[0] == old_id

    result = backups(keys, "restore", old_id)
    assert result.returncode == 0, result.stderr
    assert fingerprint(database) == old_rows
    result = backups(keys, "restore", ids[1])
    assert result.returncode == 0, result.stderr
    assert fingerprint(database) == new_rows


def test_the_bucket_holds_no_plaintext_and_restores_with_the_identity(
    remote,  # noqa: F811 (the fixtures of test_offsite_backups)
    store,  # noqa: F811
    database,
    tmp_path,
):
    identity = tmp_path / "identity.txt"
    remote.env["BACKUP_AGE_RECIPIENTS"] = keygen(identity)
    result = backups(remote)
    assert result.returncode == 0, result.stderr
    imported = remote(*vendor_import(tmp_path))  # after the backup: its copy is in the bucket
    assert imported.returncode == 0, imported.stderr
    before = quotes(database)
    stored = objects(store, remote.prefix)
    assert {k.split("/")[1] for k in stored} >= {"database.dump", "models.tar.gz", "manifest.json"}
    assert sum(k.endswith(("_import_gold.csv", "_import_gold.options.json")) for k in stored) == 2
    for key, body in stored.items():
        if key.endswith((".dump", ".tar.gz")) or key.startswith("landed/"):
            assert body.startswith(b"age-encryption.org/v1\n"), key
        assert b"2050.5" not in body and b"Europe/Zurich" not in body, key

    shutil.rmtree(remote.cwd / "backups")
    listing = backups(remote, "list").stdout.splitlines()
    assert " remote " in listing[1] and " age (1 key) " in listing[1], listing
    database.query("DELETE FROM gold_historic")
    remote.env["BACKUP_AGE_IDENTITY_FILE"] = str(identity)
    result = backups(remote, "restore", "latest")
    assert result.returncode == 0, result.stderr
    assert "and 1 import(s) newer than it replayed" in result.stdout
    assert quotes(database) == before
    kept = only_backup(remote)  # the fetched copy is kept, still encrypted
    assert (kept / "database.dump").read_bytes().startswith(b"age-encryption.org/v1\n")


def test_recipients_are_read_from_a_file_and_checked(tmp_path):
    identity = tmp_path / "id.txt"
    public = keygen(identity)
    listed = tmp_path / "recipients.txt"
    listed.write_text(f"# the backup key\n{public}\n")
    env = {"BACKUP_AGE_RECIPIENTS_FILE": str(listed), "BACKUP_AGE_IDENTITY_FILE": str(identity)}
    settings = load_settings(env, require_api_key=False, env_file=tmp_path / "none")
    assert settings.backup_age_recipients == (public,)
    secret = next(line for line in identity.read_text().splitlines() if line.startswith("AGE-"))
    assert secret in settings.secrets and secret not in repr(settings)
    with pytest.raises(ConfigError) as wrong:
        load_settings(
            {"BACKUP_AGE_RECIPIENTS": secret}, require_api_key=False, env_file=tmp_path / "none"
        )
    assert secret not in str(wrong.value)
