"""Files shared in a group land in S3 (moto's server) and a local folder once each,
streamed by real workers from the sender's file URL, and the group gets the links."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.state import keys
from tests.conftest import TEST_SECRET, wait_for
from tests.e2e.chats import Chat
from tests.pipeline_support import signed_post
from tests.storage.s3_server import ACCESS_KEY, SECRET_KEY, MotoServer, moto_server

PDF = b"%PDF-1.7\n" + os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


def test_a_shared_file_is_stored_once_in_s3_and_a_folder_and_the_group_gets_links(
    moto: MotoServer,
    httpserver: HTTPServer,
    tmp_path: Path,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    downloads: list[str] = []

    def serve(request: Request) -> Response:
        downloads.append(request.path)
        return Response(PDF, mimetype="application/pdf")

    httpserver.expect_request("/files/report.pdf").respond_with_handler(serve)
    chat = Chat(httpserver)
    s3 = moto.client()
    s3.create_bucket(Bucket="team-files")
    root = tmp_path / "nas"
    root.mkdir()
    config = {
        "sources": [
            {"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET],
             "allow_private": True},
        ],
        "targets": [
            {"id": "bucket", "kind": "s3", "bucket": "team-files", "preset": "minio",
             "endpoint_url": moto.url, "access_key_id": ACCESS_KEY, "allow_private": True,
             "secret_access_key": SECRET_KEY, "path": "{group.name}/{file.name}",
             "notify": {"target": "team-bot"}},
            {"id": "nas", "kind": "local", "root": str(root),
             "path": "{group.name}/{file.name}", "allowed_types": ["application/pdf"]},
            {"id": "team-bot", "kind": "feishu_bot", "url": chat.url, "msg_type": "text",
             "allow_private": True},
        ],
        "routes": [{"source": "ops", "when": {"type": "file.shared"},
                    "targets": ["bucket", "nas"]}],
    }  # fmt: skip
    path = write_config(config)
    relay_processes(path)
    client = client_for(path)
    url = httpserver.url_for("/files/report.pdf")
    event = {
        "type": "file.shared",
        "data": {
            "group": {"id": "g1", "name": "Ops"},
            "sender": {"id": "u1", "name": "Ada"},
            "files": [{"name": "report.pdf", "url": url}, {"name": "../../etc/passwd", "url": url}],
        },
    }
    response = signed_post(client, event)
    assert response.status_code in (200, 202), response.get_data(as_text=True)
    event_id = response.get_json()["event_id"]

    wait_for(lambda: chat.posted, timeout=60)
    ids = {i.decode() for i in redis_client.smembers(keys.event_deliveries(event_id))}
    wait_for(
        lambda: all(redis_client.hget(keys.delivery(i), "status") == b"delivered" for i in ids),
        timeout=30,
    )
    assert len(ids) == 3  # s3, local, and the chained link message

    digest = hashlib.sha256(PDF).hexdigest()
    objects = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="team-files")["Contents"])
    assert objects == ["Ops/.._.._etc_passwd", "Ops/report.pdf"]
    body = s3.get_object(Bucket="team-files", Key="Ops/report.pdf")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest
    assert not s3.list_multipart_uploads(Bucket="team-files").get("Uploads")

    stored = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert stored == ["Ops/.._.._etc_passwd", "Ops/report.pdf"]
    assert hashlib.sha256((root / "Ops" / "report.pdf").read_bytes()).hexdigest() == digest
    assert not (tmp_path / "etc").exists()

    [posted] = chat.posted
    text = posted["content"]["text"]
    assert "report.pdf" in text and "team-files" in text  # a presigned link to the object
    assert len(downloads) == 4  # each file fetched once per store, at delivery time
    # the attempt record keeps each file's size and SHA-256
    attempts = [json.loads(a) for i in ids for a in redis_client.lrange(keys.attempts(i), 0, -1)]
    assert any(digest in (a.get("response") or "") for a in attempts)


def test_odd_files_get_their_documented_result(
    httpserver: HTTPServer,
    tmp_path: Path,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    """A zero-byte file is stored empty; a 300-character Chinese name is cut to the
    folder's 255 bytes and keeps its extension; a size claim of 3 GiB on a 1 MiB body
    is not believed: the bytes are measured and stored."""
    small = os.urandom(1024 * 1024)
    httpserver.expect_request("/empty").respond_with_data(b"")
    httpserver.expect_request("/small").respond_with_data(small)
    root = tmp_path / "nas"
    root.mkdir()
    config = {
        "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET],
                     "allow_private": True}],
        "targets": [{"id": "nas", "kind": "local", "root": str(root), "path": "{file.name}"}],
        "routes": [{"source": "ops", "targets": ["nas"]}],
    }  # fmt: skip
    path = write_config(config)
    relay_processes(path)
    client = client_for(path)
    long_name = "报" * 300 + ".pdf"
    event = {
        "type": "file.shared",
        "data": {
            "group": {"id": "g1"},
            "files": [
                {"name": "empty.txt", "url": httpserver.url_for("/empty")},
                {"name": long_name, "url": httpserver.url_for("/small")},
                {"name": "claimed.bin", "size": 3 * 1024**3, "url": httpserver.url_for("/small")},
            ],
        },
    }
    response = signed_post(client, event)
    assert response.status_code in (200, 202), response.get_data(as_text=True)
    event_id = response.get_json()["event_id"]
    [delivery_id] = wait_for(lambda: redis_client.smembers(keys.event_deliveries(event_id)))
    wait_for(
        lambda: redis_client.hget(keys.delivery(delivery_id.decode()), "status") == b"delivered",
        timeout=40,
    )
    files = {p.name: p for p in root.iterdir() if p.is_file()}
    assert files["empty.txt"].stat().st_size == 0
    assert files["claimed.bin"].read_bytes() == small
    [cut] = [name for name in files if name.startswith("报")]
    assert cut.endswith(".pdf") and len(cut.encode()) <= 255
    assert files[cut].read_bytes() == small


def test_a_worker_killed_mid_multipart_upload_ends_with_one_object_and_no_parts(
    moto: MotoServer,
    httpserver: HTTPServer,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    big = os.urandom(16 * 1024 * 1024)
    slow = threading.Event()
    slow.set()

    def serve(request: Request) -> Response:
        def chunks() -> Any:
            for start in range(0, len(big), 1024 * 1024):
                if slow.is_set() and start >= 6 * 1024 * 1024:
                    time.sleep(0.5)  # the first attempt dawdles past its first part
                yield big[start : start + 1024 * 1024]

        return Response(chunks(), headers={"Content-Length": str(len(big))})

    httpserver.expect_request("/files/big.bin").respond_with_handler(serve)
    s3 = moto.client()
    s3.create_bucket(Bucket="killed")
    config = {
        "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET],
                     "allow_private": True}],
        "targets": [{"id": "bucket", "kind": "s3", "bucket": "killed", "preset": "minio",
                     "endpoint_url": moto.url, "access_key_id": ACCESS_KEY,
                     "secret_access_key": SECRET_KEY, "allow_private": True,
                     "part_size": "5MiB", "path": "{file.name}"}],
        "routes": [{"source": "ops", "targets": ["bucket"]}],
    }  # fmt: skip
    path = write_config(config)
    procs = relay_processes(path)
    client = client_for(path)
    url = httpserver.url_for("/files/big.bin")
    event = {"type": "file.shared", "data": {"files": [{"name": "big.bin", "url": url}]}}
    response = signed_post(client, event)
    event_id = response.get_json()["event_id"]
    wait_for(lambda: s3.list_multipart_uploads(Bucket="killed").get("Uploads"), timeout=30)
    worker = procs.procs["worker"]
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    slow.clear()
    procs.start_worker("worker2")
    [delivery_id] = wait_for(lambda: redis_client.smembers(keys.event_deliveries(event_id)))
    wait_for(
        lambda: redis_client.hget(keys.delivery(delivery_id.decode()), "status") == b"delivered",
        timeout=60,
    )
    [obj] = s3.list_objects_v2(Bucket="killed")["Contents"]
    assert obj["Key"] == "big.bin"
    body = s3.get_object(Bucket="killed", Key="big.bin")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(big).hexdigest()
    assert not s3.list_multipart_uploads(Bucket="killed").get("Uploads")
