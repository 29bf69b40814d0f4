"""``webdav`` store: Nextcloud, ownCloud, Seafile, Synology, Box, 坚果云 or any WebDAV server.

A file goes up as one streamed ``PUT`` (``Transfer-Encoding: chunked`` while its size
is unknown) after ``MKCOL`` of each missing parent collection. Writes are create-only:
a ``PROPFIND`` first (so a taken path costs no upload), then ``If-None-Match: *`` on
the ``PUT`` (412 for a writer that got there in between). A ``PROPFIND`` afterwards
checks that the server holds as many bytes as were sent.

With ``chunked: nextcloud``, files from ``chunk_threshold`` up use Nextcloud's chunked
upload v2: ``MKCOL`` an upload collection named after the delivery's upload id,
``PUT`` numbered chunks, then ``MOVE .file`` onto the file with ``Overwrite: F``
(412: taken). Every request of it carries ``Destination`` and the chunks
``OC-Total-Length``, so the size must be known first: such stores ``needs_size`` and
the flow spools. A permanent failure deletes the upload collection; so does
``cleanup``.

Status codes: 401/403 and 507 are permanent (a login or a full quota is a human's
job), 423 Locked, 429 and 5xx are retryable, and 411 names ``send_length``. The
password is only ever in the ``Authorization`` header, never in a message.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import ssl
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Literal, NoReturn
from urllib.parse import quote, urlsplit

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
from urllib3 import HTTPHeaderDict, PoolManager
from urllib3.exceptions import HTTPError, InsecureRequestWarning
from urllib3.util import Timeout, parse_url
from urllib3.util.ssl_ import create_urllib3_context

from relay.config.models import TargetConfig
from relay.config.units import Size
from relay.errors import ConfigError, PermanentDeliveryError, RetryableDeliveryError
from relay.guarded import BlockedAddress
from workers.net.addresses import check_url, safe_url
from workers.net.http import DEFAULT_HEADERS, HttpAnswer, _pool_classes, guarded_pool, send
from workers.net.outcomes import excerpt, parse_retry_after, response_text
from workers.net.stream import _chunks, _errors, open_stream
from workers.storage.flow import StorageTarget
from workers.storage.options import StorageOptions
from workers.storage.spec import AlreadyExists, Source, StoredObject
from workers.targets.base import DeliveryContext

MiB = 1024 * 1024
ANSWER_LIMIT = 64 * 1024  # bytes of an upload's answer read: status pages are small
NEXTCLOUD_FILES = re.compile(r"^(?P<dav>.*/remote\.php/dav/)files/(?P<user>[^/]+)/")
SHA256_CHECKSUM = re.compile(r"\bSHA256:([0-9a-fA-F]{64})\b")
_DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY")
DAV, OC = "{DAV:}", "{http://owncloud.org/ns}"
PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:prop>'
    b"<d:getcontentlength/><d:getetag/><d:resourcetype/><oc:fileid/><oc:checksums/>"
    b"</d:prop></d:propfind>"
)


class WebDavOptions(StorageOptions):
    """What a ``webdav`` target adds to the options every store has."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str = Field(
        description="The collection files go under, e.g. "
        "https://cloud.example.com/remote.php/dav/files/alice/"
    )
    username: str = Field(min_length=1)
    password: str = Field(repr=False, description="An app password where the server has them.")
    chunked: Literal["off", "nextcloud"] = Field(
        "off", description="nextcloud: chunked upload v2 from chunk_threshold up."
    )
    chunk_threshold: Size = Field(50 * MiB, gt=0)
    chunk_size: Size = Field(10 * MiB, ge=5 * MiB, le=5 * 1024 * MiB)
    uploads_url: str | None = Field(
        None, description="Nextcloud's uploads collection; derived from url when it can be."
    )
    send_length: bool = Field(
        False, description="Spool each file and send Content-Length (servers that answer 411)."
    )
    verify_tls: bool = Field(True, description="Off only for a self-signed server you trust.")

    @field_validator("url", "uploads_url")
    @classmethod
    def _collection(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        if urlsplit(value).username is not None:
            raise ValueError("put the user name in username, not in the URL")
        return value if value.endswith("/") else value + "/"

    @field_validator("password")
    @classmethod
    def _password(cls, value: str) -> str:
        if not value:
            raise ValueError("password is empty (is its environment variable set?)")
        return value

    @model_validator(mode="after")
    def _uploads(self) -> WebDavOptions:
        if self.chunked == "nextcloud" and self.uploads_collection is None:
            raise ValueError(
                "chunked: nextcloud needs uploads_url "
                "(https://host/remote.php/dav/uploads/<user>/): url does not end in "
                "/remote.php/dav/files/<user>/…, so it cannot be derived"
            )
        return self

    @property
    def uploads_collection(self) -> str | None:
        """Nextcloud's ``…/remote.php/dav/uploads/<user>/``: set, or derived from ``url``."""
        if self.uploads_url is not None:
            return self.uploads_url
        match = NEXTCLOUD_FILES.match(self.url)
        return f"{match['dav']}uploads/{match['user']}/" if match else None


class WebDavTarget(StorageTarget):
    """Stores each file of an event on a WebDAV server."""

    kind: ClassVar[str] = "webdav"
    Options: ClassVar[type[WebDavOptions]] = WebDavOptions
    default_rate_limits: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, WebDavOptions):
            options = WebDavOptions.model_validate(options or {})
        for name in ("url", "uploads_url"):
            value = getattr(options, name)
            try:
                if value is not None:
                    check_url(value, config.allow_private)
            except ValueError as exc:
                raise ConfigError([f"targets.{config.id}.{name}: {exc}"]) from None
        self.options: WebDavOptions = options

    def store(self, context: DeliveryContext) -> WebDavStore:
        timeout = self.config.timeout or context.timeout
        return WebDavStore(self.options, allow_private=self.config.allow_private, timeout=timeout)


