"""A Feishu group shares files: each lands once in S3 (moto's server) and once in
WebDAV (WsgiDAV), fetched from Feishu's message-resource API at delivery time, and the
group gets the links. Hostile and odd files get their documented result."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from relay.intake.sources.feishu import FeishuOptions, sample_payload
from relay.state import keys
from tests.conftest import wait_for
from tests.e2e.chats import Chat
from tests.fetch.fakes import FakeFeishu
from tests.storage.s3_server import ACCESS_KEY, SECRET_KEY, MotoServer, moto_server
from tests.storage.webdav_server import PASSWORD, USER, webdav_server

APP_ID, APP_SECRET, VERIFY = "cli_e2e0000000000001", "feishu-e2e-app-secret-0001", "v-e2e"
DATA = b"%PDF-1.7\n" + os.urandom(2 * 1024 * 1024)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


def file_message(key: str, name: str) -> dict[str, Any]:
    body = sample_payload(FeishuOptions(verification_token=VERIFY, app_id=APP_ID))
    msg = body["event"]["message"]
    msg.update(message_type="file", content=json.dumps({"file_key": key, "file_name": name}))
    msg["mentions"] = []
    body["header"]["event_id"] = uuid.uuid4().hex
    return body


def test_files_shared_in_a_feishu_group_land_once_in_s3_and_webdav_with_links(
    moto: MotoServer,
    httpserver: HTTPServer,
    tmp_path: Path,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    feishu = FakeFeishu(httpserver, APP_ID, APP_SECRET)
    chat = Chat(httpserver)
    s3 = moto.client()
    s3.create_bucket(Bucket="team")
    with webdav_server(tmp_path / "dav") as dav:
        config = {
            "sources": [{"id": "team", "kind": "feishu", "verification_token": VERIFY,
                         "app_id": APP_ID, "app_secret": APP_SECRET, "api_base": feishu.base,
                         "allow_private": True}],
            "targets": [
                {"id": "bucket", "kind": "s3", "bucket": "team", "preset": "minio",
                 "endpoint_url": moto.url, "access_key_id": ACCESS_KEY,
                 "secret_access_key": SECRET_KEY, "allow_private": True,
                 "path": "{group.id}/{file.name}", "notify": {"target": "team-bot"}},
                {"id": "dav", "kind": "webdav", "url": dav.url, "username": USER,
                 "password": PASSWORD, "allow_private": True, "path": "{group.id}/{file.name}"},
                {"id": "team-bot", "kind": "feishu_bot", "url": chat.url, "msg_type": "text",
                 "allow_private": True},
            ],
            "routes": [{"source": "team", "when": {"type": "file.shared"},
                        "targets": ["bucket", "dav"]}],
        }  # fmt: skip
        path = write_config(config)
        relay_processes(path)
        client = client_for(path)
        body = file_message("file_v3_e2e_report", "季度报告.pdf")
        message_id = body["event"]["message"]["message_id"]
        feishu.add(message_id, "file_v3_e2e_report", DATA)
        source = client.application.extensions["relay"].sources["team"]
        sample = source.sample(json.dumps(body, ensure_ascii=False).encode())
        response = client.post("/hooks/team", data=sample.body, headers=sample.headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        event_id = response.get_json()["event_id"]

        wait_for(lambda: chat.posted, timeout=60)
        ids = {i.decode() for i in redis_client.smembers(keys.event_deliveries(event_id))}
        wait_for(
            lambda: all(redis_client.hget(keys.delivery(i), "status") == b"delivered" for i in ids),
            timeout=30,
        )
        group = body["event"]["message"]["chat_id"]
        digest = hashlib.sha256(DATA).hexdigest()
        [obj] = s3.list_objects_v2(Bucket="team")["Contents"]
        assert obj["Key"] == f"{group}/季度报告.pdf"
        stored = s3.get_object(Bucket="team", Key=obj["Key"])["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == digest
        on_dav = tmp_path / "dav" / group / "季度报告.pdf"
        assert hashlib.sha256(on_dav.read_bytes()).hexdigest() == digest
        assert len(dav.seen("PUT")) == 1
        [posted] = chat.posted
        assert "季度报告.pdf" in posted["content"]["text"]
        assert "X-Amz-Signature" in posted["content"]["text"]  # a presigned link
