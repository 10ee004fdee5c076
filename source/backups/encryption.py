"""Backups encrypted at rest in the age format (https://age-encryption.org, through pyrage):
to public keys only (BACKUP_AGE_RECIPIENTS: the host that makes backups holds no secret), and
decrypted with the identity (BACKUP_AGE_IDENTITY_FILE) by restore and verify, or by hand with
Debian's `age -d`. The manifest stays readable: its `files` are what is stored (the encrypted
bytes, so that copies and `verify` without the identity check them), its `encryption` says to
whom, and each file's `plaintext` entry is what decrypting must give back."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from source.backups.catalog import (
    DOWNLOAD_PREFIX,
    PARTIAL_PREFIX,
    VERIFICATION,
    Backup,
    BackupError,
    read_backup,
)
from source.backups.manifest import (
    MANIFEST,
    FileEntry,
    checksum_problems,
    encryption_of,
    file_entry,
    mismatch,
    read_manifest,
)
from source.backups.store import LocalStore, Transform, temporary_folder
from source.config import age_secret_keys
from source.errors import EXIT_USAGE
from source.files import atomic_write, fsync_path, sha256_of, swap_in_directory

log = logging.getLogger(__name__)

AGE = "age"  # the manifest's encryption format


class IdentityMissing(BackupError):
    """An encrypted backup, and no identity configured to decrypt it: exit 2."""

    exit_code = EXIT_USAGE


class IdentityWrong(BackupError):
    """The identity holds no key the backup was encrypted to (or cannot be read): exit 1."""


def recipients_of(keys: tuple[str, ...] | list[str]) -> list:
    import pyrage

    try:
        return [pyrage.x25519.Recipient.from_str(key) for key in keys]
    except pyrage.RecipientError as exc:
        raise BackupError(f"BACKUP_AGE_RECIPIENTS holds a key age cannot use: {exc}") from None


def identities_of(text: str | None, backup_id: str, recipients: list[str]) -> list:
    """The keys of an identity file (several after a rotation: each backup needs one)."""
    import pyrage

    to_whom = ", ".join(recipients) or "unknown recipients"
    if not text:
        raise IdentityMissing(
            f"backup {backup_id} is encrypted (age, to {to_whom}); set BACKUP_AGE_IDENTITY_FILE "
            "to the identity file that decrypts it"
        )
    try:
        keys = [pyrage.x25519.Identity.from_str(key) for key in age_secret_keys(text)]
    except pyrage.IdentityError:
        keys = []
    if not keys:
        raise IdentityWrong("BACKUP_AGE_IDENTITY_FILE holds no age identity (AGE-SECRET-KEY-1...)")
    return keys


class _Encrypting:
    """A reader of the age encryption of `plain`, made by a thread while it is read (through a
    pipe: nothing is held whole in memory). Closing it stops the thread."""

    def __init__(self, plain: BinaryIO, recipients: list):
        import pyrage

        read_end, write_end = os.pipe()
        self._reader = os.fdopen(read_end, "rb")
        self._error: BaseException | None = None

        def run() -> None:
            try:
                with os.fdopen(write_end, "wb") as out:
                    pyrage.encrypt_io(plain, out, recipients)
            except BaseException as exc:  # reported by read(); a closed reader ends it
                self._error = exc

        self._thread = threading.Thread(target=run, name="age-encrypt", daemon=True)
        self._thread.start()

    def read(self, n: int = -1) -> bytes:
        data = self._reader.read(n)
        if not data:
            self._thread.join()
            if self._error is not None:
                raise BackupError(f"age encryption failed: {self._error}") from None
        return data

    def close(self) -> None:
        self._reader.close()
        self._thread.join()


def encrypting(keys: tuple[str, ...] | list[str]) -> Transform:
    """The stores' streaming transform that encrypts to these public keys."""
    recipients = recipients_of(keys)
    return lambda plain: _Encrypting(plain, recipients)  # type: ignore[return-value]


