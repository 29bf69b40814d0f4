"""The ``webdav`` store against a real WebDAV server (WsgiDAV on cheroot, loopback) and
against a Nextcloud fake for chunked upload v2, quotas and proxies that want a length.

What is checked is what ends up on the server's disk and what the requests carried
(framing headers, ``If-None-Match``, ``Destination``, ``OC-Total-Length``), not only
what the store returns."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from pydantic import ValidationError
from werkzeug import Response

from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from tests.storage import nextcloud_fake, webdav_server
from tests.storage.nextcloud_fake import RunningNextcloud, nextcloud, sabre_error
from tests.storage.webdav_server import DavServer
from tests.workers.support import assert_hidden, assert_registered, build_target, delivery_context
from workers.storage.spec import AlreadyExists, StoredObject
from workers.storage.webdav import WebDavOptions, WebDavStore, WebDavTarget, _stored

MiB = 1024 * 1024


class Stream:
    """A non-seekable source of ``size`` bytes whose length nobody knows in advance."""

    def __init__(self, size: int, seed: bytes = b"relay") -> None:
        self.left = size
        self.block = (hashlib.sha256(seed).digest() * (MiB // 32 + 1))[:MiB]
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = (self.block * (n // len(self.block) + 1))[:n]
        self.left -= n
        self.digest.update(data)
        return data


def payload(size: int, seed: bytes = b"x") -> bytes:
    block = hashlib.sha256(seed).digest()
    return (block * (size // len(block) + 1))[:size]


def make_store(url: str, **options: Any) -> WebDavStore:
    values = {
        "url": url,
        "username": options.pop("username", webdav_server.USER),
        "password": options.pop("password", webdav_server.PASSWORD),
        **options,
    }
    return WebDavStore(WebDavOptions.model_validate(values), allow_private=True, timeout=10)


@pytest.fixture
def dav(tmp_path: Path) -> Iterator[DavServer]:
    with webdav_server.webdav_server(tmp_path / "dav") as server:
        yield server


def nc_store(cloud: RunningNextcloud, **options: Any) -> WebDavStore:
    login = {"username": nextcloud_fake.USER, "password": nextcloud_fake.PASSWORD}
    return make_store(cloud.files_url, **{**login, **options})


# -- plain WebDAV (WsgiDAV) ------------------------------------------------------------


def test_missing_parent_collections_are_made_from_the_deepest_up(dav: DavServer) -> None:
    store = make_store(dav.url)
    data = payload(1000)

    digest = hashlib.sha256(data).hexdigest()

    stored = store.put(
        "feishu/g1/2026/05/report.pdf", io.BytesIO(data), size=None, mime=None, sha256=digest
    )

    assert stored == StoredObject(path="feishu/g1/2026/05/report.pdf", size=1000, sha256=digest)
    assert "oc-checksum" not in dav.seen("PUT")[0].headers  # only for Nextcloud
    assert (dav.root / "feishu/g1/2026/05/report.pdf").read_bytes() == data
    mkcols = [r.path for r in dav.seen("MKCOL")]
    assert mkcols == [
        "/feishu/g1/2026/05/",  # 409: parent missing
        "/feishu/g1/2026/",
        "/feishu/g1/",
        "/feishu/",  # 201
        "/feishu/g1/",
        "/feishu/g1/2026/",
        "/feishu/g1/2026/05/",
    ]

    dav.requests.clear()
    make_store(dav.url).put("feishu/g1/2026/05/b.txt", io.BytesIO(b"b"), size=None, mime=None)
    assert [r.path for r in dav.seen("MKCOL")] == ["/feishu/g1/2026/05/"]  # 405: it exists


def test_names_are_percent_encoded_on_the_wire(dav: DavServer) -> None:
    store = make_store(dav.url)

    store.put("群 文件/a#b?c%.txt", io.BytesIO(b"hi"), size=None, mime="text/plain")

    assert (dav.root / "群 文件" / "a#b?c%.txt").read_bytes() == b"hi"
    assert store.stat("群 文件/a#b?c%.txt") == StoredObject(path="群 文件/a#b?c%.txt", size=2)


def test_an_upload_of_unknown_length_streams_with_chunked_transfer_encoding(
    dav: DavServer,
) -> None:
    source = Stream(30 * MiB)

    stored = make_store(dav.url).put("big/stream.bin", source, size=None, mime=None)

    assert stored.size == 30 * MiB
    [put] = dav.seen("PUT")
    assert put.transfer_encoding == "chunked"
    assert put.content_length is None
    on_disk = hashlib.sha256((dav.root / "big/stream.bin").read_bytes()).hexdigest()
    assert on_disk == source.digest.hexdigest()


def test_a_replayed_create_only_put_is_already_exists_with_the_stored_size(
    dav: DavServer,
) -> None:
    store = make_store(dav.url)
    store.put("a/report.pdf", io.BytesIO(payload(4321)), size=None, mime=None)

    with pytest.raises(AlreadyExists) as taken:
        store.put("a/report.pdf", io.BytesIO(b"other bytes"), size=None, mime=None)

    assert taken.value.path == "a/report.pdf"
    assert taken.value.existing == StoredObject(path="a/report.pdf", size=4321)
    assert (dav.root / "a/report.pdf").read_bytes() == payload(4321)


def test_if_none_match_stops_a_writer_that_got_there_between_check_and_put(
    dav: DavServer,
) -> None:
    class Late(WebDavStore):
        """Its first look finds nothing: the other writer comes just after it."""

        looked = False

        def stat(self, path: str) -> StoredObject | None:
            if not self.looked:
                self.looked = True
                (dav.root / "a").mkdir(exist_ok=True)
                (dav.root / "a/x.txt").write_bytes(b"theirs")
                return None
            return super().stat(path)

    store = Late(make_store(dav.url).options, allow_private=True, timeout=10)

    with pytest.raises(AlreadyExists) as taken:
        store.put("a/x.txt", io.BytesIO(b"mine!!!"), size=None, mime=None)

    assert taken.value.existing is not None and taken.value.existing.size == 6
    assert (dav.root / "a/x.txt").read_bytes() == b"theirs"
    [put] = dav.seen("PUT")
    assert put.headers["if-none-match"] == "*"


def test_overwrite_replaces_the_file_without_a_precondition(dav: DavServer) -> None:
    store = make_store(dav.url)
    store.put("a/x.txt", io.BytesIO(b"first"), size=None, mime=None)

    stored = store.put("a/x.txt", io.BytesIO(b"second!"), size=None, mime=None, create_only=False)

    assert stored.size == 7
    assert (dav.root / "a/x.txt").read_bytes() == b"second!"
    assert "if-none-match" not in dav.seen("PUT")[-1].headers


def test_stat_of_a_missing_file_is_none(dav: DavServer) -> None:
    assert make_store(dav.url).stat("nothing/here.txt") is None


def test_a_wrong_password_is_permanent_and_never_shown(dav: DavServer) -> None:
    wrong = "wrong-pass-Zk29Lx"
    store = make_store(dav.url, password=wrong)

    with pytest.raises(PermanentDeliveryError, match="refused the login of alice") as info:
        store.put("a/x.txt", io.BytesIO(b"x"), size=None, mime=None)

    assert info.value.status == 401
    basic = base64.b64encode(f"alice:{wrong}".encode()).decode()
    assert_hidden(info.value, wrong, basic)


def test_a_locked_file_is_retryable(dav: DavServer) -> None:
    store = make_store(dav.url)
    store.put("a/x.txt", io.BytesIO(b"first"), size=None, mime=None)
    lock = (
        b'<?xml version="1.0" encoding="utf-8"?><d:lockinfo xmlns:d="DAV:">'
        b"<d:lockscope><d:exclusive/></d:lockscope><d:locktype><d:write/></d:locktype>"
        b"</d:lockinfo>"
    )
    auth = urllib3.make_headers(basic_auth=f"{webdav_server.USER}:{webdav_server.PASSWORD}")
    locked = urllib3.request(
        "LOCK", dav.url + "a/x.txt", body=lock, headers={**auth, "Timeout": "Second-60"}
    )
    assert locked.status == 200

    with pytest.raises(RetryableDeliveryError, match="HTTP 423") as info:
        store.put("a/x.txt", io.BytesIO(b"second"), size=None, mime=None, create_only=False)

    assert info.value.status == 423
    assert (dav.root / "a/x.txt").read_bytes() == b"first"


def test_a_base_collection_that_does_not_exist_is_permanent(dav: DavServer) -> None:
    store = make_store(dav.url + "missing/")

    with pytest.raises(PermanentDeliveryError, match="does not exist .*check url"):
        store.put("a/x.txt", io.BytesIO(b"x"), size=None, mime=None)


def test_a_self_signed_server_needs_verify_tls_off(tmp_path: Path) -> None:
    with webdav_server.webdav_server(tmp_path / "dav", tls_folder=tmp_path) as server:
        assert server.url.startswith("https://")
        with pytest.raises(RetryableDeliveryError, match="CERTIFICATE_VERIFY_FAILED|SSL"):
            make_store(server.url).put("a/x.txt", io.BytesIO(b"x"), size=None, mime=None)
        assert not (server.root / "a/x.txt").exists()

        stored = make_store(server.url, verify_tls=False).put(
            "a/x.txt", Stream(3 * MiB), size=None, mime=None
        )

        assert stored.size == 3 * MiB
        assert (server.root / "a/x.txt").stat().st_size == 3 * MiB


def test_the_target_builds_its_store_from_the_config(dav: DavServer) -> None:
    target = build_target(
        WebDavTarget,
        "team-dav",
        url=dav.url.rstrip("/"),
        username=webdav_server.USER,
        password=webdav_server.PASSWORD,
    )

    store = target.store(delivery_context())

    assert store.base == dav.url
    assert store.needs_size is False
    assert store.put("x.txt", io.BytesIO(b"x"), size=None, mime=None).size == 1


def test_webdav_is_a_registered_storage_kind() -> None:
    assert_registered(WebDavTarget, "webdav", "storage")


# -- Nextcloud: chunked upload v2, quotas, proxies -------------------------------------


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[RunningNextcloud]:
    with nextcloud(tmp_path / "nc") as running:
        yield running


def test_a_large_file_goes_up_in_chunks_and_ends_as_one_file(cloud: RunningNextcloud) -> None:
    store = nc_store(cloud, chunked="nextcloud", chunk_threshold="20MiB")
    assert store.needs_size is True
    data = payload(25 * MiB + 123)

    digest = hashlib.sha256(data).hexdigest()

    stored = store.put(
        "team/2026/05/video.mp4",
        io.BytesIO(data),
        size=len(data),
        mime=None,
        sha256=digest,
        upload_id="gr1",
    )

    assert stored.path == "team/2026/05/video.mp4" and stored.size == len(data)
    assert stored.sha256 == digest  # read back from Nextcloud's oc:checksums
    found = store.stat("team/2026/05/video.mp4")
    assert found is not None and found.sha256 == digest
    assert (cloud.fake.files / "team/2026/05/video.mp4").read_bytes() == data
    destination = cloud.files_url + "team/2026/05/video.mp4"
    uploads = "/remote.php/dav/uploads/alice/gr1"
    [mkcol] = cloud.fake.seen("MKCOL", uploads)
    assert mkcol.headers["destination"] == destination
    chunks = cloud.fake.seen("PUT", uploads)
    assert [c.path for c in chunks] == [f"{uploads}/00001", f"{uploads}/00002", f"{uploads}/00003"]
    assert [c.length for c in chunks] == [10 * MiB, 10 * MiB, 5 * MiB + 123]
    for chunk in chunks:
        assert chunk.headers["oc-total-length"] == str(len(data))
        assert chunk.headers["destination"] == destination
        assert chunk.headers["content-length"] == str(chunk.length)
    [move] = cloud.fake.seen("MOVE")
    assert move.path == f"{uploads}/.file"
    assert move.headers["overwrite"] == "F"
    assert move.headers["destination"] == destination
    assert move.headers["oc-checksum"] == f"SHA256:{digest}"
    assert list(cloud.fake.uploads.iterdir()) == []  # Nextcloud removed the collection
    assert cloud.fake.seen("PUT", "/remote.php/dav/files/") == []


def test_below_the_threshold_nextcloud_gets_one_put_with_its_length(
    cloud: RunningNextcloud,
) -> None:
    store = nc_store(cloud, chunked="nextcloud")

    digest = hashlib.sha256(b"hello").hexdigest()

    stored = store.put(
        "a/small.txt", io.BytesIO(b"hello"), size=5, mime="text/plain", sha256=digest
    )

    assert stored.sha256 == digest
    [put] = cloud.fake.seen("PUT")
    assert put.path == "/remote.php/dav/files/alice/a/small.txt"
    assert put.headers["content-length"] == "5"
    assert put.headers["oc-checksum"] == f"SHA256:{digest}"
    assert put.headers["if-none-match"] == "*"
    assert cloud.fake.seen("MKCOL", "/remote.php/dav/uploads/") == []


def test_a_move_onto_a_file_that_appeared_meanwhile_is_already_exists(
    cloud: RunningNextcloud,
) -> None:
    store = nc_store(cloud, chunked="nextcloud", chunk_threshold="6MiB", chunk_size="5MiB")
    (cloud.fake.files / "a").mkdir()

    def other_writer(number: int) -> Response | None:
        if number == 1:
            (cloud.fake.files / "a/clip.mp4").write_bytes(b"someone else's")
        return None

    cloud.fake.on_chunk = other_writer
    data = payload(7 * MiB)

    with pytest.raises(AlreadyExists) as taken:
        store.put("a/clip.mp4", io.BytesIO(data), size=len(data), mime=None, upload_id="gr3")

    assert taken.value.existing is not None and taken.value.existing.size == 14
    assert (cloud.fake.files / "a/clip.mp4").read_bytes() == b"someone else's"
    assert [r.method for r in cloud.fake.requests][-3:] == ["MOVE", "PROPFIND", "DELETE"]
    assert list(cloud.fake.uploads.iterdir()) == []  # the abandoned chunks are gone


def test_a_permanent_failure_mid_upload_deletes_the_upload_collection(
    cloud: RunningNextcloud,
) -> None:
    store = nc_store(cloud, chunked="nextcloud", chunk_threshold="6MiB", chunk_size="5MiB")

    def full(number: int) -> Response | None:
        return (
            sabre_error(507, "InsufficientStorage", "Insufficient space") if number == 2 else None
        )

    cloud.fake.on_chunk = full
    data = payload(12 * MiB)

    with pytest.raises(PermanentDeliveryError, match="storage is full") as info:
        store.put("a/big.iso", io.BytesIO(data), size=len(data), mime=None, upload_id="gr4")

    assert info.value.status == 507
    assert "Insufficient space" in str(info.value)
    assert [r.method for r in cloud.fake.requests][-1] == "DELETE"
    assert list(cloud.fake.uploads.iterdir()) == []
    assert not (cloud.fake.files / "a/big.iso").exists()


def test_cleanup_deletes_what_an_interrupted_upload_left(cloud: RunningNextcloud) -> None:
    store = nc_store(cloud, chunked="nextcloud", chunk_threshold="6MiB", chunk_size="5MiB")
    failing = {"on": True}

    def flaky(number: int) -> Response | None:
        if number == 2 and failing["on"]:
            return sabre_error(503, "ServiceUnavailable", "System in maintenance mode.")
        return None

    cloud.fake.on_chunk = flaky
    data = payload(12 * MiB)

    with pytest.raises(RetryableDeliveryError, match="HTTP 503.*maintenance") as info:
        store.put("a/big.iso", io.BytesIO(data), size=len(data), mime=None, upload_id="gr5")
    assert type(info.value) is RetryableDeliveryError
    assert [p.name for p in cloud.fake.uploads.iterdir()] == ["gr5"]  # kept for a retry

    store.cleanup("gr5")
    assert list(cloud.fake.uploads.iterdir()) == []
    store.cleanup("gr5")  # already gone: nothing to do

    failing["on"] = False
    stored = store.put("a/big.iso", io.BytesIO(data), size=len(data), mime=None, upload_id="gr5")
    assert stored.size == len(data)
    assert (cloud.fake.files / "a/big.iso").read_bytes() == data


def test_a_retry_starts_a_leftover_upload_collection_afresh(cloud: RunningNextcloud) -> None:
    store = nc_store(cloud, chunked="nextcloud", chunk_threshold="6MiB", chunk_size="5MiB")
    leftover = cloud.fake.uploads / "gr6"
    leftover.mkdir()
    (leftover / "00001").write_bytes(b"stale")
    cloud.fake.destinations["gr6"] = cloud.files_url + "a/v.bin"
    data = payload(6 * MiB)

    store.put("a/v.bin", io.BytesIO(data), size=len(data), mime=None, upload_id="gr6")

    assert (cloud.fake.files / "a/v.bin").read_bytes() == data


def test_a_full_quota_is_permanent(tmp_path: Path) -> None:
    with nextcloud(tmp_path / "nc", quota=1000) as cloud:
        store = nc_store(cloud)

        with pytest.raises(PermanentDeliveryError, match="HTTP 507.*storage is full") as info:
            store.put("a/x.bin", Stream(2000), size=None, mime=None)

    assert info.value.status == 507


def test_a_server_that_wants_a_length_names_send_length(tmp_path: Path) -> None:
    with nextcloud(tmp_path / "nc", refuse_chunked=True) as cloud:
        with pytest.raises(PermanentDeliveryError, match="411.*send_length: true"):
            nc_store(cloud).put("a/x.bin", Stream(2000), size=None, mime=None)

        store = nc_store(cloud, send_length=True)
        assert store.needs_size is True
        store.put("a/x.bin", io.BytesIO(payload(2000)), size=2000, mime=None)

        assert (cloud.fake.files / "a/x.bin").read_bytes() == payload(2000)


def test_a_server_that_drops_chunked_bodies_is_caught_by_the_size_check(
    cloud: RunningNextcloud,
) -> None:
    cloud.fake.drop_chunked = True

    with pytest.raises(PermanentDeliveryError, match="stored 0 bytes .*send_length: true"):
        nc_store(cloud).put("a/x.bin", Stream(2000), size=None, mime=None)

    assert not (cloud.fake.files / "a/x.bin").exists()  # the empty copy is deleted
    nc_store(cloud, send_length=True).put("a/x.bin", io.BytesIO(b"abc"), size=3, mime=None)
    assert (cloud.fake.files / "a/x.bin").read_bytes() == b"abc"


def test_nextcloud_refusals_carry_its_message(cloud: RunningNextcloud) -> None:
    store = nc_store(cloud, password="not-it")

    with pytest.raises(PermanentDeliveryError, match="Username or password was incorrect"):
        store.stat("a.txt")


# -- options and PROPFIND answers ------------------------------------------------------


def test_the_uploads_collection_is_derived_from_a_nextcloud_files_url() -> None:
    options = WebDavOptions(
        url="https://cloud.example.com/remote.php/dav/files/alice/Team",
        username="alice",
        password="p",
        chunked="nextcloud",
    )
    assert options.url == "https://cloud.example.com/remote.php/dav/files/alice/Team/"
    assert options.uploads_collection == "https://cloud.example.com/remote.php/dav/uploads/alice/"
    assert "p'" not in repr(options)


def test_chunked_nextcloud_without_a_derivable_uploads_url_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="needs uploads_url"):
        WebDavOptions(
            url="https://dav.jianguoyun.com/dav/", username="a", password="p", chunked="nextcloud"
        )
    with pytest.raises(ValidationError, match="environment variable"):
        WebDavOptions(url="https://dav.example.com/", username="a", password="")


def test_a_nextcloud_sha256_checksum_is_read_from_propfind() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    body = (
        '<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
        "<d:response><d:href>/remote.php/dav/files/alice/x</d:href><d:propstat><d:prop>"
        "<d:getcontentlength>1</d:getcontentlength><d:resourcetype/>"
        f"<oc:fileid>42</oc:fileid><oc:checksums><oc:checksum>SHA1:abc MD5:def SHA256:{digest}"
        "</oc:checksum></oc:checksums></d:prop><d:status>HTTP/1.1 200 OK</d:status>"
        "</d:propstat></d:response></d:multistatus>"
    ).encode()

    assert _stored("x", body) == StoredObject(path="x", size=1, sha256=digest, id="42")


def test_a_propfind_answer_with_a_dtd_is_refused() -> None:
    body = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><d:multistatus xmlns:d="DAV:"/>'
    with pytest.raises(PermanentDeliveryError, match="DTD"):
        _stored("x", body)