class WebDavStore:
    """One WebDAV server's collection, as the storage flow uses it."""

    max_segment: int = 255
    max_path: int = 4000
    windows_names: bool = True  # Nextcloud and Windows (SMB) shares refuse CON, aux.txt

    def __init__(self, options: WebDavOptions, *, allow_private: bool, timeout: float) -> None:
        self.options = options
        self.base = options.url
        self.uploads = options.uploads_collection
        self.dav = DavClient(
            options.username,
            options.password,
            allow_private=allow_private,
            verify_tls=options.verify_tls,
            timeout=timeout,
        )
        # Nextcloud chunking needs the total size before the first chunk.
        self.needs_size: bool = options.chunked == "nextcloud" or options.send_length
        self._collections: set[str] = set()  # made or found during this store's life

    # -- the Store protocol --------------------------------------------------------

    def stat(self, path: str) -> StoredObject | None:
        answer = self.dav.call(
            "PROPFIND",
            self.url_of(path),
            headers={"Depth": "0", "Content-Type": "application/xml; charset=utf-8"},
            body=PROPFIND_BODY,
        )
        if answer.status == 404:
            return None
        if answer.status != 207:
            self.dav.refuse(answer, f"PROPFIND of {path}")
        return _stored(path, answer.body)

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
        if create_only:
            existing = self.stat(path)
            if existing is not None:
                raise AlreadyExists(path, existing=existing)
        self.make_collections(_segments(path)[:-1])
        exact = size if self.needs_size else None  # only a spool's size is exact
        counted = _Counting(data)
        threshold = self.options.chunk_threshold
        # Nextcloud keeps a client's checksum and shows it in PROPFIND (oc:checksums).
        checksum = self.checksum_header(sha256)
        if self.options.chunked == "nextcloud" and exact is not None and exact >= threshold:
            session = upload_id or "gr" + secrets.token_hex(15)
            self.chunked_put(
                path, counted, exact, create_only=create_only, session=session, extra=checksum
            )
        else:
            self.plain_put(path, counted, exact, mime, create_only=create_only, extra=checksum)
        stored = self.stat(path)
        if stored is None:
            raise RetryableDeliveryError(
                f"WebDAV accepted {path} but PROPFIND does not find it; trying again"
            )
        if stored.size is not None and stored.size != counted.count:
            if create_only:  # ours alone: a truncated copy must not pass as the file
                self.dav.call("DELETE", self.url_of(path))
            said = f"WebDAV stored {stored.size} bytes of {path} but {counted.count} were sent"
            if stored.size == 0 and exact is None:  # a server that drops chunked bodies
                raise PermanentDeliveryError(f"{said}; set send_length: true")
            raise RetryableDeliveryError(said)
        return StoredObject(
            path=path, size=counted.count, sha256=stored.sha256 or sha256, id=stored.id
        )

    def checksum_header(self, sha256: str | None) -> dict[str, str]:
        """``OC-Checksum`` for Nextcloud (``chunked: nextcloud``), when the hash is known."""
        if self.options.chunked != "nextcloud" or not sha256:
            return {}
        return {"OC-Checksum": f"SHA256:{sha256}"}

    def link(self, obj: StoredObject, lifetime: float) -> str | None:
        """WebDAV has no shareable link of its own; the group is told the path."""
        return None

    def cleanup(self, upload_id: str, path: str | None = None) -> None:
        if self.options.chunked == "nextcloud" and self.uploads is not None:
            self.abort(self.session_url(upload_id))

    # -- plain PUT -----------------------------------------------------------------

    def plain_put(
        self,
        path: str,
        data: _Counting,
        length: int | None,
        mime: str | None,
        *,
        create_only: bool,
        extra: Mapping[str, str],
    ) -> None:
        headers = {"Content-Type": mime or "application/octet-stream", **extra}
        if create_only:
            headers["If-None-Match"] = "*"
        answer = self.dav.upload(
            "PUT", self.url_of(path), headers=headers, data=data, length=length
        )
        if answer.status == 412 and create_only:
            raise AlreadyExists(path, existing=self.stat(path))
        if answer.status == 411:
            raise PermanentDeliveryError(
                f"WebDAV refused an upload of unknown length (HTTP 411 Length Required) for "
                f"{path}; set send_length: true (or chunked: nextcloud on Nextcloud)",
                status=411,
            )
        if not 200 <= answer.status < 300:
            self.dav.refuse(answer, f"upload of {path}")

    # -- Nextcloud chunked upload v2 -----------------------------------------------

    def session_url(self, upload_id: str) -> str:
        assert self.uploads is not None  # the options require it for chunked: nextcloud
        return f"{self.uploads}{quote(upload_id, safe='')}/"

    def chunked_put(
        self,
        path: str,
        data: _Counting,
        size: int,
        *,
        create_only: bool,
        session: str,
        extra: Mapping[str, str],
    ) -> None:
        """MKCOL the upload collection, PUT the chunks, MOVE ``.file`` onto the file."""
        upload = self.session_url(session)
        destination = {"Destination": self.url_of(path)}
        answer = self.dav.call("MKCOL", upload, headers=destination)
        if answer.status == 405:  # an earlier attempt's: start again from the first chunk
            self.abort(upload)
            answer = self.dav.call("MKCOL", upload, headers=destination)
        if not 200 <= answer.status < 300:
            self.dav.refuse(answer, f"MKCOL of the upload collection for {path}")
        try:
            self.send_chunks(path, upload, data, size, destination)
            headers = {
                **destination,
                **extra,
                "OC-Total-Length": str(size),
                "Overwrite": "F" if create_only else "T",
            }
            answer = self.dav.call("MOVE", f"{upload}.file", headers=headers)
            if answer.status == 412 and create_only:
                raise AlreadyExists(path, existing=self.stat(path))
            if not 200 <= answer.status < 300:
                self.dav.refuse(answer, f"assembling the chunks of {path}")
        except (PermanentDeliveryError, AlreadyExists):
            self.abort(upload)  # nothing will resume it: free the server's space now
            raise

    def send_chunks(
        self, path: str, upload: str, data: _Counting, size: int, destination: dict[str, str]
    ) -> None:
        headers = {**destination, "OC-Total-Length": str(size)}
        sent, number = 0, 0
        while sent < size:
            length = min(self.options.chunk_size, size - sent)
            number += 1  # Nextcloud assembles by name: 00001 … 10000
            chunk = _Bounded(data, length)
            url = f"{upload}{number:05d}"
            answer = self.dav.upload("PUT", url, headers=headers, data=chunk, length=length)
            if not 200 <= answer.status < 300:
                self.dav.refuse(answer, f"chunk {number} of {path}")
            sent += length

    def abort(self, upload: str) -> None:
        """DELETE an upload collection; one already gone is fine."""
        answer = self.dav.call("DELETE", upload)
        if answer.status != 404 and not 200 <= answer.status < 300:
            self.dav.refuse(answer, "deleting an unfinished chunked upload")

    # -- collections ---------------------------------------------------------------

    def make_collections(self, segments: list[str]) -> None:
        """MKCOL the deepest collection; 409 (its parent is missing) makes the parent
        first. 405 means it is there already."""
        if not segments:
            return
        key = "/".join(segments)
        if key in self._collections:
            return
        url = self.url_of(key) + "/"
        answer = self.dav.call("MKCOL", url)
        if answer.status == 409:
            if len(segments) == 1:
                raise PermanentDeliveryError(
                    f"WebDAV: the collection {safe_url(self.base)} does not exist "
                    "(MKCOL answered 409); check url",
                    status=409,
                )
            self.make_collections(segments[:-1])
            answer = self.dav.call("MKCOL", url)
        if answer.status != 405 and not 200 <= answer.status < 300:
            self.dav.refuse(answer, f"MKCOL of {key}/")
        self._collections.add(key)

    def url_of(self, path: str) -> str:
        return self.base + "/".join(quote(part, safe="") for part in _segments(path))


