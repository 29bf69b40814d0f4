"""The Redis scripts in ``relay/state/lua``: they load, say what they take, and the
delivery lock is released only by the run that holds it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

import relay.state.lua
from relay.state import keys
from relay.state.deliveries import Store
from relay.state.lua import INCLUDE, load_script, script_text

ROOT = Path(__file__).resolve().parents[2]
LUA_DIR = Path(relay.state.lua.__file__).with_suffix("")
SCRIPTS = sorted(p.name for p in LUA_DIR.glob("*.lua"))
LIBRARIES = sorted(p.relative_to(LUA_DIR).as_posix() for p in (LUA_DIR / "lib").glob("*.lua"))
ARG = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")  # a positional argument: KEYS[3], ARGV[12]
HEADER_ARG = re.compile(r"^-- (KEYS|ARGV)\[(\d+)(\.\.)?\]")  # -- ARGV[7] ..., -- KEYS[4..] ...


def parts(name: str) -> tuple[list[str], list[str], list[str]]:
    """A script's header comment, naming block (its first statements) and the rest."""
    lines = (LUA_DIR / name).read_text(encoding="utf-8").splitlines()
    header: list[str] = []
    while lines and lines[0].startswith("--"):
        header.append(lines.pop(0))
    while lines and (not lines[0].strip() or lines[0].startswith(INCLUDE)):
        lines.pop(0)
    naming: list[str] = []
    while lines and lines[0].strip():
        naming.append(lines.pop(0))
    return header, naming, lines


def named_in_header(header: list[str]) -> dict[str, tuple[set[int], int | None]]:
    """Per KEYS and ARGV: the positions the header names, and where a variadic tail starts."""
    named: dict[str, tuple[set[int], int | None]] = {"KEYS": (set(), None), "ARGV": (set(), None)}
    for line in header:
        match = HEADER_ARG.match(line)
        if match:
            kind, n, tail = match.group(1), int(match.group(2)), match.group(3)
            fixed, start = named[kind]
            named[kind] = (fixed, n) if tail else ({*fixed, n}, start)
    return named


def test_there_are_scripts_and_libraries() -> None:
    assert {"intake.lua", "fanout.lua", "begin.lua", "finish.lua", "dead.lua"} <= set(SCRIPTS)
    assert {"gate_admit.lua", "gate_record.lua", "windows_acquire.lua"} <= set(SCRIPTS)
    assert {"lib/clock.lua", "lib/windows.lua", "lib/count_attempt.lua"} <= set(LIBRARIES)


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_compiles_in_redis_and_registers(redis_client: redis.Redis, name: str) -> None:
    script = load_script(redis_client, name)
    assert redis_client.script_load(script_text(name)) == script.sha  # Redis compiled it
    assert script_text(name) is script_text(name)  # read once, then cached


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_names_its_arguments_in_its_header_and_first_lines(name: str) -> None:
    header, naming, body = parts(name)
    assert header and any(line.startswith("-- Returns") for line in header), name
    assert naming and all(line.startswith("local ") for line in naming), name
    named = named_in_header(header)
    for kind in ("KEYS", "ARGV"):
        fixed, tail = named[kind]
        read = {int(n) for k, n in ARG.findall("\n".join(naming)) if k == kind}
        assert read == fixed, f"{name}: the header names {kind} {fixed}, the script reads {read}"
        assert fixed == set(range(1, len(fixed) + 1)), f"{name}: a gap in {kind}"
        if tail is not None:
            assert tail == len(fixed) + 1, f"{name}: {kind}[{tail}..] does not follow {fixed}"
    positional = [line for line in body if ARG.search(line)]
    assert not positional, f"{name} reads positional arguments past its first lines"


@pytest.mark.parametrize("name", LIBRARIES)
def test_libraries_take_their_arguments_and_are_used(name: str) -> None:
    text = (LUA_DIR / name).read_text(encoding="utf-8")
    assert text.startswith("-- ")
    assert not ARG.search(text)  # the including script names its arguments
    includers = [s for s in SCRIPTS if f"{INCLUDE}{name}" in (LUA_DIR / s).read_text()]
    for function in re.findall(r"^local function (\w+)", text, re.M):
        callers = [s for s in includers if re.search(rf"\b{function}\(", script_text(s))]
        assert callers, f"{name}: no script that includes it calls {function}"


