"""The one algorithm every storage target runs (filled in below)."""

from __future__ import annotations

from typing import ClassVar

from workers.storage.options import StorageOptions
from workers.storage.spec import Store
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult


class StorageTarget(BaseTarget):
    """Base of every storage target: subclasses give ``store``."""

    family: ClassVar[str] = "storage"
    Options: ClassVar[type[StorageOptions]] = StorageOptions  # type: ignore[assignment]

    def store(self, context: DeliveryContext) -> Store:
        raise NotImplementedError

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        raise NotImplementedError
