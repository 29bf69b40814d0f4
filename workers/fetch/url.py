"""Files an event names by URL, and the download step every fetcher shares.

``download`` GETs a URL through the SSRF guard and yields a ``Download`` whose reader
is the still-unread body. Some of the URLs fetchers build carry a token (Telegram's
and SafeW's file links, WeCom's ``access_token`` query), so nothing built here ever
shows one: errors name the step ("Telegram file download"), not the URL; the answer's
``url`` is replaced by its safe form before anyone can see it; and every secret a
fetcher hands in is masked in the excerpts kept with an error.

``UrlFetcher`` serves sources whose events carry plain ``files[].url`` (``hmac``,
``standard_webhooks``, and any kind without a fetcher of its own), with the source's
optional ``file_headers`` (an ``Authorization`` header, say) and ``file_hosts``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

from relay.addresses import safe_url
from relay.config.models import SourceConfig
from relay.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    TargetThrottled,
)
from relay.events import FileRef
from workers.fetch.base import Download
from workers.net.http import HttpAnswer
from workers.net.outcomes import classify
from workers.net.stream import StreamAnswer, open_stream

MASK = "***"
ERROR_BODY = 64 * 1024  # bytes of a refusal read to classify it
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})


def option(source: SourceConfig, name: str, default: Any = None) -> Any:
    """One of the source's kind options, ``default`` when the kind has no such option."""
    return getattr(source.options, name, default)


def redact(text: str | None, secrets: Collection[str]) -> str | None:
    """``text`` with every secret in it masked."""
    if text is None:
        return None
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def relabel(error: DeliveryError, what: str, secrets: Collection[str] = ()) -> DeliveryError:
    """``error`` named by the step that failed (``what``), secrets masked. A platform's
    throttling becomes a plain retry: it slows this file's source, not the target the
    file is delivered to."""
    message = redact(f"{what}: {error.message}", secrets) or what
    text = redact(error.excerpt, secrets)
    if isinstance(error, RetryableDeliveryError):
        return RetryableDeliveryError(
            message, retry_after=error.retry_after, status=error.status, excerpt=text
        )
    if isinstance(error, PermanentDeliveryError):
        return PermanentDeliveryError(message, status=error.status, excerpt=text)
    return RetryableDeliveryError(message, status=error.status, excerpt=text)


def local(error: DeliveryError) -> DeliveryError:
    """A ``TargetThrottled`` as a plain retryable error: see ``relabel``."""
    if isinstance(error, TargetThrottled):
        return RetryableDeliveryError(
            error.message, retry_after=error.retry_after, status=error.status, excerpt=error.excerpt
        )
    return error


def refused(
    answer: StreamAnswer | HttpAnswer, what: str, secrets: Collection[str] = ()
) -> DeliveryError:
    """The error a non-2xx answer means by its status (``classify``), named by step:
    408, 425, 429 and 5xx may pass, other 4xx will not, redirects are not followed."""
    http = answer.answer(ERROR_BODY) if isinstance(answer, StreamAnswer) else answer
    try:
        classify(http)
    except DeliveryError as exc:
        return relabel(exc, what, secrets)
    return RetryableDeliveryError(f"{what}: unexpected HTTP {http.status}", status=http.status)


def media_type(headers: Mapping[str, str]) -> str | None:
    """``Content-Type`` without parameters, lower-case; ``None`` if absent."""
    value = (headers.get("content-type") or "").split(";")[0].strip().lower()
    return value or None


def content_length(headers: Mapping[str, str]) -> int | None:
    """The body's size on the wire if it is the file's size (not compressed), else None."""
    encoding = (headers.get("content-encoding") or "identity").strip().lower()
    value = (headers.get("content-length") or "").strip()
    if encoding != "identity" or not value.isdigit():
        return None
    return int(value)


def as_download(
    answer: StreamAnswer, *, size: int | None = None, mime: str | None = None, reader: Any = None
) -> Download:
    """A ``Download`` of a 2xx answer: size and type from its headers, else the
    platform's metadata (``size``, ``mime``)."""
    length = content_length(answer.headers)
    return Download(
        reader=answer if reader is None else reader,
        size=size if length is None else length,
        mime=media_type(answer.headers) or mime,
    )


@contextmanager
def stream_get(
    url: str,
    *,
    timeout: float,
    allow_private: bool,
    what: str,
    headers: Mapping[str, str] | None = None,
    secrets: Collection[str] = (),
) -> Iterator[StreamAnswer]:
    """GET ``url`` and yield the answer with its body unread, whatever its status; its
    ``url`` is the safe form, so no reader or log of it shows a token."""
    stack = ExitStack()
    try:
        answer = stack.enter_context(
            open_stream("GET", url, timeout=timeout, allow_private=allow_private, headers=headers)
        )
    except DeliveryError as exc:
        raise relabel(exc, what, secrets) from None
    with stack:
        answer.url = safe_url(url)
        yield answer


