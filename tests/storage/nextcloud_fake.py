"""A small Nextcloud for the tests: the WebDAV files tree of one user and the chunked
upload v2 collection, as docs.nextcloud.com describes them
(server/latest/developer_manual/client_apis/WebDAV/chunking.html).

- ``/remote.php/dav/files/<user>/…``: ``PUT`` (Content-Length or chunked; ``If-None-Match:
  *`` → 412 when the file exists; 409 when the parent collection is missing; 507 over
  the quota), ``MKCOL`` (201, 405 when it exists, 409 when the parent is missing),
  ``PROPFIND`` Depth 0 (207 with ``getcontentlength``, ``getetag``, ``resourcetype``,
  ``oc:fileid``), ``DELETE``.
- ``/remote.php/dav/uploads/<user>/<id>``: ``MKCOL`` with a ``Destination`` header (400
  without one, 405 when the id is in use); ``PUT <id>/<n>`` for n in 1…10000 with the
  same ``Destination`` and ``OC-Total-Length``; ``MOVE <id>/.file`` to the
  ``Destination``: the chunks assembled in name order, every chunk but the last at
  least 5 MiB, their total equal to ``OC-Total-Length``, 412 with ``Overwrite: F``
  when the file exists; then the upload collection is gone. ``DELETE <id>`` aborts.

Refusals carry Sabre's XML error body (``<s:exception>``, ``<s:message>``), as
Nextcloud's do. Every request is noted with its headers.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

from werkzeug import Request, Response
from werkzeug.serving import make_server

USER = "alice"
PASSWORD = "nc-app-pass-Hs82Kq0Zr5"
MIN_CHUNK = 5 * 1024 * 1024
MAX_CHUNKS = 10000


@dataclass(frozen=True)
class Noted:
    method: str
    path: str
    headers: dict[str, str]
    length: int  # bytes of the body received


def sabre_error(status: int, exception: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns">\n'
        f"  <s:exception>Sabre\\DAV\\Exception\\{exception}</s:exception>\n"
        f"  <s:message>{escape(message)}</s:message>\n"
        "</d:error>\n"
    )
    return Response(body, status, content_type="application/xml; charset=utf-8")


class NextcloudFake:
    """The WSGI app. ``files`` and ``uploads`` are real folders under ``root``."""

    def __init__(self, root: Path, *, quota: int | None = None, refuse_chunked: bool = False):
        self.files = root / "files"
        self.uploads = root / "uploads"
        self.files.mkdir(parents=True, exist_ok=True)
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.quota = quota
        self.refuse_chunked = refuse_chunked  # a proxy that wants Content-Length (411)
        self.drop_chunked = False  # PHP behind mod_fcgid: a chunked body arrives empty
        self.requests: list[Noted] = []
        self.destinations: dict[str, str] = {}  # upload id -> Destination given at MKCOL
        self.checksums: dict[str, str] = {}  # path -> the OC-Checksum its writer sent
        self.on_chunk: Callable[[int], Response | None] | None = None  # hook per chunk PUT
        self.lock = threading.Lock()
        self.base = ""  # set once the server listens: http://127.0.0.1:port

    # -- plumbing -------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        body = b""
        if request.method in ("PUT", "PROPFIND", "MKCOL"):
            body = request.get_data(cache=False)
            if self.drop_chunked and "Content-Length" not in request.headers:
                body = b""
        self.requests.append(
            Noted(
                request.method, request.path, {k.lower(): v for k, v in request.headers}, len(body)
            )
        )
        response = self.handle(request, body)
        return response(environ, start_response)

    def seen(self, method: str, prefix: str = "") -> list[Noted]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def handle(self, request: Request, body: bytes) -> Response:
        if not self.authorised(request):
            return sabre_error(
                401,
                "NotAuthenticated",
                "No public access to this resource., Username or password was incorrect",
            )
        path = unquote(request.path)
        files = re.match(rf"^/remote\.php/dav/files/{USER}(/.*)?$", path)
        if files:
            return self.on_files(request, (files.group(1) or "/"), body)
        uploads = re.match(rf"^/remote\.php/dav/uploads/{USER}/([^/]+)(?:/([^/]*))?/?$", path)
        if uploads:
            return self.on_uploads(request, uploads.group(1), uploads.group(2) or "", body)
        return sabre_error(404, "NotFound", f"File not found: {path}")

    def authorised(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return (user, password) == (USER, PASSWORD)

    def local(self, path: str) -> Path:
        parts = [p for p in path.split("/") if p]
        assert ".." not in parts
        return self.files.joinpath(*parts)

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.files.rglob("*") if p.is_file())

    # -- the files tree ---------------------------------------------------------------

    def on_files(self, request: Request, path: str, body: bytes) -> Response:
        target = self.local(path)
        method = request.method
        if method == "PROPFIND":
            return self.propfind(path, target)
        if method == "MKCOL":
            if target.exists():
                return sabre_error(
                    405, "MethodNotAllowed", "The resource you tried to create already exists"
                )
            if not target.parent.is_dir():
                return sabre_error(409, "Conflict", "Parent node does not exist")
            target.mkdir()
            return Response(status=201)
        if method == "PUT":
            if self.refuse_chunked and "Content-Length" not in request.headers:
                return Response(
                    "<html><h1>411 Length Required</h1></html>", 411, content_type="text/html"
                )
            if not target.parent.is_dir():
                return sabre_error(409, "Conflict", "Could not write file: parent is missing")
            if request.headers.get("If-None-Match") == "*" and target.exists():
                return sabre_error(
                    412,
                    "PreconditionFailed",
                    "An If-None-Match header was "
                    "specified, but the ETag matched (or * was specified).",
                )
            if self.quota is not None and self.used() + len(body) > self.quota:
                return sabre_error(
                    507,
                    "InsufficientStorage",
                    f"Insufficient space in {path.rsplit('/', 1)[0] or '/'}, {len(body)} required",
                )
            existed = target.exists()
            target.write_bytes(body)
            self.keep_checksum(path, request)
            return Response(status=204 if existed else 201, headers={"ETag": _etag(target)})
        if method == "DELETE":
            if not target.exists():
                return sabre_error(404, "NotFound", "File not found")
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
            return Response(status=204)
        return sabre_error(405, "MethodNotAllowed", f"{method} is not allowed here")

    def keep_checksum(self, path: str, request: Request) -> None:
        """Nextcloud stores a client's OC-Checksum as it is, and forgets it on a write
        without one."""
        checksum = request.headers.get("OC-Checksum")
        if checksum:
            self.checksums[path] = checksum.strip()
        else:
            self.checksums.pop(path, None)

    def propfind(self, path: str, target: Path) -> Response:
        if not target.exists():
            return sabre_error(404, "NotFound", f"File with name {path} could not be located")
        href = f"/remote.php/dav/files/{USER}{path}"
        if target.is_dir():
            props = "<d:resourcetype><d:collection/></d:resourcetype>"
            missing = "<d:getcontentlength/><oc:checksums/>"
        else:
            props = (
                f"<d:getcontentlength>{target.stat().st_size}</d:getcontentlength><d:resourcetype/>"
            )
            missing = "<oc:checksums/>"  # Nextcloud has one only when the client sent it
            if path in self.checksums:
                checksum = escape(self.checksums[path])
                props += f"<oc:checksums><oc:checksum>{checksum}</oc:checksum></oc:checksums>"
                missing = ""
        props += f"<d:getetag>&quot;{_etag(target)}&quot;</d:getetag>"
        props += f"<oc:fileid>{target.stat().st_ino}</oc:fileid>"
        body = (
            '<?xml version="1.0"?>\n'
            '<d:multistatus xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns" '
            'xmlns:oc="http://owncloud.org/ns" xmlns:nc="http://nextcloud.org/ns">'
            f"<d:response><d:href>{escape(href)}</d:href>"
            f"<d:propstat><d:prop>{props}</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>"
            + (
                f"<d:propstat><d:prop>{missing}</d:prop>"
                "<d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>"
                if missing
                else ""
            )
            + "</d:response></d:multistatus>"
        )
        return Response(body, 207, content_type="application/xml; charset=utf-8")

    # -- chunked upload v2 --------------------------------------------------------------

    def destination_path(self, destination: str) -> str | None:
        """The files-tree path a Destination URL names, if it is this user's."""
        path = unquote(urlsplit(destination).path)
        match = re.match(rf"^/remote\.php/dav/files/{USER}(/.+)$", path)
        return match.group(1) if match else None

    def on_uploads(self, request: Request, upload: str, name: str, body: bytes) -> Response:
        folder = self.uploads / upload
        method = request.method
        destination = request.headers.get("Destination")
        if method == "MKCOL" and not name:
            if destination is None or self.destination_path(destination) is None:
                return sabre_error(400, "BadRequest", "Destination header is required")
            if folder.exists():
                return sabre_error(
                    405, "MethodNotAllowed", "The resource you tried to create already exists"
                )
            folder.mkdir()
            self.destinations[upload] = destination
            return Response(status=201)
        if method == "DELETE" and not name:
            if not folder.exists():
                return sabre_error(404, "NotFound", "Upload not found")
            shutil.rmtree(folder)
            self.destinations.pop(upload, None)
            return Response(status=204)
        if not folder.is_dir():
            return sabre_error(404, "NotFound", f"Upload {upload} not found")
        if destination != self.destinations.get(upload):
            return sabre_error(400, "BadRequest", "Destination header does not match the upload's")
        if method == "PUT":
            return self.put_chunk(request, folder, name, body)
        if method == "MOVE" and name == ".file":
            assert destination is not None  # it matched the upload's
            return self.assemble(request, folder, destination)
        return sabre_error(405, "MethodNotAllowed", f"{method} is not allowed here")

    def put_chunk(self, request: Request, folder: Path, name: str, body: bytes) -> Response:
        if not name.isdigit() or not 1 <= int(name) <= MAX_CHUNKS:
            return sabre_error(400, "BadRequest", "Chunk name must be a number 1-10000")
        total = request.headers.get("OC-Total-Length")
        if total is None or not total.isdigit():
            return sabre_error(400, "BadRequest", "OC-Total-Length header is required")
        if self.on_chunk is not None:
            forced = self.on_chunk(int(name))
            if forced is not None:
                return forced
        if self.quota is not None and self.used() + int(total) > self.quota:
            return sabre_error(
                507, "InsufficientStorage", f"Insufficient space in /, {total} required"
            )
        (folder / name).write_bytes(body)
        return Response(status=201)

    def assemble(self, request: Request, folder: Path, destination: str) -> Response:
        path = self.destination_path(destination)
        assert path is not None
        target = self.local(path)
        if request.headers.get("Overwrite", "T").upper() == "F" and target.exists():
            return sabre_error(
                412,
                "PreconditionFailed",
                "Destination node already exists, and the overwrite header is set to false",
            )
        if not target.parent.is_dir():
            return sabre_error(409, "Conflict", "The destination node is not found")
        chunks = sorted((p for p in folder.iterdir()), key=lambda p: p.name)
        sizes = [p.stat().st_size for p in chunks]
        if any(size < MIN_CHUNK for size in sizes[:-1]):
            return sabre_error(400, "BadRequest", "Chunks must be at least 5 MiB, but the last")
        total = request.headers.get("OC-Total-Length")
        if total is not None and int(total) != sum(sizes):
            return sabre_error(
                400,
                "BadRequest",
                f"Chunks on server do not sum up to {total} but to {sum(sizes)} bytes",
            )
        existed = target.exists()
        self.keep_checksum(path, request)
        with target.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as part:
                    shutil.copyfileobj(part, out)
        shutil.rmtree(folder)
        self.destinations.pop(folder.name, None)
        return Response(status=204 if existed else 201, headers={"ETag": _etag(target)})


def _etag(path: Path) -> str:
    stat = path.stat()
    return hashlib.md5(f"{stat.st_ino}:{stat.st_mtime_ns}".encode()).hexdigest()


@dataclass
class RunningNextcloud:
    fake: NextcloudFake
    base: str  # http://127.0.0.1:port

    @property
    def files_url(self) -> str:
        return f"{self.base}/remote.php/dav/files/{USER}/"

    @property
    def uploads_url(self) -> str:
        return f"{self.base}/remote.php/dav/uploads/{USER}/"


@contextmanager
def nextcloud(root: Path, **options: Any) -> Iterator[RunningNextcloud]:
    """The fake on a free loopback port, one thread per request, until the block ends."""
    fake = NextcloudFake(root, **options)
    server = make_server("127.0.0.1", 0, fake, threaded=True)
    fake.base = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RunningNextcloud(fake, fake.base)
    finally:
        server.shutdown()
        thread.join(timeout=10)
