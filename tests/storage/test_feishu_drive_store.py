"""The ``feishu_drive`` store against a loopback fake of Feishu Drive (see
``feishu_drive_fake``), with the suite's own Redis for the token, folder and file caches
and the shared 5-a-second pacing."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import urllib3
from werkzeug import Response

from relay.config.rates import Rate
from relay.errors import PermanentDeliveryError, RetryableDeliveryError, TargetThrottled
from tests.storage.feishu_drive_fake import (
    APP_ID,
    APP_SECRET,
    BLOCK,
    ROOT,
    TENANT,
    FeishuDriveFake,
    answer,
    feishu_drive,
)
from tests.workers.support import assert_hidden, assert_registered, build_target, delivery_context
from workers.storage.feishu_drive import FeishuDriveStore, FeishuDriveTarget
from workers.storage.spec import AlreadyExists, StoredObject
from workers.targets.base import DeliveryContext

MiB = 1024 * 1024


def payload(size: int, seed: bytes = b"x") -> bytes:
    block = hashlib.sha256(seed).digest()
    return (block * (size // len(block) + 1))[:size]


class Drive:
    """The fake, and stores of one ``feishu_drive`` target on it sharing one Redis."""

    def __init__(self, fake: FeishuDriveFake, base: str, client: redis.Redis, **options: Any):
        self.fake, self.base, self.redis = fake, base, client
        self.target = build_target(
            FeishuDriveTarget,
            "team-drive",
            app_id=APP_ID,
            app_secret=APP_SECRET,
            folder_token=ROOT,
            api_base=base,
            **options,
        )

    def context(self) -> DeliveryContext:
        return delivery_context(state=self.redis)

    def store(self) -> FeishuDriveStore:
        """A store as one delivery attempt gets it."""
        return self.target.store(self.context())

    def put(self, path: str, data: bytes, **kwargs: Any) -> StoredObject:
        digest = hashlib.sha256(data).hexdigest()
        return self.store().put(
            path, io.BytesIO(data), size=len(data), mime=None, sha256=digest, **kwargs
        )


@pytest.fixture
def drive(redis_client: redis.Redis) -> Iterator[Drive]:
    with feishu_drive() as (fake, base):
        yield Drive(fake, base, redis_client)


def test_a_small_file_goes_up_with_upload_all_into_nested_folders(drive: Drive) -> None:
    data = payload(300_000)

    stored = drive.put("feishu/g1/2026/05/报告.pdf", data)

    [node] = drive.fake.files_named("报告.pdf")
    assert node.content == data
    assert drive.fake.path_of(node) == "feishu/g1/2026/05/报告.pdf"
    assert stored == StoredObject(
        path="feishu/g1/2026/05/报告.pdf",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        id=node.token,
    )
    assert drive.fake.count("upload_all") == 1
    assert drive.fake.count("create_folder") == 4
    assert drive.fake.count("upload_prepare") == 0


def test_folders_are_made_once_and_their_tokens_cached_for_every_worker(drive: Drive) -> None:
    drive.put("team/2026/05/a.txt", b"a")
    lists_before = drive.fake.count("list")

    drive.put("team/2026/05/b.txt", b"b")  # another attempt: a new store, the same Redis

    assert drive.fake.count("create_folder") == 3
    assert drive.fake.count("list") == lists_before + 1  # only the file's own folder
    folders = [n for n in drive.fake.nodes.values() if n.type == "folder"]
    assert sorted(n.name for n in folders) == ["05", "2026", "shared", "team"]


def test_workers_making_the_same_folders_at_once_make_each_only_once(drive: Drive) -> None:
    errors: list[BaseException] = []

    def upload(i: int) -> None:
        try:
            drive.put(f"new/{i}.txt", str(i).encode())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert [n.name for n in drive.fake.nodes.values() if n.type == "folder"] == ["shared", "new"]
    assert drive.fake.count("create_folder") == 1


def test_an_existing_folder_is_found_in_the_listing_not_made_again(drive: Drive) -> None:
    team = drive.fake.add(ROOT, "team", "folder")

    drive.put("team/x.txt", b"x")

    assert drive.fake.count("create_folder") == 0
    [node] = drive.fake.files_named("x.txt")
    assert node.parent == team.token


def test_a_large_file_goes_up_in_4_mib_blocks_in_order_within_5_a_second(drive: Drive) -> None:
    data = payload(25 * MiB + 17)

    stored = drive.put("big/video.mp4", data)

    [node] = drive.fake.files_named("video.mp4")
    assert node.content == data
    assert stored.id == node.token and stored.size == len(data)
    assert drive.fake.count("upload_all") == 0
    assert drive.fake.count("upload_prepare") == 1
    assert drive.fake.count("upload_part") == 7  # ceil(25 MiB / 4 MiB)
    assert drive.fake.count("upload_finish") == 1
    assert drive.fake.overlaps == 0
    assert drive.fake.throttled == 0  # paced: never over the limit
    sizes = [len(part) for part in drive.fake.received_parts]
    assert sizes == [BLOCK] * 6 + [len(data) - 6 * BLOCK]


def test_create_only_finds_the_name_in_the_listing_and_uploads_nothing(drive: Drive) -> None:
    first = drive.put("a/report.pdf", payload(1000))
    uploads = drive.fake.count("upload_all")

    with pytest.raises(AlreadyExists) as taken:
        drive.put("a/report.pdf", payload(1000))

    assert drive.fake.count("upload_all") == uploads
    assert taken.value.existing == StoredObject(
        path="a/report.pdf",
        size=1000,
        sha256=first.sha256,
        url=f"{TENANT}/file/{first.id}",
        id=first.id,
    )


def test_a_file_put_there_by_a_person_is_taken_with_its_size_unknown(drive: Drive) -> None:
    folder = drive.fake.add(ROOT, "a", "folder")
    theirs = drive.fake.add(folder.token, "notes.txt", "file", b"by hand")

    with pytest.raises(AlreadyExists) as taken:
        drive.put("a/notes.txt", b"by the relay")

    assert taken.value.existing is not None
    assert (taken.value.existing.id, taken.value.existing.size) == (theirs.token, None)


def test_overwrite_adds_a_second_file_of_the_name_as_drive_does(drive: Drive) -> None:
    drive.put("a/x.txt", b"one")

    second = drive.put("a/x.txt", b"two!", create_only=False)

    assert sorted(n.content for n in drive.fake.files_named("x.txt")) == [b"one", b"two!"]
    assert drive.store().stat("a/x.txt") == StoredObject(
        path="a/x.txt",
        size=4,
        sha256=hashlib.sha256(b"two!").hexdigest(),
        url=f"{TENANT}/file/{second.id}",
        id=second.id,
    )


def test_after_a_lost_answer_stat_knows_the_uploaded_file_for_the_attempts_own(
    drive: Drive,
) -> None:
    data = payload(5000)
    drive.fake.after_store["upload_all"] = Response("<html>502 Bad Gateway</html>", 502)

    with pytest.raises(RetryableDeliveryError, match="HTTP 502"):
        drive.put("a/lost.bin", data)
    [node] = drive.fake.files_named("lost.bin")  # Drive kept it; the answer never came

    found = drive.store().stat("a/lost.bin")  # the next attempt looks before uploading

    assert found is not None
    assert (found.id, found.size, found.sha256) == (
        node.token,
        5000,
        hashlib.sha256(data).hexdigest(),
    )


def test_stat_of_a_path_whose_folders_do_not_exist_is_none_and_makes_nothing(
    drive: Drive,
) -> None:
    assert drive.store().stat("no/such/folder/x.txt") is None
    assert drive.fake.count("create_folder") == 0


def test_a_frequency_limit_throttles_the_whole_target(drive: Drive) -> None:
    drive.fake.force("upload_all", answer(400, 1061045, "can retry."))

    with pytest.raises(TargetThrottled, match="1061045") as info:
        drive.put("a/x.txt", b"x")

    assert info.value.retry_after == 5.0
    assert drive.fake.files_named("x.txt") == []


def test_the_fake_refuses_a_sixth_upload_call_within_a_second(drive: Drive) -> None:
    token = json.loads(
        urllib3.request(
            "POST",
            drive.base + "/open-apis/auth/v3/tenant_access_token/internal",
            json={"app_id": APP_ID, "app_secret": APP_SECRET},
        ).data
    )["tenant_access_token"]
    drive.fake.now = lambda: 1000.0  # six calls in the same instant
    codes = []
    for _ in range(6):
        reply = urllib3.request(
            "POST",
            drive.base + "/open-apis/drive/v1/files/upload_prepare",
            json={"file_name": "x", "parent_type": "explorer", "parent_node": ROOT, "size": 9},
            headers={"Authorization": f"Bearer {token}"},
        )
        codes.append(json.loads(reply.data)["code"])
    assert codes == [0, 0, 0, 0, 0, 1061045]


def test_a_folder_not_shared_with_the_app_is_permanent_and_says_so(drive: Drive) -> None:
    drive.fake.shared.clear()

    with pytest.raises(PermanentDeliveryError, match="share the folder with the app") as info:
        drive.put("a/x.txt", b"x")

    assert "1061004" in str(info.value)
    assert_hidden(info.value, APP_SECRET, *drive.fake.tokens)


def test_a_full_folder_is_permanent_with_advice_to_shard(redis_client: redis.Redis) -> None:
    with feishu_drive(max_children=2) as (fake, base):
        fake.add(ROOT, "one", "folder")
        fake.add(ROOT, "two", "folder")
        drive = Drive(fake, base, redis_client)

        with pytest.raises(PermanentDeliveryError, match="1062507.*shard the path by month"):
            drive.put("three/x.txt", b"x")


def test_a_revoked_token_is_replaced_and_the_upload_made_once(drive: Drive) -> None:
    drive.put("a/one.txt", b"1")
    drive.fake.revoke_tokens()

    drive.put("a/two.txt", b"22")

    assert drive.fake.token_calls == 2
    assert [n.content for n in drive.fake.files_named("two.txt")] == [b"22"]


def test_a_wrong_app_secret_is_permanent_and_never_shown(redis_client: redis.Redis) -> None:
    with feishu_drive() as (fake, base):
        wrong = "wrong-secret-Pq83Ls0Vd"
        drive = Drive(fake, base, redis_client)
        target = build_target(
            FeishuDriveTarget,
            "bad",
            app_id=APP_ID,
            app_secret=wrong,
            folder_token=ROOT,
            api_base=base,
        )

        with pytest.raises(PermanentDeliveryError, match="check app_id and app_secret") as info:
            target.store(drive.context()).put("x.txt", io.BytesIO(b"x"), size=1, mime=None)

    assert_hidden(info.value, wrong, APP_SECRET)


def test_a_deleted_cached_folder_is_looked_up_again_on_the_next_attempt(drive: Drive) -> None:
    drive.put("team/a.txt", b"a")
    [team] = [n for n in drive.fake.nodes.values() if n.name == "team"]
    for node in [n for n in drive.fake.nodes.values() if n.parent == team.token]:
        del drive.fake.nodes[node.token]
    del drive.fake.nodes[team.token]

    with pytest.raises(RetryableDeliveryError, match="looked up again"):
        drive.put("team/b.txt", b"b")
    drive.put("team/b.txt", b"b")

    [node] = drive.fake.files_named("b.txt")
    assert drive.fake.path_of(node) == "team/b.txt"


def test_an_empty_file_is_refused_before_any_call(drive: Drive) -> None:
    with pytest.raises(PermanentDeliveryError, match="empty files"):
        drive.put("a/empty.txt", b"")
    assert drive.fake.calls == []


def test_links_use_the_listing_url_or_web_base(drive: Drive, redis_client: redis.Redis) -> None:
    stored = drive.put("a/x.txt", b"x")
    assert drive.store().link(stored, 3600) is None  # no web_base: no page address

    with_web = Drive(drive.fake, drive.base, redis_client, web_base=TENANT + "/")
    store = with_web.store()
    found = store.stat("a/x.txt")
    assert found is not None
    assert store.link(found, 3600) == f"{TENANT}/file/{stored.id}"
    assert store.link(StoredObject(path="p", id="boxcnZ"), 60) == f"{TENANT}/file/boxcnZ"


def test_feishu_drive_is_a_registered_storage_kind_with_its_limits() -> None:
    assert_registered(FeishuDriveTarget, "feishu_drive", "storage")
    rates = [Rate.model_validate(text) for text in FeishuDriveTarget.default_rate_limits]
    assert [(r.limit, r.per) for r in rates] == [(5, 1.0), (10000, 86400.0)]
    assert FeishuDriveStore.needs_size is True
    assert FeishuDriveStore.max_segment == 250
