"""Gunicorn settings for the web process, shared by ``relay up`` and production.

``relay up`` loads this module as ``gunicorn -c python:relay.gunicorn_conf``;
``deploy/gunicorn.conf.py`` re-exports it so the Procfile's ``-c deploy/...`` works
from a checkout. Gunicorn reads its config from module names, so the environment is
read here, when gunicorn imports the module, and nowhere else.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger, SafeAtoms

from relay.redact import MASK, SECRETS_ENVIRON, redact

# PORT is what platforms (Heroku, Render, ...) set; RELAY_BIND wins when both are set.
bind = [os.environ.get("RELAY_BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"]

# Intake does little CPU work per request and waits on Redis: a few processes with
# threads each keep latency low without a process per connection.
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * (os.cpu_count() or 1))
worker_class = "gthread"
threads = int(os.environ.get("RELAY_WEB_THREADS") or 8)

# A request that takes 30 s is stuck (intake answers in milliseconds or 503s fast).
timeout = 30
# Below relay up's 20 s grace, so a stop ends cleanly rather than by SIGKILL.
graceful_timeout = 15
keepalive = 5

# Trust X-Forwarded-* only from the proxy in front (set to its address in production).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1"

# Access log to stdout; %(U)s is the path without the query string, which may carry
# tokens (some platforms sign or verify via query parameters). Whatever the format, the
# logger masks secrets in the path, query, request line, referer and headers.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'

# Request headers never worth printing, and never printed: credentials.
_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
     "x-slack-signature", "webhook-signature", "x-hub-signature-256", "sign"}
)  # fmt: skip


def _is_credential(atom: str) -> bool:
    """``{authorization}i``, ``{http_cookie}e``, ``{set-cookie}o``: a credential header."""
    name = atom[1:-2].removeprefix("http_").replace("_", "-")
    return name in _CREDENTIAL_HEADERS


_SECRETS_ATOM = "\0secrets"  # no format can name it
# Atoms a caller cannot put text into: address, method, protocol, status, sizes, times, pid.
_PLAIN_ATOMS = frozenset("hlmHsbBTDMLpt")


class _RedactedAtoms(SafeAtoms):  # type: ignore[misc]
    """The atoms as the format reads them, each redacted when read: only the few a
    format names cost anything, which keeps the access log cheap on the intake path."""

    def __init__(self, atoms: dict[str, Any]) -> None:
        self.secrets: tuple[str, ...] = tuple(atoms.pop(_SECRETS_ATOM, ()))
        super().__init__(atoms)

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if key in _PLAIN_ATOMS or not isinstance(value, str):
            return value
        if key.startswith("{") and _is_credential(key.lower()):
            return MASK
        return redact(value, self.secrets)


class RedactingLogger(Logger):  # type: ignore[misc]
    """Gunicorn's logger, its access-log atoms redacted like the relay's own log line:
    configured secrets (left in the environ by the app under ``SECRETS_ENVIRON``, also
    percent-encoded), URL passwords, token-like query values and API keys, whatever the
    format. A secret a caller pastes into an API path or query never reaches the log."""

    atoms_wrapper_class = _RedactedAtoms

    def atoms(
        self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta
    ) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        atoms.pop(f"{{{SECRETS_ENVIRON}}}e", None)
        atoms[_SECRETS_ATOM] = environ.get(SECRETS_ENVIRON) or ()
        return atoms


logger_class = RedactingLogger

# Gunicorn >= 25.1 opens a control socket in $HOME by default; several relays on one
# host would fight over it, and nothing here uses it.
control_socket_disable = True
