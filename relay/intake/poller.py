"""``relay poll``: receive a ``telegram`` source's updates by ``getUpdates`` long polling.

Each update goes through the receiver's own pipeline: the source maps it
(``parse_update``; no secret header to check, since the Bot API itself is the
authenticated party) and ``Intake.enqueue`` (``relay.intake.accept``) dedupes it by
``update_id`` and queues it durably. Only then is the next offset saved in Redis, so a
restart neither loses nor repeats updates: a crash between the two re-fetches the update, and the
dedupe drops it. Telegram forgets an update once ``getUpdates`` is called with a
higher offset, which happens only after that save.

The bot token is part of every request URL, so URLs are never logged: log lines name
the API base and the method only, and request errors are redacted.
"""

from __future__ import annotations

import json
import math
import random
import threading
from typing import Any

import redis
import requests
import structlog

from relay.addresses import check_url
from relay.backoff import full_jitter
from relay.errors import IntakeError, RelayError
from relay.events import GroupEvent
from relay.guarded import BlockedAddress, guarded_session
from relay.intake.accept import Intake
from relay.intake.sources.base import Parsed
from relay.intake.sources.telegram import TelegramSource
from relay.liveness import LivenessFile
from relay.redact import redact
from relay.state import keys

log = structlog.get_logger("relay.poller")

READ_MARGIN = 10.0  # seconds a long poll may take beyond its own timeout
MAX_RETRY_AFTER = 3600.0


class PollError(RelayError):
    """Polling cannot go on (wrong source, bad token, a webhook is set): exit non-zero."""


class PollInterrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt
    """Raised by a stop signal to abandon a long poll in flight.

    Safe because updates it would return are not confirmed until the next call.
    """


