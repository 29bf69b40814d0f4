"""A Feishu Drive for the tests, faithful to open.feishu.cn's reference pages for the
calls the store makes:

- ``POST /open-apis/auth/v3/tenant_access_token/internal``: a tenant token (2 h) for
  the right app_id/app_secret, else code 10014; a revoked or unknown token on any
  other call is HTTP 400 with code 99991663.
- ``GET /open-apis/drive/v1/files?folder_token&page_size&page_token``: one level of a
  folder, ``page_size`` at most 200 (default 100), ``has_more``/``next_page_token``;
  items carry ``token``, ``name``, ``type``, ``parent_token``, ``url``,
  ``created_time`` (no size: the real listing has none).
- ``POST /open-apis/drive/v1/files/create_folder`` ``{name, folder_token}`` →
  ``{token, url}``; 1062507 when the parent holds ``max_children`` items (1,500).
- ``POST /open-apis/drive/v1/files/upload_all`` (multipart: ``file_name`` ≤ 250
  characters, ``parent_type=explorer``, ``parent_node``, ``size``, optional adler32
  ``checksum``, ``file``): 20 MB at most, no empty files; duplicate names are allowed,
  as they are in Drive.
- ``upload_prepare`` → ``{upload_id, block_size: 4 MiB, block_num}``; ``upload_part``
  (multipart ``upload_id``, ``seq`` from 0, ``size``, ``checksum``, ``file``) in order,
  each block 4 MiB but the last; ``upload_finish {upload_id, block_num}`` →
  ``{file_token}``.
- The upload calls share a limit of 5 a second for the app (create_folder has its own
  5 a second, listing 20): over it, code 1061045. Calls of one upload session that
  overlap in time are counted in ``overlaps`` (the docs forbid concurrency).

Errors are ``{"code", "msg"}`` with the HTTP status the reference gives. Folders a
test has not shared with the app answer 1061004. ``forced`` answers a path's next
calls with a given reply instead (throttling, internal errors, lost answers).
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from werkzeug import Request, Response
from werkzeug.serving import make_server

APP_ID = "cli_a1b2c3d4e5f60718"
APP_SECRET = "dsk29fHqLm3Vn8Ztw0PbXc5Re7Ya1Gu4"
ROOT = "fldcnRootShared0000000000ab"
TENANT = "https://acme.feishu.cn"
BLOCK = 4 * 1024 * 1024
UPLOAD_ALL_MAX = 20 * 1024 * 1024
LIMITS = {"upload": 5, "create_folder": 5, "list": 20}  # calls a second
UPLOAD_CALLS = {"upload_all", "upload_prepare", "upload_part", "upload_finish"}


def answer(status: int, code: int, msg: str, data: dict[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "msg": msg}
    if data is not None:
        body["data"] = data
    return Response(json.dumps(body), status, content_type="application/json; charset=utf-8")


def ok(data: dict[str, Any]) -> Response:
    return answer(200, 0, "success", data)


@dataclass
class Node:
    token: str
    name: str
    type: str  # folder | file
    parent: str | None
    created: int
    content: bytes = b""


@dataclass
class Session:
    name: str
    parent: str
    size: int
    block_num: int
    parts: dict[int, bytes] = field(default_factory=dict)
    active: int = 0


class FeishuDriveFake:
    def __init__(self, *, max_children: int = 1500) -> None:
        self.max_children = max_children
        self.nodes: dict[str, Node] = {ROOT: Node(ROOT, "shared", "folder", None, 0)}
        self.shared = {ROOT}  # folders (and their subtrees) the app may use
        self.tokens: set[str] = set()
        self.token_calls = 0
        self.sessions: dict[str, Session] = {}
        self.calls: list[tuple[str, float]] = []  # (endpoint, when)
        self.windows: dict[str, deque[float]] = {k: deque() for k in LIMITS}
        self.throttled = 0  # 1061045 answers given for going over a limit
        self.overlaps = 0  # upload-session calls that ran while another was running
        self.forced: dict[str, list[Response]] = {}
        self.after_store: dict[str, Response] = {}  # answer given after the file is kept
        self.received_parts: list[bytes] = []  # upload_part blocks, in arrival order
        self.now: Callable[[], float] = time.monotonic  # the clock of the rate limits
        self.lock = threading.Lock()
        self.counter = itertools.count(1)
        self.clock = itertools.count(1_700_000_000)

    # -- test controls ----------------------------------------------------------------

    def force(self, endpoint: str, *replies: Response) -> None:
        self.forced.setdefault(endpoint, []).extend(replies)

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def files_named(self, name: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.type == "file" and n.name == name]

    def children(self, parent: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.parent == parent]

    def path_of(self, node: Node) -> str:
        parts = []
        current: Node | None = node
        while current is not None and current.token != ROOT:
            parts.append(current.name)
            current = self.nodes.get(current.parent or "")
        return "/".join(reversed(parts))

    def count(self, endpoint: str) -> int:
        return sum(1 for name, _ in self.calls if name == endpoint)

    def add(self, parent: str, name: str, kind: str, content: bytes = b"") -> Node:
        prefix = "fldcn" if kind == "folder" else "boxcn"
        token = f"{prefix}{next(self.counter):06d}{secrets.token_hex(6)}"
        node = Node(token, name, kind, parent, next(self.clock), content)
        self.nodes[token] = node
        return node

    # -- plumbing ------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            response = self.handle(request)
        finally:
            request.close()  # the uploaded parts' temporary files
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        path = request.path
        if path == "/open-apis/auth/v3/tenant_access_token/internal":
            return self.token(request)
        prefix = "/open-apis/drive/v1/files"
        if not path.startswith(prefix):
            return answer(404, 404, "page not found")
        endpoint = path[len(prefix) :].strip("/") or "list"
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or header[7:] not in self.tokens:
            return answer(
                400,
                99991663,
                "Invalid access token for authorization. Please make "
                "a request with token attached.",
            )
        with self.lock:
            now = self.now()
            self.calls.append((endpoint, now))
            forced = self.forced.get(endpoint)
            if forced:
                return forced.pop(0)
            group = "upload" if endpoint in UPLOAD_CALLS else endpoint
            if group in self.windows and not self.admit(group, now):
                self.throttled += 1
                return answer(400, 1061045, "can retry.")
        handler = {
            "list": self.list,
            "create_folder": self.create_folder,
            "upload_all": self.upload_all,
            "upload_prepare": self.upload_prepare,
            "upload_part": self.upload_part,
            "upload_finish": self.upload_finish,
        }.get(endpoint)
        if handler is None:
            return answer(404, 404, "page not found")
        return handler(request)

    def admit(self, group: str, now: float) -> bool:
        window = self.windows[group]
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= LIMITS[group]:
            return False
        window.append(now)
        return True

    def token(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        with self.lock:
            self.token_calls += 1
        if (body.get("app_id"), body.get("app_secret")) != (APP_ID, APP_SECRET):
            return answer(400, 10014, "app secret invalid")
        token = "t-" + secrets.token_hex(16)
        self.tokens.add(token)
        return Response(
            json.dumps({"code": 0, "msg": "ok", "tenant_access_token": token, "expire": 7200}),
            200,
            content_type="application/json; charset=utf-8",
        )

    def usable(self, folder: str) -> Response | None:
        """Why the app may not use ``folder``, or None."""
        node = self.nodes.get(folder)
        if node is None or node.type != "folder":
            return answer(404, 1061003, "not found.")
        current: Node | None = node
        while current is not None:
            if current.token in self.shared:
                return None
            current = self.nodes.get(current.parent or "")
        return answer(403, 1061004, "forbidden.")

    # -- listing and folders ----------------------------------------------------------

    def list(self, request: Request) -> Response:
        folder = request.args.get("folder_token", "")
        size = int(request.args.get("page_size", "100"))
        if size > 200:
            return answer(400, 1064001, "page size out of limit.")
        refused = self.usable(folder)
        if refused:
            return refused
        items = sorted(self.children(folder), key=lambda n: (n.created, n.token))
        start = int(request.args.get("page_token") or 0)
        page = items[start : start + size]
        files = [
            {
                "token": n.token,
                "name": n.name,
                "type": n.type,
                "parent_token": folder,
                "url": f"{TENANT}/{'drive/folder' if n.type == 'folder' else 'file'}/{n.token}",
                "created_time": str(n.created),
                "modified_time": str(n.created),
                "owner_id": "ou_app",
            }
            for n in page
        ]
        data: dict[str, Any] = {"files": files, "has_more": start + size < len(items)}
        if data["has_more"]:
            data["next_page_token"] = str(start + size)
        return ok(data)

    def create_folder(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        name, parent = body.get("name"), body.get("folder_token")
        if not isinstance(name, str) or not name or not isinstance(parent, str):
            return answer(400, 1061002, "params error.")
        refused = self.usable(parent)
        if refused:
            return refused
        time.sleep(0.05)  # Drive takes a moment: room for two makers of one folder to race
        with self.lock:
            if len(self.children(parent)) >= self.max_children:
                return answer(400, 1062507, "parent node out of sibling num.")
            node = self.add(parent, name, "folder")
        return ok({"token": node.token, "url": f"{TENANT}/drive/folder/{node.token}"})

    # -- uploads ------------------------------------------------------------------------

    def upload_all(self, request: Request) -> Response:
        form, upload = request.form, request.files.get("file")
        name = form.get("file_name", "")
        if upload is None or not name or len(name) > 250 or form.get("parent_type") != "explorer":
            return answer(400, 1061002, "params error.")
        content = upload.read()
        if not form.get("size", "").isdigit() or int(form["size"]) != len(content):
            return answer(400, 1061002, "params error.")
        if not content:
            return answer(400, 1061002, "params error.")
        if len(content) > UPLOAD_ALL_MAX:
            return answer(400, 1061043, "file size beyond limit.")
        if form.get("checksum") and form["checksum"] != str(zlib.adler32(content)):
            return answer(400, 1062008, "checksum param Invalid.")
        refused = self.usable(form.get("parent_node", ""))
        if refused:
            return refused
        with self.lock:
            node = self.add(form["parent_node"], name, "file", content)
        lost = self.after_store.pop("upload_all", None)
        return lost if lost is not None else ok({"file_token": node.token})

    def upload_prepare(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        name, parent, size = body.get("file_name"), body.get("parent_node"), body.get("size")
        if not isinstance(name, str) or not name or len(name) > 250 or not isinstance(size, int):
            return answer(400, 1061002, "params error.")
        if body.get("parent_type") != "explorer":
            return answer(400, 1061002, "params error.")
        refused = self.usable(str(parent))
        if refused:
            return refused
        upload_id = str(next(self.counter) + 7_000_000_000_000_000_000)
        blocks = math.ceil(size / BLOCK)
        self.sessions[upload_id] = Session(name, str(parent), size, blocks)
        return ok({"upload_id": upload_id, "block_size": BLOCK, "block_num": blocks})

    @contextmanager
    def running(self, session: Session) -> Iterator[None]:
        with self.lock:
            session.active += 1
            if session.active > 1:
                self.overlaps += 1
        try:
            time.sleep(0.02)  # long enough for an overlapping call to be seen
            yield
        finally:
            with self.lock:
                session.active -= 1

    def upload_part(self, request: Request) -> Response:
        form, upload = request.form, request.files.get("file")
        session = self.sessions.get(form.get("upload_id", ""))
        if session is None or upload is None or not form.get("seq", "").isdigit():
            return answer(400, 1061002, "params error.")
        with self.running(session):
            seq = int(form["seq"])
            content = upload.read()
            expected = min(BLOCK, session.size - seq * BLOCK)
            if seq != len(session.parts) or seq >= session.block_num:
                return answer(400, 1061002, "params error.")  # out of order
            if form.get("size") != str(len(content)) or len(content) != expected:
                return answer(400, 1061002, "params error.")
            if form.get("checksum") and form["checksum"] != str(zlib.adler32(content)):
                return answer(400, 1062008, "checksum param Invalid.")
            session.parts[seq] = content
            self.received_parts.append(content)
        return ok({})

    def upload_finish(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        session = self.sessions.get(str(body.get("upload_id")))
        if session is None or body.get("block_num") != session.block_num:
            return answer(400, 1061002, "params error.")
        with self.running(session):
            if len(session.parts) != session.block_num:
                return answer(400, 1061002, "params error.")
            content = b"".join(session.parts[i] for i in range(session.block_num))
            with self.lock:
                node = self.add(session.parent, session.name, "file", content)
            del self.sessions[str(body.get("upload_id"))]
        return ok({"file_token": node.token})


@contextmanager
def feishu_drive(**options: Any) -> Iterator[tuple[FeishuDriveFake, str]]:
    """The fake and its base URL, on a free loopback port, one thread per request."""
    fake = FeishuDriveFake(**options)
    server = make_server("127.0.0.1", 0, fake, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
