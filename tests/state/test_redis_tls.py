"""``rediss://`` with certificate verification, against a real redis-server that speaks
TLS only (``--port 0``), with a CA and a server certificate this module makes: the
relay's clients and a real Celery worker verify the server, a server the given CA did
not sign is refused with a clear error (never a hang), and a signed event goes through
intake, the worker and a loopback sink over TLS."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask import Flask
from pytest_httpserver import HTTPServer

from relay.cli.embedded import find_redis_server, free_port
from relay.errors import ConfigError
from relay.settings import Settings
from relay.state import keys
from relay.state.connection import caller_client, redis_client
from relay.state.redis_tls import broker_use_ssl, check_url
from tests.conftest import RelayProcesses, Sink, ops_config, wait_for
from tests.pipeline_support import EVENT, delivery_of, signed_post
from workers.celery_app import make_celery

PASSWORD = "tls-test-Zq8vJ2mN5rT1"  # must never show in a log or an error


@dataclass(frozen=True)
class Pki:
    """A CA and a server certificate it signed for 127.0.0.1 and localhost."""

    ca: Path
    cert: Path
    key: Path


CA_USAGE = x509.KeyUsage(
    **dict.fromkeys(["digital_signature", "key_cert_sign", "crl_sign"], True),
    **dict.fromkeys(
        ["content_commitment", "key_encipherment", "data_encipherment", "key_agreement"], False
    ),
    encipher_only=False,
    decipher_only=False,
)


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(folder: Path) -> Pki:
    """A throwaway CA (a day long) and a server certificate it signs."""
    folder.mkdir(parents=True)
    now = datetime.datetime.now(datetime.UTC)
    since, until = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"relay test CA {folder.name}")])
    ca = (
        x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name)
        .not_valid_before(since)
        .not_valid_after(until)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder(
            subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis")]),
            issuer_name=ca_name,
        )
        .not_valid_before(since)
        .not_valid_after(until)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(_pem(key))
    pki.key.chmod(0o600)
    return pki


@dataclass(frozen=True)
class TlsRedis:
    port: int
    pki: Pki
    other_ca: Path  # a CA that did not sign the server's certificate

    def url(self, ca: Path | None = None, **params: str) -> str:
        query = {"ssl_ca_certs": str(ca or self.pki.ca), "ssl_cert_reqs": "required", **params}
        text = "&".join(f"{k}={v}" for k, v in query.items())
        return f"rediss://:{PASSWORD}@127.0.0.1:{self.port}/0?{text}"

    @property
    def bare_url(self) -> str:
        """``rediss://`` and nothing else: which CAs to trust is left to each client."""
        return f"rediss://:{PASSWORD}@127.0.0.1:{self.port}/0"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """One redis-server for the module, TLS on a free port and no plain TCP port."""
    base = tmp_path_factory.mktemp("tls")
    pki, other = make_pki(base / "pki"), make_pki(base / "other")
    conf = base / "redis.conf"  # the password in a file, not on the command line
    conf.write_text(f"requirepass {PASSWORD}\n")
    conf.chmod(0o600)
    port = free_port()
    binary = find_redis_server()
    log = base / "redis.log"
    command = [
        binary, str(conf), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(pki.cert), "--tls-key-file", str(pki.key),
        "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "no",
        "--save", "", "--appendonly", "no", "--dir", str(base), "--logfile", str(log),
    ]  # fmt: skip
    with open(base / "redis.out", "wb") as out:  # config errors go here, not to the log
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    server = TlsRedis(port, pki, other.ca)
    admin = redis.Redis.from_url(server.url(), socket_timeout=2)
    deadline = time.monotonic() + 15
    while True:
        try:
            admin.ping()
            break
        except redis.ConnectionError:
            text = "".join(f.read_text() for f in (log, base / "redis.out") if f.exists())
            if process.poll() is not None and "'tls-port" in text and "Bad directive" in text:
                pytest.skip(f"{binary} was built without TLS (tls-port is a bad directive)")
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(
                    f"redis-server with TLS did not start: {text[-2000:]}"
                ) from None
            time.sleep(0.05)
    admin.close()
    yield server
    process.terminate()
    process.wait(10)


@pytest.fixture
def tls(tls_redis: TlsRedis) -> TlsRedis:
    """The module's TLS Redis, emptied for each test."""
    client = redis.Redis.from_url(tls_redis.url())
    client.flushall()
    client.close()
    return tls_redis


def test_the_relay_clients_verify_the_server(tls: TlsRedis, tmp_path: Path) -> None:
    settings = Settings(redis_url=tls.url(), config=tmp_path / "relay.yaml")
    for make in (caller_client, redis_client):
        client = make(settings)
        kwargs = client.connection_pool.connection_kwargs
        assert client.connection_pool.connection_class is redis.SSLConnection
        assert kwargs["ssl_cert_reqs"] == "required" and kwargs.get("ssl_check_hostname", True)
        client.set(keys.SEEN, make.__name__)
        assert client.get(keys.SEEN) == make.__name__.encode()
        client.close()


def _refused(url: str) -> str:
    client = caller_client(Settings(redis_url=url, redis_timeout=5))
    with pytest.raises(redis.ConnectionError) as caught:
        client.ping()
    client.close()
    return str(caught.value)