def seal(backup: Backup, keys: tuple[str, ...]) -> Backup:
    """Replace a local backup's plaintext by its encryption to `keys`, in one atomic swap of
    the folder (a crash leaves the plaintext backup, or the sealed one, and a leftover the
    next prune removes). Its verification record is kept: it was made on this plaintext."""
    folder = backup.local_path
    manifest = read_manifest(folder)
    if encryption_of(manifest):
        return backup
    work = temporary_folder(folder.parent, f"{PARTIAL_PREFIX}{backup.id}-sealing-")
    try:
        store = LocalStore(work.parent)
        transform = encrypting(keys)
        files = {}
        for name, entry in manifest["files"].items():
            stored = store.write(work.name, name, folder / name, transform=transform)
            files[name] = {
                "sha256": stored.sha256,
                "size": stored.size,
                "plaintext": {"sha256": entry["sha256"], "size": entry["size"]},
            }
        manifest["files"] = files
        manifest["encryption"] = {"format": AGE, "recipients": list(keys), "files": list(files)}
        atomic_write(work / MANIFEST, json.dumps(manifest, indent=2).encode())
        if (folder / VERIFICATION).is_file():
            shutil.copy2(folder / VERIFICATION, work / VERIFICATION)
        for path in work.iterdir():
            fsync_path(path)
        old = swap_in_directory(work, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("backup %s encrypted (age) to %d recipient(s)", backup.id, len(keys))
    return read_backup(
        LocalStore(folder.parent), backup.id, LocalStore(folder.parent).folders()[backup.id]
    )


def decrypt_file(source: Path, target: Path, identities: list, backup_id: str) -> FileEntry:
    import pyrage

    try:
        with open(source, "rb") as encrypted, open(target, "wb") as plain:
            pyrage.decrypt_io(encrypted, plain, identities)
    except pyrage.DecryptError as exc:
        raise IdentityWrong(
            f"backup {backup_id}: {source.name} does not decrypt with BACKUP_AGE_IDENTITY_FILE "
            f"({exc})"
        ) from None
    return FileEntry(sha256_of(target), target.stat().st_size)


@contextmanager
def plaintext(backup: Backup, identity: str | None) -> Iterator[Backup]:
    """The backup as verify and restore read it: itself when not encrypted; else a decrypted
    copy in a private folder beside it (never listed, removed afterwards), each file checked
    against the manifest's plaintext entry. Raises IdentityMissing/IdentityWrong first, before
    anything is changed."""
    folder = backup.local_path
    manifest = read_manifest(folder)
    record = encryption_of(manifest)
    if record is None:
        yield backup
        return
    identities = identities_of(identity, backup.id, list(record.get("recipients", [])))
    if damaged := checksum_problems(folder, manifest):  # what is stored, before decrypting
        raise BackupError(f"backup {backup.id} does NOT verify: {'; '.join(damaged)}")
    scratch = temporary_folder(folder.parent, f"{DOWNLOAD_PREFIX}{backup.id}-plain-")
    try:
        target = scratch / backup.id
        target.mkdir(mode=0o700)
        files = {}
        for name, entry in manifest["files"].items():
            plain = entry.get("plaintext") if name in record["files"] else None
            if plain is None:
                shutil.copy2(folder / name, target / name)
                files[name] = file_entry(target / name)
                continue
            got = decrypt_file(folder / name, target / name, identities, backup.id)
            expected = FileEntry(str(plain["sha256"]), int(plain["size"]))
            if problem := mismatch(name, got, expected):
                raise BackupError(f"backup {backup.id}: decrypted {problem} (plaintext)")
            files[name] = {"sha256": got.sha256, "size": got.size}
        plain_manifest = {k: v for k, v in manifest.items() if k != "encryption"}
        plain_manifest["files"] = files
        (target / MANIFEST).write_text(json.dumps(plain_manifest, indent=2))
        yield read_backup(LocalStore(scratch), backup.id, LocalStore(scratch).folders()[backup.id])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def carry_verification(copy: Backup, backup: Backup) -> None:
    """The record verify wrote beside a decrypted copy, put beside the backup itself."""
    record = copy.local_path / VERIFICATION
    if record.is_file():
        atomic_write(backup.local_path / VERIFICATION, record.read_bytes())
