"""Login with an API key, the session cookie, logout, revocation, and the shared key."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable

import redis
from flask.testing import FlaskClient

from relay.dashboard import session as sessions
from relay.state import keys
from relay.state.apikeys import ApiKeys
from tests.dashboard.conftest import ADDR, Dash, csrf_of


def _login_form(client: FlaskClient) -> str:
    return csrf_of(client.get("/dashboard/login").get_data(as_text=True))


def _cookie_payload(value: str) -> dict[str, object]:
    """What the signed cookie carries (itsdangerous: payload.timestamp.signature)."""
    payload = value.rsplit(".", 2)[0]
    compressed = payload.startswith(".")
    raw = base64.urlsafe_b64decode(payload.lstrip(".") + "=" * (-len(payload) % 4))
    data: dict[str, object] = json.loads(zlib.decompress(raw) if compressed else raw)
    return data


def test_login_success_and_failure_are_audited_never_the_key(
    dash: Dash, redis_client: redis.Redis
) -> None:
    client = dash.client()
    wrong = f"rk_{dash.key_ids['admin']}_" + "A" * 43
    for token in (wrong, "hunter2-not-a-key"):
        response = client.post(
            "/dashboard/login", data={"key": token, "csrf_token": _login_form(client)}
        )
        assert response.status_code == 401
        assert "unknown, revoked or wrong" in response.get_data(as_text=True)
        assert client.get("/dashboard/").status_code == 302  # still not logged in
    dash.login("admin", client)
    assert client.get("/dashboard/").status_code == 200

    entries = dash.audit("login")
    assert [(e["actor"], e["outcome"]) for e in entries] == [
        (dash.key_ids["admin"], "ok"),
        ("-", "failed"),
        (dash.key_ids["admin"], "failed"),  # the id a wrong key claims is public
    ]
    assert all(e["remote_addr"] == ADDR for e in entries)
    stream = repr(redis_client.xrange("relay:audit"))
    for token in (*dash.tokens.values(), wrong):
        secret = token.split("_", 2)[2]  # rk_<id>_<secret>; the secret itself may hold '_'
        assert secret not in stream
    assert "hunter2" not in stream


def test_login_without_csrf_token_is_refused(dash: Dash) -> None:
    client = dash.client()
    client.get("/dashboard/login")
    response = client.post("/dashboard/login", data={"key": dash.tokens["admin"]})
    assert response.status_code == 400
    assert client.get("/dashboard/").status_code == 302
    [entry] = dash.audit("login")
    assert entry["outcome"] == "failed" and "CSRF" in entry["detail"]


def test_session_cookie_is_httponly_strict_and_secure_over_https(dash: Dash) -> None:
    for base, secure in (("http://localhost", False), ("https://localhost", True)):
        client = dash.client()
        page = client.get("/dashboard/login", base_url=base)
        response = client.post(
            "/dashboard/login",
            base_url=base,
            data={"key": dash.tokens["read"], "csrf_token": csrf_of(page.get_data(as_text=True))},
        )
        assert response.status_code == 302
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith(f"{sessions.COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
        assert ("Secure" in cookie) is secure
        assert "Expires" not in cookie  # a browser-session cookie; Redis bounds its life


def test_the_session_holds_the_key_id_never_the_key(dash: Dash, redis_client: redis.Redis) -> None:
    client = dash.login("replay")
    cookie = client.get_cookie(sessions.COOKIE, path="/dashboard")
    assert cookie is not None
    data = _cookie_payload(cookie.value)
    assert data["key"] == dash.key_ids["replay"]
    assert dash.tokens["replay"] not in json.dumps(data)
    sid = str(data["sid"])
    assert redis_client.get(keys.dashboard_session(sid)) == dash.key_ids["replay"].encode()
    ttl = redis_client.ttl(keys.dashboard_session(sid))
    assert sessions.SESSION_LIFETIME - 60 < ttl <= sessions.SESSION_LIFETIME


def test_pages_redirect_to_login_and_back(dash: Dash) -> None:
    client = dash.client()
    response = client.get("/dashboard/events?source=ops")
    assert response.status_code == 302
    assert response.headers["Location"] == "/dashboard/login?next=/dashboard/events?source%3Dops"
    page = client.get(response.headers["Location"])
    html = page.get_data(as_text=True)
    assert 'name="next" value="/dashboard/events?source=ops"' in html
    login = client.post(
        "/dashboard/login",
        data={
            "key": dash.tokens["read"],
            "csrf_token": csrf_of(html),
            "next": "/dashboard/events?source=ops",
        },
    )
    assert login.headers["Location"] == "/dashboard/events?source=ops"


def test_unauthenticated_post_is_refused(dash: Dash) -> None:
    delivery_id = dash.dead()
    response = dash.client().post("/dashboard/dead-letters/replay", data={"id": delivery_id})
    assert response.status_code == 401
    assert "text/html" in response.content_type
    assert dash.status(delivery_id) == "dead"


def test_next_never_leaves_the_dashboard(dash: Dash) -> None:
    for target in ("https://evil.example/", "//evil.example/dashboard", "/api/v1/events",
                   "/\\evil.example", "javascript:alert(1)"):  # fmt: skip
        client = dash.client()
        response = client.post(
            "/dashboard/login",
            data={"key": dash.tokens["read"], "csrf_token": _login_form(client), "next": target},
        )
        assert response.headers["Location"] == "/dashboard/", target


def test_logout_ends_the_session_even_for_a_copied_cookie(dash: Dash) -> None:
    client = dash.login("admin")
    copied = client.get_cookie(sessions.COOKIE, path="/dashboard")
    assert copied is not None
    response = dash.post(client, "/dashboard/logout", page="/dashboard/")
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard/login"
    assert client.get("/dashboard/").status_code == 302
    thief = dash.client()
    thief.set_cookie(sessions.COOKIE, copied.value, domain="localhost", path="/dashboard")
    assert thief.get("/dashboard/").status_code == 302
    [entry] = dash.audit("logout")
    assert entry["actor"] == dash.key_ids["admin"]


def test_revoking_the_key_ends_its_sessions_at_the_next_request(dash: Dash) -> None:
    client = dash.login("admin")
    assert client.get("/dashboard/targets").status_code == 200
    ApiKeys(dash.redis).revoke(dash.key_ids["admin"])
    response = client.get("/dashboard/targets")
    assert response.status_code == 302 and "/dashboard/login" in response.headers["Location"]


def test_an_expired_session_record_logs_out(dash: Dash, redis_client: redis.Redis) -> None:
    client = dash.login("read")
    for key in redis_client.scan_iter("relay:dashboard:session:*"):
        redis_client.delete(key)  # what expiry does after SESSION_LIFETIME
    assert client.get("/dashboard/").status_code == 302


def test_web_processes_share_the_generated_key_through_redis(
    make_dash: Callable[..., Dash], redis_client: redis.Redis
) -> None:
    first = make_dash()
    client = first.login("read")
    stored = redis_client.get(keys.DASHBOARD_SECRET_KEY)
    assert stored and len(stored) >= 48
    second = make_dash()  # another gunicorn worker: same Redis, its own app
    other = second.client()
    cookie = client.get_cookie(sessions.COOKIE, path="/dashboard")
    assert cookie is not None
    other.set_cookie(sessions.COOKIE, cookie.value, domain="localhost", path="/dashboard")
    assert other.get("/dashboard/").status_code == 200
    assert redis_client.get(keys.DASHBOARD_SECRET_KEY) == stored  # SET NX kept the first


def test_a_configured_secret_key_is_used_and_nothing_is_generated(
    make_dash: Callable[..., Dash], redis_client: redis.Redis
) -> None:
    configured = make_dash(secret_key="configured-" + "k" * 40)
    client = configured.login("read")
    assert redis_client.get(keys.DASHBOARD_SECRET_KEY) is None
    other = make_dash()  # a process without the setting signs with another key
    stranger = other.client()
    cookie = client.get_cookie(sessions.COOKIE, path="/dashboard")
    assert cookie is not None
    stranger.set_cookie(sessions.COOKIE, cookie.value, domain="localhost", path="/dashboard")
    assert stranger.get("/dashboard/").status_code == 302


def test_intake_api_and_health_never_open_a_session(dash: Dash, redis_client: redis.Redis) -> None:
    client = dash.client()
    for path in ("/healthz", "/readyz", "/api/v1/events"):
        response = client.get(path)
        assert "Set-Cookie" not in response.headers, path
        assert "Cookie" not in response.headers.get("Vary", ""), path
    assert redis_client.get(keys.DASHBOARD_SECRET_KEY) is None
