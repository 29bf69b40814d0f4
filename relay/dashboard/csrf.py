"""CSRF tokens: the session id, signed and timed with itsdangerous.

Every form that changes state carries ``csrf_token``; a POST is refused (400) unless
the token was made for this very session (its id is random, new at each login) and is
younger than ``MAX_AGE``. The session cookie is also SameSite=Strict, so a cross-site
form post arrives without a session at all; the token is the second, independent lock.
"""

from __future__ import annotations

import hmac

from flask import g, request, session
from itsdangerous import BadData

from relay.dashboard import session as sessions

SALT = "relay.dashboard.csrf"
MAX_AGE = sessions.SESSION_LIFETIME
FIELD = "csrf_token"


def session_id() -> str:
    """This browser's session id; an anonymous one is made for the login form."""
    sid = session.get("sid")
    if not isinstance(sid, str) or not sid:
        sid = sessions.new_id()
        session["sid"] = sid
    return sid


def token() -> str:
    """The token to put in a form (cached for the request: one signature per page)."""
    cached = g.get("_csrf_token")
    if cached is None:
        cached = sessions.serializer(SALT).dumps(session_id())
        g._csrf_token = cached
    return str(cached)


def valid() -> bool:
    """Whether this POST carries a token made for this session within ``MAX_AGE``."""
    given = request.form.get(FIELD, "")
    sid = session.get("sid")
    if not given or not isinstance(sid, str) or not sid:
        return False
    try:
        signed_sid = sessions.serializer(SALT).loads(given, max_age=MAX_AGE)
    except BadData:
        return False
    return isinstance(signed_sid, str) and hmac.compare_digest(signed_sid, sid)
