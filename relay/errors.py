"""Every error the relay raises on purpose, in one tree.

::

    RelayError
    ├── ConfigError                   the YAML config or settings are wrong (lists every problem)
    ├── IntakeError                   an inbound request is refused; carries HTTP status + code
    │   ├── BadRequest                400  body is not what the platform sends (bad JSON, ...)
    │   ├── Unauthorized              401  signature, token or timestamp does not verify
    │   ├── UnknownSource             404  no source with that id
    │   ├── RequestTimeout            408  the body did not arrive within the read deadline
    │   ├── PayloadTooLarge           413  body over RELAY_MAX_BODY
    │   ├── UnsupportedMediaType      415  content type the source does not accept
    │   ├── Unprocessable             422  well-formed but not a valid event
    │   ├── TooManyRequests           429  over the source's inbound rate limit
    │   └── Unavailable               503  Redis unreachable; the sender must retry
    └── DeliveryError                 a target adapter could not deliver
        ├── RetryableDeliveryError    network, timeout, 408/425/429/5xx, platform throttling
        │   └── TargetThrottled       the platform blocks the whole target for a while
        └── PermanentDeliveryError    other 4xx, a platform's configuration error code
"""

from __future__ import annotations

from collections.abc import Sequence


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""


class ConfigError(RelayError):
    """The config is invalid; ``problems`` names each one by its path in the file."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class IntakeError(RelayError):
    """An inbound request is refused with ``status`` and a JSON body ``{error, detail}``."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        self.detail = detail
        if code is not None:
            self.code = code
        super().__init__(detail)


class BadRequest(IntakeError):
    status, code = 400, "bad_request"


class Unauthorized(IntakeError):
    status, code = 401, "unauthorized"


class UnknownSource(IntakeError):
    status, code = 404, "unknown_source"


class RequestTimeout(IntakeError):
    status, code = 408, "request_timeout"


class PayloadTooLarge(IntakeError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(IntakeError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(IntakeError):
    status, code = 422, "invalid_event"


class TooManyRequests(IntakeError):
    status, code = 429, "rate_limited"

    def __init__(self, detail: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class Unavailable(IntakeError):
    status, code = 503, "unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class DeliveryError(RelayError):
    """A target could not deliver; ``status`` and ``excerpt`` describe the remote answer."""

    def __init__(
        self, message: str, *, status: int | None = None, excerpt: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.excerpt = excerpt


class RetryableDeliveryError(DeliveryError):
    """Worth trying again; ``retry_after`` (seconds) is the remote's own wish, if it said."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        excerpt: str | None = None,
    ) -> None:
        super().__init__(message, status=status, excerpt=excerpt)
        self.retry_after = retry_after


class TargetThrottled(RetryableDeliveryError):
    """The platform throttles the whole target (DingTalk's 10-minute block after 130101,
    WeCom's 45009): every delivery to it waits ``retry_after`` seconds, not just this one."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        status: int | None = None,
        excerpt: str | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after, status=status, excerpt=excerpt)


class PermanentDeliveryError(DeliveryError):
    """Trying again cannot help; the delivery goes to the dead-letter queue."""