class DavClient:
    """Requests to one WebDAV server: Basic auth on each, through the SSRF-guarded
    pools; TLS certificates are checked unless ``verify_tls`` is off."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        allow_private: bool,
        verify_tls: bool,
        timeout: float,
    ) -> None:
        self.username = username
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._auth = {"Authorization": f"Basic {token}"}
        self.allow_private = allow_private
        self.verify_tls = verify_tls
        self.timeout = timeout

    def call(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> HttpAnswer:
        """A request with a small body and answer."""
        pools = guarded_pool(self.allow_private) if self.verify_tls else _unverified(self)
        with _quiet(self.verify_tls):
            return send(
                pools,
                method,
                url,
                timeout=self.timeout,
                data=body,
                headers={**(headers or {}), **self._auth},
            )

    def upload(
        self, method: str, url: str, *, headers: Mapping[str, str], data: Any, length: int | None
    ) -> HttpAnswer:
        """A request whose body streams from ``data`` (chunked when ``length`` is None)."""
        request_headers = {**headers, **self._auth}
        if not self.verify_tls:
            with _quiet(False):
                return _unverified_upload(
                    _unverified(self), method, url, self.timeout, request_headers, data, length
                )
        with open_stream(
            method,
            url,
            timeout=self.timeout,
            allow_private=self.allow_private,
            headers=request_headers,
            data=data,
            length=length,
        ) as answer:
            return answer.answer(ANSWER_LIMIT)

    def refuse(self, answer: HttpAnswer, what: str) -> NoReturn:
        """Raise the delivery error ``answer`` means, with the server's own message."""
        status = answer.status
        told = _server_message(answer)
        detail = f"WebDAV {what}: HTTP {status}" + (f": {told}" if told else "")
        text = excerpt(response_text(answer))
        if status in (401, 403):
            hint = (
                "check username and password (an app password where the server has them)"
                if status == 401
                else "the account may not write there"
            )
            raise PermanentDeliveryError(
                f"WebDAV refused the login of {self.username} (HTTP {status}"
                + (f": {told}" if told else "")
                + f"); {hint}",
                status=status,
                excerpt=text,
            )
        if status == 507:
            raise PermanentDeliveryError(
                f"{detail}; the account's storage is full (507 Insufficient Storage)",
                status=status,
                excerpt=text,
            )
        if status in (408, 423, 425, 429) or status >= 500:
            raise RetryableDeliveryError(
                detail,
                status=status,
                excerpt=text,
                retry_after=parse_retry_after(answer.headers.get("retry-after")),
            )
        raise PermanentDeliveryError(detail, status=status, excerpt=text)


