"""Which network addresses the relay may reach: the SSRF policy, and safe URL display.

One policy for every outbound request: the workers' targets (``workers.net``) and
``relay poll`` (``relay.guarded``) both check addresses here.

``refusal`` says why an address is not a public destination; ``check_url`` is the
save-time check of a target URL (no DNS); ``safe_url`` shows a URL in messages and
logs without anything that may be a secret.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from urllib3.util import parse_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
HINT = "set allow_private: true on the target to allow it"
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
