"""A client that keeps failing to authenticate must not rotate the audit log: refusals
are aggregated per action, address and minute, and the counts add up to every refusal.

The log's cap is lowered for these tests (as a long-running relay's log is full), so a
flood written one entry per refusal would push the earlier history out.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relay.state import audit as audit_module
from relay.state.audit import AuditLog
from tests.api.conftest import ADDR, Api
from tests.dashboard.conftest import Dash, csrf_of
from tests.dashboard.conftest import make_dash as make_dash  # the fixture, for the login form

CAP = 300
FLOOD = 1000


@pytest.fixture(autouse=True)
def _small_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_module, "MAX_ENTRIES", CAP)


def history(log: AuditLog, n: int = 50) -> list[str]:
    """Operator actions written before the flood; their entry ids."""
    for i in range(n):
        log.record("replay", actor="k0", target=f"dlv_{i}", remote_addr="192.0.2.1")
    return [e.id for e in log.entries(limit=n, action="replay")]


def test_a_thousand_refused_calls_leave_a_few_entries_and_the_history(api: Api) -> None:
    log = AuditLog(api.redis)
    before = history(log)
    bad = [None, "Basic Zm9vOmJhcg==", "Bearer nonsense", "Bearer rk_0123456789ab_" + "x" * 43]
    for i in range(FLOOD):
        token = bad[i % len(bad)]
        response = api.call("GET", "/events", scope=None, token=token)
        assert response.status_code == 401
    read_only = api.call("GET", "/audit", scope="read")  # a key too small: 403, also counted
    assert read_only.status_code == 403

    entries = api.items("/audit", limit=500)
    failed = [e for e in entries if e["action"] == "auth.failed"]
    assert {e["remote_addr"] for e in failed} == {ADDR}
    # the first of a minute, a summary of the rest; a flood spanning a minute boundary
    # has two of each
    assert 2 <= len(failed) <= 4, failed
    assert sum(e["count"] for e in failed) == FLOOD
    first = failed[-1]  # newest first: the last is the first refusal, with its details
    assert first["count"] == 1 and first["actor"] == "-" and first["target"] == "GET /api/v1/events"
    assert any("more like entry" in e["detail"] for e in failed)
    denied = [e for e in entries if e["action"] == "auth.denied"]
    assert [(e["actor"], e["count"]) for e in denied] == [(api.key_ids["read"], 1)]  # each
    # nothing of the earlier history was pushed out
    assert before and set(before) <= {e["id"] for e in entries}


def test_refusals_from_many_addresses_are_counted_together_past_a_limit(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_module, "MAX_SOURCES", 10)
    log = AuditLog(api.redis)
    before = history(log)
    addresses = [f"198.51.100.{i}" for i in range(1, 61)]
    for address in addresses:
        response = api.client.get("/api/v1/events", environ_base={"REMOTE_ADDR": address})
        assert response.status_code == 401
    failed = [e for e in api.items("/audit", limit=500) if e["action"] == "auth.failed"]
    assert sum(e["count"] for e in failed) == len(addresses)
    # at most ten addresses of their own and the '*' pair, per minute the run spans
    assert len(failed) <= 2 * (10 + 2)
    assert "*" in {e["remote_addr"] for e in failed}
    assert set(before) <= {e.id for e in log.entries(limit=500)}


def test_failed_dashboard_logins_are_counted_not_each_written(
    make_dash: Callable[..., Dash],
) -> None:
    dash = make_dash()
    before = history(AuditLog(dash.redis))
    client = dash.client()
    token = csrf_of(client.get("/dashboard/login").get_data(as_text=True))
    for i in range(400):
        response = client.post("/dashboard/login", data={"key": f"guess-{i}", "csrf_token": token})
        assert response.status_code == 401
    logins = dash.audit("login")
    assert 2 <= len(logins) <= 4
    assert sum(e["count"] for e in logins) == 400
    assert {e["remote_addr"] for e in logins} == {"198.51.100.23"}
    assert set(before) <= {e["id"] for e in dash.audit()}
