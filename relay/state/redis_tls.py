"""TLS (``rediss://``) read the same way by every Redis client of the relay.

redis-py reads a ``rediss://`` URL's ``ssl_*`` query parameters itself and verifies the
server by default (``ssl_cert_reqs=required``, host name checked against the
certificate). kombu, under the Celery broker, does not: given a ``rediss://`` URL with no
``ssl_*`` parameter, its stock transport connects without verifying (a log warning
only), and the relay's own transport class (``workers.speedups.broker``) speaks plain
TCP to the TLS port. ``broker_use_ssl`` gives Celery the options that make the broker
verify as redis-py does; ``ssl_*`` parameters in the URL still replace them.

``check_url`` refuses, naming the setting and the parameter, what would otherwise show
up later as an unclear connection error (``Error 2 connecting ... No such file or
directory`` for a CA file that is not there) or as clients that quietly disagree
(``ssl_*`` on a plain ``redis://`` URL: kombu speaks TLS, redis-py does not).
"""

from __future__ import annotations

import os
import ssl
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from relay.errors import ConfigError

TLS_SCHEME = "rediss"
SENTINEL_TLS_SCHEME = "rediss+sentinel"
SETTING = "RELAY_REDIS_URL"
# Values both redis-py and kombu accept for ``ssl_cert_reqs``.
CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")  # read when a connection opens
FOLDERS = ("ssl_ca_path",)


def tls_params(url: str) -> dict[str, str]:
    """The URL's ``ssl_*`` query parameters (the last one of a name wins, as in redis-py)."""
    return {k: v for k, v in parse_qsl(urlsplit(url).query) if k.startswith("ssl_")}


def check_url(url: str, setting: str = SETTING) -> None:
    """Raise ``ConfigError`` naming ``setting`` and the parameter if the URL's TLS options
    cannot work (the CLI prints it as one line, as it does a bad config); the message never
    repeats the URL, which may hold a password."""
    scheme = urlsplit(url).scheme
    params = tls_params(url)
    if params and scheme == "redis":
        names = ", ".join(sorted(params))
        why = "only apply to a rediss:// URL; use rediss:// for TLS, or drop them"
        raise ConfigError([f"{setting}: {names} {why}"])
    reqs = params.get("ssl_cert_reqs")
    if reqs is not None and reqs not in CERT_REQS:
        choices = ", ".join(CERT_REQS)
        raise ConfigError([f"{setting}: ssl_cert_reqs={reqs!r} is not one of {choices}"])
    for name in FILES + FOLDERS:
        path = params.get(name)
        if not path:
            continue
        wanted = os.path.isdir if name in FOLDERS else os.path.isfile
        if not wanted(path) or not os.access(path, os.R_OK):
            kind = "folder" if name in FOLDERS else "file"
            raise ConfigError([f"{setting}: {name}={path} is not a {kind} this process can read"])


def broker_use_ssl(url: str) -> dict[str, Any] | None:
    """Celery's ``broker_use_ssl`` for ``url``: certificate verification (against the
    system's CAs unless the URL names ``ssl_ca_certs``) for a ``rediss://`` URL, which
    kombu would otherwise skip; for ``rediss+sentinel://``, whose broker URLs kombu
    builds without a query, the URL's ``ssl_*`` options as well; ``None`` for any other."""
    check_url(url)
    scheme = urlsplit(url).scheme
    if scheme == TLS_SCHEME:
        return {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if scheme == SENTINEL_TLS_SCHEME:
        params = tls_params(url)
        reqs = CERT_REQS[params.pop("ssl_cert_reqs", "required")]
        return {**params, "ssl_cert_reqs": reqs}
    return None
