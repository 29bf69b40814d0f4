"""``GroupEvent`` and its published JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from relay.events import GroupEvent, json_schema, schema_text

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "group-event.schema.json"


def test_published_schema_is_current() -> None:
    refresh = "run: relay schema > docs/group-event.schema.json"
    assert SCHEMA_FILE.read_text() == schema_text(), refresh


def test_events_validate_against_the_schema() -> None:
    event = GroupEvent(
        source="ops",
        type="file.shared",
        group={"id": "g"},
        sender={"id": "u", "name": "Ada"},
        text="see attached",
        files=[{"name": "a.pdf", "size": 3, "ref": "file_key_1"}],
        raw={"platform": "payload"},
    )
    jsonschema.validate(json.loads(event.to_json()), json_schema())
    assert GroupEvent.from_json(event.to_json()) == event


def test_a_file_needs_a_url_or_a_ref() -> None:
    with pytest.raises(ValidationError, match="a file needs a url or a ref"):
        GroupEvent(source="ops", files=[{"name": "a.pdf"}])


def test_ids_are_unique_and_time_ordered() -> None:
    ids = [GroupEvent(source="s").id for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i.startswith("evt_") for i in ids)
