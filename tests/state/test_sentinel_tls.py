"""``rediss+sentinel://``: TLS, with certificate verification, to the Sentinels and to the
master they name, against real redis-server processes that speak TLS only (a primary
and a Sentinel watching it over TLS, ``tls-replication yes``), with a CA this module
makes: the relay's clients and the Celery broker verify both, a CA that did not sign
them is refused with a clear error, and a signed event goes through intake, a worker
and a loopback sink."""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from pytest_httpserver import HTTPServer
from redis.sentinel import SentinelManagedSSLConnection

from relay.cli.embedded import find_redis_server, free_port
from relay.errors import ConfigError
from relay.settings import Settings
from relay.state import keys
from relay.state.connection import SentinelUrl, caller_client, redis_client
from relay.state.redis_tls import broker_use_ssl
from tests.conftest import RelayProcesses, Sink, ops_config, wait_for
from tests.pipeline_support import EVENT, delivery_of, signed_post
from tests.state.test_redis_tls import Pki, make_pki
from workers.celery_app import broker_for, make_celery

MASTER = "relay"


@dataclass(frozen=True)
class TlsSentinel:
    sentinel_port: int
    master_port: int
    pki: Pki
    other_ca: Path  # a CA that did not sign the servers' certificate

    def url(self, ca: Path | None = None) -> str:
        query = f"ssl_ca_certs={ca or self.pki.ca}&ssl_cert_reqs=required"
        return f"rediss+sentinel://127.0.0.1:{self.sentinel_port}/{MASTER}/0?{query}"


def _tls_args(pki: Pki) -> list[str]:
    return [
        "--tls-cert-file", str(pki.cert), "--tls-key-file", str(pki.key),
        "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "no",
    ]  # fmt: skip


def _start(command: list[str], folder: Path) -> subprocess.Popen[bytes]:
    with open(folder / "out.log", "wb") as out:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )


