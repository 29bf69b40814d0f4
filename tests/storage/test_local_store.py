"""The ``local`` store on real folders: create-only under a race, escapes refused, files
flushed and permissioned, temporary files cleaned up."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError
from pytest_httpserver import HTTPServer

from relay.config.models import SourceConfig
from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef
from relay.intake.sources.standard_webhooks import StandardWebhooksOptions
from tests.workers.support import assert_registered, build_target, delivery_context
from workers.storage.local import TMP_PREFIX, LocalOptions, LocalStore, LocalTarget
from workers.storage.spec import AlreadyExists, StoredObject


class Bytes:
    def __init__(self, data: bytes, chunk: int = 1 << 16) -> None:
        self.data = data
        self.chunk = chunk

    def read(self, n: int = -1) -> bytes:
        n = min(self.chunk, len(self.data) if n < 0 else n)
        out, self.data = self.data[:n], self.data[n:]
        return out


class Broken:
    """A download that fails after ``after`` bytes."""

    def __init__(self, after: int) -> None:
        self.left = after

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            raise RetryableDeliveryError("the download stalled")
        take = min(self.left, 1000 if n < 0 else n)
        self.left -= take
        return b"y" * take


def store_in(root: Path, **options: Any) -> LocalStore:
    target = build_target(LocalTarget, "nas", root=str(root), **options)
    return target.store(delivery_context())


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(f"{TMP_PREFIX}*"))


def test_registered_as_a_storage_target() -> None:
    assert_registered(LocalTarget, "local", "storage")


def test_a_file_lands_whole_with_its_permissions(tmp_path: Path) -> None:
    store = store_in(tmp_path, mode="0600")
    body = os.urandom(3 * 1024 * 1024 + 5)
    stored = store.put("ops/2026/03/photo.jpg", Bytes(body), size=None, mime=None, upload_id="gr1")
    digest = hashlib.sha256(body).hexdigest()
    assert stored == StoredObject(path="ops/2026/03/photo.jpg", size=len(body), sha256=digest)
    final = tmp_path / "ops" / "2026" / "03" / "photo.jpg"
    assert final.read_bytes() == body
    assert stat.S_IMODE(final.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ops").stat().st_mode) == 0o700
    assert leftovers(tmp_path) == []
    found = store.stat("ops/2026/03/photo.jpg")
    assert found is not None and (found.size, found.sha256) == (len(body), digest)
    assert store.stat("ops/2026/03/other.jpg") is None
    assert store.link(stored, 3600) is None


def test_the_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        store_in(tmp_path, mode=0o644).put("d/a.txt", Bytes(b"a"), size=1, mime=None)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d" / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_a_taken_path_is_already_exists(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.put("a.txt", Bytes(b"first"), size=5, mime=None)
    with pytest.raises(AlreadyExists) as taken:
        store.put("a.txt", Bytes(b"second!"), size=7, mime=None, upload_id="gr2")
    existing = taken.value.existing
    assert existing is not None and existing.size == 5
    assert existing.sha256 == hashlib.sha256(b"first").hexdigest()
    assert (tmp_path / "a.txt").read_bytes() == b"first"
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_atomically(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.put("a.txt", Bytes(b"first"), size=5, mime=None)
    stored = store.put("a.txt", Bytes(b"second"), size=6, mime=None, create_only=False)
    assert stored.size == 6 and (tmp_path / "a.txt").read_bytes() == b"second"


def test_two_workers_racing_for_one_path_end_with_one_file(tmp_path: Path) -> None:
    """Both write their whole file first, then both try to take the name at once."""
    store = store_in(tmp_path)
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    class Racing(Bytes):
        def read(self, n: int = -1) -> bytes:
            data = super().read(n)
            if not data:
                barrier.wait(timeout=10)  # both at the end of their body, about to link
            return data

    def run(name: str, body: bytes) -> None:
        try:
            results[name] = store.put("race/x.bin", Racing(body), size=None, mime=None)
        except AlreadyExists as exc:
            results[name] = exc

    threads = [
        threading.Thread(target=run, args=(name, name.encode() * 1000)) for name in ("a", "b")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    won = [name for name, r in results.items() if isinstance(r, StoredObject)]
    lost = [r for r in results.values() if isinstance(r, AlreadyExists)]
    assert len(won) == 1 and len(lost) == 1
    assert (tmp_path / "race" / "x.bin").read_bytes() == won[0].encode() * 1000
    assert lost[0].existing is not None and lost[0].existing.size == 1000
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/x", "a/../../b", "a//b", "./a"])
def test_paths_that_are_not_below_root_are_refused(tmp_path: Path, path: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(PermanentDeliveryError, match="not a relative path below root"):
        store_in(root).put(path, Bytes(b"x"), size=1, mime=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_a_symlinked_folder_cannot_lead_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    store = store_in(root)
    with pytest.raises(PermanentDeliveryError, match="leads outside root"):
        store.put("escape/deep/x.txt", Bytes(b"x"), size=1, mime=None)
    with pytest.raises(PermanentDeliveryError, match="leads outside root"):
        store.stat("escape/x.txt")
    assert list(outside.iterdir()) == []  # not even a folder was made there
    assert leftovers(root) == []


def test_a_symlinked_file_name_cannot_lead_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("keep")
    (root / "x.txt").symlink_to(secret)
    with pytest.raises(PermanentDeliveryError, match="leads outside root"):
        store_in(root).put("x.txt", Bytes(b"new"), size=3, mime=None, create_only=False)
    assert secret.read_text() == "keep"


def test_a_symlink_inside_root_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    store_in(tmp_path).put("alias/a.txt", Bytes(b"a"), size=1, mime=None)
    assert (tmp_path / "real" / "a.txt").read_bytes() == b"a"


def test_a_file_where_a_folder_should_be(tmp_path: Path) -> None:
    (tmp_path / "ops").write_text("i am a file")
    with pytest.raises(PermanentDeliveryError, match="ops is a file, not a folder"):
        store_in(tmp_path).put("ops/a.txt", Bytes(b"a"), size=1, mime=None)


def test_a_folder_at_the_path_is_taken(tmp_path: Path) -> None:
    (tmp_path / "a.txt").mkdir()
    store = store_in(tmp_path)
    with pytest.raises(AlreadyExists):
        store.put("a.txt", Bytes(b"a"), size=1, mime=None)
    with pytest.raises(AlreadyExists):
        store.put("a.txt", Bytes(b"a"), size=1, mime=None, create_only=False)
    assert leftovers(tmp_path) == []


def test_a_failed_download_leaves_nothing(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    with pytest.raises(RetryableDeliveryError, match="stalled"):
        store.put("a/b.bin", Broken(after=5000), size=None, mime=None, upload_id="gr3")
    assert leftovers(tmp_path) == [] and not (tmp_path / "a" / "b.bin").exists()


def test_cleanup_removes_only_that_uploads_temporary_files(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    mine = tmp_path / f"{TMP_PREFIX}gr5-{'a' * 32}"
    other = tmp_path / f"{TMP_PREFIX}gr6-{'b' * 32}"
    lookalike = tmp_path / f"{TMP_PREFIX}gr5-notours"
    for path in (mine, other, lookalike):
        path.write_bytes(b"partial")
    store.cleanup("gr5")
    assert not mine.exists() and other.exists() and lookalike.exists()


def test_fsync_flushes_file_and_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``fsync`` each file is flushed before it gets its name, and each folder that
    got a new entry after; without it nothing is."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store_in(tmp_path).put("new/dir/a.txt", Bytes(b"a"), size=1, mime=None, upload_id="gr8")
    root = str(tmp_path)
    assert synced[-1] == f"{root}/new/dir"  # the file's own name is durable
    assert f"{root}/new" in synced and root in synced  # and the folders made for it
    tmp_writes = [s for s in synced if TMP_PREFIX in s]
    assert len(tmp_writes) == 1  # the data, before the link
    assert synced.index(tmp_writes[0]) < synced.index(f"{root}/new/dir")
    synced.clear()
    store_in(tmp_path, fsync=False).put("new/dir/b.txt", Bytes(b"b"), size=1, mime=None)
    assert synced == []


def test_without_hard_links_the_name_is_claimed_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some SMB mounts have no hard links: O_EXCL claims the name, the file replaces it."""

    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "link", no_links)
    store = store_in(tmp_path)
    store.put("a.txt", Bytes(b"first"), size=5, mime=None)
    assert (tmp_path / "a.txt").read_bytes() == b"first"
    with pytest.raises(AlreadyExists):
        store.put("a.txt", Bytes(b"second"), size=6, mime=None)
    assert (tmp_path / "a.txt").read_bytes() == b"first"
    assert leftovers(tmp_path) == []


