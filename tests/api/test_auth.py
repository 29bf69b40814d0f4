"""API keys and scopes on every endpoint; auth failures in the audit log; the access log."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from relay.api.core import ENDPOINTS, Endpoint
from relay.state.apikeys import ApiKeys
from tests.api.conftest import ADDR, Api

PATH_VALUES = {"event_id": "evt_nope", "delivery_id": "dlv_nope", "target_id": "sink"}
EXTRA = {"purge_dead_letters": {"confirm": True, "dry_run": True}}
SCOPED = sorted(name for name, e in ENDPOINTS.items() if e.scope is not None)
NEEDS = {
    "replay_dead_letter": "replay",
    "replay_dead_letters": "replay",
    "purge_dead_letter": "admin",
    "purge_dead_letters": "admin",
    "pause_target": "admin",
    "resume_target": "admin",
    "reset_target": "admin",
    "list_audit": "admin",
}
RANK = {"read": 0, "replay": 1, "admin": 2}
# What an allowed key gets from each endpoint with PATH_VALUES: the ids name nothing stored
# (a 404 from the view itself, so past the scope check); everything else succeeds.
MISSING = {
    "get_event": "no event 'evt_nope'",
    "get_delivery": "no delivery 'dlv_nope'",
    "replay_dead_letter": "'dlv_nope' is not in the dead-letter queue",
    "purge_dead_letter": "'dlv_nope' is not in the dead-letter queue",
}


def _path(found: Endpoint) -> str:
    return re.sub(r"<([^>]+)>", lambda m: PATH_VALUES[m.group(1)], found.rule)


def _call(api: Api, name: str, scope: str | None = None, token: str | None = None) -> Any:
    found = ENDPOINTS[name]
    return api.call(found.method, _path(found), scope, token, **EXTRA.get(name, {}))


def test_every_scope_is_as_documented() -> None:
    assert {n: e.scope for n, e in ENDPOINTS.items() if e.scope not in ("read", None)} == NEEDS
    assert ENDPOINTS["openapi_document"].scope is None


@pytest.mark.parametrize("name", SCOPED)
def test_no_key_is_401_and_audited(api: Api, name: str) -> None:
    response = _call(api, name)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    [entry] = api.audit("auth.failed")
    assert entry["actor"] == "-" and entry["outcome"] == "denied"
    assert entry["remote_addr"] == ADDR
    assert entry["target"] == f"{ENDPOINTS[name].method} /api/v1{_path(ENDPOINTS[name])}"


@pytest.mark.parametrize(
    "make_token, claimed",
    [
        (lambda api: "Bearer " + api.tokens["admin"][:-1] + "x", True),  # wrong secret
        (lambda api: "Bearer " + api.tokens["admin"] + "x", True),  # malformed, id given
        (lambda api: "Bearer rk_000000000000_" + "a" * 43, True),  # unknown id
        (lambda api: "Bearer garbage", False),
        (lambda api: "Basic " + api.tokens["admin"], False),  # not a bearer token
        (lambda api: api.tokens["admin"], False),  # no scheme
    ],
)
def test_bad_keys_are_401_with_the_key_id_and_never_the_token(
    api: Api, make_token: Any, claimed: bool
) -> None:
    token = make_token(api)
    response = api.call("GET", "/events", token=token)
    assert response.status_code == 401
    [entry] = api.audit("auth.failed")
    secret_part = token.split()[-1]
    assert secret_part not in json.dumps(entry)
    expected = secret_part[3:15] if claimed else "-"
    assert entry["actor"] == expected and entry["remote_addr"] == ADDR


def test_a_revoked_key_is_401(api: Api) -> None:
    ApiKeys(api.redis).revoke(api.key_ids["read"])
    assert api.get("/events", "read").status_code == 401
    [entry] = api.audit("auth.failed")
    assert entry["actor"] == api.key_ids["read"]
    assert api.tokens["read"] not in json.dumps(api.audit())


def test_a_rotated_key_works_in_its_grace_period(api: Api) -> None:
    _, new = ApiKeys(api.redis).rotate(api.key_ids["read"], grace=60)
    assert api.get("/events", "read").status_code == 200  # the old secret
    assert api.call("GET", "/events", token=f"Bearer {new}").status_code == 200


@pytest.mark.parametrize("scope", ["read", "replay", "admin"])
@pytest.mark.parametrize("name", SCOPED)
def test_scopes(api: Api, name: str, scope: str) -> None:
    response = _call(api, name, scope)
    needed = NEEDS.get(name, "read")
    if RANK[scope] >= RANK[needed]:
        body = response.get_json()
        if name in MISSING:
            assert response.status_code == 404, body
            assert body["error"] == "not_found" and body["detail"].startswith(MISSING[name])
        else:
            assert response.status_code == 200, body
            assert "error" not in body
        assert [e for e in api.audit() if e["action"].startswith("auth.")] == []
        return
    assert response.status_code == 403
    body = response.get_json()
    assert body["error"] == "forbidden" and needed in body["detail"]
    [entry] = [e for e in api.audit() if e["action"] == "auth.denied"]
    assert entry["actor"] == api.key_ids[scope] and entry["remote_addr"] == ADDR
    assert entry["outcome"] == "denied"


def test_a_read_key_changes_nothing(api: Api) -> None:
    _, ids = api.event()
    api.kill(ids[0])
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"/dead-letters/{ids[0]}/replay", {}),
        ("POST", "/dead-letters/replay", {}),
        ("POST", f"/dead-letters/{ids[0]}/purge", {}),
        ("POST", "/dead-letters/purge", {"confirm": True}),
        ("POST", "/targets/sink/pause", {}),
    ]
    for method, path, params in steps:
        assert api.call(method, path, "read", **params).status_code == 403
    assert api.ok("GET", f"/deliveries/{ids[0]}")["status"] == "dead"
    assert api.ok("GET", "/targets/sink")["paused"] is False


def test_the_openapi_document_needs_no_key(api: Api) -> None:
    assert api.get("/openapi.json", None).status_code == 200
    assert api.audit("auth.failed") == []


def test_every_request_is_access_logged_without_the_token(api: Api, capsys: Any) -> None:
    api.get("/events", "read")
    api.get("/events", None)
    api.call("GET", "/events", token="Bearer " + api.tokens["admin"] + "x")
    api.get("/no-such-thing")
    api.call("DELETE", "/events")
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if '"api.request"' in line]
    assert [(e["path"], e["status"]) for e in lines] == [
        ("/api/v1/events", 200),
        ("/api/v1/events", 401),
        ("/api/v1/events", 401),
        ("/api/v1/no-such-thing", 404),
        ("/api/v1/events", 405),
    ]
    assert lines[0]["key_id"] == api.key_ids["read"] and lines[1]["key_id"] is None
    assert all(e["method"] in ("GET", "DELETE") and e["remote_addr"] == ADDR for e in lines)
    assert all(isinstance(e["ms"], float) for e in lines)
    for token in api.tokens.values():
        assert token not in err and token.split("_", 2)[2] not in err
    assert "Bearer" not in err and "Authorization" not in err


def test_errors_are_json_never_html(api: Api) -> None:
    for response in (
        api.get("/no-such-thing"),
        api.call("DELETE", "/events"),
        api.get("/events", limit=0),
        api.get("/events", None),
    ):
        assert response.content_type == "application/json"
        assert set(response.get_json()) == {"error", "detail"}
    assert "GET" in api.call("DELETE", "/events").headers["Allow"]
