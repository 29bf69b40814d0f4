"""The management API at ``/api/v1``: JSON over HTTP, API keys with scopes, audited.

``relay.admin.ops`` does the work (the dashboard uses it too); this package routes,
authenticates, parses parameters and describes itself in OpenAPI 3.1.
"""

from __future__ import annotations

from relay.api import auth, openapi, views  # noqa: F401 - each registers on the blueprint
from relay.api.core import api

__all__ = ["api"]
