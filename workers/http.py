"""The one guarded outbound HTTP path every HTTP target uses.

Webhook URLs come from users, so any of them may point inside our network (SSRF).
The guard sits in the urllib3 connection: it resolves the host itself, checks *every*
address, and connects only to an address it checked, so the check is made on the
address actually connected to and DNS rebinding cannot slip past it. TLS still
verifies the certificate against the URL's host name. Redirects are never followed
and environment proxies are ignored. ``check_url`` is the cheaper save-time check
(no DNS); ``send`` and ``classify`` turn outcomes into the typed delivery errors.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util import parse_url
from urllib3.util.connection import allowed_gai_family

from relay.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from workers.targets.base import DeliveryResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]

HINT = "set allow_private: true on the target to allow it"
MAX_BODY = 1024 * 1024  # bytes of a response body we read; the rest is dropped
_V4, _V6 = ipaddress.IPv4Network, ipaddress.IPv6Network
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Explicit deny list: ``is_private``/``is_global`` alone are wrong for some ranges
# (python/cpython#113171) and for IPv4-mapped IPv6 (#77614).
_DENY: list[tuple[Network, str]] = [
    (_V4("0.0.0.0/8"), "a 'this network' address"),
    (_V4("10.0.0.0/8"), "a private address"),
    (_V4("100.64.0.0/10"), "a carrier-grade NAT address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("172.16.0.0/12"), "a private address"),
    (_V4("192.0.0.0/24"), "an IETF protocol address"),
    (_V4("192.0.2.0/24"), "a documentation address"),
    (_V4("192.88.99.0/24"), "a 6to4 relay address"),
    (_V4("192.168.0.0/16"), "a private address"),
    (_V4("198.18.0.0/15"), "a benchmarking address"),
    (_V4("198.51.100.0/24"), "a documentation address"),
    (_V4("203.0.113.0/24"), "a documentation address"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),
    (_V6("::/128"), "an unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    (_V6("::/96"), "an IPv4-compatible (deprecated) address"),
    (_V6("64:ff9b:1::/48"), "a local NAT64 address"),
    (_V6("100::/64"), "a discard-only address"),
    (_V6("2001:db8::/32"), "a documentation address"),
    (_V6("fc00::/7"), "a unique-local address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a site-local address"),
    (_V6("ff00::/8"), "a multicast address"),
]
_NAT64 = _V6("64:ff9b::/96")
_PRIVATE_NAMES = {
    "localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
    "metadata",
    "metadata.google.internal",
    "instance-data",
    "instance-data.ec2.internal",
}
_BAD_URL_CHARS = re.compile(r"[\s\\\x00-\x1f\x7f]")


class BlockedAddress(Exception):
    """A connection was refused before it was made: the host resolves to a private address.

    Deliberately not an ``OSError``: urllib3 would wrap and retry those, while this
    must reach ``send`` as it is and end the delivery permanently.
    """


def refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public destination (``"a loopback address"``), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            why = refusal(embedded)
            return f"{why} (it embeds {embedded})" if why else None
        if ip.teredo is not None:
            for part in ip.teredo:
                if why := refusal(part):
                    return f"{why} (it embeds {part})"
    for network, why in _DENY:
        if ip.version == network.version and ip in network:
            return why
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return "not a public address"
    return None


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
        super().__init__(pool_connections=32, pool_maxsize=32, max_retries=0)

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


def check_url(url: str, allow_private: bool) -> None:
    """Save-time check of a target URL, without DNS; ``ValueError`` says what is wrong."""
    if _BAD_URL_CHARS.search(url):
        raise ValueError("the URL contains whitespace, a backslash or a control character")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"the scheme must be http or https, not {parts.scheme or 'none'!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
        hosts = {parts.hostname or "", (parse_url(url).host or "").strip("[]").lower()}
    except ValueError as exc:
        raise ValueError(f"the URL is not valid: {exc}") from None
    if "" in hosts:
        raise ValueError("the URL needs a host")
    if allow_private:
        return
    for host in hosts:
        name = host.rstrip(".")
        if name in _PRIVATE_NAMES or name.endswith(".localhost"):
            raise ValueError(f"{name} is a private host name; {HINT}")
        ip = ip_literal(name)
        if ip is not None and (why := refusal(ip)):
            shown = name if ":" in name or name == str(ip) else f"{name} ({ip})"
            raise ValueError(f"{shown} is {why}; {HINT}")


def ip_literal(host: str) -> IPAddress | None:
    """The address if ``host`` is an IP literal in any form resolvers accept (``0x7f.1``)."""
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))  # legacy forms, no DNS
    except OSError:
        return None


def safe_url(url: str) -> str:
    """Only scheme, host and port: userinfo, query and path (Slack-style hook URLs keep
    their token in the path) are secrets as far as messages and logs are concerned."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    host = f"[{host}]" if ":" in host else host
    rest = "/…" if parts.path.strip("/") or parts.query else "/"
    return f"{parts.scheme}://{host}{port}{rest}"


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


def excerpt(text: str, limit: int = 1024) -> str:
    """At most ``limit`` characters of a response, for attempt records and dead letters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def response_text(response: requests.Response, limit: int = 4096) -> str:
    """The start of the body as text, without ``response.text``'s charset sniffing of
    the whole (up to ``MAX_BODY``) body; undecodable bytes are replaced."""
    data = response.content[:limit]
    try:
        return data.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or HTTP-date); None if garbage."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"-?\d{1,12}", value):
        return float(max(0, int(value)))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify(response: requests.Response) -> DeliveryResult:
    """2xx is success; everything else raises the retryable or permanent error it means."""
    status = response.status_code
    text = excerpt(response_text(response))
    if 200 <= status < 300:
        return DeliveryResult(status=status, excerpt=text)
    error: DeliveryError
    if 300 <= status < 400:
        location = response.headers.get("location")
        target = safe_url(location) if location else "nowhere"
        error = PermanentDeliveryError(
            f"HTTP {status}: redirect to {target} not followed", status=status, excerpt=text
        )
    elif status == 410:
        error = PermanentDeliveryError("HTTP 410: the target is gone", status=status, excerpt=text)
    elif status in (408, 425, 429) or 500 <= status:
        error = RetryableDeliveryError(
            f"HTTP {status}",
            status=status,
            excerpt=text,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    elif 400 <= status < 500:
        error = PermanentDeliveryError(f"HTTP {status}", status=status, excerpt=text)
    else:
        error = RetryableDeliveryError(f"unexpected HTTP {status}", status=status, excerpt=text)
    raise error
