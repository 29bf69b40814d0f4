"""The address policy on every socket a block of foreign code opens.

Some libraries do their own networking (Apprise: ``requests``, ``smtplib``, plain
sockets, depending on the plugin), and some of their URLs name no host we could check
beforehand (Zulip's ``bot@org.host``, Azure's ``endpoint``), or resolve the name again
after we checked it (DNS rebinding). So the check moves to where the address is final:
``socket.connect``, ``connect_ex`` and ``sendto``. Inside ``vetted_connections()`` each
of them refuses an address ``relay.addresses.refusal`` refuses, with an ``OSError`` the
library handles like any failed connection, and the scope records what it refused.

The patch is installed once on the process's socket class (gevent's, once the worker
is monkey-patched) and is a no-op outside a scope: the scope is a ``ContextVar``,
which is per thread and per greenlet, so other green threads of the worker are not
affected.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from relay.addresses import HINT, refusal

_scope: ContextVar[list[str] | None] = ContextVar("vetted_connections", default=None)
_install_lock = threading.Lock()
_MARK = "_relay_vetted"


class RefusedAddress(PermissionError):
    """A connection the policy refused (an ``OSError``: libraries treat it as a failure)."""


def vet(address: Any, family: int) -> tuple[Any, str | None]:
    """The address to use instead and why the policy refuses it (None: allowed). A host
    name is resolved here and replaced by the checked address, so the socket cannot
    resolve it again to another one."""
    if family == getattr(socket, "AF_UNIX", None):
        return address, "a local (Unix) socket"
    if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
        return address, None
    host = str(address[0]).partition("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # a name
        try:
            infos = socket.getaddrinfo(host, address[1], family, socket.SOCK_STREAM)
        except OSError:
            return address, None  # the call fails on its own
        for info in infos:
            if why := refusal(ipaddress.ip_address(str(info[4][0]).partition("%")[0])):
                return address, f"{host} resolves to {info[4][0]}, {why}"
        return (infos[0][4][0], *address[1:]) if infos else address, None
    if why := refusal(ip):
        return address, f"{ip} is {why}"
    return address, None


def _guard(original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(sock: socket.socket, *args: Any) -> Any:
        refused = _scope.get()
        if refused is not None and args:
            # connect(addr), connect_ex(addr), sendto(data[, flags], addr)
            address, why = vet(args[-1], sock.family)
            if why:
                refused.append(why)
                raise RefusedAddress(errno.EACCES, f"refused: {why}; {HINT}")
            args = (*args[:-1], address)
        return original(sock, *args)

    setattr(guarded, _MARK, True)
    return guarded


def _install() -> None:
    cls = socket.socket  # gevent's class once the worker is monkey-patched
    if getattr(cls.connect, _MARK, False):
        return
    with _install_lock:
        for name in ("connect", "connect_ex", "sendto"):
            method = getattr(cls, name)
            if not getattr(method, _MARK, False):
                setattr(cls, name, _guard(method))


@contextmanager
def vetted_connections(allow_private: bool = False) -> Iterator[list[str]]:
    """Within the block, sockets of this thread (or greenlet) reach only public addresses;
    yields the list of refusals, for the caller's error message."""
    refused: list[str] = []
    if allow_private:
        yield refused
        return
    _install()
    token = _scope.set(refused)
    try:
        yield refused
    finally:
        _scope.reset(token)
