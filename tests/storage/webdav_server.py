"""A real WebDAV server for the tests: WsgiDAV on cheroot, on a free loopback port,
Basic auth for one user, a temporary folder as its root, optionally over TLS with a
self-signed certificate. Each request's method, path and framing headers are noted,
so a test can tell a chunked upload from one with a Content-Length."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from wsgidav.wsgidav_app import WsgiDAVApp

USER = "alice"
PASSWORD = "app-pass-Qm7Tz2Lw9Xv4"

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    transfer_encoding: str | None
    content_length: str | None
    headers: dict[str, str]


@dataclass
class DavServer:
    url: str  # the root collection, ending in /
    root: Path
    requests: list[Seen] = field(default_factory=list)

    def seen(self, method: str) -> list[Seen]:
        return [r for r in self.requests if r.method == method]


class _Recorder:
    """WSGI middleware in front of WsgiDAV that notes each request."""

    def __init__(self, app: Any, requests: list[Seen]) -> None:
        self.app, self.requests = app, requests

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        headers = {
            key[5:].replace("_", "-").lower(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        self.requests.append(
            Seen(
                method=environ["REQUEST_METHOD"],
                path=environ.get("PATH_INFO", ""),
                transfer_encoding=environ.get("HTTP_TRANSFER_ENCODING"),
                content_length=environ.get("CONTENT_LENGTH") or None,
                headers=headers,
            )
        )
        result: Iterable[bytes] = self.app(environ, start_response)
        return result


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by itself, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dav.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def webdav_server(root: Path, *, tls_folder: Path | None = None) -> Iterator[DavServer]:
    """WsgiDAV serving ``root`` to ``USER``/``PASSWORD`` (Basic only), until the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "host": "127.0.0.1",
        "port": 0,
        "provider_mapping": {"/": str(root)},
        "http_authenticator": {
            "domain_controller": None,  # SimpleDomainController, from simple_dc
            "accept_basic": True,
            "accept_digest": False,
            "default_to_digest": False,
        },
        "simple_dc": {"user_mapping": {"*": {USER: {"password": PASSWORD}}}},
        "lock_storage": True,
        "property_manager": True,
        "verbose": 0,
        "logging": {"enable": False, "enable_loggers": []},
        "dir_browser": {"enable": False},
    }
    requests: list[Seen] = []
    app = _Recorder(WsgiDAVApp(config), requests)
    logging.getLogger("wsgidav").propagate = False
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=4)
    scheme = "http"
    if tls_folder is not None:
        cert, key = self_signed(tls_folder)
        server.ssl_adapter = BuiltinSSLAdapter(str(cert), str(key))
        scheme = "https"
    server.prepare()
    port = server.bind_addr[1]
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield DavServer(url=f"{scheme}://127.0.0.1:{port}/", root=root, requests=requests)
    finally:
        server.stop()
        thread.join(timeout=10)
