"""The only module that speaks S3: copies of backups in a bucket (BACKUP_S3_URL=s3://bucket/
prefix), one object per file under `<prefix>/<ID>/`, the manifest uploaded last (a copy without
its manifest is incomplete and never listed), each file checked against the manifest: the
store's own SHA-256 where it keeps one, else by reading it back."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from source.backups.catalog import BackupError, is_backup_id
from source.backups.manifest import MANIFEST, read_manifest
from source.config import Settings
from source.errors import EXIT_FAILURE, first_line

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024  # multipart above this, in parts of this size
REMOTE_VERIFICATION = "verification.json"
RESTORED = "restored"  # `verify --remote` restored this very copy into a scratch database
CHECKED = "checked"  # every file's sha256 matched the local copy it was uploaded from


class RemoteError(BackupError):
    """The bucket cannot be used or holds a bad copy; str() is one line naming the store."""

    exit_code = EXIT_FAILURE


@dataclass(frozen=True)
class RemoteBackup:
    id: str
    size_bytes: int
    verified: bool | None = None
    level: str | None = None  # RESTORED or CHECKED
    verified_at: str | None = None

    @property
    def created_at(self) -> datetime:
        return datetime.strptime(self.id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def composite_sha256(path: Path, part_size: int = PART_SIZE) -> str:
    """What S3 reports as a multipart object's SHA-256: the digest of its parts' digests,
    `-<parts>` appended; for a single-part object, the file's own digest."""
    size = path.stat().st_size
    if size <= part_size:
        return _b64(hashlib.sha256(path.read_bytes()).digest())
    parts = []
    with open(path, "rb") as handle:
        while block := handle.read(part_size):
            parts.append(hashlib.sha256(block).digest())
    return f"{_b64(hashlib.sha256(b''.join(parts)).digest())}-{len(parts)}"


