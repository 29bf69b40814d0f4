"""The shared storage flow: what a retry does after a crash, and what ``on_conflict``,
``dedupe`` and the size and type checks mean, against a real folder and a loopback
file server."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer

from relay.config.models import SourceConfig
from relay.errors import PermanentDeliveryError
from relay.events import FileRef
from relay.intake.sources.standard_webhooks import StandardWebhooksOptions
from relay.state import keys
from tests.conftest import TEST_SECRET
from tests.workers.support import build_target, delivery_context
from workers.storage.local import LocalTarget

DATA = b"%PDF-1.7\n" + os.urandom(256 * 1024)


@pytest.fixture
def served(httpserver: HTTPServer) -> list[str]:
    seen: list[str] = []

    def handler(request: Any) -> Any:
        from werkzeug import Response

        seen.append(request.path)
        return Response(DATA if request.path != "/other" else DATA[::-1])

    httpserver.expect_request("/doc").respond_with_handler(handler)
    httpserver.expect_request("/other").respond_with_handler(handler)
    return seen


def context(
    httpserver: HTTPServer,
    state: redis.Redis,
    *paths: str,
    delivery: str = "dlv_a",
    attempt: int = 1,
) -> Any:
    source = SourceConfig(
        id="ops",
        kind="standard_webhooks",
        options=StandardWebhooksOptions(secrets=[TEST_SECRET], allow_private=True),
    )
    files = [FileRef(name="doc.pdf", url=httpserver.url_for(p)) for p in paths or ("/doc",)]
    base = delivery_context(delivery, attempt=attempt, state=state, type="file.shared", files=files)
    return dataclasses.replace(base, source=source)


def test_a_retry_after_the_store_took_the_file_does_not_fetch_or_upload_again(
    httpserver: HTTPServer, served: list[str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    target = build_target(LocalTarget, "nas", root=str(tmp_path), path="{file.name}")
    target.deliver(context(httpserver, redis_client))
    # the worker died after the store answered, before the ledger recorded the file
    redis_client.hdel(keys.ledger("dlv_a"), "file:0")
    result = target.deliver(context(httpserver, redis_client, attempt=2))
    assert served == ["/doc"]  # fetched once
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["doc.pdf"]
    assert json.loads(result.excerpt or "")["stored"][0]["path"] == "doc.pdf"


def test_skip_same_is_success_and_different_bytes_get_the_next_name(
    httpserver: HTTPServer, served: list[str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    target = build_target(LocalTarget, "nas", root=str(tmp_path), path="{file.name}")
    target.deliver(context(httpserver, redis_client, delivery="dlv_1"))
    target.deliver(context(httpserver, redis_client, delivery="dlv_2"))  # same bytes
    target.deliver(context(httpserver, redis_client, "/other", delivery="dlv_3"))
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert names == ["doc (2).pdf", "doc.pdf"]
    assert (tmp_path / "doc (2).pdf").read_bytes() == DATA[::-1]


def test_fail_dead_letters_a_taken_path_and_overwrite_replaces_it(
    httpserver: HTTPServer, served: list[str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    (tmp_path / "doc.pdf").write_bytes(b"old")
    failing = build_target(LocalTarget, "nas", root=str(tmp_path), path="{file.name}",
                           on_conflict="fail")  # fmt: skip
    with pytest.raises(PermanentDeliveryError, match="already exists"):
        failing.deliver(context(httpserver, redis_client, delivery="dlv_f"))
    replacing = build_target(LocalTarget, "nas", root=str(tmp_path), path="{file.name}",
                             on_conflict="overwrite")  # fmt: skip
    replacing.deliver(context(httpserver, redis_client, delivery="dlv_o"))
    assert (tmp_path / "doc.pdf").read_bytes() == DATA


def test_size_and_type_limits_are_permanent_and_name_the_file(
    httpserver: HTTPServer, served: list[str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    small = build_target(LocalTarget, "nas", root=str(tmp_path), max_size="100KB")
    with pytest.raises(PermanentDeliveryError, match="doc.pdf.*max_size"):
        small.deliver(context(httpserver, redis_client, delivery="dlv_s"))
    images = build_target(LocalTarget, "nas", root=str(tmp_path), allowed_types=["image/*"])
    with pytest.raises(PermanentDeliveryError, match="application/pdf is not in allowed_types"):
        images.deliver(context(httpserver, redis_client, delivery="dlv_t"))
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_dedupe_content_stores_the_same_bytes_once(
    httpserver: HTTPServer, served: list[str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    target = build_target(LocalTarget, "nas", root=str(tmp_path), dedupe="content",
                          path="{event_id}/{index}-{file.name}")  # fmt: skip
    target.deliver(context(httpserver, redis_client, delivery="dlv_1"))
    second = target.deliver(context(httpserver, redis_client, delivery="dlv_2"))
    stored = json.loads(second.excerpt or "")["stored"][0]
    assert stored["deduplicated"] is True
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 1
