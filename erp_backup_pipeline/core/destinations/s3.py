"""S3 destination (boto3): AWS, MinIO, Ceph or moto via ``endpoint_url``.

Small objects go up in one ``PutObject``; above the threshold a multipart upload streams
parts of ``part_size`` bytes (memory stays at one part). Every request carries a SHA-256
checksum the server checks; the whole object's sha256 is recorded in the manifest and
re-checked on every read. An object becomes visible only when PutObject or
CompleteMultipartUpload succeeds; a failed or interrupted writer aborts its upload, and
``sweep_partials`` aborts uploads a killed process left behind.

Object Lock (``object_lock_mode``): a destination set ``with_retain_until(date)`` writes every object
with that mode and retain-until date (on PutObject or CreateMultipartUpload, then read back and set with
PutObjectRetention when the server dropped it), once it has seen the bucket has Object Lock enabled.
On such a bucket (versioned) a plain delete only adds a delete marker over the data, so ``delete`` removes
every version of the key instead, and ``lock(key)`` says what still holds one.
"""

from __future__ import annotations

import base64
import builtins
import copy
import functools
import hashlib
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import Field, SecretStr

from erp_backup_pipeline.core.config import Model, present, secret
from erp_backup_pipeline.core.destinations.local import SWEEP_AGE
from erp_backup_pipeline.errors import ArtifactNotFound, DestinationError, DestinationUnavailable


@functools.lru_cache(maxsize=16)
def _client(endpoint_url: str | None, region: str, access_key_id: str | None, secret_access_key: str | None,
            max_attempts: int = 5, read_timeout: int = 60) -> Any:
    """One boto3 client per endpoint, credentials and retry settings per process (clients are thread-safe;
    building one re-parses the service model, ~70 ms). Standard retries: up to ``max_attempts`` tries with
    exponential backoff and full jitter on 5xx, throttling, connection errors and timeouts."""
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}, connect_timeout=10,
                      read_timeout=read_timeout,
                      request_checksum_calculation="when_required", response_checksum_validation="when_required",
                      max_pool_connections=8),
    )


def _started(upload: dict[str, Any]) -> datetime:
    """When an upload began: the capture stamp in our own key name (``<stamp>.<ext>``) when it has one,
    else the server's ``Initiated`` (some S3 implementations report a fixed date there)."""
    stamp = upload["Key"].rsplit("/", 1)[-1].split(".", 1)[0]
    try:
        return datetime.strptime(stamp[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return upload["Initiated"]


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# answers that mean "not now": throttling and timeouts (with any 5xx, DestinationUnavailable: retried)
_BUSY = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable",
                   "InternalError", "503", "500"})
# what a refused credential means, for the operator reading the one line (HEAD answers carry no code, only
# "403"; AccessDenied stays bare: a missing permission and an Object Lock both answer it)
_DENIED = {"InvalidAccessKeyId": ": the endpoint does not know the access key id",
           "SignatureDoesNotMatch": ": the secret access key does not belong to the access key id"}

_LOCK_ENABLED: set[tuple[str | None, str]] = set()  # (endpoint, bucket) seen with Object Lock enabled


