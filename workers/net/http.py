"""The one guarded outbound HTTP path every HTTP target uses.

Webhook URLs come from users, so any of them may point inside our network (SSRF).
The guard sits in the urllib3 connection: it resolves the host itself, checks *every*
address, and connects only to an address it checked, so the check is made on the
address actually connected to and DNS rebinding cannot slip past it. TLS still
verifies the certificate against the URL's host name. Redirects are never followed
and environment proxies are ignored. The guard and the address policy live in
``relay.guarded`` and ``relay.addresses``, which ``relay poll`` uses too; ``send``
turns transport failures into typed delivery errors and answers with an
``HttpAnswer``, which ``workers.net.outcomes`` classifies. In a shadow delivery's dry
run (``workers.net.dryrun``) ``send`` captures the request and answers a synthetic
success instead: no connection, no DNS.
"""

from __future__ import annotations

import ipaddress
import json as jsonlib
import os
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import certifi
from requests.utils import get_encoding_from_headers
from urllib3 import BaseHTTPResponse, HTTPHeaderDict, PoolManager
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    HTTPError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
    URLSchemeUnknown,
)
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util import Timeout, parse_url
from urllib3.util.ssl_ import create_urllib3_context

from relay import __version__, guarded
from relay.addresses import safe_url
from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from relay.guarded import AddrInfo, BlockedAddress, os_reason
from workers.net import dryrun

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
__all__ = ["AddrInfo", "BlockedAddress", "HttpAnswer", "guarded_pool", "send"]

