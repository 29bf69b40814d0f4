"""The one algorithm every project-management target runs (filled in below)."""

from __future__ import annotations

from typing import ClassVar

from workers.pm.options import PmOptions
from workers.pm.spec import PmClient
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult


class PmTarget(BaseTarget):
    """Base of every project-management target: subclasses give ``client``."""

    family: ClassVar[str] = "pm"
    Options: ClassVar[type[PmOptions]] = PmOptions  # type: ignore[assignment]
    title_limit: ClassVar[int] = 255  # characters the tool takes in a title
    key_pattern: ClassVar[str] = r"[A-Z][A-Z0-9_]+-\d+|#\d+"  # explicit references

    def client(self, context: DeliveryContext) -> PmClient:
        raise NotImplementedError

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        raise NotImplementedError