def _sha256_b64(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class S3Writer:
    """Buffers one part, uploads parts from a background thread (at most ``_IN_FLIGHT`` at once),
    so encryption and hashing overlap with the network; completes the upload on commit."""

    _IN_FLIGHT = 2

    def __init__(self, dest: S3Destination, key: str, pending: dict[str, Any] | None = None) -> None:
        self.key = key
        self._dest = dest
        self._obj = dest.object_key(key)
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._futures: list[Future[dict[str, Any]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._done = False
        self._parts: list[dict[str, Any]] | None = None
        if pending is not None:  # a suspended upload: every part is up, only complete/abort remain
            self._upload_id = pending["upload_id"]
            self._parts = pending["parts"]
            return
        if dest.lock_args():
            dest.check_object_lock()
        if dest.exists(key):
            raise DestinationError(f"{dest.uri(key)} already exists; artifacts are never overwritten")

    def suspend(self) -> dict[str, Any]:
        """Upload everything written as parts of a multipart upload that stays incomplete (invisible);
        the state lets another stage complete or abort it."""
        if self._parts is None:
            try:
                if self._upload_id is None:
                    self._start_multipart()
                if self._buf or not self._futures:
                    self._submit(bytes(self._buf))  # the last part may be smaller than 5 MiB
                self._buf = bytearray()
                self._parts = [f.result() for f in self._futures]
            except BaseException:
                self.abort()
                raise
            self._shutdown()
        return {"upload_id": self._upload_id, "parts": self._parts}

    def write(self, data: bytes) -> int:
        self._buf += data
        threshold = self._dest.multipart_threshold if self._upload_id is None else self._dest.part_size
        if len(self._buf) >= max(threshold, self._dest.part_size):
            if self._upload_id is None:
                self._start_multipart()
            view = memoryview(self._buf)
            size = self._dest.part_size
            full = len(self._buf) // size * size
            for offset in range(0, full, size):
                self._submit(bytes(view[offset:offset + size]))
            view.release()
            del self._buf[:full]
        return len(data)

    def _start_multipart(self) -> None:
        resp = self._dest.call("create upload", self.key, self._dest.client.create_multipart_upload,
                               Bucket=self._dest.bucket, Key=self._obj, ChecksumAlgorithm="SHA256",
                               **self._dest.lock_args())
        self._upload_id = resp["UploadId"]
        self._pool = ThreadPoolExecutor(max_workers=self._IN_FLIGHT, thread_name_prefix="s3-part")

    def _submit(self, data: bytes) -> None:
        assert self._pool is not None
        pending = [f for f in self._futures if not f.done()]
        if len(pending) >= self._IN_FLIGHT:
            wait(pending, return_when=FIRST_COMPLETED)
        for f in self._futures:
            if f.done() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
        self._futures.append(self._pool.submit(self._upload_part, len(self._futures) + 1, data))

    def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        checksum = _sha256_b64(data)
        resp = self._dest.call("upload part", self.key, self._dest.client.upload_part,
                               Bucket=self._dest.bucket, Key=self._obj, UploadId=self._upload_id,
                               PartNumber=number, Body=data, ChecksumAlgorithm="SHA256",
                               ChecksumSHA256=checksum)
        return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": checksum}

    def commit(self) -> str:
        try:
            if self._upload_id is None:
                data = bytes(self._buf)
                resp = self._dest.call("put", self.key, self._dest.client.put_object, Bucket=self._dest.bucket,
                                       Key=self._obj, Body=data, ChecksumAlgorithm="SHA256",
                                       ChecksumSHA256=_sha256_b64(data), **self._dest.lock_args())
            else:
                parts = self.suspend()["parts"]
                resp = self._dest.call("complete upload", self.key, self._dest.client.complete_multipart_upload,
                                       Bucket=self._dest.bucket, Key=self._obj, UploadId=self._upload_id,
                                       MultipartUpload={"Parts": parts})
            self._done = True  # visible now: nothing left to abort
            self._ensure_lock(resp.get("VersionId"))
        except BaseException:
            self.abort()
            raise
        self._buf = bytearray()
        self._shutdown()
        return self._dest.uri(self.key)

    def _ensure_lock(self, version_id: str | None) -> None:
        """Read the committed object's lock back; set it when the server dropped it (some S3 implementations,
        moto among them, ignore Object Lock on CreateMultipartUpload). A weaker lock fails the commit."""
        want = self._dest.lock_args()
        if not want:
            return
        dest, version = self._dest, {"VersionId": version_id} if version_id else {}
        head = dest.call("head", self.key, dest.client.head_object, Bucket=dest.bucket, Key=self._obj, **version)
        until = head.get("ObjectLockRetainUntilDate")
        if (head.get("ObjectLockMode") in (want["ObjectLockMode"], "COMPLIANCE") and until is not None
                and until >= want["ObjectLockRetainUntilDate"]):
            return
        try:
            dest.call("set retention", self.key, dest.client.put_object_retention, Bucket=dest.bucket, Key=self._obj,
                      Retention={"Mode": want["ObjectLockMode"], "RetainUntilDate": want["ObjectLockRetainUntilDate"]},
                      **version)
        except DestinationError as exc:
            raise DestinationError(f"{dest.uri(self.key)} was written but is not locked: {exc}") from None

    def _shutdown(self) -> None:
        if self._pool is not None:
            for f in self._futures:
                f.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None

    def abort(self) -> None:
        self._buf = bytearray()
        self._shutdown()
        if self._upload_id is not None and not self._done:
            try:
                self._dest.client.abort_multipart_upload(Bucket=self._dest.bucket, Key=self._obj,
                                                         UploadId=self._upload_id)
            except (ClientError, BotoCoreError):
                pass  # swept later by sweep_partials; an uncompleted upload is never visible
            self._upload_id = None


class S3Destination:
    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
                 region: str = "eu-central-1", access_key_id: str | None = None,
                 secret_access_key: str | None = None, multipart_threshold: int = 64 << 20,
                 part_size: int = 16 << 20, name: str = "offsite", required: bool = True,
                 object_lock_mode: str | None = None, object_lock_min_days: int = 0, max_attempts: int = 5,
                 read_timeout: int = 60) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.name = name
        self.required = required
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.endpoint_url = endpoint_url
        self.client = _client(endpoint_url, region, access_key_id, secret_access_key, max_attempts, read_timeout)
        self.object_lock_mode = object_lock_mode  # GOVERNANCE or COMPLIANCE: this destination locks what it writes
        self.object_lock_min_days = object_lock_min_days  # ... each capture for at least this many days
        self.retain_until: datetime | None = None  # ... until then (with_retain_until); None: nothing is locked

    def with_retain_until(self, until: datetime) -> S3Destination:
        """This destination, writing every object locked until ``until`` (no lock unless object_lock_mode is set
        and ``until`` is in the future)."""
        other = copy.copy(self)
        other.retain_until = until.astimezone(UTC).replace(microsecond=0)
        return other

    def lock_args(self) -> dict[str, Any]:
        """ObjectLockMode and ObjectLockRetainUntilDate for what this destination writes now, or nothing."""
        if self.object_lock_mode is None or self.retain_until is None or self.retain_until <= datetime.now(UTC):
            return {}
        return {"ObjectLockMode": self.object_lock_mode, "ObjectLockRetainUntilDate": self.retain_until}

    def check_object_lock(self) -> None:
        """Fail (one line) unless the bucket has Object Lock enabled; asked once per bucket and process."""
        if (self.endpoint_url, self.bucket) in _LOCK_ENABLED:
            return

        def enabled() -> bool:
            try:
                resp = self.client.get_object_lock_configuration(Bucket=self.bucket)
            except ClientError as exc:
                if _code(exc) == "ObjectLockConfigurationNotFoundError":
                    return False
                raise
            return bool(resp.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

        if not self.call("get object lock configuration", "", enabled):
            raise DestinationError(f"destination {self.name}: S3 bucket '{self.bucket}' does not have Object Lock "
                                   f"enabled, so it cannot hold the {self.object_lock_mode} locks object_lock asks for")
        _LOCK_ENABLED.add((self.endpoint_url, self.bucket))

    def object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    def call(self, what: str, key: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = _code(exc)
            if code == "NoSuchBucket":
                raise DestinationError(f"destination {self.name}: S3 bucket '{self.bucket}' does not exist") from None
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ArtifactNotFound(f"{self.uri(key)} not found") from None
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                why = _DENIED.get(code, "")
                raise DestinationError(f"destination {self.name}: access denied ({code}{why}) on {what} "
                                       f"{self.uri(key)}") from None
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            kind = DestinationUnavailable if status >= 500 or code in _BUSY else DestinationError
            raise kind(f"destination {self.name}: S3 {what} {self.uri(key)} failed: {code or exc}") from None
        except NoCredentialsError:
            raise DestinationError(f"destination {self.name}: no S3 credentials configured") from None
        except EndpointConnectionError:
            raise DestinationUnavailable(f"destination {self.name}: cannot reach S3 endpoint "
                                         f"{self.endpoint_url or 'AWS'}") from None
        except (BotoConnectionError, ReadTimeoutError, ConnectTimeoutError) as exc:
            raise DestinationUnavailable(f"destination {self.name}: S3 {what} failed: {exc}") from None
        except BotoCoreError as exc:
            raise DestinationError(f"destination {self.name}: S3 {what} failed: {exc}") from None

    def check(self) -> None:
        # a one-key listing, not HEAD: the same permission (s3:ListBucket), but S3 says in the body *why* it refuses
        # (InvalidAccessKeyId, SignatureDoesNotMatch, NoSuchBucket) where HEAD answers a bare 403 or 404
        self.call("list", "", self.client.list_objects_v2, Bucket=self.bucket, Prefix=self.object_key(""), MaxKeys=1)
        if self.object_lock_mode is not None:
            self.check_object_lock()

    def open_writer(self, key: str) -> S3Writer:
        return S3Writer(self, key)

    def resume_writer(self, key: str, pending: dict[str, Any]) -> S3Writer:
        return S3Writer(self, key, pending)

    def open_reader(self, key: str) -> IO[bytes] | Any:
        resp = self.call("get", key, self.client.get_object, Bucket=self.bucket, Key=self.object_key(key))
        return resp["Body"]

    def list(self, prefix: str = "") -> Iterator[str]:
        full = self.object_key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        def collect() -> list[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            return [obj["Key"][strip:] for page in pages for obj in page.get("Contents", [])]

        return iter(sorted(self.call("list", prefix, collect)))

    def exists(self, key: str) -> bool:
        try:
            self.call("head", key, self.client.head_object, Bucket=self.bucket, Key=self.object_key(key))
            return True
        except ArtifactNotFound:
            return False

    def size(self, key: str) -> int:
        head = self.call("head", key, self.client.head_object, Bucket=self.bucket, Key=self.object_key(key))
        return int(head["ContentLength"])

    def replace(self, key: str, data: bytes) -> None:
        """One PutObject over the key: S3 replaces an object atomically (a versioned bucket keeps the old one)."""
        self.call("put", key, self.client.put_object, Bucket=self.bucket, Key=self.object_key(key), Body=data,
                  ChecksumAlgorithm="SHA256", ChecksumSHA256=_sha256_b64(data), **self.lock_args())

    def _versions(self, key: str) -> builtins.list[tuple[str, bool]]:
        """Every version of exactly this key (version id, is a delete marker), as the server lists them."""
        obj = self.object_key(key)

        def collect() -> builtins.list[tuple[str, bool]]:
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=obj)
            return [(v["VersionId"], marker) for page in pages
                    for marker, kind in ((False, "Versions"), (True, "DeleteMarkers"))
                    for v in page.get(kind, []) if v["Key"] == obj]

        found: builtins.list[tuple[str, bool]] = self.call("list versions", key, collect)
        return found

    def lock(self, key: str) -> str | None:
        """What keeps a version of ``key`` from being deleted now: 'locked until <date> (<mode>)' or 'under legal
        hold' (read with HeadObject per version), or None."""
        found: builtins.list[str] = []
        latest: tuple[datetime, str] | None = None
        now = datetime.now(UTC)
        for version, marker in self._versions(key):
            if marker:
                continue
            head = self.call("head", key, self.client.head_object, Bucket=self.bucket, Key=self.object_key(key),
                             VersionId=version)
            if head.get("ObjectLockLegalHoldStatus") == "ON" and "under legal hold" not in found:
                found.append("under legal hold")
            until, mode = head.get("ObjectLockRetainUntilDate"), head.get("ObjectLockMode")
            if mode and until is not None and until > now and (latest is None or until > latest[0]):
                latest = (until, mode)
        if latest is not None:
            found.insert(0, f"locked until {latest[0].astimezone(UTC).isoformat(timespec='seconds')} ({latest[1]})")
        return ", ".join(found) or None

    def extend_lock(self, key: str, until: datetime, dry_run: bool = False) -> bool:
        """Lock the newest version of ``key`` until at least ``until`` (PutObjectRetention, in the version's own
        mode: a COMPLIANCE lock stays one). Never shortens a lock. True when it was (dry run: would be) extended."""
        obj = self.object_key(key)
        head = self.call("head", key, self.client.head_object, Bucket=self.bucket, Key=obj)
        current = head.get("ObjectLockRetainUntilDate")
        if current is not None and current >= until:
            return False
        if not dry_run:
            args = {"VersionId": head["VersionId"]} if head.get("VersionId") else {}
            self.call("extend the lock of", key, self.client.put_object_retention, Bucket=self.bucket, Key=obj,
                      Retention={"Mode": head.get("ObjectLockMode") or self.object_lock_mode, "RetainUntilDate": until},
                      **args)
        return True

    def delete(self, key: str) -> None:
        if self.object_lock_mode is None:
            self.call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=self.object_key(key))
            return
        # Object Lock buckets are versioned: a plain delete would only hide the data behind a delete marker
        # (and hide a locked backup). Delete every version instead; a locked one is refused (AccessDenied).
        for version, _ in sorted(self._versions(key), key=lambda vm: vm[1]):  # data first, then delete markers
            self.call("delete version", key, self.client.delete_object, Bucket=self.bucket, Key=self.object_key(key),
                      VersionId=version)

    def sweep_partials(self, older_than: timedelta = SWEEP_AGE) -> builtins.list[str]:  # list: the method above
        """Abort multipart uploads under our prefix that were started ``older_than`` ago or earlier."""
        cutoff = datetime.now(UTC) - older_than
        resp = self.call("list uploads", "", self.client.list_multipart_uploads, Bucket=self.bucket,
                         Prefix=self.prefix)
        aborted = []
        for up in resp.get("Uploads", []):
            if _started(up) <= cutoff:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                aborted.append(up["Key"])
        return aborted


class ObjectLockSettings(Model):
    """S3 Object Lock on every object the destination writes (its bucket must have Object Lock enabled).

    Each artifact and its manifest are locked until their capture time plus the source's
    ``retention.<source>.keep_within`` (the planner never deletes anything younger), at least ``min_days``."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    min_days: int | None = Field(None, ge=1, description="lock at least this many days after the capture")


class S3DestinationSettings(Model):
    type: Literal["s3"]
    name: str = "offsite"
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "eu-central-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    secret_access_key_file: Path | None = None
    multipart_threshold_mb: int = Field(16, ge=5)
    part_size_mb: int = Field(16, ge=5)
    max_attempts: int = Field(5, ge=1, le=20, description="tries per S3 request (standard retries: exponential "
                                                          "backoff with jitter on 5xx, throttling and timeouts)")
    read_timeout_seconds: int = Field(60, ge=1, description="a request that answers nothing for this long is retried")
    required: bool = True
    object_lock: ObjectLockSettings | None = None

    def secret_key(self) -> str | None:
        return secret(self.secret_access_key, self.secret_access_key_file,
                      f"destinations.{self.name}.secret_access_key_file")

    def secret_values(self) -> list[str]:
        return present(self.secret_key)
