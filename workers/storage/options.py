"""Options every storage target has, beside its store's own."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from relay.config.units import Duration, Size
from workers.storage.paths import check_path_template
from workers.targets.base import TargetOptions

DEFAULT_PATH = "{source}/{group.id}/{occurred_at:%Y/%m}/{file.name}"


class Notify(BaseModel):
    """After each file is stored, post its link into the group: a chained delivery to
    ``target`` with its own id, record and retries."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    target: str = Field(description="The id of the notification target that posts it.")
    template: str | None = Field(None, description="Jinja2; sees event, files (path, link).")
    link_lifetime: Duration = Field(7 * 24 * 3600, gt=0, description="Presigned links live so.")


class StorageOptions(TargetOptions):
    path: str = Field(DEFAULT_PATH, description="Where each file goes; parts are sanitised.")
    on_conflict: Literal["skip_same", "rename", "overwrite", "fail"] = "skip_same"
    max_size: Size | None = Field(None, gt=0, description="e.g. 100MB; larger files are refused.")
    allowed_types: list[str] | None = Field(
        None, description="MIME types (image/*) sniffed from the bytes; others are refused."
    )
    dedupe: Literal["off", "content"] = "off"
    notify: Notify | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path_template(value)

    def chained_targets(self) -> list[str]:
        """The targets this one's links go to (checked to exist at load)."""
        return [self.notify.target] if self.notify else []