# -- TLS without verification (verify_tls: false) ------------------------------------

_insecure_pools: dict[tuple[int, bool], PoolManager] = {}
_insecure_lock = threading.Lock()


def _unverified(client: DavClient) -> PoolManager:
    """Guarded pools (the same SSRF check) that accept any certificate; one per process."""
    key = (os.getpid(), client.allow_private)
    with _insecure_lock:
        pools = _insecure_pools.get(key)
        if pools is None:
            context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            pools = PoolManager(
                num_pools=8, ssl_context=context, cert_reqs="CERT_NONE", assert_hostname=False
            )
            pools.pool_classes_by_scheme = _pool_classes(client.allow_private)
            _insecure_pools[key] = pools
    return pools


@contextmanager
def _quiet(verified: bool) -> Iterator[None]:
    """The user chose ``verify_tls: false``: urllib3's warning on every request is noise."""
    if verified:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRequestWarning)
        yield


def _unverified_upload(
    pools: PoolManager,
    method: str,
    url: str,
    timeout: float,
    headers: Mapping[str, str],
    data: Any,
    length: int | None,
) -> HttpAnswer:
    """``open_stream`` on other pools (it always uses the verifying ones)."""
    where = safe_url(url)
    request_headers = HTTPHeaderDict(DEFAULT_HEADERS)
    request_headers.update(headers)
    if length is not None:
        request_headers["Content-Length"] = str(length)
    try:
        target = parse_url(url)
        pool = pools.connection_from_host(target.host, target.port, target.scheme)
        raw = pool.urlopen(
            method,
            target.request_uri,
            body=_chunks(data),
            headers=request_headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            timeout=Timeout(connect=timeout, read=timeout),
            preload_content=False,
            chunked=length is None,
        )
        try:
            body = raw.read(ANSWER_LIMIT) or b""
        finally:
            raw.close()
            raw.release_conn()
    except (BlockedAddress, ValueError, HTTPError, OSError) as exc:
        raise _errors(where, timeout, exc) from None
    return HttpAnswer(status=raw.status, headers=raw.headers, body=body, url=url)


