"""``feishu_drive`` store: Feishu / Lark Drive (云空间), in a folder shared with the app.

The path's folders become nested Drive folders under ``folder_token``: each is looked
up in its parent's listing and made with ``create_folder`` when missing (one worker at
a time, under a Redis lock), and its token is cached in Redis. A file of up to 20 MB
goes up with one ``upload_all``; a larger one with ``upload_prepare``, ``upload_part``
for each 4 MB block in order (never two at once), then ``upload_finish``. Both need
the size first, so the flow spools (``needs_size``).

Drive has no create-only write: a second upload under a taken name just adds a second
file of that name. So ``put`` lists the folder first and answers ``AlreadyExists``,
and, since the listing has no sizes, the store remembers in Redis the size and SHA-256
of each file it uploads (and, before each upload, what it is about to upload). After
an upload whose answer was lost, ``stat`` finds the new file in the listing and knows
it for the one that attempt sent, so the flow records it instead of uploading twice.

Every Drive call is paced to 5 a second for the app, across workers (Drive's upload
limit, shared by the upload calls); 1061045 (too frequent) still throttles the whole
target. The tenant token is ``workers.net.feishu_auth``'s, shared by every Feishu
target of the app; it never appears in a message.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlencode

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from relay.config.models import TargetConfig
from relay.config.rates import Rate
from relay.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from relay.state import keys
from relay.state.windows import SlidingWindows
from workers.net.addresses import check_url
from workers.net.feishu_auth import FEISHU_API, TenantTokens, bearer, feishu_data, with_token
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.stream import open_stream
from workers.storage.flow import StorageTarget
from workers.storage.options import StorageOptions
from workers.storage.spec import AlreadyExists, Source, StoredObject
from workers.targets.base import DeliveryContext

MB = 1024 * 1024
UPLOAD_ALL_MAX = 20 * MB  # upload_all takes up to 20 MB; larger files go in blocks
PAGE_SIZE = 200  # the listing's largest page
PACE = Rate(limit=5, per=1)  # Drive's upload calls: 5 a second for the app
PACE_WAIT = 30.0  # seconds a call waits for a slot before the attempt is retried
FOLDER_TTL = 24 * 3600  # seconds a folder token is cached (a deleted folder is noticed)
LOCK_WAIT = 10.0  # seconds a worker waits for another to make the same folder
ANSWER_LIMIT = 64 * 1024

# Feishu codes the store explains (the rest: ``feishu_error``'s reading of the code).
ADVICE = {
    1061002: "a parameter was refused: check folder_token, share the folder with the app, "
    "and keep file names within 250 characters",
    1061004: "the app may not write there: share the folder with the app (add the app's "
    "bot as a collaborator who can edit), or check folder_token",
    1061043: "the file is larger than this tenant's Drive accepts",
    1062507: "the folder is full (1,500 items per level): shard the path by month, "
    "e.g. {occurred_at:%Y/%m}/{file.name}",
}
GONE = frozenset({1061003, 1061007, 1061044})  # not found / deleted / parent node missing
BUSY = frozenset({1061001, 1061006, 1061021})  # internal error, internal timeout, expired

T = TypeVar("T")


class FolderGone(PermanentDeliveryError):
    """Drive says a folder is not there (deleted, or never shared with the app)."""


class FeishuDriveOptions(StorageOptions):
    """What a ``feishu_drive`` target adds to the options every store has."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    app_id: str = Field(min_length=1, description="The app's App ID (cli_…).")
    app_secret: str = Field(repr=False, description="The app's App Secret.")
    folder_token: str = Field(
        min_length=1, description="The Drive folder shared with the app (from its URL)."
    )
    api_base: str = FEISHU_API
    web_base: str | None = Field(
        None, description="The tenant's web address (https://acme.feishu.cn), for links."
    )

    @field_validator("app_secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if not value:
            raise ValueError("app_secret is empty (is its environment variable set?)")
        return value

    @field_validator("api_base", "web_base")
    @classmethod
    def _base(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        context = info.context if isinstance(info.context, dict) else {}
        check_url(value, allow_private=bool(context.get("allow_private", True)))
        return value.rstrip("/")


class FeishuDriveTarget(StorageTarget):
    """Stores each file of an event in a Feishu Drive folder."""

    kind: ClassVar[str] = "feishu_drive"
    Options: ClassVar[type[FeishuDriveOptions]] = FeishuDriveOptions
    default_rate_limits: ClassVar[tuple[str, ...]] = ("5/s", "10000/day")

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, FeishuDriveOptions):
            options = FeishuDriveOptions.model_validate(options or {})
        try:
            check_url(options.api_base, config.allow_private)
        except ValueError as exc:
            raise ConfigError([f"targets.{config.id}.api_base: {exc}"]) from None
        self.options: FeishuDriveOptions = options
        self.tokens = TenantTokens(
            options.api_base, options.app_id, options.app_secret, config.allow_private
        )

    def store(self, context: DeliveryContext) -> FeishuDriveStore:
        api = DriveApi(
            self.options.api_base,
            self.tokens,
            state=context.state,
            allow_private=self.config.allow_private,
            timeout=self.config.timeout or context.timeout,
            pace_key=_pace_key(self.options.api_base, self.options.app_id),
        )
        return FeishuDriveStore(self.options, api, retention=context.retention)


@dataclass(frozen=True)
class Entry:
    """One item of a folder's listing."""

    token: str
    name: str
    type: str
    url: str | None
    created: int  # seconds; 0 when the listing does not say


class FeishuDriveStore:
    """One Drive folder tree, as the storage flow uses it."""

    needs_size: bool = True  # upload_all and upload_prepare take the size first
    max_segment: int = 250  # file_name: at most 250 characters (bytes keep it safe)
    max_path: int = 4000
    windows_names: bool = False

    def __init__(self, options: FeishuDriveOptions, api: DriveApi, *, retention: float) -> None:
        self.options = options
        self.api = api
        self.memo = api.memo
        self.retention = int(retention)
        self.root = options.folder_token

    # -- the Store protocol --------------------------------------------------------

    def stat(self, path: str) -> StoredObject | None:
        folders, name = _split(path)
        with self.fresh_folders(folders):
            parent = self.folder(folders, create=False)
            if parent is None:
                return None
            return self.find(path, parent, name)

    def put(
        self,
        path: str,
        data: Source,
        *,
        size: int | None,
        mime: str | None,
        sha256: str | None = None,
        create_only: bool = True,
        upload_id: str | None = None,
    ) -> StoredObject:
        if size is None:  # the flow spools for stores that need the size: a bug
            raise PermanentDeliveryError("Feishu Drive needs the file's size before uploading")
        if size == 0:
            raise PermanentDeliveryError(f"{path}: Feishu Drive does not take empty files")
        folders, name = _split(path)
        with self.fresh_folders(folders):
            parent = self.folder(folders, create=True)
            assert parent is not None
            same_name = self.named(parent, name)
        if create_only and same_name:
            found = self.find(path, parent, name, listing=same_name)
            raise AlreadyExists(path, existing=found)
        # Before the bytes go: what this upload is, and which files already had its name.
        pending = _pending_key(self.api.base, parent, name)
        intent = {"size": size, "sha256": sha256, "before": [e.token for e in same_name]}
        self.memo.set(pending, json.dumps(intent), self.retention)
        if size <= UPLOAD_ALL_MAX:
            token = self.api.upload_all(path, name, parent, data, size)
        else:
            token = self.api.upload_blocks(path, name, parent, data, size)
        self.remember(token, size, sha256)
        self.memo.delete(pending)
        return StoredObject(path=path, size=size, sha256=sha256, url=self.web_url(token), id=token)

    def link(self, obj: StoredObject, lifetime: float) -> str | None:
        """The file's page in Feishu (only people it is shared with can open it)."""
        return obj.url or (self.web_url(obj.id) if obj.id else None)

    def cleanup(self, upload_id: str, path: str | None = None) -> None:
        """Nothing to do: Drive drops an unfinished block upload after 24 hours."""

    # -- files -----------------------------------------------------------------------

    def named(self, parent: str, name: str) -> list[Entry]:
        return [e for e in self.api.listing(parent) if e.name == name and e.type == "file"]

    def find(
        self, path: str, parent: str, name: str, listing: list[Entry] | None = None
    ) -> StoredObject | None:
        """The newest file called ``name`` in ``parent``, with its size and hash when
        this store uploaded it (or was uploading it when its answer was lost)."""
        entries = self.named(parent, name) if listing is None else listing
        if not entries:
            return None
        raw = self.memo.get(_pending_key(self.api.base, parent, name))
        intent = _json(raw) if raw else None
        if intent is not None:
            before = set(intent.get("before") or [])
            new = [e for e in entries if e.token not in before]
            entries = new or entries
        else:
            new = []
        entry = max(entries, key=lambda e: e.created)
        known = _json(self.memo.get(_file_key(self.api.base, entry.token)) or "{}") or {}
        if not known and intent is not None and entry in new:
            known = {"size": intent.get("size"), "sha256": intent.get("sha256")}
            self.remember(entry.token, known["size"], known["sha256"])
        size = known.get("size")
        digest = known.get("sha256")
        return StoredObject(
            path=path,
            size=size if isinstance(size, int) else None,
            sha256=digest if isinstance(digest, str) else None,
            url=entry.url or self.web_url(entry.token),
            id=entry.token,
        )

    def remember(self, token: str, size: int | None, sha256: str | None) -> None:
        record = json.dumps({"size": size, "sha256": sha256})
        self.memo.set(_file_key(self.api.base, token), record, self.retention)

    def web_url(self, token: str) -> str | None:
        return f"{self.options.web_base}/file/{token}" if self.options.web_base else None

    # -- folders ---------------------------------------------------------------------

    @contextmanager
    def fresh_folders(self, segments: list[str]) -> Iterator[None]:
        """A cached folder someone deleted: forget the cache, look again next attempt."""
        try:
            yield
        except FolderGone as gone:
            if not segments:
                raise
            for depth in range(1, len(segments) + 1):
                self.memo.delete(_folder_key(self.api.base, self.root, "/".join(segments[:depth])))
            raise RetryableDeliveryError(
                f"{gone.message}; its cached token is forgotten and it is looked up again",
                status=gone.status,
                excerpt=gone.excerpt,
            ) from None

    def folder(self, segments: list[str], *, create: bool) -> str | None:
        """The token of the folder ``segments`` names under the root; made when missing
        and ``create``, else None."""
        token = self.root
        for depth, name in enumerate(segments, start=1):
            key = _folder_key(self.api.base, self.root, "/".join(segments[:depth]))
            cached = self.memo.get(key)
            if cached:
                token = cached
                continue
            parent = token
            if create:
                with self.memo.lock(key, wait=LOCK_WAIT):
                    token = self.memo.get(key) or self.subfolder(parent, name, create=True) or ""
            else:
                token = self.subfolder(parent, name, create=False) or ""
            if not token:
                return None
            self.memo.set(key, token, FOLDER_TTL)
        return token

    def subfolder(self, parent: str, name: str, *, create: bool) -> str | None:
        for entry in self.api.listing(parent):
            if entry.type == "folder" and entry.name == name:
                return entry.token
        return self.api.create_folder(parent, name) if create else None


class DriveApi:
    """The Drive calls the store makes: paced, with the tenant token, errors typed."""

    def __init__(
        self,
        base: str,
        tokens: TenantTokens,
        *,
        state: Any,
        allow_private: bool,
        timeout: float,
        pace_key: str,
    ) -> None:
        self.base = base
        self.tokens = tokens
        self.state = state
        self.allow_private = allow_private
        self.timeout = timeout
        self.memo = Memo(state)
        self.pace_key = pace_key
        self.windows = SlidingWindows(state) if state is not None else None

    # -- calls -----------------------------------------------------------------------

    def listing(self, folder: str) -> list[Entry]:
        entries: list[Entry] = []
        page: str | None = None
        while True:
            params = {"folder_token": folder, "page_size": str(PAGE_SIZE)}
            if page:
                params["page_token"] = page
            url = f"{self.base}/open-apis/drive/v1/files?{urlencode(params)}"
            data = self.json_call("GET", url, None, "Feishu Drive refused to list a folder")
            for item in data.get("files") or []:
                if isinstance(item, dict) and item.get("token") and item.get("name") is not None:
                    entries.append(_entry(item))
            page = data.get("next_page_token") or None
            if not data.get("has_more") or not page:
                return entries

    def create_folder(self, parent: str, name: str) -> str:
        url = f"{self.base}/open-apis/drive/v1/files/create_folder"
        body = {"name": name, "folder_token": parent}
        data = self.json_call("POST", url, body, f"Feishu Drive refused to make folder {name}")
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise RetryableDeliveryError("Feishu Drive made a folder but sent no token")
        return token

    def upload_all(self, path: str, name: str, parent: str, data: Source, size: int) -> str:
        fields = {
            "file_name": name,
            "parent_type": "explorer",
            "parent_node": parent,
            "size": str(size),
        }
        start = _tell(data)

        def once(token: str) -> dict[str, Any]:
            _rewind(data, start)
            return self.form_call(
                "upload_all", fields, name, _exactly(data, size), size, token, path
            )

        answer = self.authorised(once)
        return _file_token(answer, path)

    def upload_blocks(self, path: str, name: str, parent: str, data: Source, size: int) -> str:
        """upload_prepare, every block in order, upload_finish."""
        prepared = self.json_call(
            "POST",
            f"{self.base}/open-apis/drive/v1/files/upload_prepare",
            {"file_name": name, "parent_type": "explorer", "parent_node": parent, "size": size},
            f"Feishu Drive refused to begin the upload of {path}",
        )
        upload = prepared.get("upload_id")
        block_size, block_num = prepared.get("block_size"), prepared.get("block_num")
        if not (isinstance(upload, str) and isinstance(block_size, int) and block_size > 0):
            raise RetryableDeliveryError("Feishu Drive's upload_prepare answer is incomplete")
        if not isinstance(block_num, int) or block_num != -(-size // block_size):
            raise RetryableDeliveryError("Feishu Drive's upload_prepare answer is inconsistent")
        for seq in range(block_num):
            block = _read_exactly(data, min(block_size, size - seq * block_size))
            fields = {
                "upload_id": upload,
                "seq": str(seq),
                "size": str(len(block)),
                "checksum": str(zlib.adler32(block)),
            }

            def part(token: str, fields: dict[str, str] = fields, block: bytes = block) -> Any:
                return self.form_call("upload_part", fields, name, [block], len(block), token, path)

            self.authorised(part)
        finished = self.json_call(
            "POST",
            f"{self.base}/open-apis/drive/v1/files/upload_finish",
            {"upload_id": upload, "block_num": block_num},
            f"Feishu Drive refused to finish the upload of {path}",
        )
        return _file_token(finished, path)

    # -- plumbing ----------------------------------------------------------------------

    def authorised(self, call: Callable[[str], T]) -> T:
        """``call(token)``, once more with a fresh token if Feishu refuses the first."""
        try:
            return with_token(self.tokens, self.state, self.timeout, call)
        except DeliveryError as exc:
            raise _advised(exc) from None

    def json_call(self, method: str, url: str, body: Any, what: str) -> dict[str, Any]:
        def once(token: str) -> dict[str, Any]:
            self.pace()
            answer = send(
                guarded_pool(self.allow_private),
                method,
                url,
                timeout=self.timeout,
                data=None if body is None else json.dumps(body, ensure_ascii=False).encode(),
                headers={**bearer(token), "Content-Type": "application/json; charset=utf-8"},
            )
            return feishu_data(answer, what, busy=BUSY)

        return self.authorised(once)

    def form_call(
        self,
        endpoint: str,
        fields: dict[str, str],
        file_name: str,
        chunks: Any,
        size: int,
        token: str,
        path: str,
    ) -> dict[str, Any]:
        """A multipart/form-data POST whose file part streams from ``chunks``."""
        boundary = "relay" + secrets.token_hex(16)
        head, tail = _form(fields, file_name, boundary)
        self.pace()
        with open_stream(
            "POST",
            f"{self.base}/open-apis/drive/v1/files/{endpoint}",
            timeout=self.timeout,
            allow_private=self.allow_private,
            headers={
                **bearer(token),
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            data=_joined(head, chunks, tail),
            length=len(head) + size + len(tail),
        ) as stream:
            answer: HttpAnswer = stream.answer(ANSWER_LIMIT)
        return feishu_data(answer, f"Feishu Drive refused {endpoint} of {path}", busy=BUSY)

    def pace(self) -> None:
        """Wait for a slot in the app's 5-a-second window, shared by every worker."""
        if self.windows is None:
            return
        deadline = time.monotonic() + PACE_WAIT
        while True:
            wait = self.windows.acquire(lambda _i: self.pace_key, [PACE])
            if wait <= 0:
                return
            if time.monotonic() + wait > deadline:
                raise RetryableDeliveryError(
                    "Feishu Drive is busy with this app's other uploads", retry_after=1.0
                )
            time.sleep(wait)


class Memo:
    """Strings in Redis with a lifetime (in the process when there is no Redis)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.local: dict[str, tuple[str, float]] = {}

    def get(self, key: str) -> str | None:
        if self.state is None:
            value, until = self.local.get(key, ("", 0.0))
            return value if until > time.monotonic() else None
        raw = self.state.get(key)
        return raw.decode() if isinstance(raw, bytes) else raw

    def set(self, key: str, value: str, ttl: int) -> None:
        if self.state is None:
            self.local[key] = (value, time.monotonic() + ttl)
        else:
            self.state.set(key, value, ex=max(1, ttl))

    def delete(self, key: str) -> None:
        if self.state is None:
            self.local.pop(key, None)
        else:
            self.state.delete(key)

    @contextmanager
    def lock(self, key: str, *, wait: float) -> Iterator[None]:
        """Held by one worker at a time (``SET NX``), or by nobody after ``wait`` s."""
        if self.state is None:
            yield
            return
        name, mine = f"{key}:lock", secrets.token_hex(8)
        deadline = time.monotonic() + wait
        locked = self.state.set(name, mine, nx=True, px=int(wait * 1000))
        while not locked and time.monotonic() < deadline:
            time.sleep(0.05)
            locked = self.state.set(name, mine, nx=True, px=int(wait * 1000))
        try:
            yield
        finally:
            if locked and self.get(name) == mine:
                self.state.delete(name)


# -- helpers --------------------------------------------------------------------------


def _advised(error: DeliveryError) -> DeliveryError:
    """Feishu's refusal, with what to do about the codes a Drive user meets."""
    if not isinstance(error, PermanentDeliveryError):
        return error
    for code, advice in ADVICE.items():
        if f"Feishu code {code}" in error.message:
            return PermanentDeliveryError(
                f"{error.message}; {advice}", status=error.status, excerpt=error.excerpt
            )
    for code in GONE:
        if f"Feishu code {code}" in error.message:
            return FolderGone(
                f"{error.message}; the folder is gone: check folder_token",
                status=error.status,
                excerpt=error.excerpt,
            )
    return error


def _form(fields: dict[str, str], file_name: str, boundary: str) -> tuple[bytes, bytes]:
    """The multipart/form-data text before and after the file's bytes."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
        for key, value in fields.items()
    ]
    shown = file_name.replace("\\", "\\\\").replace('"', '\\"')
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{shown}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return "".join(parts).encode(), f"\r\n--{boundary}--\r\n".encode()


def _joined(head: bytes, chunks: Any, tail: bytes) -> Iterator[bytes]:
    yield head
    yield from chunks
    yield tail


def _exactly(data: Source, size: int, chunk: int = MB) -> Iterator[bytes]:
    """``size`` bytes of ``data`` in chunks; fewer is an error (the length was sent)."""
    left = size
    while left > 0:
        piece = data.read(min(chunk, left))
        if not piece:
            raise RetryableDeliveryError(f"the file ended {left} bytes short of its size")
        left -= len(piece)
        yield piece


def _read_exactly(data: Source, size: int) -> bytes:
    return b"".join(_exactly(data, size))


def _tell(data: Source) -> int | None:
    tell = getattr(data, "tell", None)
    return tell() if callable(tell) else None


def _rewind(data: Source, start: int | None) -> None:
    """Back to where the upload began (a second try after a refused token)."""
    seek = getattr(data, "seek", None)
    if start is not None and callable(seek):
        seek(start)


def _file_token(data: dict[str, Any], path: str) -> str:
    token = data.get("file_token")
    if not isinstance(token, str) or not token:
        raise RetryableDeliveryError(f"Feishu Drive took {path} but sent no file token")
    return token


def _entry(item: dict[str, Any]) -> Entry:
    created = item.get("created_time")
    return Entry(
        token=str(item["token"]),
        name=str(item["name"]),
        type=str(item.get("type") or ""),
        url=item.get("url") if isinstance(item.get("url"), str) else None,
        created=int(created) if isinstance(created, str | int) and str(created).isdigit() else 0,
    )


def _split(path: str) -> tuple[list[str], str]:
    parts = [part for part in path.split("/") if part]
    return parts[:-1], parts[-1]


def _json(raw: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw or "")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _pace_key(base: str, app_id: str) -> str:
    """ZSET: the app's Drive calls in the last second (a sliding window)."""
    return keys.feishu_drive_pace(_digest(base, app_id))


def _folder_key(base: str, root: str, folders: str) -> str:
    """STRING: a subfolder's token, by digest of API base, root folder and its path."""
    return keys.feishu_folder(_digest(base, root, folders))


def _file_key(base: str, token: str) -> str:
    """STRING (JSON): size and SHA-256 of a file this store uploaded."""
    return keys.feishu_file(_digest(base, token))


def _pending_key(base: str, parent: str, name: str) -> str:
    """STRING (JSON): an upload under way to ``parent/name``: its size and SHA-256, and
    the tokens of the files that had the name before it."""
    return keys.feishu_pending(_digest(base, parent, name))
