"""The one guarded outbound HTTP path every HTTP target uses.

Webhook URLs come from users, so any of them may point inside our network (SSRF).
The guard sits in the urllib3 connection: it resolves the host itself, checks *every*
address, and connects only to an address it checked, so the check is made on the
address actually connected to and DNS rebinding cannot slip past it. TLS still
verifies the certificate against the URL's host name. Redirects are never followed
and environment proxies are ignored. The address policy itself is
``workers.addresses``; ``send`` turns transport failures into typed delivery errors
and ``workers.outcomes`` classifies the answers.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util.connection import allowed_gai_family

from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from workers.addresses import HINT, refusal, safe_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]

POOL_SIZE = 256
MAX_BODY = 1024 * 1024  # bytes of a response body we read; the rest is dropped


class BlockedAddress(Exception):
    """A connection was refused before it was made: the host resolves to a private address.

    Deliberately not an ``OSError``: urllib3 would wrap and retry those, while this
    must reach ``send`` as it is and end the delivery permanently.
    """


def resolve(host: str, port: int) -> list[AddrInfo]:
    """``getaddrinfo`` for TCP; module-level so tests can stub DNS."""
    return list(socket.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM))


def vetted_addresses(host: str, port: int, allow_private: bool) -> list[AddrInfo]:
    """Resolve ``host`` and check every address; one refused address refuses them all."""
    infos = resolve(host, port)
    if not allow_private:
        for info in infos:
            address = str(info[4][0]).partition("%")[0]
            ip = ipaddress.ip_address(address)
            if why := refusal(ip):
                subject = (
                    f"{host} is" if host == str(ip) or ":" in host else f"{host} resolves to {ip},"
                )
                raise BlockedAddress(f"{subject} {why}; {HINT}")
    return infos


def _connect_vetted(conn: HTTPConnection, allow_private: bool) -> socket.socket:
    """urllib3's ``_new_conn`` with our resolver: connect only to vetted addresses."""
    host = conn._dns_host.strip("[]")  # noqa: SLF001 - the name urllib3 itself resolves
    try:
        infos = vetted_addresses(host, conn.port, allow_private)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    error: OSError | None = None
    for family, socktype, proto, _, sockaddr in infos:
        sock = socket.socket(family, socktype, proto)
        try:
            for level, option, value in conn.socket_options or ():
                sock.setsockopt(level, option, value)
            if conn.timeout is not None:
                sock.settimeout(conn.timeout)
            if conn.source_address:
                sock.bind(conn.source_address)
            sock.connect(sockaddr)
        except OSError as exc:  # like urllib3: try the next vetted address
            sock.close()
            error = exc
            continue
        sys.audit("http.client.connect", conn, conn.host, conn.port)
        return sock
    if isinstance(error, TimeoutError):
        raise ConnectTimeoutError(conn, f"connection to {conn.host} timed out") from error
    raise NewConnectionError(conn, f"failed to connect: {_os_reason(error)}") from error


def _pool_classes(allow_private: bool) -> dict[str, type[HTTPConnectionPool]]:
    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_vetted(self, allow_private)

    class GuardedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_vetted(self, allow_private)

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


class GuardedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections pass through the address guard; no proxies."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        # Keep as many idle connections per host as a worker runs green threads, so a
        # busy worker reuses connections instead of opening (and resolving) new ones.
        super().__init__(pool_connections=32, pool_maxsize=POOL_SIZE, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.allow_private)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise BlockedAddress("the guarded session does not use proxies")


class GuardedSession(requests.Session):
    """A session that never looks at redirects: requests would otherwise read the whole
    body of a 3xx answer (uncapped) to prepare the next request even when not following."""

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


_sessions: dict[tuple[int, bool], requests.Session] = {}
_sessions_lock = threading.Lock()  # held without I/O, so never yields under gevent


def guarded_session(allow_private: bool) -> requests.Session:
    """The process's shared session for this flag (a new one after fork)."""
    key = (os.getpid(), allow_private)
    session = _sessions.get(key)
    if session is None:
        with _sessions_lock:
            session = _sessions.get(key)
            if session is None:
                session = GuardedSession()
                session.trust_env = False
                adapter = GuardedAdapter(allow_private)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                _sessions[key] = session
    return session


def send(
    session: requests.Session, method: str, url: str, *, timeout: float, **kwargs: Any
) -> requests.Response:
    """One request, redirects never followed, failures as typed delivery errors.

    The body is read here, capped at ``MAX_BODY`` and within about ``timeout`` in
    total, so a target that trickles or floods cannot hold a worker or its memory.
    """
    kwargs.pop("allow_redirects", None)
    kwargs.pop("proxies", None)
    where = safe_url(url)
    deadline = time.monotonic() + timeout
    try:
        response = session.request(
            method, url, timeout=timeout, allow_redirects=False, stream=True, **kwargs
        )
        with response:
            response._content = _read_capped(response, deadline)  # noqa: SLF001
    except BlockedAddress as exc:
        raise PermanentDeliveryError(f"refused to connect to {where}: {exc}") from None
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
        requests.exceptions.InvalidHeader,
    ) as exc:
        raise PermanentDeliveryError(f"invalid request to {where}: {type(exc).__name__}") from None
    except requests.Timeout:  # before RequestException: ConnectTimeout is both
        raise RetryableDeliveryError(f"{where} did not answer within {timeout:g}s") from None
    except requests.RequestException as exc:
        raise RetryableDeliveryError(f"request to {where} failed: {_reason(exc)}") from None
    return response


def _read_capped(response: requests.Response, deadline: float) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(16384):
        body += chunk
        if len(body) >= MAX_BODY:
            break
        if time.monotonic() > deadline:
            raise requests.Timeout("the body was not read in time")
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
            return _os_reason(cause)
        inner = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        cause = getattr(cause, "reason", None) or inner or cause.__cause__
    return type(last).__name__


def _os_reason(error: OSError | None) -> str:
    if error is None:
        return "no address to connect to"
    return error.strerror or type(error).__name__