def test_includes_are_inlined() -> None:
    text = script_text("gate_admit.lua")
    assert INCLUDE not in text
    assert text.count("local function now_ms()") == 1
    assert text.count("local function window_wait(") == 1
    assert "local function count_attempt(" in script_text("finish.lua")
    record = script_text("gate_record.lua")  # the breaker needs Redis's clock, not windows
    assert "now_ms" in record and "window_wait" not in record


def test_a_file_included_twice_or_nested_is_inlined_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lua = tmp_path / "luapkg" / "lua"
    (lua / "lib").mkdir(parents=True)
    (tmp_path / "luapkg" / "__init__.py").write_text("")
    (lua / "lib" / "one.lua").write_text("local function one() return 1 end\n")
    (lua / "lib" / "two.lua").write_text(
        f"{INCLUDE}lib/one.lua\nlocal function two() return one() + 1 end\n"
    )
    main = ["-- main", f"{INCLUDE}lib/one.lua", f"{INCLUDE}lib/two.lua", f"{INCLUDE}lib/one.lua"]
    (lua / "main.lua").write_text("\n".join([*main, "return two()\n"]))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        text = script_text("main.lua", "luapkg")
        assert text == (
            "-- main\nlocal function one() return 1 end\n"
            "local function two() return one() + 1 end\nreturn two()\n"
        )
    finally:
        script_text.cache_clear()
        sys.modules.pop("luapkg", None)


@pytest.mark.skipif(shutil.which("luacheck") is None, reason="luacheck is not installed")
def test_luacheck_passes() -> None:
    lint = subprocess.run(
        ["luacheck", "--no-color", "relay/state/lua"], cwd=ROOT, capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


# -- the delivery lock: compare-and-delete ---------------------------------------------------


def begun_run(client: redis.Redis, store: Store, token: str) -> str:
    """A queued delivery claimed by the run holding ``token``; its id."""
    delivery_id = "dlv_lock"
    client.hset(
        keys.delivery(delivery_id),
        mapping={"id": delivery_id, "status": "queued", "target": "sink", "event_id": "evt"},
    )
    begun = store.begin(delivery_id, token, lock_ttl=60, deadline=time.time() + 60)
    assert begun.verdict == "run" and begun.token == token
    assert client.get(keys.lock(delivery_id)) == token.encode()
    return delivery_id


ATTEMPT = {"n": 1, "started_at": 0.0, "duration_ms": 5.0, "outcome": "retry", "error": "HTTP 503"}
ENDINGS: dict[str, Callable[[Store, str, str], Any]] = {
    "delivered": lambda s, d, t: s.finish_delivered(d, ATTEMPT, token=t),
    "retry": lambda s, d, t: s.finish_retry(d, ATTEMPT, time.time() + 60, token=t),
    "park": lambda s, d, t: s.park(d, time.time() + 60, "rate_limited", attempts=0, token=t),
    "dead": lambda s, d, t: s.finish_dead(d, ATTEMPT, "permanent failure", "{}", token=t),
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_run_whose_lock_was_taken_over_leaves_the_new_holders_lock(
    redis_client: redis.Redis, ending: str
) -> None:
    store = Store(redis_client, retention=3600)
    delivery_id = begun_run(redis_client, store, "run-a")
    # run-a outlived its lock (a stuck send); the watchdog's run-b claimed the delivery
    redis_client.set(keys.lock(delivery_id), "run-b", px=60_000)
    ENDINGS[ending](store, delivery_id, "run-a")
    assert redis_client.get(keys.lock(delivery_id)) == b"run-b"
    assert redis_client.pttl(keys.lock(delivery_id)) > 0  # untouched, TTL and all


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_run_releases_its_own_lock(redis_client: redis.Redis, ending: str) -> None:
    store = Store(redis_client, retention=3600)
    delivery_id = begun_run(redis_client, store, "run-a")
    ENDINGS[ending](store, delivery_id, "run-a")
    assert redis_client.exists(keys.lock(delivery_id)) == 0
