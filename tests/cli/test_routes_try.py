"""``relay routes try``: which routes a sample event matches and exactly what each target
would receive, rendered by the real adapters with nothing sent."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from relay.cli import main
from tests.conftest import TEST_SECRET

TOKEN = "rob0t7oken4c1a9e5b3f8d2a6c4e0b7f9a"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """The robot's address: a loopback port that tells whether anyone connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


@pytest.fixture
def try_routes(
    write_config: Callable[..., Path], listener: socket.socket, tmp_path: Path
) -> Callable[..., Result]:
    port = listener.getsockname()[1]
    path = write_config(
        {
            "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
            "targets": [
                {"id": "sink", "kind": "webhook", "url": "https://hooks.example.com/in"},
                {
                    "id": "robot",
                    "kind": "dingtalk_robot",
                    "url": f"http://127.0.0.1:{port}/robot/send?access_token=${{ROBOT_TOKEN}}",
                    "allow_private": True,
                    "msgtype": "text",
                },
                {"id": "outbox", "kind": "file", "path": str(tmp_path / "outbox")},
                {"id": "test_hook", "kind": "webhook", "url": "https://test.example.com/in"},
            ],
            "routes": [
                {"source": "ops", "targets": ["sink", "outbox"]},
                {"source": "ops", "mode": "shadow", "targets": ["robot"]},
                {
                    "source": "ops",
                    "mode": "test",
                    "targets": ["robot"],
                    "test_targets": ["test_hook"],
                },
                {"source": "ops", "when": {"group": "elsewhere"}, "targets": ["sink"]},
            ],
        }
    )

    def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
        return CliRunner().invoke(
            main,
            ["routes", "try", "ops", "--config", str(path), *args],
            env={"ROBOT_TOKEN": TOKEN, **(env or {})},
        )

    return run


def event_file(tmp_path: Path, data: Any, name: str = "event.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


EVENT = {"type": "message.created", "group": {"id": "g1", "name": "Ops"}, "text": "disk full"}


def test_shows_each_route_and_the_exact_requests(
    try_routes: Callable[..., Result], tmp_path: Path, listener: socket.socket
) -> None:
    result = try_routes("--file", event_file(tmp_path, EVENT))
    assert result.exit_code == 0, result.output
    out = result.output
    port = listener.getsockname()[1]
    assert (
        "routes[0] (live): matches\n  → sink (webhook)\n    POST https://hooks.example.com/in"
        in out
    )
    assert "  → outbox (file)\n    not rendered: a file target acts outside the dry run" in out
    robot = f"POST http://127.0.0.1:{port}/robot/send?access_token=[redacted]\n"
    assert (
        "routes[1] (shadow: recorded, never sent): matches\n  → robot (dingtalk_robot)\n    "
        + robot
        in out
    )
    assert '"msgtype": "text"' in out and "disk full" in out
    assert "routes[2] (test: to its test_targets): matches\n  → test_hook (webhook)" in out
    assert "routes[3] (live): no match (when.group does not hold)" in out
    assert TOKEN not in out
    with pytest.raises(BlockingIOError):  # the robot was never called
        listener.accept()
    assert not (tmp_path / "outbox").exists()  # nor the file written


def test_json_output(try_routes: Callable[..., Result], tmp_path: Path) -> None:
    result = try_routes("--file", event_file(tmp_path, EVENT), "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["event"]["source"] == "ops" and answer["event"]["text"] == "disk full"
    routes = answer["routes"]
    assert [(r["route"], r["mode"], r["matches"]) for r in routes] == [
        (0, "live", True),
        (1, "shadow", True),
        (2, "test", True),
        (3, "live", False),
    ]
    [robot] = routes[1]["targets"]
    [request] = robot["requests"]
    assert request["method"] == "POST" and "access_token=[redacted]" in request["url"]
    assert json.loads(request["body"])["text"]["content"].endswith("disk full")
    assert '"dry_run":true' in robot["result"]
    webhook = routes[0]["targets"][0]["requests"][0]
    assert json.loads(webhook["body"])["id"] == answer["event"]["id"]  # the event as sent


def test_a_platform_body_is_parsed_by_its_source(
    try_routes: Callable[..., Result], tmp_path: Path
) -> None:
    raw = {"type": "message.created", "data": {"group": {"id": "g7"}, "text": "from the wire"}}
    result = try_routes("--file", event_file(tmp_path, raw), "--raw", "--json")
    assert result.exit_code == 0, result.output
    event = json.loads(result.output)["event"]
    assert (event["group"]["id"], event["text"]) == ("g7", "from the wire")
    sample = try_routes("--json")  # no file: the source kind's own sample event
    assert sample.exit_code == 0, sample.output
    assert json.loads(sample.output)["routes"][1]["matches"] is True


def test_unset_secret_leaves_that_target_unrendered(
    try_routes: Callable[..., Result], tmp_path: Path
) -> None:
    result = try_routes("--file", event_file(tmp_path, EVENT), env={"ROBOT_TOKEN": None})
    assert result.exit_code == 0, result.output
    assert (
        "  → robot (dingtalk_robot)\n    not rendered: targets[1].url: environment variable "
        "ROBOT_TOKEN is not set\n" in result.output
    )
    assert "→ test_hook (webhook)\n    POST https://test.example.com/in" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--file", "{bad"), "the file is not JSON"),
        (("--file", '{"type": "bogus"}'), "the file is not a GroupEvent"),
        (("--file", "[1]"), "one GroupEvent object"),
        (("--raw",), "--raw needs --file"),
    ],
)
def test_refusals(
    try_routes: Callable[..., Result], tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    if args[0] == "--file":
        args = ("--file", event_file(tmp_path, args[1]))
    result = try_routes(*args)
    assert result.exit_code == 1 and message in result.output


def test_unknown_source(write_config: Callable[..., Path]) -> None:
    path = write_config({"sources": [], "targets": [], "routes": []})
    result = CliRunner().invoke(main, ["routes", "try", "nope", "--config", str(path)])
    assert result.exit_code == 1 and "unknown source 'nope'" in result.output
