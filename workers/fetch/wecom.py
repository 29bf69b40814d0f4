"""WeCom (企业微信) files.

App messages name their media by ``MediaId`` (the event's ``ref``), fetched with
``GET /cgi-bin/media/get?access_token=…&media_id=…`` and the app's access token (from
``gettoken`` with the corp id and the app's Secret, cached in Redis for every worker
like DingTalk's). A media id lives 3 days. WeCom refuses to send media over 20 MB in
one piece (830002): every request here asks for a ``Range`` of at most
``range_chunk`` bytes, and ``RangedReader`` asks for the next one as the previous
runs out, so the caller reads one stream. A refusal is JSON (``errcode``, often with
HTTP 200) where the bytes should be: an expired token is fetched anew once.

Smart-bot (智能机器人) messages carry a ``url`` instead, valid for a few minutes and
encrypted with the bot's EncodingAESKey (AES-256-CBC, the key's first 16 bytes as IV,
PKCS#7 padding to 32 bytes); ``Decrypting`` opens it on the way through. Images of
app messages also carry a plain ``PicUrl``, used when no ``corp_secret`` is set.

The access token travels in the query string, so URLs are never shown.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from relay.config.models import SourceConfig
from relay.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef
from relay.intake.sources.msgcrypt import decode_aes_key
from relay.intake.sources.wecom import WecomOptions
from relay.state import keys
from workers.fetch.base import Download
from workers.fetch.url import (
    ERROR_BODY,
    Prefixed,
    content_length,
    fetch_url,
    media_type,
    peek_json,
    redact,
    refused,
    relabel,
    stream_get,
)
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.outcomes import json_object, response_text
from workers.net.shared_tokens import SharedToken, cache_life
from workers.net.stream import StreamAnswer

TOKEN_CODES = frozenset({40014, 42001})  # invalid / expired access_token
RETRY_CODES = frozenset({-1, 45009, 45033})  # system busy, over a frequency limit
BUSY_WAIT = 60.0  # seconds after a frequency limit: WeCom counts per minute
HINTS = {
    40007: "media ids live 3 days (and belong to the app that received them)",
    830002: "WeCom sends files over 20 MB only in Range requests of at most 20 MB; "
    "lower range_chunk",
    40001: "check corp_secret (the app's Secret)",
    40013: "check corp_id",
    40091: "check corp_secret (the app's Secret)",
}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
PAD_BLOCK = 32  # WeCom pads to multiples of 32 bytes


class TokenExpired(RetryableDeliveryError):
    """WeCom refused the access token: fetch a new one and ask once more."""


def wecom_error(body: dict[str, Any], what: str, status: int, secrets: list[str]) -> DeliveryError:
    """The error a WeCom ``{errcode, errmsg}`` means, with WeCom's own message."""
    code = body.get("errcode")
    message = str(body.get("errmsg") or "").strip()[:300]
    said = redact(f"{what} failed (errcode {code}: {message})", secrets) or what
    hint = HINTS.get(code) if isinstance(code, int) else None
    if code in TOKEN_CODES:
        return TokenExpired(said, status=status)
    if code in RETRY_CODES:
        return RetryableDeliveryError(said, retry_after=BUSY_WAIT if code != -1 else None)
    return PermanentDeliveryError(f"{said}; {hint}" if hint else said, status=status)


class CorpTokens(SharedToken):
    """A WeCom app's ``access_token``, shared by every worker
    (``workers.net.shared_tokens``); each app of a corp has its own Secret and so its own
    token, hence the Secret's digest in the key."""

    def __init__(self, api_base: str, corp_id: str, corp_secret: str, allow_private: bool):
        digest = hashlib.sha256(f"{api_base}\n{corp_id}\n{corp_secret}".encode()).hexdigest()
        super().__init__(keys.wecom_token(digest[:32]))
        self.url = f"{api_base}/cgi-bin/gettoken"
        self.credentials = {"corpid": corp_id, "corpsecret": corp_secret}
        self.allow_private = allow_private

    def fetch(self, timeout: float) -> tuple[str, int]:
        """``gettoken``: the token and how long (s) it may be cached."""
        what, secret = "WeCom gettoken", self.credentials["corpsecret"]
        url = f"{self.url}?{urlencode(self.credentials)}"
        try:
            answer = send(guarded_pool(self.allow_private), "GET", url, timeout=timeout)
        except DeliveryError as exc:
            raise relabel(exc, what, [secret]) from None
        body = json_object(response_text(answer))
        token, expires = body.get("access_token"), body.get("expires_in")
        if 200 <= answer.status < 300 and body.get("errcode", 0) == 0 and isinstance(token, str):
            return token, cache_life(expires)
        if not isinstance(body.get("errcode"), int):
            raise refused(answer, what, [secret])
        raise wecom_error(body, what, answer.status, [secret])


