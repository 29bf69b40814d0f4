"""Feishu / Lark files: the message-resource API serves a file or image of a message
the bot can see, ``GET /open-apis/im/v1/messages/{message_id}/resources/{file_key}
?type=file|image``, with the app's tenant access token.

The event's ``ref`` is ``<message_id>/<file_key>`` (optionally ``/<type>``). Without
the type, an ``img_`` key is an image and any other key a file (audio, video and
files all take ``type=file``). A refusal is JSON ``{code, msg}``: a refused token is
fetched anew once, anything else is judged by ``feishu_error`` with Feishu's message.
Feishu serves files up to 100 MB, not stickers, and nothing inside merge-forwarded
messages or cards (234043).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from urllib.parse import quote

from relay.config.models import SourceConfig
from relay.errors import DeliveryError, PermanentDeliveryError
from relay.events import FileRef
from relay.intake.sources.feishu import FeishuOptions
from workers.fetch.base import Download
from workers.fetch.platform import PlatformFetcher
from workers.fetch.url import (
    Prefixed,
    as_download,
    local,
    media_type,
    peek_json,
    refused,
    relabel,
    stream_get,
)
from workers.net.feishu_auth import TenantTokens, TokenRejected, bearer, feishu_error
from workers.net.stream import StreamAnswer

TYPES = ("file", "image")
HINTS = {
    234043: "Feishu serves no files of merge-forwarded messages or of cards",
}


def parse_ref(ref: str) -> tuple[str, str, str]:
    """``<message_id>/<file_key>[/<type>]`` → message id, key, type."""
    parts = ref.split("/")
    if len(parts) == 3 and parts[2] in TYPES:
        message_id, key, kind = parts
    elif len(parts) == 2:
        message_id, key = parts
        kind = "image" if key.startswith("img_") else "file"
    else:
        raise PermanentDeliveryError(
            f"Feishu file reference {ref[:200]!r} is not <message_id>/<file_key>"
        )
    if not message_id or not key:
        raise PermanentDeliveryError(f"Feishu file reference {ref[:200]!r} is incomplete")
    return message_id, key, kind


class FeishuFetcher(PlatformFetcher):
    """One GET per attempt; tenant tokens are shared through Redis (``TenantTokens``)."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str, bool], TenantTokens] = {}

    def tokens(self, opts: FeishuOptions) -> TenantTokens:
        assert opts.app_id and opts.app_secret
        key = (opts.api_base, opts.app_id, opts.app_secret, opts.allow_private)
        found = self._tokens.get(key)
        if found is None:
            found = TenantTokens(opts.api_base, opts.app_id, opts.app_secret, opts.allow_private)
            self._tokens[key] = found
        return found

    @contextmanager
    def open_ref(
        self, file: FileRef, ref: str, source: SourceConfig, *, timeout: float, state: Any
    ) -> Iterator[Download]:
        opts = source.options
        if not isinstance(opts, FeishuOptions) or not (opts.app_id and opts.app_secret):
            raise PermanentDeliveryError(
                f"{file.name}: set app_id and app_secret on source {source.id} to fetch its files"
            )
        message_id, key, kind = parse_ref(ref)
        url = (
            f"{opts.api_base.rstrip('/')}/open-apis/im/v1/messages/{quote(message_id, safe='')}"
            f"/resources/{quote(key, safe='')}?type={kind}"
        )
        tokens = self.tokens(opts)
        what = f"{file.name}: Feishu message resource"
        with ExitStack() as stack:
            token = tokens.get(state, timeout)
            try:
                answer, head = self.attempt(stack, opts, url, token, timeout, what)
            except TokenRejected:  # expired or revoked early: one new token, once more
                stack.close()
                token = tokens.get(state, timeout, rejected=token)
                try:
                    answer, head = self.attempt(stack, opts, url, token, timeout, what)
                except TokenRejected as exc:
                    raise relabel(exc, what, [token]) from None
            reader = Prefixed(head, answer) if head else None
            yield as_download(answer, size=file.size, mime=file.mime, reader=reader)

    @staticmethod
    def attempt(
        stack: ExitStack, opts: FeishuOptions, url: str, token: str, timeout: float, what: str
    ) -> tuple[StreamAnswer, bytes]:
        """GET the resource: a 2xx answer that is the file (and any bytes read to tell),
        else the error Feishu's JSON or the status means."""
        answer = stack.enter_context(
            stream_get(
                url,
                timeout=timeout,
                allow_private=opts.allow_private,
                what=what,
                headers=bearer(token),
                secrets=[token],
            )
        )
        json_type = media_type(answer.headers) == "application/json"
        if 200 <= answer.status < 300 and not json_type:
            return answer, b""
        if not json_type:
            raise refused(answer, what, [token])
        body, head = peek_json(answer)
        code = body.get("code") if body is not None else None
        if 200 <= answer.status < 300 and not (isinstance(code, int) and code != 0):
            return answer, head  # a JSON file, not a refusal
        if not isinstance(code, int):
            raise refused(answer, what, [token])
        error: DeliveryError = feishu_error(
            body or {}, what, status=answer.status, headers=answer.headers
        )
        if isinstance(error, TokenRejected):
            raise error
        hint = HINTS.get(code)
        if hint and isinstance(error, PermanentDeliveryError):
            error = PermanentDeliveryError(
                f"{error.message}; {hint}", status=error.status, excerpt=error.excerpt
            )
        raise local(error)
