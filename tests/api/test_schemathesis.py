"""The API matches its OpenAPI document and never answers 5xx (schemathesis).

Every operation is called with generated parameters, valid ones and invalid ones, with
an admin key so the authenticated paths run, against an app holding real records:
events, deliveries with attempts, dead letters. Every built-in check runs on each
answer: status code and content type documented, body valid against the schema,
schema-valid input accepted and invalid input rejected, no 5xx, and no operation that
works without its key.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from relay.api.openapi import document
from tests.api.conftest import Api

# Built from the same code that serves /api/v1/openapi.json (test_openapi.py checks the
# served document is this one); loaded here because schemathesis's fixture loader does
# not work with the pytest this suite runs.
schema = schemathesis.openapi.from_dict(document())
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=40,
    database="none",
    with_security_parameters=False,  # each call carries the admin key itself
)


@pytest.fixture
def seeded(api: Api) -> Api:
    now = time.time()
    for i in range(4):
        _, delivery_ids = api.event(text=f"disk full on host {i}", received_at=now - i)
        api.attempt(delivery_ids[0])
        api.kill(delivery_ids[1])
    api.event("chat", type="file.shared", text=None)
    return api


@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_matches_its_document(case: Any, seeded: Api) -> None:
    case.operation.schema.app = seeded.app  # also for the checks' own probes
    case.call_and_validate(
        headers={"Authorization": f"Bearer {seeded.tokens['admin']}"}, app=seeded.app
    )
