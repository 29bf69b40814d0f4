"""Streaming requests on the guarded pools: downloads read chunk by chunk and uploads
sent from a reader, so a file never has to fit in memory.

``send`` in ``workers.net.http`` reads answers whole (capped); storage needs bodies of
any size both ways. The same SSRF guard, no redirects, no environment proxies, and the
same typed errors apply. ``timeout`` bounds each read and the connect, not the whole
transfer: a 1 GiB file takes as long as it takes, a stalled one fails.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from urllib3 import BaseHTTPResponse, HTTPHeaderDict
from urllib3.exceptions import HTTPError, NewConnectionError, URLSchemeUnknown
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util import Timeout, parse_url

from relay.addresses import safe_url
from relay.errors import PermanentDeliveryError, RetryableDeliveryError
from relay.guarded import BlockedAddress
from workers.net.http import DEFAULT_HEADERS, HttpAnswer, _reason, drop_if_refused, guarded_pool

Body = bytes | Iterable[bytes] | Any  # bytes, an iterable of chunks, or a reader


@dataclass
class StreamAnswer:
    """An answer whose body is still on the wire: ``read(n)`` pulls at most ``n`` bytes."""

    status: int
    headers: Mapping[str, str]
    url: str = field(repr=False)  # may carry a token (Telegram file URLs)
    raw: BaseHTTPResponse = field(repr=False)

    def read(self, n: int = -1) -> bytes:
        try:
            return self.raw.read(None if n < 0 else n) or b""
        except (Urllib3Timeout, TimeoutError):
            raise RetryableDeliveryError(f"{safe_url(self.url)} stalled mid-body") from None
        except (HTTPError, OSError) as exc:
            raise RetryableDeliveryError(
                f"reading from {safe_url(self.url)} failed: {_reason(exc)}"
            ) from None

    def answer(self, limit: int = 64 * 1024) -> HttpAnswer:
        """The start of the body as an ``HttpAnswer``, for error classification."""
        return HttpAnswer(
            status=self.status, headers=self.headers, body=self.read(limit), url=self.url
        )


def _chunks(reader: Any, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := reader.read(size):
        yield chunk


def _errors(where: str, timeout: float, exc: BaseException) -> Exception:
    if isinstance(exc, BlockedAddress):
        return PermanentDeliveryError(f"refused to connect to {where}: {exc}")
    if isinstance(exc, ValueError):
        return PermanentDeliveryError(f"invalid request to {where}: {type(exc).__name__}")
    if isinstance(exc, NewConnectionError):
        return RetryableDeliveryError(f"request to {where} failed: {_reason(exc)}")
    if isinstance(exc, Urllib3Timeout | TimeoutError):
        return RetryableDeliveryError(f"{where} did not answer within {timeout:g}s")
    return RetryableDeliveryError(f"request to {where} failed: {_reason(exc)}")


@contextmanager
def open_stream(
    method: str,
    url: str,
    *,
    timeout: float,
    allow_private: bool = False,
    headers: Mapping[str, str] | None = None,
    data: Body | None = None,
    json: Any = None,
    length: int | None = None,
) -> Iterator[StreamAnswer]:
    """Send a request and yield the answer with its body unread; the connection is
    closed (not reused) unless the answer's body was read to the end and, for a request
    with a body, the answer is a success (``drop_if_refused``).

    ``data`` may be bytes, an iterable of chunks or a reader (``read(n)``); a body of
    unknown ``length`` goes out with ``Transfer-Encoding: chunked``."""
    where = safe_url(url)
    request_headers = HTTPHeaderDict(DEFAULT_HEADERS)
    if json is not None:
        data = jsonlib.dumps(json, allow_nan=False).encode()
        request_headers["Content-Type"] = "application/json"
    request_headers.update(headers or {})
    body: Any = data
    chunked = False
    if data is not None and not isinstance(data, bytes | bytearray):
        body = _chunks(data) if hasattr(data, "read") else iter(data)
        if length is None:
            chunked = True
        else:
            request_headers["Content-Length"] = str(length)
    pools = guarded_pool(allow_private)
    try:
        target = parse_url(url)
        if target.scheme not in pools.pool_classes_by_scheme:
            raise URLSchemeUnknown(str(target.scheme))
        pool = pools.connection_from_host(target.host, target.port, target.scheme)
        raw = pool.urlopen(
            method,
            target.request_uri,
            body=body,
            headers=request_headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            timeout=Timeout(connect=timeout, read=timeout),
            preload_content=False,
            chunked=chunked,
        )
    except (BlockedAddress, ValueError, HTTPError, OSError) as exc:
        raise _errors(where, timeout, exc) from None
    answer = StreamAnswer(status=raw.status, headers=raw.headers, url=url, raw=raw)
    connection = raw.connection
    try:
        yield answer
    finally:
        if raw.closed or raw.length_remaining == 0:
            raw.release_conn()
        else:
            raw.close()
            raw.release_conn()
        drop_if_refused(raw, connection, sent_body=data is not None)