@pytest.fixture(scope="module")
def tls_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSentinel]:
    base = tmp_path_factory.mktemp("sentinel-tls")
    pki, other = make_pki(base / "pki"), make_pki(base / "other")
    binary = find_redis_server()
    master_port, sentinel_port = free_port(), free_port()
    (base / "master").mkdir()
    master = _start(
        [binary, "--port", "0", "--tls-port", str(master_port), "--bind", "127.0.0.1",
         *_tls_args(pki), "--save", "", "--appendonly", "no", "--dir", str(base / "master")],
        base / "master",
    )  # fmt: skip
    folder = base / "sentinel"
    folder.mkdir()
    config = folder / "sentinel.conf"
    config.write_text(
        "\n".join(
            [
                "port 0",
                f"tls-port {sentinel_port}",
                "bind 127.0.0.1",
                f"dir {folder}",
                f"tls-cert-file {pki.cert}",
                f"tls-key-file {pki.key}",
                f"tls-ca-cert-file {pki.ca}",
                "tls-auth-clients no",
                "tls-replication yes",  # it speaks TLS to the master, and names its TLS port
                f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1",
            ]
        )
        + "\n"
    )
    sentinel = _start([binary, str(config), "--sentinel"], folder)
    server = TlsSentinel(sentinel_port, master_port, pki, other.ca)
    asking = redis.Redis(port=sentinel_port, ssl=True, ssl_ca_certs=str(pki.ca), socket_timeout=2)
    deadline = time.monotonic() + 20
    while True:
        try:
            if asking.sentinel_master(MASTER)["flags"] == "master":
                break
        except redis.RedisError:
            pass
        if master.poll() is not None or sentinel.poll() is not None:
            text = "".join(p.read_text() for p in base.rglob("out.log"))
            if "Bad directive" in text and "tls" in text:
                pytest.skip(f"{binary} was built without TLS")
            raise AssertionError(f"redis-server did not start: {text[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("the Sentinel did not see its master over TLS in 20 s")
        time.sleep(0.1)
    asking.close()
    yield server
    for proc in (sentinel, master):
        proc.terminate()
        proc.wait(10)


def test_the_url_names_tls_for_the_sentinels_and_the_master(tls_sentinel: TlsSentinel) -> None:
    found = SentinelUrl.parse(tls_sentinel.url())
    assert found is not None and found.master == MASTER
    assert found.tls_options() == {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": str(tls_sentinel.pki.ca),
    }
    plain = SentinelUrl.parse("redis+sentinel://127.0.0.1:26379/relay/0")
    assert plain is not None and plain.tls_options() == {}


def test_the_relay_clients_verify_the_sentinels_and_the_master(
    tls_sentinel: TlsSentinel, tmp_path: Path
) -> None:
    settings = Settings(redis_url=tls_sentinel.url(), config=tmp_path / "relay.yaml")
    for make in (caller_client, redis_client):
        client = make(settings)
        pool = client.connection_pool
        assert pool.connection_class is SentinelManagedSSLConnection
        [asked] = pool.sentinel_manager.sentinels
        assert asked.connection_pool.connection_class is redis.SSLConnection
        client.set(keys.SEEN, make.__name__)
        assert client.get(keys.SEEN) == make.__name__.encode()
        assert pool.get_master_address() == ("127.0.0.1", tls_sentinel.master_port)
        client.close()


def test_a_ca_that_did_not_sign_them_is_refused_clearly(
    tls_sentinel: TlsSentinel, make_app: Callable[..., Flask], write_config: Callable[..., Path]
) -> None:
    wrong = tls_sentinel.url(ca=tls_sentinel.other_ca)
    client = caller_client(Settings(redis_url=wrong))
    with pytest.raises(redis.ConnectionError) as caught:
        client.ping()
    client.close()
    assert "No master found" in str(caught.value)  # and the Sentinel's answer, which says:
    assert "certificate verify failed" in str(caught.value)
    app = make_app(write_config(ops_config("http://127.0.0.1:9/in")), redis_url=wrong)
    assert signed_post(app.test_client(), EVENT).status_code == 503
    # The same Sentinel in plain TCP: refused, not hung.
    plain = caller_client(
        Settings(redis_url=f"redis+sentinel://127.0.0.1:{tls_sentinel.sentinel_port}/relay/0")
    )
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("rediss+sentinel://h:26379/relay?foo=1", "takes only ssl_* query options"),
        ("redis+sentinel://h:26379/relay?ssl_ca_certs=/x", "use rediss+sentinel:// for TLS"),
        ("rediss+sentinel://h:26379/relay?ssl_ca_certs=/no/ca.pem", "ssl_ca_certs=/no/ca.pem"),
        ("rediss+sentinel://h:26379/relay?ssl_cert_reqs=maybe", "ssl_cert_reqs='maybe'"),
    ],
)
def test_tls_options_that_cannot_work_are_refused_by_name(url: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SentinelUrl.parse(url)
    assert str(caught.value).startswith("RELAY_REDIS_URL: ") and named in str(caught.value)


def _broker(url: str) -> Any:
    """A connection of the workers' Celery app for ``url``."""
    return make_celery(Settings(redis_url=url)).connection_for_write()


def test_the_broker_verifies_the_sentinels_and_the_master(tls_sentinel: TlsSentinel) -> None:
    url = tls_sentinel.url()
    assert broker_use_ssl(url) == {
        "ssl_ca_certs": str(tls_sentinel.pki.ca),
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
    }
    _, _, options = broker_for(Settings(redis_url=url))
    assert options["sentinel_kwargs"]["ssl"] is True
    with _broker(url) as conn:
        conn.ensure_connection(max_retries=0, timeout=10)
        assert conn.default_channel.client.ping()
    wrong = tls_sentinel.url(ca=tls_sentinel.other_ca)
    with _broker(wrong) as conn, pytest.raises(Exception) as caught:
        conn.ensure_connection(max_retries=0, timeout=10)
        conn.default_channel.client.ping()
    assert "certificate verify failed" in str(caught.value)


def test_an_event_goes_through_intake_a_worker_and_a_sink_behind_tls_sentinels(
    tls_sentinel: TlsSentinel,
    make_app: Callable[..., Flask],
    write_config: Callable[..., Path],
    relay_processes: Callable[..., RelayProcesses],
    httpserver: HTTPServer,
) -> None:
    url = tls_sentinel.url()
    sink = Sink(httpserver, [])
    path = write_config(ops_config(sink.url))
    client = make_app(path, redis_url=url).test_client()
    relay_processes(path, RELAY_REDIS_URL=url)
    assert client.get("/readyz").status_code == 200
    response = signed_post(client, EVENT)
    assert response.status_code == 202, response.get_data(as_text=True)
    event_id = response.get_json()["event_id"]
    wait_for(lambda: sink.arrivals, timeout=60)
    reader = caller_client(Settings(redis_url=url))
    delivery_id = delivery_of(reader, event_id)
    wait_for(lambda: reader.hget(keys.delivery(delivery_id), "status") == b"delivered")
    assert sink.ids() == [delivery_id]
    reader.close()
