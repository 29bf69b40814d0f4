"""``s3`` target: files into an S3 bucket, or an S3-compatible store (MinIO, Aliyun OSS,
Tencent COS, Cloudflare R2, Backblaze B2).

The upload is driven by hand rather than with ``upload_fileobj``: s3transfer cannot
send ``If-None-Match`` (create-only), and its memory grows with its concurrency. A
body smaller than one part goes up as one ``PutObject``; a larger one as a multipart
upload from two part buffers: up to two parts upload at once, and a buffer is refilled
only once its part is up, so memory stays near ``2 × part_size`` whatever the file's
size, while two requests in flight hide the store's latency. Both end
with ``If-None-Match: *``: the store itself refuses to overwrite (412), and the
shared flow decides what a taken path means. Stores without conditional writes get a
``HEAD`` first instead (``create_only: false``), which leaves a narrow race.

The SHA-256 is computed on the way and recorded as the object tag ``sha256`` (and as
metadata when known before the upload), so ``stat`` can tell a retry's own object
from someone else's. botocore's own retries are off (the delivery layer retries,
after reconciling), and its default CRC checksums too, which many S3-compatible
stores refuse.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import boto3  # type: ignore[import-untyped]
import structlog
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from relay.addresses import check_url, safe_url
from relay.config.models import TargetConfig
from relay.config.units import Duration, Size
from relay.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from workers.net.http import BlockedAddress, vetted_addresses
from workers.net.outcomes import parse_retry_after
from workers.storage.flow import StorageTarget
from workers.storage.options import StorageOptions
from workers.storage.paths import check_path_template
from workers.storage.spec import AlreadyExists, Source, StoredObject
from workers.storage.stream import ContentHash
from workers.targets.base import DeliveryContext

log = structlog.get_logger("relay.delivery")

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3's smallest part (but the last)
MAX_PART = 5 * 1024 * MiB
MAX_PARTS = 10_000
PARTS_IN_FLIGHT = 2  # part buffers, and uploads at once: memory stays near 2 × part_size
MAX_KEY = 1024  # bytes of UTF-8 in an S3 key
MAX_TAGS = 10  # per object; one is ``sha256``
MAX_LINK = 7 * 24 * 3600  # SigV4 presigned URLs live at most a week
READ_CHUNK = MiB
SHA_TAG = "sha256"

Preset = Literal["aws", "minio", "oss", "cos", "r2", "b2", "custom"]
Addressing = Literal["auto", "virtual", "path"]

# What each preset sets: the endpoint pattern (None: boto3's own, or endpoint_url is
# required), the addressing style, and the region when the store has only one.
PRESETS: dict[str, tuple[str | None, Addressing, str | None]] = {
    "aws": (None, "auto", None),
    "minio": (None, "path", "us-east-1"),
    "oss": ("https://s3.oss-{region}.aliyuncs.com", "virtual", None),
    "cos": ("https://cos.{region}.myqcloud.com", "virtual", None),
    "r2": (None, "auto", "auto"),
    "b2": ("https://s3.{region}.backblazeb2.com", "auto", None),
    "custom": (None, "auto", None),
}
NEEDS_ENDPOINT = {"minio", "r2", "custom"}

# Error codes worth another attempt even though their status is 4xx.
_RETRYABLE_CODES = {
    "RequestTimeout",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "RequestLimitExceeded",
    "ConditionalRequestConflict",  # a concurrent write on the key: start over
    "OperationAborted",
    "NoSuchUpload",  # aborted under us (lifecycle rule, cleanup): start over
    "IncompleteBody",
    "BadDigest",
    "ExpiredToken",  # temporary credentials: the next attempt takes fresh ones
}
_HINTS = {
    "AccessDenied": "the credentials lack the permission for this call (see the IAM policy "
    "in docs/targets/s3.md)",
    "AllAccessDisabled": "access to the bucket is disabled",
    "InvalidAccessKeyId": "check access_key_id (and that it belongs to this store)",
    "SignatureDoesNotMatch": "check secret_access_key and region",
    "NoSuchBucket": "check bucket, endpoint_url and region",
    "AuthorizationHeaderMalformed": "check region",
    "PermanentRedirect": "the bucket is in another region: check region",
    "SecondLevelDomainForbidden": "this store needs virtual-hosted addressing "
    "(addressing_style: virtual)",
    "InvalidStorageClass": "check storage_class",
    "KMS.NotFoundException": "check kms_key_id",
}


class S3Options(StorageOptions):
    """What an ``s3`` target adds to the options every store has."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    bucket: str = Field(min_length=3, max_length=255)
    prefix: str = Field("", description="Put before every path (a folder in the bucket).")
    preset: Preset = "aws"
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: Addressing | None = None
    access_key_id: str | None = Field(None, repr=False)
    secret_access_key: str | None = Field(None, repr=False)
    sse: Literal["none", "AES256", "aws:kms"] = "none"
    kms_key_id: str | None = None
    storage_class: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    part_size: Size = Field(8 * MiB, ge=MIN_PART, le=MAX_PART)
    create_only: bool = Field(
        True, description="Send If-None-Match: *; false: HEAD first (no conditional writes)."
    )
    link_lifetime: Duration | None = Field(None, gt=0, le=MAX_LINK)

    @field_validator("path")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_path_template(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        parts = [p for p in value.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError("no . or .. segments")
        return "/".join(parts) + "/" if parts else ""

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        return value.rstrip("/")

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_TAGS - 1:
            raise ValueError(f"at most {MAX_TAGS - 1} tags (S3 allows {MAX_TAGS}; one is sha256)")
        for key, tag in value.items():
            if key == SHA_TAG:
                raise ValueError("the tag sha256 is set by the relay")
            if not 1 <= len(key) <= 128 or len(tag) > 256:
                raise ValueError(f"tag {key!r}: keys 1-128 characters, values up to 256")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> S3Options:
        if self.preset in NEEDS_ENDPOINT and not self.endpoint_url:
            raise ValueError(f"preset {self.preset} needs endpoint_url")
        pattern = PRESETS[self.preset][0]
        if pattern and not self.endpoint_url and not self.region:
            raise ValueError(f"preset {self.preset} needs region (or endpoint_url)")
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("kms_key_id needs sse: aws:kms")
        if len(self.prefix.encode()) >= MAX_KEY - 1:
            raise ValueError(f"prefix takes {len(self.prefix.encode())} of the {MAX_KEY} key bytes")
        return self

    # -- what the preset resolves to -------------------------------------------------------

    @property
    def endpoint(self) -> str | None:
        pattern = PRESETS[self.preset][0]
        if self.endpoint_url or not pattern:
            return self.endpoint_url
        return pattern.format(region=self.region)

    @property
    def style(self) -> Addressing:
        return self.addressing_style or PRESETS[self.preset][1]

    @property
    def region_name(self) -> str | None:
        return self.region or PRESETS[self.preset][2]


def part_size_for(size: int | None, base: int) -> int:
    """``base``, grown (in whole MiB) so a file of ``size`` bytes fits in 10,000 parts."""
    if size is None or size <= base * MAX_PARTS:
        return base
    needed = -(-size // MAX_PARTS)
    part = -(-needed // MiB) * MiB
    if part > MAX_PART:
        raise PermanentDeliveryError(f"{size} bytes is more than S3 can store in one object")
    return part


def _error_details(exc: ClientError) -> tuple[str, str, int, dict[str, str]]:
    response = exc.response or {}
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    status = int(meta.get("HTTPStatusCode") or 0)
    code = str(error.get("Code") or status or "Unknown")
    message = str(error.get("Message") or "")
    return code, message, status, dict(meta.get("HTTPHeaders") or {})


class S3Store:
    """One bucket (and prefix) through one boto3 client."""

    needs_size = False
    max_segment = MAX_KEY
    windows_names = False

    def __init__(self, client: Any, options: S3Options) -> None:
        self.client = client
        self.options = options
        self.bucket = options.bucket
        self.prefix = options.prefix
        self.max_path = MAX_KEY - len(self.prefix.encode())
        self._sessions: dict[str, set[str]] = {}  # upload_id -> keys begun in this store

    def key(self, path: str) -> str:
        return self.prefix + path.lstrip("/")

    # -- errors --------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in (self.options.secret_access_key, self.options.access_key_id):
            if secret:
                text = text.replace(secret, "***")
        return text

    def error(
        self, exc: BaseException, action: str, key: str, hint: str | None = None
    ) -> DeliveryError:
        """A boto3 failure as the delivery error it means; never a secret, never a URL
        with more than scheme, host and port."""
        where = f"s3://{self.bucket}/{key}"
        if isinstance(exc, DeliveryError):
            return exc
        if isinstance(exc, ClientError):
            code, message, status, headers = _error_details(exc)
            text = self._redact(f"S3 refused {action} {where} (HTTP {status} {code})")
            if message:
                text += ": " + self._redact(message)
            retryable = (
                code in _RETRYABLE_CODES or status >= 500 or status in (408, 429) or status == 0
            )
            if status == 501 or code == "NotImplemented":
                retryable = False
                if self.options.create_only:
                    text += "; if the store has no conditional writes, set create_only: false"
            elif not retryable and (hint or code in _HINTS):
                text += f"; {hint or _HINTS[code]}"
            if retryable:
                after = parse_retry_after(headers.get("retry-after"))
                return RetryableDeliveryError(text, status=status, retry_after=after)
            return PermanentDeliveryError(text, status=status)
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return PermanentDeliveryError(
                "no S3 credentials: set access_key_id and secret_access_key, or give the "
                "worker credentials (environment, profile, instance role)"
            )
        if isinstance(exc, NoRegionError):
            return PermanentDeliveryError("no S3 region: set region")
        if isinstance(exc, ParamValidationError):
            return PermanentDeliveryError(self._redact(f"invalid S3 request for {where}: {exc}"))
        endpoint = safe_url(self.options.endpoint or "https://s3.amazonaws.com")
        if isinstance(exc, BotoCoreError):
            return RetryableDeliveryError(
                f"{action} {where} failed: {type(exc).__name__} talking to {endpoint}"
            )
        return RetryableDeliveryError(f"{action} {where} failed: {type(exc).__name__}")

    # -- reading -------------------------------------------------------------------------

    def stat(self, path: str) -> StoredObject | None:
        """Size and SHA-256 (metadata, else the ``sha256`` tag) of the object at ``path``."""
        key = self.key(path)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            code, _, status, _ = _error_details(exc)
            if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                return None
            hint = (
                "without s3:ListBucket, S3 answers 403 for a missing object"
                if status == 403
                else None
            )
            raise self.error(exc, "HEAD of", key, hint) from None
        except Exception as exc:  # any failure, as a delivery error
            raise self.error(exc, "HEAD of", key) from None
        digest = (head.get("Metadata") or {}).get(SHA_TAG) or self._tagged_sha256(key)
        return self._object(path, int(head.get("ContentLength") or 0), digest)

    def _tagged_sha256(self, key: str) -> str | None:
        try:
            tags = self.client.get_object_tagging(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            log.warning("s3_tags_unreadable", key=key, error=type(exc).__name__)
            return None
        for tag in tags.get("TagSet") or []:
            if tag.get("Key") == SHA_TAG:
                return str(tag.get("Value"))
        return None

    def _object(self, path: str, size: int, digest: str | None) -> StoredObject:
        return StoredObject(
            path=path, size=size, sha256=digest, id=f"s3://{self.bucket}/{self.key(path)}"
        )

    def link(self, obj: StoredObject, lifetime: float) -> str | None:
        """A presigned GET URL (at most ``link_lifetime``, at most a week)."""
        limit = min(lifetime, self.options.link_lifetime or MAX_LINK, MAX_LINK)
        key = self.key(obj.path)
        try:
            url: str = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=max(1, int(limit)),
            )
        except Exception as exc:  # any failure, as a delivery error
            raise self.error(exc, "presigning", key) from None
        return url

    # -- writing -------------------------------------------------------------------------

    def _write_args(self, mime: str | None, digest: str | None) -> dict[str, Any]:
        """Content type, encryption, storage class, tags and metadata of a new object."""
        options = self.options
        args: dict[str, Any] = {"ContentType": mime or "application/octet-stream"}
        if options.sse != "none":
            args["ServerSideEncryption"] = options.sse
        if options.kms_key_id:
            args["SSEKMSKeyId"] = options.kms_key_id
        if options.storage_class:
            args["StorageClass"] = options.storage_class
        tags = dict(options.tags)
        if digest:
            tags[SHA_TAG] = digest
            args["Metadata"] = {SHA_TAG: digest}
        if tags:
            args["Tagging"] = "&".join(
                f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in tags.items()
            )
        return args

    def put(
        self,
        path: str,
        data: Source,
        *,
        size: int | None,
        mime: str | None,
        sha256: str | None = None,
        create_only: bool = True,
        upload_id: str | None = None,
    ) -> StoredObject:
        key = self.key(path)
        conditional = create_only and self.options.create_only
        if create_only and not self.options.create_only:
            existing = self.stat(path)  # no conditional writes: look first (a narrow race)
            if existing is not None:
                raise AlreadyExists(path, existing)
        part_size = part_size_for(size, self.options.part_size)
        digest = ContentHash(data)
        first = _first_part(data, part_size)
        digest.update(first)
        if len(first) < part_size:  # the whole body fits in one request
            known = sha256 or digest.hexdigest()
            self._put_small(path, key, bytes(first), mime, known, conditional)
            return self._object(path, len(first), known)
        return self._put_parts(path, key, data, first, digest, mime, sha256, conditional, upload_id)

    def _put_small(
        self,
        path: str,
        key: str,
        body: bytes,
        mime: str | None,
        digest: str | None,
        conditional: bool,
    ) -> None:
        args = self._write_args(mime, digest)
        if conditional:
            args["IfNoneMatch"] = "*"
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **args)
        except ClientError as exc:
            self._raise_taken(exc, path)
            raise self.error(exc, "PUT of", key) from None
        except Exception as exc:  # any failure, as a delivery error
            raise self.error(exc, "PUT of", key) from None

    def _raise_taken(self, exc: ClientError, path: str) -> None:
        code, _, status, _ = _error_details(exc)
        if status == 412 or code == "PreconditionFailed":
            raise AlreadyExists(path, self.stat(path)) from None

    def _put_parts(
        self,
        path: str,
        key: str,
        data: Source,
        first: bytearray,
        digest: ContentHash,
        mime: str | None,
        known: str | None,
        conditional: bool,
        upload_id: str | None,
    ) -> StoredObject:
        """A multipart upload: one buffer uploads while the other fills; aborted on any
        failure, so no parts are left behind by an attempt that ends here."""
        args = self._write_args(mime, known)
        try:
            created = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **args)
        except Exception as exc:  # any failure, as a delivery error
            raise self.error(exc, "starting the upload of", key) from None
        upload = str(created["UploadId"])
        if upload_id:
            self._sessions.setdefault(upload_id, set()).add(key)
        try:
            size, parts = self._send_parts(key, upload, data, first, digest)
            complete: dict[str, Any] = {"IfNoneMatch": "*"} if conditional else {}
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload,
                MultipartUpload={"Parts": parts},
                **complete,
            )
        except BaseException as exc:
            self._abort(key, upload)
            if isinstance(exc, ClientError):
                self._raise_taken(exc, path)
            if isinstance(exc, Exception) and not isinstance(exc, AlreadyExists):
                raise self.error(exc, "the upload of", key) from None
            raise
        hexdigest = known or digest.hexdigest()
        if hexdigest and not known:
            self._tag(key, hexdigest)
        return self._object(path, size, hexdigest)

    def _send_parts(
        self, key: str, upload: str, data: Source, first: bytearray, digest: ContentHash
    ) -> tuple[int, list[dict[str, Any]]]:
        """Upload ``first`` and the rest of ``data`` as parts, from two buffers: while
        one part uploads the next is read, and both may upload at once (two requests in
        flight hide the store's latency); a buffer is refilled only once its part is up,
        so two parts are the most ever held."""
        part_size = len(first)
        in_flight: deque[tuple[Future[dict[str, Any]], bytearray]] = deque()
        parts: list[dict[str, Any]] = []
        current, filled, size, number = first, part_size, part_size, 0
        with ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="s3") as pool:
            while filled:
                number += 1
                if number > MAX_PARTS:
                    raise PermanentDeliveryError(
                        f"the file is larger than {MAX_PARTS} parts of {part_size} bytes: "
                        "raise part_size"
                    )
                body = current if filled == part_size else current[:filled]
                in_flight.append(
                    (pool.submit(self._upload_part, key, upload, number, body), current)
                )
                if len(in_flight) < PARTS_IN_FLIGHT:
                    current = bytearray(part_size)
                else:  # wait for the oldest part, then reuse its buffer
                    done, current = in_flight.popleft()
                    parts.append(done.result())
                filled = _fill(data, current)
                digest.update(memoryview(current)[:filled])
                size += filled
            parts.extend(done.result() for done, _ in in_flight)
        return size, sorted(parts, key=lambda part: int(part["PartNumber"]))

    def _upload_part(self, key: str, upload: str, number: int, body: bytearray) -> dict[str, Any]:
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number, Body=body
        )
        return {"ETag": answer["ETag"], "PartNumber": number}

    def _tag(self, key: str, digest: str) -> None:
        """Record the hash as the ``sha256`` tag (with the configured tags, which a tag
        write replaces). Not fatal: the object is stored; ``stat`` then knows its size."""
        tags = [{"Key": k, "Value": v} for k, v in self.options.tags.items()]
        tags.append({"Key": SHA_TAG, "Value": digest})
        try:
            self.client.put_object_tagging(Bucket=self.bucket, Key=key, Tagging={"TagSet": tags})
        except (ClientError, BotoCoreError) as exc:
            log.warning("s3_tagging_failed", key=key, error=str(self.error(exc, "tagging", key)))

    def _abort(self, key: str, upload: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
        except (ClientError, BotoCoreError) as exc:
            log.warning("s3_abort_failed", key=key, error=type(exc).__name__)

    def cleanup(self, upload_id: str, path: str | None = None) -> None:
        """Abort unfinished multipart uploads at ``path`` (and at the keys this store
        began under ``upload_id``). Best effort: the bucket's lifecycle rule
        (``AbortIncompleteMultipartUpload``) removes whatever this misses."""
        keys = set(self._sessions.pop(upload_id, set()))
        if path is not None:
            keys.add(self.key(path))
        for key in sorted(keys):
            try:
                for upload in self._uploads(key):
                    self._abort(key, upload)
            except (ClientError, BotoCoreError) as exc:
                log.warning(
                    "s3_cleanup_failed", key=key, error=str(self.error(exc, "listing", key))
                )

    def _uploads(self, key: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
            for upload in page.get("Uploads") or []:
                if upload.get("Key") == key:
                    yield str(upload["UploadId"])


def _first_part(data: Source, part_size: int) -> bytearray:
    """Up to ``part_size`` bytes, in a buffer that grows as they come: a small file
    takes its own size in memory, not a whole part's."""
    buffer = bytearray()
    while len(buffer) < part_size:
        chunk = data.read(min(READ_CHUNK, part_size - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    return buffer


def _fill(data: Source, buffer: bytearray) -> int:
    """Read into ``buffer`` until it is full or ``data`` ends; the bytes read."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        chunk = data.read(min(READ_CHUNK, len(buffer) - filled))
        if not chunk:
            break
        view[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    return filled


class S3Target(StorageTarget):
    """An S3 bucket (or an S3-compatible store) as a storage target."""

    kind: ClassVar[str] = "s3"
    Options: ClassVar[type[S3Options]] = S3Options
    default_rate_limits: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, S3Options):
            options = S3Options.model_validate(
                options or {}, context={"allow_private": config.allow_private}
            )
        self.options: S3Options = options
        self.allow_private = config.allow_private
        self._clients: dict[float, Any] = {}
        self._lock = threading.Lock()

    def client(self, timeout: float) -> Any:
        """One boto3 client per timeout, made once (clients are thread-safe)."""
        client = self._clients.get(timeout)
        if client is None:
            with self._lock:
                client = self._clients.get(timeout)
                if client is None:
                    client = self._clients[timeout] = self._new_client(timeout)
        return client

    def _new_client(self, timeout: float) -> Any:
        options = self.options
        session = boto3.session.Session(
            aws_access_key_id=options.access_key_id,
            aws_secret_access_key=options.secret_access_key,
            region_name=options.region_name,
        )
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": options.style},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"total_max_attempts": 1, "mode": "standard"},  # no retry at all
            connect_timeout=timeout,
            read_timeout=timeout,
            max_pool_connections=32,
        )
        return session.client("s3", endpoint_url=options.endpoint, config=config)

    def check_endpoint(self) -> None:
        """The endpoint's addresses pass the same guard as every HTTP target's."""
        endpoint = self.options.endpoint
        if endpoint is None:
            return
        parts = urlsplit(endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            vetted_addresses(parts.hostname or "", port, self.allow_private)
        except BlockedAddress as exc:
            raise PermanentDeliveryError(
                f"refused to connect to {safe_url(endpoint)}: {exc}"
            ) from None
        except OSError:
            raise RetryableDeliveryError(
                f"{safe_url(endpoint)}: the host name did not resolve"
            ) from None

    def store(self, context: DeliveryContext) -> S3Store:
        self.check_endpoint()
        return S3Store(self.client(context.timeout), self.options)
