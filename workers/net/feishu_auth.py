"""Feishu/Lark app credentials: the tenant access token, shared by every worker, and
what Feishu's answers mean.

Every Feishu API answers ``{"code", "msg", "data"}``, often with HTTP 200 even when it
refuses, so the body ``code`` decides, not only the status. ``feishu_data`` checks
both and returns ``data``; ``feishu_error`` turns a refusal into the delivery error it
means; ``with_token`` makes a call with the cached token and, when Feishu says the
token is invalid or expired (``TokenRejected``), fetches a new one and makes it once
more.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from relay.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from relay.state import keys
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.outcomes import classify, excerpt, parse_retry_after, response_text
from workers.net.shared_tokens import SharedToken, cache_life

FEISHU_API = "https://open.feishu.cn"
LARK_API = "https://open.larksuite.com"
TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
THROTTLE_WAIT = 5.0  # seconds the target waits after a frequency limit without a hint

# The token was refused: invalid tenant/app/user token, invalid or expired access token.
TOKEN_CODES = frozenset({99991663, 99991664, 99991668, 99991671, 99991677})
# The app is over a frequency limit: the whole target waits.
THROTTLE_CODES = frozenset({99991400, 1061045, 1470450})
# Feishu's own trouble, or too many writes to one object: the same call may be repeated.
RETRY_CODES = frozenset({1500, 1503, 1470451})
HINTS = {
    99991672: "the app lacks the scope Feishu names: add it and publish a new app version",
    99991661: "no access token was sent",
    10003: "check app_id and app_secret",
    10014: "check app_id and app_secret",
}

T = TypeVar("T")


class TokenRejected(RetryableDeliveryError):
    """Feishu refused the tenant token (expired or revoked early): fetch a new one and
    make the call again; raised again with a fresh token, it waits for a retry."""


def bearer(token: str) -> dict[str, str]:
    """The headers that carry a tenant token."""
    return {"Authorization": f"Bearer {token}"}


class TenantTokens(SharedToken):
    """The app's ``tenant_access_token``, shared by every worker
    (``workers.net.shared_tokens``): Feishu hands out the same token until its last 30
    minutes, so a rare double fetch is harmless."""

    def __init__(self, api_base: str, app_id: str, app_secret: str, allow_private: bool):
        api_base = api_base.rstrip("/")
        digest = hashlib.sha256(f"{api_base}\n{app_id}".encode()).hexdigest()[:32]
        super().__init__(keys.feishu_token(digest))
        self.url = f"{api_base}{TOKEN_PATH}"
        self.credentials = {"app_id": app_id, "app_secret": app_secret}
        self.allow_private = allow_private

    def __repr__(self) -> str:  # never the secret
        return f"TenantTokens({self.url!r}, app_id={self.credentials['app_id']!r})"

    def fetch(self, timeout: float) -> tuple[str, int]:
        """POST app_id/app_secret; the token and how long (s) it may be cached."""
        response = send(
            guarded_pool(self.allow_private),
            "POST",
            self.url,
            timeout=timeout,
            data=json.dumps(self.credentials).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        body = _json(response)
        token, expire = body.get("tenant_access_token"), body.get("expire")
        if 200 <= response.status < 300 and body.get("code") == 0 and token:
            return str(token), cache_life(expire)
        what = "Feishu refused a tenant access token"
        code = body.get("code")
        if not isinstance(code, int):
            raise _not_feishu(response, "a tenant access token request")
        if response.status == 429 or response.status >= 500 or code in THROTTLE_CODES | RETRY_CODES:
            raise feishu_error(body, what, status=response.status, headers=response.headers)
        message = str(body.get("msg") or "")[:300]
        raise PermanentDeliveryError(
            f"{what} (HTTP {response.status}, code {code}: {message}); check app_id and app_secret",
            status=response.status,
            excerpt=excerpt(response_text(response)),
        )


def feishu_error(
    body: Mapping[str, Any],
    what: str,
    *,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    busy: Collection[int] = (),
) -> DeliveryError:
    """The delivery error a Feishu refusal means (the caller raises it): ``TokenRejected``
    for an invalid or expired token, ``TargetThrottled`` for a frequency limit (waiting
    for ``x-ogw-ratelimit-reset`` or ``Retry-After`` when given), retryable for Feishu's
    internal errors, 5xx and the API's own "retry later" codes in ``busy``, else
    permanent with Feishu's code and message. ``what`` starts the message."""
    code = body.get("code")
    message = str(body.get("msg") or "").strip()[:300]
    http = f"HTTP {status}, " if status is not None else ""
    said = f"{what} ({http}Feishu code {code}{': ' + message if message else ''})"
    text = excerpt(json.dumps(dict(body), ensure_ascii=False, default=str))
    if code in TOKEN_CODES:
        return TokenRejected(f"{said}; the tenant token was refused", status=status, excerpt=text)
    if code in THROTTLE_CODES or status == 429:
        wait = _wait(headers) or THROTTLE_WAIT
        return TargetThrottled(said, retry_after=wait, status=status, excerpt=text)
    if code in RETRY_CODES or code in busy or (status is not None and status >= 500):
        return RetryableDeliveryError(said, retry_after=_wait(headers), status=status, excerpt=text)
    hint = HINTS.get(code) if isinstance(code, int) else None
    return PermanentDeliveryError(f"{said}; {hint}" if hint else said, status=status, excerpt=text)


def feishu_data(response: HttpAnswer, what: str, *, busy: Collection[int] = ()) -> dict[str, Any]:
    """``data`` of a successful answer (``{}`` if it has none); any other answer raises
    the error ``feishu_error`` names (an answer that is not Feishu's JSON: by status)."""
    body = _json(response)
    code = body.get("code")
    if not isinstance(code, int):
        raise _not_feishu(response, what)
    if code == 0 and 200 <= response.status < 300:
        data = body.get("data")
        return data if isinstance(data, dict) else {}
    raise feishu_error(body, what, status=response.status, headers=response.headers, busy=busy)


def with_token(tokens: TenantTokens, state: Any, timeout: float, call: Callable[[str], T]) -> T:
    """``call(token)``; if Feishu refuses the token, once more with a fresh one. (A
    refused token means the call did nothing, so repeating a create is safe.)"""
    token = tokens.get(state, timeout)
    try:
        return call(token)
    except TokenRejected:
        token = tokens.get(state, timeout, rejected=token)
        return call(token)


def _not_feishu(response: HttpAnswer, what: str) -> DeliveryError:
    """The error for an answer without Feishu's ``code`` (a proxy's page, a wrong
    ``api_base``): by HTTP status; a 2xx like that is worth another try."""
    try:
        classify(response)
    except DeliveryError as exc:
        exc.message = f"{what}: {exc.message}"
        exc.args = (exc.message,)
        return exc
    return RetryableDeliveryError(
        f"{what}: HTTP {response.status} without Feishu's JSON body",
        status=response.status,
        excerpt=excerpt(response_text(response)),
    )


def _wait(headers: Mapping[str, str] | None) -> float | None:
    """Seconds until Feishu's rate-limit window resets, from its gateway header or
    ``Retry-After``."""
    if not headers:
        return None
    reset = parse_retry_after(headers.get("x-ogw-ratelimit-reset"))
    return reset if reset else parse_retry_after(headers.get("retry-after"))


def _json(response: HttpAnswer) -> dict[str, Any]:
    try:
        value = json.loads(response.body or b"null")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
