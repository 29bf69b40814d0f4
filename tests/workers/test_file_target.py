"""The ``file`` target: whole JSON lines, even under concurrent threads and processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from relay.config.models import TargetConfig
from relay.errors import ConfigError, RetryableDeliveryError
from relay.events import GroupEvent
from tests.workers.support import assert_registered
from workers.targets.base import DeliveryContext
from workers.targets.file import FileTarget

ROOT = Path(__file__).resolve().parents[2]


def make_target(path: Path, target_id: str = "archive") -> FileTarget:
    return FileTarget(
        TargetConfig(id=target_id, kind="file", options=FileTarget.Options(path=path))
    )


def context(delivery_id: str = "dlv_1", attempt: int = 1, text: str = "hello") -> DeliveryContext:
    event = GroupEvent(source="ops", type="message.created", text=text)
    return DeliveryContext(delivery_id, attempt, event.to_json(), 5.0)


def read_lines(file: Path) -> list[dict[str, Any]]:
    raw = file.read_bytes()
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.decode().splitlines()]


def test_registered_as_entry_point() -> None:
    assert_registered(FileTarget, "file", "storage")


def test_appends_one_line_per_delivery_and_creates_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "deep" / "er"
    target = make_target(folder)
    first, second = context("dlv_a", 1, "one\nline two"), context("dlv_b", 3, "naïve ✅")
    target.deliver(first)
    result = target.deliver(second)
    assert result.excerpt is not None and "archive.jsonl" in result.excerpt
    records = read_lines(folder / "archive.jsonl")
    assert [r["delivery_id"] for r in records] == ["dlv_a", "dlv_b"]
    assert [r["attempt"] for r in records] == [1, 3]
    assert records[0]["event"] == json.loads(first.event_json)
    assert records[1]["event"]["text"] == "naïve ✅"
    when = datetime.fromisoformat(records[0]["delivered_at"])
    assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs((datetime.now(UTC) - when).total_seconds()) < 60


def test_concurrent_threads_write_whole_lines(tmp_path: Path) -> None:
    target = make_target(tmp_path)
    big = "x" * 200_000  # far above a pipe buffer: a torn write would show
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(20):
                target.deliver(context(f"dlv_{worker}_{i}", text=big))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    records = read_lines(tmp_path / "archive.jsonl")
    assert sorted(r["delivery_id"] for r in records) == sorted(
        f"dlv_{w}_{i}" for w in range(8) for i in range(20)
    )
    assert all(r["event"]["text"] == big for r in records)


def test_concurrent_processes_write_whole_lines(tmp_path: Path) -> None:
    script = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests.workers.test_file_target import context, make_target
from pathlib import Path
target = make_target(Path({str(tmp_path)!r}))
for i in range(15):
    target.deliver(context(f"dlv_{{sys.argv[1]}}_{{i}}", text="y" * 100_000))
"""
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(4)]
    assert [proc.wait(60) for proc in procs] == [0, 0, 0, 0]
    records = read_lines(tmp_path / "archive.jsonl")
    assert len(records) == 60
    assert len({r["delivery_id"] for r in records}) == 60


def test_os_error_is_retryable_and_names_the_path_not_the_event(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should go")
    target = make_target(blocker / "sub")
    with pytest.raises(RetryableDeliveryError) as info:
        target.deliver(context(text="top secret payload"))
    message = str(info.value)
    assert str(blocker / "sub" / "archive.jsonl") in message
    assert "top secret payload" not in message


def test_path_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    file = tmp_path / "plain.txt"
    file.write_text("x")
    with pytest.raises(ConfigError, match=r"targets\.archive\.path: .* is not a directory"):
        make_target(file)


def test_options_are_strict() -> None:
    with pytest.raises(ValidationError):
        FileTarget.Options(path=Path("/tmp"), mode="w")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="required"):
        FileTarget.Options(path="")  # type: ignore[arg-type]
    assert FileTarget.Options(path="~/relay").path == Path.home() / "relay"  # type: ignore[arg-type]


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    from relay.config.loader import load_config

    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "relay.yaml").write_text(
        "sources: []\ntargets: [{id: out, kind: file, path: outbox}]\nroutes: []\n"
    )
    config = load_config(folder / "relay.yaml")
    assert config.targets["out"].options.path == folder.resolve() / "outbox"