def test_a_full_disk_is_retryable_and_a_read_only_one_permanent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def full(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(RetryableDeliveryError, match="No space left on device"):
        store_in(tmp_path).put("a.txt", Bytes(b"a"), size=1, mime=None)
    monkeypatch.setattr(os, "write", real_write)
    assert leftovers(tmp_path) == []
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(PermanentDeliveryError, match="Permission denied"):
                store_in(locked).put("a.txt", Bytes(b"a"), size=1, mime=None)
        finally:
            locked.chmod(0o700)


def test_store_limits_follow_the_root(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    assert (store.max_segment, store.windows_names, store.needs_size) == (255, True, False)
    assert store.max_path == 4096 - 1 - len(os.fsencode(tmp_path)) - 1


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"root": "/nonexistent/share"}, "does not exist"),
        ({"root": ""}, "an existing folder is required"),
        ({"mode": "0o999"}, "octal"),
        ({"mode": 640}, "octal"),
        ({"mode": "0444"}, "read and write"),
        ({"path": "{file.nam}"}, "unknown field"),
    ],
)
def test_option_problems(tmp_path: Path, values: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        LocalOptions.model_validate({"root": str(tmp_path), **values})


def test_root_must_be_a_folder_and_may_be_relative(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_text("x")
    with pytest.raises(ValidationError, match="is not a folder"):
        LocalOptions.model_validate({"root": str(file)})
    (tmp_path / "share").mkdir()
    relative = LocalOptions.model_validate({"root": "share"}, context={"base_dir": tmp_path})
    assert relative.root == (tmp_path / "share").resolve()
    assert LocalOptions.model_validate({"root": str(tmp_path), "mode": 0o640}).mode == 0o640


# -- through the shared flow --------------------------------------------------------------


def test_files_shared_in_a_group_land_once_through_the_flow(
    tmp_path: Path, httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    """The whole storage delivery on loopback: the file is fetched from its URL, its
    hostile name kept to one segment, and a second delivery of the same bytes finds
    them in place (``skip_same``) while different bytes get the next free name."""
    content = b"%PDF-1.7\n" + os.urandom(300_000)
    httpserver.expect_request("/f/1").respond_with_data(content, content_type="application/pdf")
    httpserver.expect_request("/f/2").respond_with_data(b"other bytes")
    source = SourceConfig(
        id="uploads",
        kind="standard_webhooks",
        options=StandardWebhooksOptions.model_validate(
            {"secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], "allow_private": True}
        ),
    )
    nas = build_target(LocalTarget, "nas", root=str(tmp_path), path="{group.name}/{file.name}")

    def deliver(delivery_id: str, url: str) -> dict[str, Any]:
        files = [FileRef(name="../../report.pdf", url=httpserver.url_for(url))]
        context = delivery_context(delivery_id, type="file.shared", files=files, state=redis_client)
        context = replace(context, source=source, source_kind="standard_webhooks")
        result = nas.deliver(context)
        entry: dict[str, Any] = json.loads(result.excerpt or "{}")["stored"][0]
        return entry

    first = deliver("dlv_1", "/f/1")
    assert first["path"] == "Ops room/.._.._report.pdf" and first["mime"] == "application/pdf"
    assert first["sha256"] == hashlib.sha256(content).hexdigest()
    assert (tmp_path / "Ops room" / ".._.._report.pdf").read_bytes() == content
    assert deliver("dlv_2", "/f/1")["path"] == first["path"]  # the same bytes: already there
    assert deliver("dlv_3", "/f/2")["path"] == "Ops room/.._.._report (2).pdf"
    assert sorted(p.name for p in (tmp_path / "Ops room").iterdir()) == [
        ".._.._report (2).pdf",
        ".._.._report.pdf",
    ]
    assert leftovers(tmp_path) == []