class PollRetryLater(Exception):  # noqa: N818 - a control-flow signal, not an error report
    """A transient problem: wait ``delay`` seconds, then poll again from the saved offset."""

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class Poller:
    """Long-polls one ``telegram`` source; ``poll_once`` is one batch, ``run`` loops."""

    def __init__(
        self,
        intake: Intake,
        source_id: str,
        *,
        session: requests.Session | None = None,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        connect_timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        source: Any = intake.sources.get(source_id)  # Any: a Source is no TelegramSource
        if source is None:
            known = ", ".join(intake.sources) or "none"
            raise PollError(f"unknown source {source_id!r}; configured: {known}")
        if not isinstance(source, TelegramSource):
            raise PollError(
                f"source {source_id!r} is of kind {source.kind!r}; "
                "relay poll reads kind telegram sources only"
            )
        if not source.options.bot_token:
            raise PollError(
                f"sources.{source_id}.bot_token is not set: relay poll calls getUpdates "
                "with the bot's token"
            )
        self.intake = intake
        self.source_id = source_id
        self.source: TelegramSource = source
        self.api_base: str = source.options.api_base
        allow_private = source.options.allow_private
        try:
            check_url(self.api_base, allow_private)
        except ValueError as exc:
            raise PollError(f"sources.{source_id}.api_base: {exc}") from None
        self._own_session = session is None
        # The guard every outbound request has: vetted addresses only, no environment
        # proxies, and (in ``fetch``) no redirects.
        self.session = session or guarded_session(allow_private)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.connect_timeout = connect_timeout
        self.rng = rng
        self.offset: int | None = None
        self.loaded = False  # whether ``offset`` was read from Redis yet
        self.failures = 0
        self.waiting = False  # inside the long-poll request (safe to abandon)

    def close(self) -> None:
        """Close the HTTP session if the poller made it (its pooled connections)."""
        if self._own_session:
            self.session.close()

    # -- Redis ---------------------------------------------------------------------------------

    def load_offset(self) -> None:
        try:
            raw = self.intake.redis.get(keys.poll_offset(self.source_id))
        except redis.RedisError as exc:
            raise PollRetryLater(
                f"redis unavailable ({type(exc).__name__})", self._backoff()
            ) from None
        self.offset = int(raw) if raw else None
        self.loaded = True

    def _save_offset(self, offset: int) -> None:
        try:
            self.intake.redis.set(keys.poll_offset(self.source_id), str(offset))
        except redis.RedisError as exc:
            raise PollRetryLater(
                f"redis unavailable ({type(exc).__name__})", self._backoff()
            ) from None
        self.offset = offset

    # -- the Bot API ---------------------------------------------------------------------------

    def _params(self) -> dict[str, str]:
        opts = self.source.options
        params = {"timeout": str(opts.poll_timeout), "limit": str(opts.poll_limit)}
        if self.offset is not None:
            params["offset"] = str(self.offset)
        if opts.allowed_updates is not None:
            params["allowed_updates"] = json.dumps(opts.allowed_updates)
        return params

    def fetch(self) -> list[Any]:
        """One ``getUpdates`` call: the updates, else ``PollRetryLater`` or ``PollError``."""
        timeout = (self.connect_timeout, self.source.options.poll_timeout + READ_MARGIN)
        self.waiting = True
        try:
            response = self.session.get(
                self.source.method_url("getUpdates"),
                params=self._params(),
                timeout=timeout,
                allow_redirects=False,
            )
        except BlockedAddress as exc:
            raise PollError(f"sources.{self.source_id}.api_base: {exc}") from None
        except requests.RequestException as exc:
            reason = f"{type(exc).__name__}: {self._redacted(str(exc))}"
            raise PollRetryLater(reason, self._backoff()) from None
        finally:
            self.waiting = False
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("ok") is True:
            result = body.get("result")
            if isinstance(result, list):
                return result
            raise PollRetryLater(
                "getUpdates answered ok without a list of updates", self._backoff()
            )
        return self._refused(response, body if isinstance(body, dict) else {})

    def _refused(self, response: requests.Response, body: dict[str, Any]) -> list[Any]:
        code = body.get("error_code")
        if not isinstance(code, int) or isinstance(code, bool):
            code = response.status_code
        description = self._redacted(str(body.get("description") or response.reason or ""))
        said = f"getUpdates answered {code} ({description[:300]})"
        if code == 429 or response.status_code == 429:
            raise PollRetryLater(said, self._retry_after(response, body))
        if code == 409 and "webhook" in description.lower():
            raise PollError(
                f"{said}: a webhook is set for this bot, and Telegram sends updates either "
                f"to a webhook or to getUpdates. Remove it with deleteWebhook "
                f"({self.api_base}/bot<token>/deleteWebhook), or drop relay poll and "
                f"receive updates at /hooks/{self.source_id}"
            )
        if code == 409:  # "terminated by other getUpdates request": another poller
            raise PollRetryLater(f"{said}: another client polls this bot", self._backoff())
        if code in (401, 404):
            raise PollError(
                f"{said}: {self.api_base} does not accept "
                f"sources.{self.source_id}.bot_token; check the token and api_base"
            )
        if 400 <= code < 500:
            raise PollError(f"{said}: check sources.{self.source_id} (allowed_updates, ...)")
        raise PollRetryLater(said, self._backoff())

    def _retry_after(self, response: requests.Response, body: dict[str, Any]) -> float:
        parameters = body.get("parameters")
        wait = parameters.get("retry_after") if isinstance(parameters, dict) else None
        if not isinstance(wait, int | float) or isinstance(wait, bool):
            header = response.headers.get("Retry-After", "")
            wait = float(header) if header.isascii() and header.isdigit() else None
        if wait is None or not math.isfinite(wait):
            return self._backoff()
        return min(max(float(wait), 0.0), MAX_RETRY_AFTER)

    def _backoff(self) -> float:
        """The wait after one more failure in a row: full jitter, up to ``backoff_cap``."""
        self.failures += 1
        return full_jitter(
            self.failures, base=self.backoff_base, cap=self.backoff_cap, rng=self.rng
        )

    def _redacted(self, text: str) -> str:
        return redact(text, [self.source.options.bot_token or ""]) or ""

    # -- the pipeline --------------------------------------------------------------------------

    def _parsed(self, update: dict[str, Any]) -> Parsed:
        """The source's own mapping; an update it cannot map is kept as ``custom``."""
        try:
            return self.source.parse_update(update)
        except IntakeError as exc:
            log.warning("poll.unmapped_update", source=self.source_id, error=exc.detail)
            event = GroupEvent(source=self.source_id, type="custom", raw=update)
            return Parsed(event, str(update["update_id"]))

    def handle(self, updates: list[Any]) -> int:
        """Queue each update in order, saving the offset after each; the count queued."""
        valid: dict[int, dict[str, Any]] = {}
        for update in updates:
            uid = update.get("update_id") if isinstance(update, dict) else None
            if isinstance(uid, int) and not isinstance(uid, bool) and uid >= 0:
                valid[uid] = update
            else:
                log.warning("poll.skipped_update", source=self.source_id, reason="no update_id")
        queued = 0
        for uid in sorted(valid):
            parsed = self._parsed(valid[uid])
            try:
                accepted = self.intake.enqueue(self.source_id, parsed)
            except IntakeError as exc:  # Unavailable: Redis is away
                raise PollRetryLater(f"queue unavailable ({exc.detail})", self._backoff()) from None
            log.info(
                "poll.accepted",
                source=self.source_id,
                update_id=uid,
                event_id=accepted.event_id,
                type=parsed.event.type,
                duplicate=accepted.duplicate,
            )
            self._save_offset(uid + 1)
            queued += 0 if accepted.duplicate else 1
        return queued

    def poll_once(self) -> int:
        """Load the offset if needed, fetch a batch, queue it; ``PollRetryLater`` if transient."""
        if not self.loaded:
            self.load_offset()
        count = self.handle(self.fetch())
        self.failures = 0
        return count

    def run(self, stop: threading.Event, alive: LivenessFile | None = None) -> None:
        """Poll until ``stop`` is set (a batch in progress is finished first); ``alive``
        is touched every turn, also while the API or Redis is away."""
        log.info("poll.started", source=self.source_id, api=self.api_base, method="getUpdates")
        try:
            while not stop.is_set():
                if alive is not None:
                    alive.touch()
                try:
                    self.poll_once()
                except PollRetryLater as retry:
                    log.warning(
                        "poll.retry",
                        source=self.source_id,
                        api=self.api_base,
                        method="getUpdates",
                        reason=retry.reason,
                        delay=round(retry.delay, 3),
                        offset=self.offset,
                    )
                    stop.wait(retry.delay)
        except PollInterrupted:
            pass
        log.info("poll.stopped", source=self.source_id, offset=self.offset)
