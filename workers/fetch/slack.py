"""Slack files: ``files.info`` turns the event's file id (``F…``) into the file's
``url_private_download``, which is fetched with the bot token as a bearer token.

Slack answers most refusals with HTTP 200 and ``{"ok": false, "error": …}``; those
are permanent with Slack's error, except rate limits and Slack's own trouble. A token
without the ``files:read`` scope gets no error from the download URL: Slack answers
with its HTML login page (a 200), so an HTML answer is refused by its type.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from relay.config.models import SourceConfig
from relay.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef
from relay.intake.sources.slack import SlackOptions
from workers.fetch.base import Download
from workers.fetch.platform import PlatformFetcher
from workers.fetch.url import (
    as_download,
    media_type,
    redact,
    refused,
    relabel,
    stream_get,
)
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.outcomes import excerpt, json_object, parse_retry_after, response_text

LOGIN_PAGE = (
    "Slack answered with its login page: add the files:read scope to the bot token "
    "(and reinstall the app)"
)
RETRY_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"}
)
DEFAULT_RETRY_AFTER = 30.0


def slack_error(answer: HttpAnswer, what: str, token: str) -> DeliveryError:
    """The error a Web API refusal means, with Slack's own error code."""
    body = json_object(response_text(answer))
    error = str(body.get("error") or f"HTTP {answer.status}")[:200]
    status = answer.status
    text = redact(excerpt(response_text(answer)), [token])
    said = f"{what} failed: {error}"
    if status == 429 or error in RETRY_ERRORS or status >= 500:
        wait = parse_retry_after(answer.headers.get("retry-after"))
        if wait is None and (status == 429 or error == "ratelimited"):
            wait = DEFAULT_RETRY_AFTER
        return RetryableDeliveryError(said, retry_after=wait, status=status, excerpt=text)
    if error == "missing_scope":
        needed = str(body.get("needed") or "files:read")[:200]
        return PermanentDeliveryError(
            f"{said}: add the {needed} scope to the bot token", status=status, excerpt=text
        )
    if error in TOKEN_ERRORS:
        return PermanentDeliveryError(
            f"{said}: Slack refused the bot token; check the source's bot_token",
            status=status,
            excerpt=text,
        )
    return PermanentDeliveryError(said, status=status, excerpt=text)


class SlackFetcher(PlatformFetcher):
    """``files.info`` then the download, both with the bot token."""

    @contextmanager
    def open_ref(
        self, file: FileRef, ref: str, source: SourceConfig, *, timeout: float, state: Any
    ) -> Iterator[Download]:
        opts = source.options
        if not isinstance(opts, SlackOptions) or not opts.bot_token:
            raise PermanentDeliveryError(
                f"{file.name}: set bot_token (with the files:read scope) on source "
                f"{source.id} to fetch its files"
            )
        token = opts.bot_token
        info = self.info(opts, token, ref, timeout)
        if info.get("is_external"):
            kind = str(info.get("external_type") or "external")[:40]
            raise PermanentDeliveryError(
                f"{file.name}: a file kept outside Slack ({kind}) has no bytes on Slack"
            )
        url = info.get("url_private_download") or info.get("url_private")
        if not isinstance(url, str) or not url:
            raise PermanentDeliveryError(f"{file.name}: Slack files.info gave no download URL")
        size = info.get("size")
        mimetype = info.get("mimetype")
        what = f"{file.name}: Slack file download"
        with stream_get(
            url,
            timeout=timeout,
            allow_private=opts.allow_private,
            what=what,
            headers={"Authorization": f"Bearer {token}"},
            secrets=[token],
        ) as answer:
            if 300 <= answer.status < 400:
                raise PermanentDeliveryError(
                    f"{what}: HTTP {answer.status}, a redirect (to the login page?); {LOGIN_PAGE}",
                    status=answer.status,
                )
            if not 200 <= answer.status < 300:
                raise refused(answer, what, [token])
            if media_type(answer.headers) == "text/html" and mimetype != "text/html":
                raise PermanentDeliveryError(f"{what}: {LOGIN_PAGE}", status=answer.status)
            yield as_download(
                answer,
                size=size if isinstance(size, int) and size >= 0 else file.size,
                mime=mimetype if isinstance(mimetype, str) else file.mime,
            )

    @staticmethod
    def info(opts: SlackOptions, token: str, file_id: str, timeout: float) -> dict[str, Any]:
        """``files.info``: the file object."""
        what = "Slack files.info"
        try:
            answer = send(
                guarded_pool(opts.allow_private),
                "GET",
                f"{opts.api_base.rstrip('/')}/files.info?file={quote(file_id, safe='')}",
                timeout=timeout,
                headers={"Authorization": f"Bearer {token}"},
            )
        except DeliveryError as exc:
            raise relabel(exc, what, [token]) from None
        body = json_object(response_text(answer, 512 * 1024))
        found = body.get("file")
        if 200 <= answer.status < 300 and body.get("ok") is True and isinstance(found, dict):
            return found
        raise slack_error(answer, what, token)
