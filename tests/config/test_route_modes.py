"""Route modes in the config (``mode``, ``test_targets``) and the route diff that
``relay check`` reports when a route is promoted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.config import kinds
from relay.config.loader import load_config
from relay.config.models import RouteConfig, RouteMode
from relay.config.route_diff import (
    SAVED_ROUTES,
    route_changes,
    routes_of,
    save_routes,
    saved_routes,
)
from relay.errors import ConfigError
from tests.conftest import TEST_SECRET


def config(*routes: dict[str, Any]) -> dict[str, Any]:
    return {
        "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
        "targets": [
            {
                "id": "robot",
                "kind": "dingtalk_robot",
                "url": "https://oapi.dingtalk.com/robot/send?access_token=t0k",
            },
            {
                "id": "test_robot",
                "kind": "dingtalk_robot",
                "url": "https://oapi.dingtalk.com/robot/send?access_token=t3st",
            },
            {"id": "outbox", "kind": "file", "path": "outbox"},
            {
                "id": "jira",
                "kind": "jira",
                "base_url": "https://x.atlassian.net",
                "project": "OPS",
                "email": "a@example.com",
                "api_token": "jira-token",
            },
        ],  # fmt: skip
        "routes": list(routes),
    }


def load(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, env={})


def problems(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, data)
    return caught.value.problems


def test_modes_load_and_pick_where_deliveries_go(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        config(
            {"source": "ops", "targets": ["robot"]},
            {"source": "ops", "mode": "shadow", "targets": ["robot"]},
            {"source": "ops", "mode": "test", "targets": ["robot"], "test_targets": ["test_robot"]},
            {"source": "ops", "mode": "live", "targets": ["robot"], "test_targets": ["test_robot"]},
        ),
    )
    modes = [(r.mode, r.delivery_targets) for r in loaded.routes]
    assert modes == [
        (RouteMode.LIVE, ["robot"]),
        (RouteMode.SHADOW, ["robot"]),
        (RouteMode.TEST, ["test_robot"]),
        (RouteMode.LIVE, ["robot"]),  # test_targets wait for the next test
    ]


def test_mode_problems_name_the_key(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        config(
            {"source": "ops", "mode": "dry", "targets": ["robot"]},
            {"source": "ops", "mode": "test", "targets": ["robot"]},
            {"source": "ops", "mode": "test", "targets": ["robot"], "test_targets": ["tset_robot"]},
            {"source": "ops", "mode": "test", "targets": ["robot"], "test_targets": []},
        ),
    )
    assert found == [
        "routes[0].mode: Input should be 'live', 'shadow' or 'test'",
        "routes[1].test_targets: required in mode test: the targets (a test group, say) "
        "that replace targets while testing",
        "routes[2].test_targets[0]: unknown target 'tset_robot' (did you mean 'test_robot'?)",
        "routes[3].test_targets: List should have at least 1 item after validation, not 0",
    ]


def test_shadow_refuses_kinds_that_act_outside_the_dry_run(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        config({"source": "ops", "mode": "shadow", "targets": ["robot", "outbox", "jira"]}),
    )
    assert [p.split(":")[0] for p in found] == ["routes[0].mode", "routes[0].mode"]
    assert found[0].startswith(
        "routes[0].mode: shadow cannot use targets[1] 'outbox': a file target acts outside "
        "the dry run, so it would send for real"
    )
    assert "targets[2] 'jira': a jira target" in found[1]
    # test mode really sends, to the test targets: any kind will do
    load(
        tmp_path,
        config({"source": "ops", "mode": "test", "targets": ["jira"], "test_targets": ["outbox"]}),
    )


def test_a_plugin_kind_opts_into_the_dry_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = kinds.target_kinds()

    careful = type("Careful", (real["file"],), {"dry_run": True})
    monkeypatch.setattr(kinds, "target_kinds", lambda: {**real, "file": careful})
    load(tmp_path, config({"source": "ops", "mode": "shadow", "targets": ["outbox"]}))


def route(**fields: Any) -> RouteConfig:
    return RouteConfig.model_validate({"source": "ops", "targets": ["robot"], **fields})


def test_route_changes_spell_out_promotions() -> None:
    before = [
        route(targets=["sink"]),
        route(mode="shadow"),
        route(mode="test", test_targets=["test_robot"]),
        route(targets=["outbox"]),
    ]
    after = [
        route(targets=["sink"], when={"group": "g1"}),
        route(),
        route(test_targets=["test_robot"]),
        route(mode="shadow", targets=["pager"]),
    ]
    assert route_changes(before, after) == [
        'routes[0] (ops → sink): when.group: (none) → ["g1"]',
        "routes[1] (ops → robot): promoted from shadow to live: its deliveries will be sent "
        "to robot (was recorded, never sent)",
        "routes[2] (ops → robot): promoted from test to live: its deliveries will be sent to "
        "robot (was sent to test_robot)",
        "routes[3] (ops → pager): moved from live to shadow: now recorded, never sent (was "
        "sent to outbox)",
        'routes[3] (ops → pager): targets: ["outbox"] → ["pager"]',
    ]
    assert route_changes(after, after) == []


def test_inserted_and_removed_routes_do_not_shift_the_others() -> None:
    before = [route(mode="shadow"), route(targets=["outbox"])]
    after = [route(source="gh", targets=["outbox"]), route(), route(targets=["outbox"])]
    assert route_changes(before, after) == [
        "routes[0] (gh → outbox): added, live: sent",
        "routes[1] (ops → robot): promoted from shadow to live: its deliveries will be sent "
        "to robot (was recorded, never sent)",
    ]
    assert route_changes(after, before) == [
        "removed: the route gh → outbox (was routes[0], live)",
        "routes[0] (ops → robot): moved from live to shadow: now recorded, never sent (was "
        "sent to robot)",
    ]


def test_routes_are_kept_between_checks_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    assert saved_routes(state) is None
    monkeypatch.setenv("ROBOT_TARGET", "robot")
    path = tmp_path / "old.yaml"
    path.write_text(
        "sources: [{id: ops, kind: standard_webhooks, secrets: ['${OPS_SECRET}']}]\n"
        "routes: [{source: ops, mode: shadow, targets: ['${ROBOT_TARGET}']}]\n"
    )
    old = routes_of(path)  # the routes alone: the source's unset secret does not matter
    assert [(r.mode, r.targets) for r in old] == [(RouteMode.SHADOW, ["robot"])]
    assert save_routes(old, state)
    assert saved_routes(state) == old
    assert TEST_SECRET not in (state / SAVED_ROUTES).read_text()
    assert json.loads((state / SAVED_ROUTES).read_text())[0]["mode"] == "shadow"
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert not save_routes(old, blocked)  # not a folder: the check still stands
    path.write_text("routes: [{source: ops, mode: later, targets: [robot]}]\n")
    with pytest.raises(ConfigError, match="its routes are not valid"):
        routes_of(path)
