"""The dashboard's session: a signed cookie that names a server-side record in Redis.

The cookie (``relay_dashboard``, path ``/dashboard``, HttpOnly, SameSite=Strict, Secure
when the request came over HTTPS) holds a random session id and the id of the API key
that logged in, never the key itself. The session id also names a record in Redis
(``relay:dashboard:session:<sid>`` → key id) that expires ``SESSION_LIFETIME`` after
login, so logging out ends the session for good (a copied cookie is worthless after it)
and the lifetime is absolute, not renewed by activity.

The signing key is ``RELAY_SECRET_KEY`` when set; otherwise the first web process to
need one generates it and stores it with ``SET NX`` under ``relay:dashboard:secret_key``,
so every gunicorn worker (and every replica on the same Redis) signs and checks
cookies with the same key. Only requests under ``/dashboard`` open a session: intake,
the API and ``/metrics`` never touch it.
"""

from __future__ import annotations

import secrets
from typing import Any

import redis
from flask import Flask, current_app, g, has_request_context, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import BadData, URLSafeTimedSerializer
from werkzeug.wrappers import Request

from relay.context import WebContext
from relay.state import keys

PREFIX = "/dashboard"
COOKIE = "relay_dashboard"
SESSION_LIFETIME = 12 * 3600  # seconds from login to the end of a session


def runtime() -> WebContext:
    found: WebContext = current_app.extensions["relay"]
    return found


def secret_key(rt: WebContext) -> str:
    """The configured key, else the one shared through Redis (created by whoever is first).

    Read on each dashboard request (one GET): a process never keeps a stale key after
    Redis lost its data and another process made a new one."""
    if rt.settings.secret_key:
        return rt.settings.secret_key
    cached = g.get("_dashboard_secret")
    if cached:
        return str(cached)
    stored = rt.redis.get(keys.DASHBOARD_SECRET_KEY)
    if stored is None:
        rt.redis.set(keys.DASHBOARD_SECRET_KEY, secrets.token_urlsafe(48), nx=True)
        stored = rt.redis.get(keys.DASHBOARD_SECRET_KEY)
    value = stored.decode() if isinstance(stored, bytes) else str(stored)
    g._dashboard_secret = value
    return value


def serializer(salt: str) -> URLSafeTimedSerializer:
    """A serializer under the dashboard's key; ``salt`` keeps each use apart."""
    return URLSafeTimedSerializer(secret_key(runtime()), salt=salt)


def new_id() -> str:
    return secrets.token_urlsafe(32)


def start(sid: str, key_id: str) -> None:
    runtime().redis.set(keys.dashboard_session(sid), key_id, ex=SESSION_LIFETIME)


def end(sid: str) -> None:
    runtime().redis.delete(keys.dashboard_session(sid))


def key_of(sid: str) -> str | None:
    """The key id of a live session, or None once it expired or was logged out."""
    value = runtime().redis.get(keys.dashboard_session(sid))
    return value.decode() if isinstance(value, bytes) else value


class DashboardSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, for ``/dashboard`` only, with the shared key."""

    salt = "relay.dashboard.session"

    def _ours(self) -> bool:
        return has_request_context() and (
            request.path == PREFIX or request.path.startswith(PREFIX + "/")
        )

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not self._ours():
            return None
        return URLSafeTimedSerializer(
            secret_key(app.extensions["relay"]),
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={
                "key_derivation": self.key_derivation,
                "digest_method": self.digest_method,
            },
        )

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not self._ours():
            return None  # Flask's null session: nothing read, nothing written
        try:
            serializer = self.get_signing_serializer(app)
        except redis.RedisError:
            return None  # the views answer 503 while Redis is away
        value = request.cookies.get(COOKIE)
        if serializer is None or not value:
            return self.session_class()
        try:
            data: dict[str, Any] = serializer.loads(value, max_age=SESSION_LIFETIME)
        except BadData:  # a bad signature, an expired or a mangled cookie: start afresh
            return self.session_class()
        return self.session_class(data)

    def get_cookie_name(self, app: Flask) -> str:
        return COOKIE

    def get_cookie_path(self, app: Flask) -> str:
        return (request.script_root if has_request_context() else "") + PREFIX

    def get_cookie_domain(self, app: Flask) -> str | None:
        return None

    def get_cookie_httponly(self, app: Flask) -> bool:
        return True

    def get_cookie_samesite(self, app: Flask) -> str:
        return "Strict"

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when this request came over HTTPS (directly, or as the trusted proxy
        in front says: gunicorn's ``forwarded_allow_ips``)."""
        return has_request_context() and request.is_secure

    def get_expiration_time(self, app: Flask, session: Any) -> None:
        return None  # a browser-session cookie; the Redis record bounds its life