POOL_SIZE = 256
MAX_BODY = 1024 * 1024  # bytes of a response body we read; the rest is dropped


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A target's answer, as targets and ``workers.net.outcomes`` read it.

    Ours rather than a ``requests.Response`` built by hand: the body is already read
    (capped at ``MAX_BODY``), nothing in it can be changed by a reader, and it has only
    what readers use. Headers are looked up case-insensitively (repeated ones joined by
    ", "); body and headers stay out of ``repr``, which may reach a log.
    """

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    url: str

    def __post_init__(self) -> None:
        # Whatever mapping is given, the answer holds a case-insensitive read-only copy.
        object.__setattr__(self, "headers", MappingProxyType(HTTPHeaderDict(self.headers)))

    @property
    def encoding(self) -> str | None:
        """The charset as ``requests`` reads it from Content-Type (``text/*`` without one
        is ISO-8859-1, JSON is UTF-8); ``None`` when it names none."""
        return get_encoding_from_headers(self.headers)

    @property
    def text(self) -> str:
        """The body decoded with ``encoding`` (else UTF-8); undecodable bytes replaced."""
        return self.decode()

    def decode(self, limit: int | None = None) -> str:
        """The first ``limit`` bytes (all by default) as text, as ``text`` decodes them;
        an unknown charset falls back to UTF-8. No sniffing of the body."""
        data = self.body if limit is None else self.body[:limit]
        try:
            return data.decode(self.encoding or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            return data.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` if it is not JSON."""
        return jsonlib.loads(self.body)


def resolve(host: str, port: int) -> list[AddrInfo]:
    """``getaddrinfo`` for TCP; module-level so tests can stub DNS."""
    return guarded.resolve(host, port)


def _resolve(host: str, port: int) -> list[AddrInfo]:
    return resolve(host, port)  # looked up when called, so a stubbed ``resolve`` applies


def vetted_addresses(host: str, port: int, allow_private: bool) -> list[AddrInfo]:
    """Resolve ``host`` and check every address; one refused address refuses them all."""
    return guarded.vetted_addresses(host, port, allow_private, _resolve)


def _pool_classes(allow_private: bool) -> dict[str, type[HTTPConnectionPool]]:
    return guarded.pool_classes(allow_private, _resolve)


DEFAULT_HEADERS = {"User-Agent": f"group-relay/{__version__}", "Accept": "*/*"}


def _tls_context() -> ssl.SSLContext:
    """Certificates checked against certifi's bundle, as ``requests`` does."""
    context = create_urllib3_context()
    context.load_verify_locations(certifi.where())
    return context


_pools: dict[tuple[int, bool], PoolManager] = {}
_pools_lock = threading.Lock()  # held without I/O, so never yields under gevent


def guarded_pool(allow_private: bool) -> PoolManager:
    """The process's connection pools for this flag (new ones after a fork).

    Plain urllib3 rather than a ``requests`` session: the session layer (merging
    settings, cookies, hooks) cost about a millisecond of CPU per delivery, as much as
    the request itself, and this path needs none of it. As many idle connections per
    host are kept as a worker runs green threads, so a busy worker reuses them.
    """
    key = (os.getpid(), allow_private)
    pools = _pools.get(key)
    if pools is None:
        with _pools_lock:
            pools = _pools.get(key)
            if pools is None:
                pools = PoolManager(num_pools=32, maxsize=POOL_SIZE, ssl_context=_tls_context())
                pools.pool_classes_by_scheme = _pool_classes(allow_private)
                _pools[key] = pools
    return pools


def send(
    pools: PoolManager,
    method: str,
    url: str,
    *,
    timeout: float,
    data: bytes | None = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    ca_certs: str | None = None,
) -> HttpAnswer:
    """One request, redirects never followed, failures as typed delivery errors.

    ``json`` is sent as a JSON body, ``data`` as it is; ``ca_certs`` verifies TLS
    against that bundle instead of certifi's. The body is read here, capped at
    ``MAX_BODY`` and within about ``timeout`` in total, so a target that trickles or
    floods cannot hold a worker or its memory.
    """
    where = safe_url(url)
    request_headers = HTTPHeaderDict(DEFAULT_HEADERS)
    if json is not None:
        data = jsonlib.dumps(json, allow_nan=False).encode()
        request_headers["Content-Type"] = "application/json"
    request_headers.update(headers or {})
    if (run := dryrun.current()) is not None:  # a shadow delivery: capture, never send
        return _dry_answer(run, method, url, request_headers, data)
    deadline = time.monotonic() + timeout
    try:
        target = parse_url(url)
        if target.scheme not in pools.pool_classes_by_scheme:
            raise URLSchemeUnknown(str(target.scheme))
        extra = {"ca_certs": ca_certs, "ssl_context": None} if ca_certs else None
        pool = pools.connection_from_host(
            target.host, target.port, target.scheme, pool_kwargs=extra
        )
        raw = pool.urlopen(
            method,
            target.request_uri,
            body=data,
            headers=request_headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            timeout=Timeout(connect=timeout, read=timeout),
            preload_content=False,
        )
        connection = raw.connection
        content = _read_capped(raw, deadline)
        drop_if_refused(raw, connection, sent_body=data is not None)
    except BlockedAddress as exc:
        raise PermanentDeliveryError(f"refused to connect to {where}: {exc}") from None
    except ValueError as exc:  # a bad URL (urllib3's URL errors are ValueErrors) or header
        raise PermanentDeliveryError(f"invalid request to {where}: {type(exc).__name__}") from None
    except NewConnectionError as exc:  # before timeouts: urllib3 makes it one of them
        raise RetryableDeliveryError(f"request to {where} failed: {_reason(exc)}") from None
    except (Urllib3Timeout, TimeoutError):
        raise RetryableDeliveryError(f"{where} did not answer within {timeout:g}s") from None
    except (HTTPError, OSError) as exc:
        raise RetryableDeliveryError(f"request to {where} failed: {_reason(exc)}") from None
    return HttpAnswer(status=raw.status, headers=raw.headers, body=content, url=url)


def _dry_answer(
    run: dryrun.DryRun, method: str, url: str, headers: HTTPHeaderDict, data: bytes | None
) -> HttpAnswer:
    """The request captured (a URL urllib3 would refuse is refused the same way) and
    a synthetic success every chat platform's adapter reads as sent."""
    try:
        target = parse_url(url)
    except ValueError as exc:
        raise PermanentDeliveryError(f"invalid request to {safe_url(url)}: {exc}") from None
    if target.scheme not in ("http", "https") or not target.host:
        raise PermanentDeliveryError(f"invalid request to {safe_url(url)}: not an HTTP URL")
    run.capture(method, url, {name: headers[name] for name in headers}, data)
    answer_headers = {"Content-Type": "application/json", "X-Relay-Dry-Run": "1"}
    return HttpAnswer(status=200, headers=answer_headers, body=dryrun.SYNTHETIC_ANSWER, url=url)


def drop_if_refused(raw: BaseHTTPResponse, connection: Any, *, sent_body: bool) -> None:
    """Close, never reuse, a connection whose request body the server refused (any
    answer but a success). It may have answered before reading the whole body, and the
    rest would be taken for the start of the next request on that connection. Called
    once the answer is read (urllib3 hands a fully read connection back to its pool by
    then): a closed connection in the pool is opened again when next taken."""
    if sent_body and not 200 <= raw.status < 300 and connection is not None:
        connection.close()


def _read_capped(raw: BaseHTTPResponse, deadline: float) -> bytes:
    """The body up to ``MAX_BODY``; a connection with bytes left unread is not reused."""
    body = bytearray()
    try:
        for chunk in raw.stream(16384):
            body += chunk
            if len(body) >= MAX_BODY:
                raw.close()
                break
            if time.monotonic() > deadline:
                raise ReadTimeoutError(None, None, "the body was not read in time")  # type: ignore[arg-type]
    except BaseException:
        raw.close()
        raise
    finally:
        raw.release_conn()
    return bytes(body[:MAX_BODY])


def _reason(exc: BaseException) -> str:
    """A short cause without URLs: urllib3 messages repeat the path and query."""
    cause: BaseException | None = exc
    last = exc
    for _ in range(8):  # the chain is short; never loop on a strange one
        if cause is None:
            break
        last = cause
        if isinstance(cause, NameResolutionError):
            return "the host name did not resolve"
        if isinstance(cause, NewConnectionError):
            return str(cause).rpartition(": ")[2] or "connection failed"
        if isinstance(cause, Urllib3Timeout | TimeoutError):
            return "timed out"
        if isinstance(cause, OSError) and cause.strerror:
            return os_reason(cause)
        inner = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        cause = getattr(cause, "reason", None) or inner or cause.__cause__
    return type(last).__name__
