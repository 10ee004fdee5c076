"""The only module that speaks S3: the bucket as a backup store (BACKUP_S3_URL=s3://bucket/
prefix), one object per file under `<prefix>/<folder>/`. What it stores is checked: the store's
own SHA-256 where it keeps one (compared with the manifest's, or with the digest taken while
streaming), else by reading it back."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from source.backups.catalog import Backup, BackupError, catalogue
from source.backups.manifest import MANIFEST, FileEntry, mismatch
from source.backups.store import (
    BLOCK,
    HashingReader,
    Transform,
    is_backup_id,
    opened,
    transformed,
)
from source.config import Settings
from source.errors import EXIT_FAILURE, first_line

PART_SIZE = 8 * 1024 * 1024  # multipart above this, in parts of this size
Digests = list[bytes]  # of a file's parts, in order


class RemoteError(BackupError):
    """The bucket cannot be used or holds a bad copy; str() is one line naming the store."""

    exit_code = EXIT_FAILURE


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def hashed(path: Path) -> HashingReader:
    """A file read once, streamed: its sha256, size and the digests of its parts."""
    with open(path, "rb") as handle:
        reader = HashingReader(handle, PART_SIZE)
        while reader.read(BLOCK):
            pass
    return reader


def composite_sha256(entry: FileEntry, parts: Digests) -> str:
    """What S3 reports as an object's SHA-256: for a single-part object, the file's own digest
    (the manifest's: no reading needed); for a multipart one, the digest of its parts'
    digests, `-<parts>` appended."""
    if entry.size <= PART_SIZE:
        return _b64(bytes.fromhex(entry.sha256))
    return f"{_b64(hashlib.sha256(b''.join(parts)).digest())}-{len(parts)}"


class _Body:
    """An object's body as a reader whose failures are one-line RemoteErrors."""

    def __init__(self, body, fail: Callable[[Exception], RemoteError]):
        self.body, self.fail = body, fail

    def read(self, n: int = -1) -> bytes:
        try:
            return self.body.read(None if n < 0 else n)
        except Exception as exc:
            raise self.fail(exc) from None


class RemoteStore:
    """A bucket and prefix, through boto3 with short timeouts and a few retries."""

    kind = "remote"

    def __init__(self, settings: Settings):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        if not settings.backup_s3_url:
            raise RemoteError("BACKUP_S3_URL is not set: there is no bucket")
        self.url: str = settings.backup_s3_url
        self.bucket, _, prefix = self.url[len("s3://") :].partition("/")
        self.prefix = f"{prefix}/" if prefix else ""
        access = settings.s3
        session = boto3.session.Session(profile_name=access.profile) if access.profile else boto3
        self.client = session.client(
            "s3",
            endpoint_url=access.endpoint_url,
            region_name=access.region,
            aws_access_key_id=access.access_key_id if access.secret_access_key else None,
            aws_secret_access_key=access.secret_access_key,
            config=Config(
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
                # Compute and send checksums only where the operation needs them: S3-compatible
                # stores differ in what they accept beyond that.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, max_concurrency=4
        )

    # -- naming --------------------------------------------------------------------------------

    def key(self, folder: str, name: str = "") -> str:
        return f"{self.prefix}{folder}/{name}"

    def where(self, folder: str | None = None) -> str:
        return f"{self.url}/{folder}" if folder else self.url

    def _fail(self, action: str, exc: Exception) -> RemoteError:
        return RemoteError(f"{self.url}: {action} failed: {describe_error(exc)}")

    # -- the store interface -------------------------------------------------------------------

    def folders(self) -> dict[str, dict[str, int]]:
        """Complete copies (those with a manifest: an upload that did not finish has none)."""
        objects: dict[str, dict[str, int]] = {}
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    folder, _, name = item["Key"][len(self.prefix) :].partition("/")
                    if is_backup_id(folder) and name:
                        objects.setdefault(folder, {})[name] = item["Size"]
        except Exception as exc:
            raise self._fail("listing", exc) from None
        return {folder: files for folder, files in objects.items() if MANIFEST in files}

    def names(self, folder: str) -> dict[str, int]:
        """Every object under `<prefix>/<folder>/`: its key below that folder, and its size."""
        base = self.key(folder)
        found = {}
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base
            )
            for page in pages:
                for item in page.get("Contents", []):
                    found[item["Key"][len(base) :]] = item["Size"]
        except Exception as exc:
            raise self._fail(f"listing {folder}", exc) from None
        return found

    def list(self) -> list[Backup]:
        """This store's catalogue (source.backups.catalog.catalogue), oldest first."""
        return catalogue(self)

    @contextmanager
    def open(self, folder: str, name: str) -> Iterator[BinaryIO]:
        action = f"downloading {folder}/{name}"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(folder, name))["Body"]
        except Exception as exc:
            raise self._fail(action, exc) from None
        try:
            yield _Body(body, lambda exc: self._fail(action, exc))  # type: ignore[misc]
        finally:
            body.close()

    def write(
        self,
        folder: str,
        name: str,
        source: Path | BinaryIO,
        expected: FileEntry | None = None,
        transform: Transform | None = None,
    ) -> FileEntry:
        key, extra = self.key(folder, name), {"ChecksumAlgorithm": "SHA256"}
        try:
            if isinstance(source, Path) and transform is None:
                stored, parts = expected, []
                if stored is None or stored.size > PART_SIZE:  # a digest to take: read once
                    read = hashed(source)
                    stored, parts = read.entry(), read.part_digests()
                self._refuse_mismatch(folder, name, stored, expected)
                self.client.upload_file(
                    str(source), self.bucket, key, ExtraArgs=extra, Config=self.transfer
                )
            else:
                with opened(source) as plain, transformed(plain, transform) as stream:
                    reader = HashingReader(stream, PART_SIZE)
                    self.client.upload_fileobj(
                        reader, self.bucket, key, ExtraArgs=extra, Config=self.transfer
                    )
                stored, parts = reader.entry(), reader.part_digests()
                if transform is None:
                    self._refuse_mismatch(folder, name, stored, expected)
        except RemoteError:
            raise
        except Exception as exc:
            raise self._fail(f"uploading {folder}/{name}", exc) from None
        self._check(folder, name, stored, parts)
        return stored

    def _refuse_mismatch(
        self, folder: str, name: str, sent: FileEntry, expected: FileEntry | None
    ) -> None:
        if expected is not None and (differs := mismatch(name, sent, expected)):
            raise RemoteError(f"{self.where(folder)}: {differs}")

    def put(self, folder: str, name: str, body: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(folder, name), Body=body)
        except Exception as exc:
            raise self._fail(f"writing {folder}/{name}", exc) from None

    def delete(self, folder: str) -> None:
        """The manifest first, so that a deletion cut short leaves no copy listed as complete."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(folder, MANIFEST))
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key(folder))
            keys = [{"Key": item["Key"]} for item in listed.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
        except Exception as exc:
            raise self._fail(f"deleting {folder}", exc) from None

    # -- checking what was stored --------------------------------------------------------------

    def _check(self, folder: str, name: str, entry: FileEntry, parts: Digests) -> None:
        """The stored object is `entry`: its size, and the store's SHA-256 (or a read-back)."""
        key = self.key(folder, name)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as exc:
            raise self._fail(f"checking {folder}/{name}", exc) from None
        if head["ContentLength"] != entry.size:
            raise RemoteError(
                f"{self.where(folder)}/{name} is {head['ContentLength']} bytes in the bucket, "
                f"{entry.size} here"
            )
        stored = head.get("ChecksumSHA256")
        if stored:
            if stored != composite_sha256(entry, parts):
                raise RemoteError(f"{self.where(folder)}/{name}: the store's SHA-256 differs")
            return
        digest = hashlib.sha256()  # no checksum kept by this store: read it back, streamed
        with self.open(folder, name) as body:
            while block := body.read(BLOCK):
                digest.update(block)
        if digest.hexdigest() != entry.sha256:
            raise RemoteError(f"{self.where(folder)}/{name}: read back different bytes")


def describe_error(exc: Exception) -> str:
    """One line a person can act on: the S3 error code, or the connection problem."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "error")
        hints = {
            "NoSuchBucket": "the bucket does not exist",
            "InvalidAccessKeyId": "the access key is not known to the store",
            "SignatureDoesNotMatch": "the secret access key is wrong",
            "AccessDenied": "access denied to these credentials",
            "QuotaExceeded": "the store's quota is used up",
        }
        return f"{code}: {hints.get(code, first_line(Exception(error.get('Message', ''))))}"
    if isinstance(exc, EndpointConnectionError):
        url = urlsplit(exc.kwargs.get("endpoint_url", ""))
        return f"cannot connect to {url.scheme}://{url.netloc}" if url.netloc else "cannot connect"
    if isinstance(exc, NoCredentialsError):
        return "no credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile)"
    return f"{type(exc).__name__}: {first_line(exc)}"
