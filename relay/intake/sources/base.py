"""The ``Source`` protocol: how one platform's inbound request is verified and parsed.

A source never sees Flask: the receiver hands it an ``InboundRequest`` (raw bytes and
headers) and turns its ``Reply`` into a response, so sources are plain, fast to test,
and one module each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from relay.config.models import SourceConfig
from relay.errors import BadRequest, IntakeError
from relay.events import GroupEvent


@dataclass(frozen=True)
class InboundRequest:
    """What the receiver read off the wire; header names are lower-case."""

    method: str
    headers: Mapping[str, Sequence[str]]
    body: bytes
    args: Mapping[str, Sequence[str]] = field(default_factory=dict)
    remote_addr: str | None = None

    def header(self, name: str) -> str | None:
        """The header's one value; ``None`` if absent; ``BadRequest`` if sent twice."""
        values = self.headers.get(name.lower())
        if not values:
            return None
        if len(values) > 1:
            raise BadRequest(f"header {name} is sent more than once", code="duplicate_header")
        return values[0]

    def arg(self, name: str) -> str | None:
        values = self.args.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise BadRequest(f"query parameter {name} is sent more than once")
        return values[0]

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-case (``application/json``)."""
        return (self.header("content-type") or "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class Reply:
    """A response a source wants sent as is (handshakes, platform-specific acks)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Parsed:
    """A verified event plus the platform's own id of it, used to drop resends.

    ``single_use`` names a credential that must not carry a second, different message
    (a signature that does not cover the body), kept for ``single_use_ttl`` seconds.
    """

    event: GroupEvent
    dedupe_key: str | None
    single_use: str | None = None
    single_use_ttl: float = 0


@dataclass(frozen=True)
class SignedRequest:
    """A sample request made by ``relay send``, signed as the platform would sign it."""

    headers: dict[str, str]
    body: bytes
    path_suffix: str = ""


class SourceOptions(BaseModel):
    """Base of every source kind's options: unknown keys are config errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Protocol):
    """One platform's intake. Implementations live in ``relay/intake/sources/<kind>.py``."""

    kind: ClassVar[str]
    Options: ClassVar[type[SourceOptions]]
    default_dedupe_ttl: ClassVar[float]

    def __init__(self, config: SourceConfig) -> None: ...

    def handshake(self, request: InboundRequest) -> Reply | None:
        """Answer a platform's URL check before verification of events, else ``None``."""

    def verify(self, request: InboundRequest) -> None:
        """Raise ``Unauthorized`` unless the raw request is authentic and fresh."""

    def parse(self, request: InboundRequest) -> Parsed:
        """Build the event; ``BadRequest``/``UnsupportedMediaType``/``Unprocessable`` if not."""

    def reply(self, request: InboundRequest, event_id: str, *, duplicate: bool) -> Reply:
        """What the platform expects once the event from ``request`` is durably queued."""

    def refusal_headers(self, error: IntakeError) -> Mapping[str, str]:
        """Headers added to a refusal, such as telling the platform not to resend it."""

    def sample(self, body: bytes | None = None) -> SignedRequest:
        """A correctly signed request carrying ``body`` (or a sample event)."""


class BaseSource:
    """Defaults shared by most sources: no handshake, a JSON 202/200 acknowledgement."""

    kind: ClassVar[str]
    Options: ClassVar[type[SourceOptions]] = SourceOptions
    default_dedupe_ttl: ClassVar[float] = 3 * 86400

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.options: Any = config.options

    def handshake(self, request: InboundRequest) -> Reply | None:
        return None

    def refusal_headers(self, error: IntakeError) -> Mapping[str, str]:
        return {}

    def reply(self, request: InboundRequest, event_id: str, *, duplicate: bool) -> Reply:
        import json

        if duplicate:
            return Reply(200, json.dumps({"event_id": event_id, "duplicate": True}).encode())
        return Reply(202, json.dumps({"event_id": event_id}).encode())
