"""Which fetcher opens the files of which source kind.

Platforms whose events name files by a reference (Telegram's ``file_id``, Slack's
``F…`` id, Feishu's message resource, DingTalk's ``downloadCode``, WeCom's
``MediaId``) get a fetcher that resolves it with the source's credentials. Generic
webhook kinds carry plain URLs. A kind without a fetcher of its own still gets its
``url`` files fetched, and its reference-only files refused, naming the kind.
"""

from __future__ import annotations

from workers.fetch.base import Fetcher
from workers.fetch.dingtalk import DingTalkFetcher
from workers.fetch.feishu import FeishuFetcher
from workers.fetch.slack import SlackFetcher
from workers.fetch.telegram import TelegramFetcher
from workers.fetch.url import UrlFetcher
from workers.fetch.wecom import WecomFetcher

# One instance per kind: the instances keep their token caches between deliveries.
FETCHERS: dict[str, Fetcher] = {
    "telegram": TelegramFetcher(),
    "slack": SlackFetcher(),
    "feishu": FeishuFetcher(),
    "dingtalk_robot": DingTalkFetcher(),
    "wecom": WecomFetcher(),
    "standard_webhooks": UrlFetcher("standard_webhooks"),
    "hmac": UrlFetcher("hmac"),
}


def fetcher_for(source_kind: str) -> Fetcher:
    """The fetcher of ``source_kind``'s files; for a kind without one (``dingtalk_events``
    carries no files), one that fetches ``url`` files and refuses the rest."""
    return FETCHERS.get(source_kind) or UrlFetcher(source_kind)
