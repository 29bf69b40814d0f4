"""Connections that reach only addresses the policy (``relay.addresses``) allows.

The guard sits in the urllib3 connection: it resolves the host itself, checks *every*
address, and connects only to an address it checked, so the check is made on the
address actually connected to and DNS rebinding cannot slip past it. TLS still
verifies the certificate against the URL's host name. The workers' HTTP path
(``workers.net.http``) builds its pools from ``pool_classes``; ``relay poll`` mounts
``GuardedAdapter`` on its ``requests`` session. ``resolve`` is a parameter throughout
so tests can stub DNS.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from relay.addresses import HINT, refusal

AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]
Resolver = Callable[[str, int], list[AddrInfo]]


class BlockedAddress(Exception):
    """A connection was refused before it was made: the host resolves to a private address.

    Deliberately not an ``OSError``: urllib3 would wrap and retry those, while this
    must reach the caller as it is and end the request.
    """


def resolve(host: str, port: int) -> list[AddrInfo]:
    """``getaddrinfo`` for TCP."""
    return list(socket.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM))


def vetted_addresses(
    host: str, port: int, allow_private: bool, resolve: Resolver = resolve
) -> list[AddrInfo]:
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


def connect_vetted(conn: HTTPConnection, allow_private: bool, resolve: Resolver) -> socket.socket:
    """urllib3's ``_new_conn`` with our resolver: connect only to vetted addresses."""
    host = conn._dns_host.strip("[]")  # noqa: SLF001 - the name urllib3 itself resolves
    try:
        infos = vetted_addresses(host, conn.port, allow_private, resolve)
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
    raise NewConnectionError(conn, f"failed to connect: {os_reason(error)}") from error


def os_reason(error: OSError | None) -> str:
    if error is None:
        return "no address to connect to"
    return error.strerror or type(error).__name__


def pool_classes(allow_private: bool, resolve: Resolver) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes, by scheme, whose connections go through ``connect_vetted``."""

    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return connect_vetted(self, allow_private, resolve)

    class GuardedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return connect_vetted(self, allow_private, resolve)

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


class GuardedAdapter(HTTPAdapter):
    """A ``requests`` adapter whose connections go through ``connect_vetted``."""

    def __init__(self, allow_private: bool, resolve: Resolver = resolve) -> None:
        self._classes = pool_classes(allow_private, resolve)
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._classes


def guarded_session(allow_private: bool, resolve: Resolver = resolve) -> requests.Session:
    """A session that connects only to vetted addresses and ignores environment proxies
    (a proxy would connect for us, past the guard). Callers pass ``allow_redirects=False``:
    a redirect is a URL the operator never configured."""
    session = requests.Session()
    session.trust_env = False
    adapter = GuardedAdapter(allow_private, resolve)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
