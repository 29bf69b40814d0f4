"""Telegram (and SafeW) files: ``getFile`` turns the event's ``file_id`` into a
``file_path``, then the file is downloaded from the source's ``file_url`` template.

Both URLs carry the bot token in their path, so neither is ever shown: errors name
the step ("Telegram getFile"), and the token is masked in any excerpt. The public Bot
API serves files up to 20 MB; above that ``getFile`` answers "file is too big". A
self-hosted Bot API server started with ``--local`` lifts the limit and answers with
an absolute path on its disk instead: with ``local_api`` the file is read from there,
but only under ``local_root``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from relay.config.models import SourceConfig
from relay.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef
from relay.intake.sources.telegram import TelegramOptions
from workers.fetch.base import Download
from workers.fetch.platform import PlatformFetcher
from workers.fetch.url import download, redact, relabel
from workers.net.http import HttpAnswer, guarded_pool, send
from workers.net.outcomes import excerpt, json_object, parse_retry_after, response_text

TOO_BIG_HINT = (
    "the public Bot API serves files up to 20 MB; a self-hosted Bot API server "
    "(telegram-bot-api --local) lifts the limit: point api_base at it and set "
    "local_api: true and local_root"
)
DEFAULT_RETRY_AFTER = 30.0


def telegram_error(answer: HttpAnswer, what: str, token: str) -> DeliveryError:
    """The error a Bot API refusal (``{"ok": false, "error_code", "description"}``)
    means, with Telegram's description; the token never appears."""
    body = json_object(response_text(answer))
    description = str(body.get("description") or "").strip()[:300] or f"HTTP {answer.status}"
    said = redact(f"{what} failed (HTTP {answer.status}: {description})", [token]) or what
    text = redact(excerpt(response_text(answer)), [token])
    status = answer.status
    if "too big" in description.lower():
        return PermanentDeliveryError(f"{said}; {TOO_BIG_HINT}", status=status, excerpt=text)
    if status == 429 or body.get("error_code") == 429:
        parameters = body.get("parameters")
        hinted = parameters.get("retry_after") if isinstance(parameters, dict) else None
        wait = float(hinted) if isinstance(hinted, int) and hinted >= 0 else None
        wait = wait if wait is not None else parse_retry_after(answer.headers.get("retry-after"))
        return RetryableDeliveryError(
            said, retry_after=DEFAULT_RETRY_AFTER if wait is None else wait, status=status
        )
    if status in (408, 425) or status >= 500:
        return RetryableDeliveryError(said, status=status, excerpt=text)
    if status in (401, 404):  # Telegram's answer to a revoked or mistyped token
        return PermanentDeliveryError(
            f"{said}; check the source's bot_token and api_base", status=status, excerpt=text
        )
    return PermanentDeliveryError(said, status=status, excerpt=text)


class TelegramFetcher(PlatformFetcher):
    """``getFile`` and a download per attempt: the link is valid for an hour at least,
    and is never kept, since it holds the token."""

    @contextmanager
    def open_ref(
        self, file: FileRef, ref: str, source: SourceConfig, *, timeout: float, state: Any
    ) -> Iterator[Download]:
        opts = source.options
        if not isinstance(opts, TelegramOptions) or not opts.bot_token:
            raise PermanentDeliveryError(
                f"{file.name}: set bot_token on source {source.id} to fetch its files"
            )
        token = opts.bot_token
        file_path, size = self.file_path(opts, token, ref, timeout)
        if opts.local_api and os.path.isabs(file_path):
            with read_local(opts, file_path, file, size) as fetched:
                yield fetched
            return
        url = (
            opts.file_url.replace("{api_base}", opts.api_base)
            .replace("{token}", token)
            .replace("{file_path}", quote(file_path.lstrip("/"), safe="/"))
        )
        with download(
            url,
            timeout=timeout,
            allow_private=opts.allow_private,
            what=f"{file.name}: Telegram file download",
            secrets=[token],
            size=size,
            mime=file.mime,
        ) as fetched:
            yield fetched

    @staticmethod
    def file_path(
        opts: TelegramOptions, token: str, file_id: str, timeout: float
    ) -> tuple[str, int | None]:
        """``getFile``: the file's ``file_path`` and ``file_size`` (if given)."""
        what = "Telegram getFile"
        url = f"{opts.api_base}/bot{token}/getFile?file_id={quote(file_id, safe='')}"
        try:
            answer = send(guarded_pool(opts.allow_private), "GET", url, timeout=timeout)
        except DeliveryError as exc:
            raise relabel(exc, what, [token]) from None
        body = json_object(response_text(answer, 64 * 1024))
        result = body.get("result")
        if not (200 <= answer.status < 300 and body.get("ok") is True and isinstance(result, dict)):
            raise telegram_error(answer, what, token)
        file_path = result.get("file_path")
        if not isinstance(file_path, str) or not file_path:
            raise PermanentDeliveryError(f"{what} answered without a file_path")
        size = result.get("file_size")
        return file_path, size if isinstance(size, int) and size >= 0 else None


@contextmanager
def read_local(
    opts: TelegramOptions, file_path: str, file: FileRef, size: int | None
) -> Iterator[Download]:
    """The file a ``--local`` Bot API server keeps on disk, if it lies under
    ``local_root`` (symbolic links resolved first, so none leads out of it)."""
    if not opts.local_root:
        raise PermanentDeliveryError(
            f"{file.name}: the Bot API server answered with a path on its disk; set "
            "local_root to the folder where that disk is mounted here"
        )
    root = os.path.realpath(opts.local_root)
    real = os.path.realpath(file_path)
    if os.path.commonpath([root, real]) != root:
        raise PermanentDeliveryError(
            f"{file.name}: the Bot API server's file is outside local_root {opts.local_root}"
        )
    try:
        handle = open(real, "rb")  # noqa: SIM115 - closed below, after the caller's reads
    except FileNotFoundError:
        raise PermanentDeliveryError(
            f"{file.name}: the Bot API server's file is not under local_root "
            f"{opts.local_root} (is its working directory mounted there?)"
        ) from None
    except OSError as exc:
        raise RetryableDeliveryError(
            f"{file.name}: reading the local file failed: {exc.strerror}"
        ) from None
    with handle:
        yield Download(
            reader=handle, size=os.fstat(handle.fileno()).st_size or size, mime=file.mime
        )
