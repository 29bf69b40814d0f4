"""``relay poll``: getUpdates long polling against a loopback Bot API, into real Redis.

``FakeBotApi`` speaks ``getUpdates`` as Telegram does: it returns updates whose
``update_id`` is at least the offset asked for, forgets those below it (confirmed),
holds the request up to ``timeout`` seconds when there is nothing new, and records
every offset it was asked for. Scripted ``{"ok": false, ...}`` answers come first.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.backoff import full_jitter
from relay.cli import main
from relay.cli.embedded import EmbeddedRedis, free_port
from relay.config.loader import parse_config
from relay.context import WebContext
from relay.intake.poller import Poller, PollError, PollRetryLater
from relay.settings import Settings
from relay.state import keys
from tests.conftest import ROOT, TEST_ENV, TEST_SECRET, wait_for

BOT_TOKEN = "7000000001:AAFD39kkdpWt3ywyRZergyOLMaJhac60qc"
CHAT = {"id": -100777, "title": "Ops", "type": "supergroup"}


def update(update_id: int, text: str | None = None) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "from": {"id": 42, "is_bot": False, "first_name": "Ada"},
            "chat": CHAT,
            "date": 1700000000,
            "text": text or f"message {update_id}",
        },
    }


class FakeBotApi:
    def __init__(self, server: HTTPServer, token: str = BOT_TOKEN) -> None:
        self.updates: list[dict[str, Any]] = []
        self.offsets: list[int | None] = []
        self.params: list[dict[str, str]] = []
        self.times: list[float] = []
        self.errors: list[tuple[int, Any]] = []
        self.cond = threading.Condition()
        self.closed = False
        self.url = server.url_for("/").rstrip("/")
        server.expect_request(f"/bot{token}/getUpdates").respond_with_handler(self.handle)

    def add(self, *ids: int) -> None:
        with self.cond:
            self.updates.extend(update(i) for i in ids)
            self.cond.notify_all()

    def fail(self, status: int, body: Any) -> None:
        with self.cond:
            self.errors.append((status, body))

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def handle(self, request: Request) -> Response:
        offset = int(request.args["offset"]) if "offset" in request.args else None
        timeout = float(request.args.get("timeout", "0"))
        limit = int(request.args.get("limit", "100"))
        with self.cond:
            self.offsets.append(offset)
            self.params.append(dict(request.args))
            self.times.append(time.monotonic())
            if self.errors:
                status, body = self.errors.pop(0)
                text = body if isinstance(body, str) else json.dumps(body)
                return Response(text, status=status, content_type="application/json")
            if offset is not None:  # Telegram forgets what an offset confirms
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            deadline = time.monotonic() + timeout
            while not self.updates and not self.closed and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
            batch = self.updates[:limit]
        return Response(json.dumps({"ok": True, "result": batch}), content_type="application/json")


@pytest.fixture
def api(threaded_httpserver: HTTPServer) -> Iterator[FakeBotApi]:
    fake = FakeBotApi(threaded_httpserver)
    yield fake
    fake.close()


def source_config(api_base: str, **options: Any) -> dict[str, Any]:
    tg = {"id": "tg", "kind": "telegram", "bot_token": BOT_TOKEN, "api_base": api_base}
    tg["allow_private"] = True  # the fake Bot API listens on loopback
    return {
        "sources": [
            {**tg, "poll_timeout": 1, **options},
            {"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]},
            {"id": "hookonly", "kind": "telegram", "secret_token": "abc"},
        ]
    }


@pytest.fixture
def make_poller(
    make_settings: Callable[..., Settings], api: FakeBotApi
) -> Iterator[Callable[..., Poller]]:
    made: list[Poller] = []

    def make(
        redis_url: str | None = None, rng: random.Random | None = None, **options: Any
    ) -> Poller:
        settings = make_settings(**({"redis_url": redis_url} if redis_url else {}))
        runtime = WebContext.build(settings, parse_config(source_config(api.url, **options)))
        poller = Poller(runtime.intake, "tg", backoff_base=0.05, backoff_cap=0.2, rng=rng)
        made.append(poller)
        return poller

    yield make
    for poller in made:
        poller.close()
        poller.intake.redis.close()


def events(client: redis.Redis) -> list[dict[str, Any]]:
    """Every stored event, oldest first."""
    ids = [i.decode() for i in client.zrange(keys.EVENTS, 0, -1)]
    return [json.loads(client.hget(keys.event(i), "data") or b"") for i in ids]


def update_ids(client: redis.Redis) -> list[int]:
    return sorted(e["raw"]["update_id"] for e in events(client))


# -- long polling into the pipeline ----------------------------------------------------------


def test_batches_follow_offsets_into_the_queue(
    api: FakeBotApi, make_poller: Callable[..., Poller], redis_client: redis.Redis
) -> None:
    api.add(100, 101, 102)
    poller = make_poller(allowed_updates=["message", "edited_message"])
    assert poller.poll_once() == 3
    assert redis_client.llen(keys.FANOUT_QUEUE) == 3
    assert redis_client.get(keys.poll_offset("tg")) == b"103"
    stored = events(redis_client)
    assert [e["text"] for e in stored] == ["message 100", "message 101", "message 102"]
    assert {e["type"] for e in stored} == {"message.created"}
    assert stored[0]["group"] == {"id": "-100777", "name": "Ops"}
    assert stored[0]["message_id"] == "-100777:100"
    assert redis_client.exists(keys.dedupe("tg", "100"))

    api.add(103)
    assert poller.poll_once() == 1
    started = time.monotonic()
    assert poller.poll_once() == 0  # nothing new: the server holds the long poll
    assert time.monotonic() - started >= 0.9
    assert api.offsets == [None, 103, 104]
    assert api.params[0]["timeout"] == "1" and api.params[0]["limit"] == "100"
    assert json.loads(api.params[0]["allowed_updates"]) == ["message", "edited_message"]
    assert update_ids(redis_client) == [100, 101, 102, 103]
    assert redis_client.get(keys.poll_offset("tg")) == b"104"


def test_restart_continues_from_the_saved_offset(
    api: FakeBotApi, make_poller: Callable[..., Poller], redis_client: redis.Redis
) -> None:
    api.add(1, 2, 3)
    assert make_poller().poll_once() == 3
    api.add(4, 5)
    restarted = make_poller()  # a new process: everything comes from Redis
    assert restarted.poll_once() == 2
    assert api.offsets == [None, 4]
    assert update_ids(redis_client) == [1, 2, 3, 4, 5]  # nothing lost, nothing twice
    assert redis_client.llen(keys.FANOUT_QUEUE) == 5


def test_queued_but_offset_not_saved_is_not_queued_twice(
    api: FakeBotApi, make_poller: Callable[..., Poller], redis_client: redis.Redis
) -> None:
    """A crash between enqueue and the offset save: the update comes again, dedupe drops it."""
    api.add(10, 11)
    assert make_poller().poll_once() == 2
    redis_client.delete(keys.poll_offset("tg"))  # as if the process died before saving it
    api.add(12)
    again = make_poller()
    assert again.poll_once() == 1  # 10 and 11 were fetched again, and were duplicates
    assert api.offsets == [None, None]
    assert update_ids(redis_client) == [10, 11, 12]
    assert redis_client.llen(keys.FANOUT_QUEUE) == 3
    assert redis_client.get(keys.poll_offset("tg")) == b"13"


def test_redis_unreachable_does_not_advance_the_offset(
    api: FakeBotApi, make_poller: Callable[..., Poller], tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "own-redis").start()
    try:
        client = redis.Redis.from_url(server.url)
        api.add(1, 2)
        poller = make_poller(redis_url=server.url)
        assert poller.poll_once() == 2
        api.add(3, 4)
        server.stop()
        with pytest.raises(PollRetryLater) as info:
            poller.poll_once()
        assert "unavailable" in info.value.reason
        assert poller.offset == 3
        with pytest.raises(PollRetryLater):
            make_poller(redis_url=server.url).poll_once()  # no offset to start from
        assert api.offsets == [None, 3]  # the fresh poller asked Telegram nothing

        server.start()  # same port and AOF: the saved offset is back
        assert poller.poll_once() == 2
        assert api.offsets == [None, 3, 3]
        assert client.get(keys.poll_offset("tg")) == b"5"
        assert update_ids(client) == [1, 2, 3, 4]
        client.close()
    finally:
        server.stop()


def test_other_update_kinds_are_custom_and_id_less_ones_skipped(
    api: FakeBotApi, make_poller: Callable[..., Poller], redis_client: redis.Redis
) -> None:
    with api.cond:
        api.updates = [{"update_id": 7, "poll": {"id": "p"}}, {"no": "id"}, update(8)]
    assert make_poller().poll_once() == 2
    assert [e["type"] for e in events(redis_client)] == ["custom", "message.created"]


# -- what the Bot API may answer -------------------------------------------------------------


def test_conflict_with_a_webhook_names_delete_webhook(
    api: FakeBotApi, make_poller: Callable[..., Poller], redis_client: redis.Redis
) -> None:
    description = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook"
    api.fail(409, {"ok": False, "error_code": 409, "description": description})
    api.add(1)
    with pytest.raises(PollError) as info:
        make_poller().poll_once()
    message = str(info.value)
    assert "deleteWebhook" in message and "409" in message and BOT_TOKEN not in message
    assert (
        redis_client.get(keys.poll_offset("tg")) is None
        and redis_client.llen(keys.FANOUT_QUEUE) == 0
    )


def test_conflict_with_another_poller_is_retried(
    api: FakeBotApi, make_poller: Callable[..., Poller]
) -> None:
    description = "Conflict: terminated by other getUpdates request; make sure that only one"
    api.fail(409, {"ok": False, "error_code": 409, "description": description})
    with pytest.raises(PollRetryLater) as info:
        make_poller().poll_once()
    assert "another client" in info.value.reason


@pytest.mark.parametrize("status", [401, 404])
def test_refused_token_is_fatal_and_not_printed(
    api: FakeBotApi, make_poller: Callable[..., Poller], status: int
) -> None:
    reason = {401: "Unauthorized", 404: "Not Found"}[status]
    api.fail(status, {"ok": False, "error_code": status, "description": reason})
    with pytest.raises(PollError) as info:
        make_poller().poll_once()
    assert "sources.tg.bot_token" in str(info.value) and BOT_TOKEN not in str(info.value)


def test_other_client_errors_are_fatal(api: FakeBotApi, make_poller: Callable[..., Poller]) -> None:
    api.fail(400, {"ok": False, "error_code": 400, "description": "Bad Request: bad allowed"})
    with pytest.raises(PollError, match="Bad Request: bad allowed"):
        make_poller().poll_once()


def test_429_retry_after_is_honoured(
    api: FakeBotApi, make_poller: Callable[..., Poller], redis_client: redis.Redis
) -> None:
    api.fail(
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1},
        },
    )
    api.add(1)
    poller = make_poller()
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: redis_client.llen(keys.FANOUT_QUEUE) == 1, timeout=10)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert api.times[1] - api.times[0] >= 0.95  # retry_after, not the 0.05 s backoff
    assert api.offsets[:2] == [None, None]


def test_server_and_network_errors_back_off_then_recover(
    api: FakeBotApi, make_poller: Callable[..., Poller], redis_client: redis.Redis
) -> None:
    api.fail(502, "<html>Bad Gateway</html>")
    api.fail(500, {"ok": False, "error_code": 500, "description": "Internal Server Error"})
    api.fail(200, {"ok": True, "result": "not a list"})
    api.add(1, 2)
    poller = make_poller(rng=random.Random(23))
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: redis_client.llen(keys.FANOUT_QUEUE) == 2, timeout=10)
    finally:
        stop.set()
        thread.join(10)
    assert len(api.offsets) >= 4 and api.offsets[:4] == [None] * 4
    gaps = [b - a for a, b in zip(api.times, api.times[1:4], strict=False)]
    twin = random.Random(23)  # the waits the poller drew (near each ceiling, for this seed)
    waits = [full_jitter(n, base=0.05, cap=0.2, rng=twin) for n in (1, 2, 3)]
    assert all(gap >= wait - 0.002 for gap, wait in zip(gaps, waits, strict=True))
    assert poller.failures == 0  # reset by the successful batch


def test_network_error_is_retried_without_the_token(
    make_settings: Callable[..., Settings],
) -> None:
    config = parse_config(source_config(f"http://127.0.0.1:{free_port()}"))
    runtime = WebContext.build(make_settings(), config)
    poller = Poller(runtime.intake, "tg", backoff_base=0.05, backoff_cap=0.1)
    try:
        with pytest.raises(PollRetryLater) as info:
            poller.poll_once()
        assert "ConnectionError" in info.value.reason
        assert BOT_TOKEN not in info.value.reason and "[redacted]" in info.value.reason
        assert 0 < info.value.delay <= 0.1
    finally:
        poller.close()
        runtime.redis.close()


def test_only_telegram_sources_with_a_token(
    make_settings: Callable[..., Settings], api: FakeBotApi
) -> None:
    runtime = WebContext.build(make_settings(), parse_config(source_config(api.url)))
    try:
        for source_id, words in [
            ("ops", "kind 'standard_webhooks'"),
            ("hookonly", "sources.hookonly.bot_token is not set"),
            ("nope", "unknown source 'nope'"),
        ]:
            with pytest.raises(PollError, match=words):
                Poller(runtime.intake, source_id)
    finally:
        runtime.redis.close()


# -- the command -----------------------------------------------------------------------------


def cli_env(path: Path, redis_url: str) -> dict[str, str]:
    return {**TEST_ENV, "RELAY_REDIS_URL": redis_url, "RELAY_CONFIG": str(path)}


def test_cli_once(
    api: FakeBotApi,
    write_config: Callable[..., Path],
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    path = write_config(source_config(api.url))
    api.add(5, 6)
    runner = CliRunner()
    result = runner.invoke(main, ["poll", "tg", "--once"], env=cli_env(path, redis_url))
    assert result.exit_code == 0, result.output
    assert "queued 2 update(s); next offset 7" in result.output
    assert update_ids(redis_client) == [5, 6]
    assert BOT_TOKEN not in result.output

    for source_id, words in [("ops", "kind telegram"), ("hookonly", "hookonly.bot_token")]:
        refused = runner.invoke(main, ["poll", source_id], env=cli_env(path, redis_url))
        assert refused.exit_code == 1 and words in refused.output, refused.output

    api.fail(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
    denied = runner.invoke(main, ["poll", "tg", "--once"], env=cli_env(path, redis_url))
    assert denied.exit_code == 1 and "bot_token" in denied.output
    assert BOT_TOKEN not in denied.output


def test_cli_runs_until_sigterm(
    api: FakeBotApi,
    write_config: Callable[..., Path],
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """A long poll in flight is abandoned on SIGTERM (its updates stay unconfirmed)."""
    path = write_config(source_config(api.url, poll_timeout=30))
    api.fail(502, "<html>Bad Gateway</html>")
    api.add(1)
    log = tmp_path / "poll.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "poll", "tg"],
            env={**os.environ, **cli_env(path, redis_url)},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        wait_for(lambda: redis_client.get(keys.poll_offset("tg")) == b"2", timeout=30)
        wait_for(lambda: len(api.offsets) >= 3)  # now waiting in a 30 s long poll
        time.sleep(0.2)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "poll.retry" in text and "poll.accepted" in text and "poll.stopped" in text
    assert BOT_TOKEN not in text and BOT_TOKEN.split(":")[1] not in text
    assert update_ids(redis_client) == [1]


def test_cli_without_a_source_idles_until_stopped(
    write_config: Callable[..., Path], redis_url: str, tmp_path: Path
) -> None:
    """The Procfile's poller line must not end (and take the others down) when unused."""
    path = write_config({"sources": []})
    env = {k: v for k, v in {**os.environ, **cli_env(path, redis_url)}.items()}
    env.pop("RELAY_POLL_SOURCE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "poll"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        time.sleep(2.0)
        assert proc.poll() is None  # still running
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None
    with proc.stdout:
        assert b"poller.idle" in proc.stdout.read()
