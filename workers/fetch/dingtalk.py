"""DingTalk robot files: the event's ``downloadCode`` becomes a temporary
``downloadUrl`` through ``POST /v1.0/robot/messageFiles/download {downloadCode,
robotCode}`` (with the app's access token), and that URL is fetched.

The URL is short-lived and may serve once only, so it is derived anew on every
attempt and never kept; a 403 or 404 from it is worth another attempt, which gets a
new one. DingTalk robots receive files, audio and video only in one-to-one chats: in
a group, only pictures (in rich text) reach the robot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from relay.config.models import SourceConfig
from relay.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef
from relay.intake.sources.dingtalk_robot import DingTalkRobotOptions
from workers.fetch.base import Download
from workers.fetch.platform import PlatformFetcher
from workers.fetch.url import as_download, local, refused, relabel, stream_get
from workers.net.http import HttpAnswer
from workers.targets.dingtalk_app import AccessTokens
from workers.targets.dingtalk_messages import api_outcome, json_body, post_json, token_rejected

EXPIRED = (403, 404)  # what an expired or used-up temporary URL answers


class DingTalkFetcher(PlatformFetcher):
    """A fresh ``downloadUrl`` per attempt; access tokens shared through Redis."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str, bool], AccessTokens] = {}

    def tokens(self, opts: DingTalkRobotOptions, app_secret: str) -> AccessTokens:
        assert opts.app_key
        key = (opts.api_base, opts.app_key, app_secret, opts.allow_private)
        found = self._tokens.get(key)
        if found is None:
            found = AccessTokens(opts.api_base, opts.app_key, app_secret, opts.allow_private)
            self._tokens[key] = found
        return found

    @contextmanager
    def open_ref(
        self, file: FileRef, ref: str, source: SourceConfig, *, timeout: float, state: Any
    ) -> Iterator[Download]:
        opts = source.options
        if not isinstance(opts, DingTalkRobotOptions) or not opts.app_key:
            raise PermanentDeliveryError(
                f"{file.name}: set app_key on source {source.id} to fetch its files"
            )
        secret = opts.app_secret or opts.app_secrets[0]  # the options require one
        url = self.download_url(opts, secret, ref, state, timeout)
        what = f"{file.name}: DingTalk file download (temporary URL)"
        with stream_get(
            url, timeout=timeout, allow_private=opts.allow_private, what=what
        ) as answer:
            if answer.status in EXPIRED:
                raise RetryableDeliveryError(
                    f"{what}: HTTP {answer.status}, the URL expired or was used; the next "
                    "attempt derives a new one",
                    status=answer.status,
                )
            if not 200 <= answer.status < 300:
                raise refused(answer, what)
            yield as_download(answer, size=file.size, mime=file.mime)

    def download_url(
        self, opts: DingTalkRobotOptions, secret: str, code: str, state: Any, timeout: float
    ) -> str:
        """``messageFiles/download``: the temporary URL of the file ``code`` names."""
        what = "DingTalk messageFiles/download"
        tokens = self.tokens(opts, secret)
        body = {"downloadCode": code, "robotCode": opts.robot_code or opts.app_key}
        token = tokens.get(state, timeout)
        response = self.ask(opts, body, token, timeout, what)
        if token_rejected(response):  # expired or revoked early: one new token, once more
            token = tokens.get(state, timeout, rejected=token)
            response = self.ask(opts, body, token, timeout, what)
        if not 200 <= response.status < 300:
            try:
                api_outcome(response)
            except DeliveryError as exc:
                raise relabel(local(exc), what, [token]) from None
        found = (json_body(response) or {}).get("downloadUrl")
        if not isinstance(found, str) or not found:
            raise PermanentDeliveryError(f"{what} answered without a downloadUrl")
        return found

    @staticmethod
    def ask(
        opts: DingTalkRobotOptions, body: dict[str, Any], token: str, timeout: float, what: str
    ) -> HttpAnswer:
        try:
            return post_json(
                f"{opts.api_base.rstrip('/')}/v1.0/robot/messageFiles/download",
                body,
                allow_private=opts.allow_private,
                timeout=timeout,
                headers={"x-acs-dingtalk-access-token": token},
            )
        except DeliveryError as exc:
            raise relabel(exc, what, [token]) from None