class MediaParts:
    """The requests of one media file: each asks for ``chunk`` bytes from a position
    and checks that the answer is those bytes, not a refusal."""

    def __init__(
        self, opts: WecomOptions, tokens: CorpTokens, media_id: str, state: Any, timeout: float
    ) -> None:
        self.opts, self.tokens, self.media_id = opts, tokens, media_id
        self.state, self.timeout = state, timeout
        self.token = tokens.get(state, timeout)
        self.what = "WeCom media/get"

    def url(self) -> str:
        query = urlencode({"access_token": self.token, "media_id": self.media_id})
        return f"{self.opts.api_base.rstrip('/')}/cgi-bin/media/get?{query}"

    def open(self, stack: ExitStack, start: int) -> tuple[StreamAnswer, bytes]:
        """The answer for bytes from ``start`` (206; 200 with the whole file for the first
        request; 416 past the end of a file of unsaid size) and any bytes read to tell
        it from a refusal."""
        for attempt in (1, 2):
            try:
                return self.request(stack, start)
            except TokenExpired:
                stack.close()
                if attempt == 2:
                    raise
                self.token = self.tokens.get(self.state, self.timeout, rejected=self.token)
        raise AssertionError("unreachable")

    def request(self, stack: ExitStack, start: int) -> tuple[StreamAnswer, bytes]:
        end = start + self.opts.range_chunk - 1
        answer = stack.enter_context(
            stream_get(
                self.url(),
                timeout=self.timeout,
                allow_private=self.opts.allow_private,
                what=self.what,
                headers={"Range": f"bytes={start}-{end}"},
                secrets=[self.token],
            )
        )
        if answer.status == 206:
            found = _CONTENT_RANGE.fullmatch((answer.headers.get("content-range") or "").strip())
            if found is None or int(found.group(1)) != start:
                raise RetryableDeliveryError(
                    f"{self.what}: asked for bytes from {start}, got "
                    f"{answer.headers.get('content-range') or 'no Content-Range'}"
                )
            return answer, b""
        if answer.status == 416 and start > 0:  # past the end: the previous part was the last
            return answer, b""
        kind = media_type(answer.headers) or ""
        body, head = (None, b"")
        if kind in ("application/json", "text/plain") or not 200 <= answer.status < 300:
            body, head = peek_json(answer)
        code = body.get("errcode") if body is not None else None
        if isinstance(code, int) and code != 0:
            raise wecom_error(body or {}, self.what, answer.status, [self.token])
        if not 200 <= answer.status < 300:
            raise refused_head(answer, head, self.what, [self.token])
        if start != 0:
            raise RetryableDeliveryError(
                f"{self.what}: answered HTTP {answer.status} to a Range request for bytes "
                f"from {start}, not 206"
            )
        return answer, head


def refused_head(answer: StreamAnswer, head: bytes, what: str, secrets: list[str]) -> DeliveryError:
    """``refused`` for an answer whose first bytes were already read."""
    http = HttpAnswer(
        status=answer.status, headers=answer.headers, body=head[:ERROR_BODY], url=answer.url
    )
    return refused(http, what, secrets)


class RangedReader:
    """One stream over successive Range requests: when a part runs out, the next one
    is asked for, until the size WeCom gave (``Content-Range``) is read, or, if it gave
    none (``/*``), until a part comes back shorter than asked."""

    def __init__(
        self, parts: MediaParts, first: StreamAnswer, total: int | None, stack: ExitStack
    ) -> None:
        self.parts, self.total, self.stack = parts, total, stack
        self.current: StreamAnswer | None = first
        self.position = 0
        self.part_end, self.last = self._bounds(first)

    def _bounds(self, answer: StreamAnswer) -> tuple[int, bool]:
        """Where the part ends, and whether it is short (so the last of a file whose
        size WeCom did not give)."""
        found = _CONTENT_RANGE.fullmatch((answer.headers.get("content-range") or "").strip())
        if found is None:
            return 0, True
        start, end = int(found.group(1)), int(found.group(2)) + 1
        return end, end - start < self.parts.opts.range_chunk

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        while True:
            if self.current is not None:
                data = self.current.read(n)
                if data:
                    self.position += len(data)
                    return data
                self.stack.close()
                self.current = None
                if self.position < self.part_end:
                    raise RetryableDeliveryError(
                        f"{self.parts.what}: a part ended at byte {self.position}, "
                        f"before {self.part_end}"
                    )
            if self.position >= self.total if self.total is not None else self.last:
                return b""
            answer, _ = self.parts.open(self.stack, self.position)
            if answer.status == 416:
                self.stack.close()
                return b""
            self.current = answer
            self.part_end, self.last = self._bounds(answer)

    def close(self) -> None:
        self.stack.close()


