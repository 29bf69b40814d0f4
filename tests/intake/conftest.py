"""Fixtures of the source tests: each test module's ``SOURCES`` behind a real receiver.

A module lists its platform's source entries in ``SOURCES``; ``app`` and ``client`` serve
them on a clean database of the suite's own Redis for each test. ``fuzz_app`` and
``fuzz_client`` serve them once per module, so Hypothesis examples do not rebuild the app.
A module with other needs defines its own ``app``, and ``client`` follows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from relay import create_app
from relay.cli.embedded import EmbeddedRedis
from relay.config.loader import parse_config
from relay.settings import Settings

FUZZ_MAX_BODY = 16384  # small, so a fuzzed body may cross the limit too


@pytest.fixture
def app(
    request: pytest.FixtureRequest,
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
) -> Flask:
    """The receiver with the requesting module's ``SOURCES``, read from a real config file."""
    return make_app(write_config({"sources": request.module.SOURCES}))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A client of ``app``, or of the module's own ``app`` where it defines one."""
    return app.test_client()


@pytest.fixture(scope="module")
def fuzz_app(
    request: pytest.FixtureRequest,
    redis_server: EmbeddedRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Flask:
    """The module's ``SOURCES`` built once for all its property tests, on the suite's Redis."""
    state = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    relay_settings = Settings(
        redis_url=redis_server.url,
        config=state / "relay.yaml",
        state_dir=state / "state",
        visibility_timeout=20,
        task_time_limit=12,
        http_timeout=5,
        log_format="json",
        max_body=FUZZ_MAX_BODY,
    )
    fuzz = create_app(relay_settings, parse_config({"sources": request.module.SOURCES}))
    fuzz.testing = True
    return fuzz


@pytest.fixture(scope="module")
def fuzz_client(fuzz_app: Flask) -> Iterator[FlaskClient]:
    """A client of ``fuzz_app``; what the module's examples queued is flushed at its end, so
    the next module starts from an empty Redis."""
    yield fuzz_app.test_client()
    cleaner = redis.Redis.from_url(fuzz_app.extensions["relay"].settings.redis_url)
    cleaner.flushall()
    cleaner.close()