class RemoteStore:
    """A bucket and prefix, through boto3 with short timeouts and a few retries."""

    def __init__(self, settings: Settings):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.url = settings.backup_s3_url
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

    def key(self, backup_id: str, name: str = "") -> str:
        return f"{self.prefix}{backup_id}/{name}"

    def where(self, backup_id: str | None = None) -> str:
        return f"{self.url}/{backup_id}" if backup_id else self.url

    def _fail(self, action: str, exc: Exception) -> RemoteError:
        return RemoteError(f"{self.url}: {action} failed: {describe_error(exc)}")

    # -- listing -------------------------------------------------------------------------------

    def list(self) -> list[RemoteBackup]:
        """Complete copies (those with a manifest), oldest first."""
        objects: dict[str, dict[str, int]] = {}
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    backup_id, _, name = item["Key"][len(self.prefix) :].partition("/")
                    if is_backup_id(backup_id) and name:
                        objects.setdefault(backup_id, {})[name] = item["Size"]
        except Exception as exc:
            raise self._fail("listing", exc) from None
        backups = []
        for backup_id in sorted(objects):
            files = objects[backup_id]
            if MANIFEST not in files:
                continue  # an upload that did not finish
            size = sum(v for k, v in files.items() if k != REMOTE_VERIFICATION)
            record = self._verification(backup_id) if REMOTE_VERIFICATION in files else {}
            backups.append(
                RemoteBackup(
                    backup_id,
                    size,
                    record.get("ok"),
                    record.get("level"),
                    record.get("verified_at"),
                )
            )
        return backups

    def _verification(self, backup_id: str) -> dict:
        try:
            body = self.client.get_object(
                Bucket=self.bucket, Key=self.key(backup_id, REMOTE_VERIFICATION)
            )["Body"].read()
            return json.loads(body)
        except Exception:  # an unreadable record is no record
            return {}

    # -- upload --------------------------------------------------------------------------------

    def upload(self, backup_path: Path, local_level: str | None) -> int:
        """Every file of the backup, the manifest last, each checked against the manifest;
        then the record of how the copy was checked. Returns the bytes sent."""
        backup_id = backup_path.name
        manifest = read_manifest(backup_path)
        sent = 0
        for name in [*manifest["files"], MANIFEST]:
            path = backup_path / name
            try:
                self.client.upload_file(
                    str(path),
                    self.bucket,
                    self.key(backup_id, name),
                    ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                    Config=self.transfer,
                )
            except Exception as exc:
                raise self._fail(f"uploading {backup_id}/{name}", exc) from None
            self._check(backup_id, name, path)
            sent += path.stat().st_size
        self.record_verification(
            backup_id,
            ok=True,
            level=CHECKED,
            detail=f"sha256 of every file matches the local copy ({local_level or 'unverified'})",
        )
        return sent

    def _check(self, backup_id: str, name: str, local: Path) -> None:
        """The stored object is the local file: size, and the store's SHA-256 (or a read-back)."""
        try:
            head = self.client.head_object(
                Bucket=self.bucket, Key=self.key(backup_id, name), ChecksumMode="ENABLED"
            )
        except Exception as exc:
            raise self._fail(f"checking {backup_id}/{name}", exc) from None
        if head["ContentLength"] != local.stat().st_size:
            raise RemoteError(
                f"{self.where(backup_id)}/{name} is {head['ContentLength']} bytes in the bucket, "
                f"{local.stat().st_size} here"
            )
        stored = head.get("ChecksumSHA256")
        if stored:
            expected = composite_sha256(local, PART_SIZE)
            if stored != expected:
                raise RemoteError(f"{self.where(backup_id)}/{name}: the store's SHA-256 differs")
            return
        digest = hashlib.sha256()  # no checksum kept by this store: read it back
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(backup_id, name))
            for block in body["Body"].iter_chunks(1 << 20):
                digest.update(block)
        except Exception as exc:
            raise self._fail(f"reading back {backup_id}/{name}", exc) from None
        if digest.digest() != hashlib.sha256(local.read_bytes()).digest():
            raise RemoteError(f"{self.where(backup_id)}/{name}: read back different bytes")

    def record_verification(self, backup_id: str, *, ok: bool, level: str | None, detail: str):
        body = {
            "ok": ok,
            "level": level if ok else None,
            "verified_at": datetime.now(UTC).isoformat(),
            "detail": detail,
        }
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.key(backup_id, REMOTE_VERIFICATION),
                Body=json.dumps(body, indent=2).encode(),
            )
        except Exception as exc:
            raise self._fail(f"recording the verification of {backup_id}", exc) from None

    # -- download ------------------------------------------------------------------------------

    def download(self, backup_id: str, target: Path) -> Path:
        """The copy into `target` (a new private folder), every file checked against the
        downloaded manifest; a tampered or truncated copy is refused in one line."""
        target.mkdir(mode=0o700)
        try:
            try:
                self.client.download_file(
                    self.bucket, self.key(backup_id, MANIFEST), str(target / MANIFEST)
                )
                manifest = read_manifest(target)
                for name in manifest["files"]:
                    self.client.download_file(
                        self.bucket,
                        self.key(backup_id, name),
                        str(target / name),
                        Config=self.transfer,
                    )
            except (ValueError, KeyError) as exc:
                raise RemoteError(f"{self.where(backup_id)}: unreadable manifest ({exc})") from None
            except Exception as exc:
                raise self._fail(f"downloading {backup_id}", exc) from None
            from source.backups.manifest import checksum_problems

            problems = checksum_problems(target, manifest)
            if problems:
                raise RemoteError(
                    f"{self.where(backup_id)} is damaged, refusing it: {problems[0]}"
                )
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return target

    # -- deletion ------------------------------------------------------------------------------

    def delete(self, backup_id: str) -> None:
        """The manifest first, so that a deletion cut short leaves no copy listed as complete."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(backup_id, MANIFEST))
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key(backup_id))
            keys = [{"Key": item["Key"]} for item in listed.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
        except Exception as exc:
            raise self._fail(f"deleting {backup_id}", exc) from None


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