class Decrypting:
    """The plaintext of an AES-256-CBC body (WeCom smart-bot media), decrypted as it is
    read; the last 32 bytes are held back until the end, where the padding is."""

    def __init__(self, reader: Any, key: bytes) -> None:
        self.reader = reader
        self.decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        self.plain = bytearray()
        self.done = False

    def _fill(self) -> None:
        chunk = self.reader.read(1 << 16)
        if chunk:
            self.plain += self.decryptor.update(chunk)
            return
        try:
            self.plain += self.decryptor.finalize()
        except ValueError:
            raise PermanentDeliveryError(
                "WeCom bot file: the download is not whole AES blocks (not encrypted?)"
            ) from None
        pad = self.plain[-1] if self.plain else 0
        if not 1 <= pad <= PAD_BLOCK or self.plain[-pad:] != bytes([pad]) * pad:
            raise PermanentDeliveryError(
                "WeCom bot file: the padding is invalid (wrong encoding_aes_key?)"
            )
        del self.plain[-pad:]
        self.done = True

    def read(self, n: int = -1) -> bytes:
        while not self.done and (n < 0 or len(self.plain) - PAD_BLOCK < n):
            self._fill()
        ready = len(self.plain) if self.done else max(0, len(self.plain) - PAD_BLOCK)
        take = ready if n < 0 else min(n, ready)
        data = bytes(self.plain[:take])
        del self.plain[:take]
        return data


class WecomFetcher:
    """Media by id through ``media/get`` in Range parts; bot media by URL, decrypted."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str, bool], CorpTokens] = {}

    def tokens(self, opts: WecomOptions, secret: str) -> CorpTokens:
        key = (opts.api_base, opts.corp_id, secret, opts.allow_private)
        found = self._tokens.get(key)
        if found is None:
            found = CorpTokens(opts.api_base.rstrip("/"), opts.corp_id, secret, opts.allow_private)
            self._tokens[key] = found
        return found

    @contextmanager
    def open(
        self, file: FileRef, source: SourceConfig, *, timeout: float, state: Any = None
    ) -> Iterator[Download]:
        opts = source.options
        allow_private = bool(getattr(opts, "allow_private", False))
        if file.ref and isinstance(opts, WecomOptions) and opts.corp_secret:
            with self.media(opts, opts.corp_secret, file, state, timeout) as fetched:
                yield fetched
            return
        if not file.url:
            raise PermanentDeliveryError(
                f"{file.name}: set corp_secret (the app's Secret) on source {source.id} to "
                "fetch its media"
            )
        what = f"{file.name}: WeCom file download"
        with fetch_url(file.url, timeout=timeout, allow_private=allow_private, what=what) as got:
            if isinstance(opts, WecomOptions) and opts.corp_id == "" and not file.ref:
                key = decode_aes_key(opts.encoding_aes_key)
                yield Download(reader=Decrypting(got.reader, key), size=None, mime=file.mime)
            else:
                yield got

    @contextmanager
    def media(
        self, opts: WecomOptions, secret: str, file: FileRef, state: Any, timeout: float
    ) -> Iterator[Download]:
        assert file.ref
        parts = MediaParts(opts, self.tokens(opts, secret), file.ref, state, timeout)
        with ExitStack() as stack:
            first, head = parts.open(stack, 0)
            mime = media_type(first.headers) or file.mime
            if first.status != 206:  # the whole file at once
                reader: Any = Prefixed(head, first) if head else first
                yield Download(reader=reader, size=content_length(first.headers), mime=mime)
                return
            found = _CONTENT_RANGE.fullmatch((first.headers.get("content-range") or "").strip())
            total = int(found.group(3)) if found and found.group(3).isdigit() else None
            ranged = RangedReader(parts, first, total, stack)
            yield Download(reader=ranged, size=total if total is not None else file.size, mime=mime)
