"""The operator dashboard at ``/dashboard``: server-rendered pages over ``relay.admin.ops``.

Overview, event explorer, dead-letter queue, targets and audit log; login with an API
key; every state change a POST with a CSRF token, checked against the key's scope and
audited. Every page and action works without JavaScript; a small script draws the
charts and refreshes the live pages. See docs/dashboard.md.
"""

from __future__ import annotations

from relay.dashboard import auth, deadletters, pages, targets  # noqa: F401 - register routes
from relay.dashboard.blueprint import dashboard

__all__ = ["dashboard"]