def test_a_server_the_given_ca_did_not_sign_is_refused_clearly(
    tls: TlsRedis, make_app: Callable[..., Flask], write_config: Callable[..., Path]
) -> None:
    error = _refused(tls.url(ca=tls.other_ca))
    assert "certificate verify failed" in error and PASSWORD not in error
    path = write_config(ops_config("http://127.0.0.1:9/in"))
    ready = make_app(path, redis_url=tls.url(ca=tls.other_ca)).test_client().get("/readyz")
    assert ready.status_code == 503 and PASSWORD not in ready.get_data(as_text=True)
    # No CA named: the system's CAs, which did not sign this test server either.
    assert "certificate verify failed" in _refused(tls.bare_url)
    # Plain TCP to the TLS port: the server drops the connection, the call does not hang.
    assert PASSWORD not in _refused(f"redis://:{PASSWORD}@127.0.0.1:{tls.port}/0")


def test_the_cli_names_the_redis_and_the_certificate_error(
    tls: TlsRedis, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "RELAY_REDIS_URL": tls.url(ca=tls.other_ca),
        "RELAY_CONFIG": str(write_config(ops_config("http://127.0.0.1:9/in"))),
        "RELAY_STATE_DIR": str(tmp_path / "state"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", "queues"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"relay: cannot reach Redis at rediss://:***@127.0.0.1:{tls.port}/0")
    assert "certificate verify failed" in line and PASSWORD not in line


def test_an_event_goes_through_intake_a_worker_and_a_sink_over_tls(
    tls: TlsRedis,
    make_app: Callable[..., Flask],
    write_config: Callable[..., Path],
    relay_processes: Callable[..., RelayProcesses],
    httpserver: HTTPServer,
) -> None:
    url = tls.url()
    sink = Sink(httpserver, [])
    path = write_config(ops_config(sink.url))
    client = make_app(path, redis_url=url).test_client()
    procs = relay_processes(path, RELAY_REDIS_URL=url)
    assert client.get("/readyz").status_code == 200
    response = signed_post(client, EVENT)
    assert response.status_code == 202, response.get_data(as_text=True)
    event_id = response.get_json()["event_id"]
    wait_for(lambda: sink.arrivals, timeout=60)
    reader = redis.Redis.from_url(url)
    delivery_id = delivery_of(reader, event_id)
    wait_for(lambda: reader.hget(keys.delivery(delivery_id), "status") == b"delivered")
    assert sink.ids() == [delivery_id]
    reader.close()
    for name in ("worker", "scheduler"):
        assert PASSWORD not in procs.log(name)


def test_a_worker_given_the_wrong_ca_says_why_it_cannot_connect(
    tls: TlsRedis,
    write_config: Callable[..., Path],
    relay_processes: Callable[..., RelayProcesses],
) -> None:
    path = write_config(ops_config("http://127.0.0.1:9/in"))
    procs = relay_processes(path, scheduler=False, RELAY_REDIS_URL=tls.url(ca=tls.other_ca))
    wait_for(lambda: "certificate verify failed" in procs.log("worker"), timeout=60)
    assert PASSWORD not in procs.log("worker")


def _broker(url: str) -> Any:
    """A connection of the workers' Celery app for ``url``, with ``broker_use_ssl`` set."""
    app = make_celery(Settings(redis_url=url))
    app.conf.broker_use_ssl = broker_use_ssl(url)
    return app.connection_for_write()


def test_a_bare_rediss_url_makes_the_broker_verify_the_server(tls: TlsRedis) -> None:
    """kombu alone would connect without verifying (or, with the relay's transport, in
    plain TCP); with ``broker_use_ssl`` it verifies against the system's CAs, which did
    not sign this server, and the URL's own CA still wins over them."""
    with _broker(tls.bare_url) as conn, pytest.raises(Exception) as caught:
        conn.ensure_connection(max_retries=0, timeout=10)
    assert "certificate verify failed" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    with _broker(tls.url()) as conn:
        conn.ensure_connection(max_retries=0, timeout=10)
        assert conn.default_channel.client.ping()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis://:pw@h/0?ssl_ca_certs=/etc/ca.pem", "ssl_ca_certs only apply to a rediss://"),
        ("rediss://:pw@h/0?ssl_cert_reqs=maybe", "ssl_cert_reqs='maybe' is not one of"),
        ("rediss://:pw@h/0?ssl_ca_certs=/no/such/ca.pem", "ssl_ca_certs=/no/such/ca.pem is not"),
        ("rediss://:pw@h/0?ssl_ca_path=/no/such/dir", "ssl_ca_path=/no/such/dir is not a folder"),
    ],
)
def test_tls_options_that_cannot_work_are_refused_by_name(url: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_url(url)
    message = str(caught.value)
    assert message.startswith("RELAY_REDIS_URL: ") and named in message
    assert ":pw@" not in message


def test_usable_urls_pass_the_check(tls: TlsRedis) -> None:
    check_url(tls.url())
    check_url(tls.bare_url)
    check_url("redis://127.0.0.1:6379/0")
    assert broker_use_ssl("redis://127.0.0.1:6379/0") is None
    assert broker_use_ssl(tls.bare_url) == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
