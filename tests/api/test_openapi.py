"""The served OpenAPI document describes every route, parameter, response and error."""

from __future__ import annotations

import re
from typing import Any

from relay.api.core import ENDPOINTS, PREFIX
from relay.api.openapi import document
from tests.api.conftest import Api


def test_the_served_document_is_the_built_one(api: Api) -> None:
    served = api.get("/openapi.json", None)
    assert served.status_code == 200 and served.content_type == "application/json"
    assert served.get_json() == document()
    assert document()["openapi"] == "3.1.0"


def test_every_route_under_the_prefix_is_documented(api: Api) -> None:
    paths = document()["paths"]
    routed = set()
    for rule in api.app.url_map.iter_rules():
        if not rule.rule.startswith(PREFIX):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routed.add((path, method.lower()))
    documented = {(path, method) for path, ops in paths.items() for method in ops}
    assert routed == documented
    assert len(documented) == len(ENDPOINTS)


def _resolve(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]]  # type: ignore[no-any-return]


def test_operations_name_parameters_scopes_and_errors() -> None:
    doc = document()
    for path, ops in doc["paths"].items():
        for op in ops.values():
            found = ENDPOINTS[op["operationId"]]
            assert op["summary"] and op["description"], op["operationId"]
            names = [p["name"] for p in op["parameters"]]
            assert names == [p.name for p in found.params]
            for name in re.findall(r"{([^}]+)}", path):
                [param] = [p for p in op["parameters"] if p["name"] == name]
                assert param["in"] == "path" and param["required"] is True
            codes = set(op["responses"])
            assert "200" in codes and "503" in codes
            if found.scope:
                assert {"401", "403"} <= codes and op["security"] == [{"bearer": []}]
                assert op["x-scope"] == found.scope
            else:
                assert op["security"] == []
            if op["parameters"]:
                assert "400" in codes
            for code, response in op["responses"].items():
                schema = response["content"]["application/json"]["schema"]
                if code != "200":
                    assert _resolve(doc, schema["$ref"])["required"] == ["error", "detail"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_list_operations_answer_items_and_a_cursor() -> None:
    doc = document()
    for path, ops in doc["paths"].items():
        op = ops.get("get")
        if op is None or "{" in path or path.endswith(("/queues", "/openapi.json")):
            continue
        ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        props = _resolve(doc, ref)["properties"]
        assert set(props) == {"items", "next_cursor"}, path