# -- readers -------------------------------------------------------------------------


class _Counting:
    """Counts the bytes read through it: what the server should hold afterwards."""

    def __init__(self, reader: Source) -> None:
        self.reader = reader
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.reader.read(n)
        self.count += len(data)
        return data


class _Bounded:
    """The next ``length`` bytes of ``reader``: one Nextcloud chunk, streamed."""

    def __init__(self, reader: _Counting, length: int) -> None:
        self.reader = reader
        self.left = length

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.reader.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        return data


# -- paths and answers ---------------------------------------------------------------


def _segments(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def _stored(path: str, body: bytes) -> StoredObject:
    """A PROPFIND answer (207 multistatus, Depth 0) as what it says of the resource."""
    props = _props(body)
    length = props.get("getcontentlength")
    size = int(length) if length is not None and length.strip().isdigit() else None
    if props.get("collection") is not None:
        size = None
    checksums = props.get("checksums") or ""
    match = SHA256_CHECKSUM.search(checksums)
    digest = match.group(1).lower() if match else None
    return StoredObject(path=path, size=size, sha256=digest, id=props.get("fileid") or None)


def _props(body: bytes) -> dict[str, str]:
    """The properties the server found (propstat 200) in the first response."""
    head = body[:4096]
    if any(marker in head for marker in _DTD_MARKERS):
        raise PermanentDeliveryError("WebDAV answered PROPFIND with a DTD; refusing to parse it")
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise RetryableDeliveryError("WebDAV answered PROPFIND with malformed XML") from None
    found: dict[str, str] = {}
    response = root.find(f"{DAV}response")
    if response is None:
        return found
    for propstat in response.findall(f"{DAV}propstat"):
        status = propstat.findtext(f"{DAV}status") or ""
        if " 200 " not in f"{status} ":
            continue
        prop = propstat.find(f"{DAV}prop")
        if prop is None:
            continue
        for element in prop:
            name = element.tag.rpartition("}")[2]
            if name == "resourcetype":
                if element.find(f"{DAV}collection") is not None:
                    found["collection"] = "1"
                continue
            found[name] = "".join(element.itertext()).strip()
    return found


def _server_message(answer: HttpAnswer) -> str:
    """Sabre (Nextcloud, ownCloud) and others explain a refusal in ``<s:message>``."""
    text = response_text(answer, 2048)
    match = re.search(r"<(?:\w+:)?message[^>]*>([^<]{1,300})</", text)
    if match:
        return " ".join(match.group(1).split())
    return ""