@contextmanager
def download(
    url: str,
    *,
    timeout: float,
    allow_private: bool,
    what: str,
    headers: Mapping[str, str] | None = None,
    secrets: Collection[str] = (),
    size: int | None = None,
    mime: str | None = None,
) -> Iterator[Download]:
    """GET ``url``: a ``Download`` of a 2xx answer, else the error its status means."""
    with stream_get(
        url,
        timeout=timeout,
        allow_private=allow_private,
        what=what,
        headers=headers,
        secrets=secrets,
    ) as answer:
        if not 200 <= answer.status < 300:
            raise refused(answer, what, secrets)
        yield as_download(answer, size=size, mime=mime)


class Prefixed:
    """A reader that returns ``head`` (bytes already read to look at them) first."""

    def __init__(self, head: bytes, reader: Any) -> None:
        self.head = head
        self.reader = reader

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            data: bytes = self.reader.read(n)
            return data
        if n < 0:
            head, self.head = self.head, b""
            return head + bytes(self.reader.read(-1))
        head, self.head = self.head[:n], self.head[n:]
        return head


def peek_json(answer: StreamAnswer) -> tuple[dict[str, Any] | None, bytes]:
    """The start of a body that may be a platform's JSON error instead of the file:
    the object if the first ``ERROR_BODY`` bytes are the whole body and a JSON object,
    and the bytes read (to hand back with ``Prefixed`` when it is the file after all)."""
    head = answer.read(ERROR_BODY)
    if len(head) >= ERROR_BODY:
        return None, head
    try:
        value = json.loads(head)
    except ValueError:
        return None, head
    return (value if isinstance(value, dict) else None), head


def refuse_ref(file: FileRef, kind: str) -> PermanentDeliveryError:
    """A file known only by a platform reference no fetcher of ``kind`` resolves."""
    return PermanentDeliveryError(
        f"{file.name}: the file has only a platform reference ({kind} ref) and no url; "
        f"the relay cannot fetch files from a {kind} source by reference"
    )


class UrlFetcher:
    """Fetches ``files[].url`` with a GET; ``file_headers`` go only to the URL's own host
    (a redirect to another host drops them) and, when ``file_hosts`` is set, only those
    hosts are fetched from. Redirects are followed, each hop checked by the SSRF guard
    again; 4xx (but 408/425/429) is permanent, 5xx retryable."""

    def __init__(self, kind: str = "url") -> None:
        self.kind = kind

    @contextmanager
    def open(
        self, file: FileRef, source: SourceConfig, *, timeout: float, state: Any = None
    ) -> Iterator[Download]:
        if not file.url:
            raise refuse_ref(file, source.kind)
        headers: dict[str, str] = dict(option(source, "file_headers") or {})
        hosts: list[str] | None = option(source, "file_hosts")
        allowed = None if hosts is None else {h.strip().lower().rstrip(".") for h in hosts}
        with fetch_url(
            file.url,
            timeout=timeout,
            allow_private=bool(option(source, "allow_private", False)),
            headers=headers,
            hosts=allowed,
            secrets=list(headers.values()),
            size=file.size,
            mime=file.mime,
            what=f"{file.name}: download from {self.kind} file URL",
        ) as fetched:
            yield fetched


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return ""


@contextmanager
def fetch_url(
    url: str,
    *,
    timeout: float,
    allow_private: bool,
    what: str,
    headers: Mapping[str, str] | None = None,
    hosts: Collection[str] | None = None,
    secrets: Collection[str] = (),
    size: int | None = None,
    mime: str | None = None,
) -> Iterator[Download]:
    """``download`` that follows up to ``MAX_REDIRECTS`` redirects; ``headers`` are sent
    to the first URL's host only; every hop must be in ``hosts`` when that is given."""
    origin = _host(url)
    for _ in range(MAX_REDIRECTS + 1):
        if hosts is not None and _host(url) not in hosts:
            raise PermanentDeliveryError(
                f"{what}: host {_host(url) or '?'} is not in the source's file_hosts"
            )
        sent = headers if _host(url) == origin else None
        with stream_get(
            url,
            timeout=timeout,
            allow_private=allow_private,
            what=what,
            headers=sent,
            secrets=secrets,
        ) as answer:
            location = answer.headers.get("location")
            if answer.status in REDIRECTS and location:
                url = urljoin(url, location)
                continue
            if not 200 <= answer.status < 300:
                raise refused(answer, what, secrets)
            yield as_download(answer, size=size, mime=mime)
            return
    raise PermanentDeliveryError(f"{what}: more than {MAX_REDIRECTS} redirects")
