"""``apprise`` target: send each event to one or more Apprise URLs (ntfy, Telegram,
Matrix, Discord, a JSON endpoint, ...), for the long tail of services without a
native adapter.

Apprise does its own networking, outside the relay's guarded pools, and reports only
success or failure. So this adapter (1) refuses URLs whose host is private unless
``allow_private``, at construction without DNS and by resolving before each send, for
a clear early error; and enforces the policy on the address each socket of the send
actually connects to (``workers.net.connect_guard``), which also covers a name that
changes its answer in between (DNS rebinding) and plugins whose URL has no host part
(Zulip's ``bot@org.host``, Azure's ``endpoint``), (2) turns redirects off, (3)
treats ``False`` as retryable, capped by the target's retry policy, (4) remembers in
Redis which URLs of a delivery already succeeded, so a retry only resends to the ones
that failed, and (5) keeps Apprise's log records, which can contain URLs and their
tokens, away from the process's logs: it captures the warnings of each send for the
error message, with the URLs' secret parts masked.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

import redis
from pydantic import ConfigDict, Field, field_validator

from relay.config.models import TargetConfig
from relay.errors import ConfigError, PermanentDeliveryError, RetryableDeliveryError
from relay.redact import MASK, redact
from relay.state import keys
from relay.templates import TemplateError, check_template, render
from workers.net.addresses import HINT, check_url
from workers.net.connect_guard import vetted_connections
from workers.net.http import BlockedAddress, vetted_addresses
from workers.net.outcomes import excerpt
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult, TargetOptions

if TYPE_CHECKING:
    from apprise import AppriseAsset
    from apprise.plugins.base import NotifyBase

PROGRESS_TTL = 7 * 24 * 3600  # seconds a delivery remembers which URLs already succeeded
INSTALL = "pip install 'group-relay[apprise]'"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")

DEFAULT_TITLE = "{{ (event.group.name or event.group.id) if event.group else event.source }}"
_WHO = "{% set who = (event.sender.name or event.sender.id) if event.sender else 'Someone' %}\n"
# Apprise has no common mention markup: mentions are ``@name`` in every format.
DEFAULT_TEXT = (
    _WHO
    + """\
{{ who }}: {{ event.text or "(" ~ event.type ~ ")" }}
{% if mentions %}
{% for m in mentions %}@{{ m.name }}{{ " " if not loop.last }}{% endfor %}

{% endif %}
{% for f in event.files %}
📎 {{ f.name }}{{ (" " ~ f.url) if f.url }}
{% endfor %}
"""
)
DEFAULT_MARKDOWN = (
    _WHO
    + """\
**{{ who }}**: {{ event.text or "_" ~ event.type ~ "_" }}
{% if mentions %}

{% for m in mentions %}@{{ m.name }}{{ " " if not loop.last }}{% endfor %}

{% endif %}
{% if event.files %}

{% for f in event.files %}
- {{ ("[" ~ f.name ~ "](" ~ f.url ~ ")") if f.url else f.name }}
{% endfor %}
{% endif %}
"""
)
DEFAULT_HTML = (
    _WHO
    + """\
<b>{{ who }}</b>: <span style="white-space: pre-wrap">{{ event.text or event.type }}</span>
{% if mentions %}
<br>{% for m in mentions %}@{{ m.name }}{{ " " if not loop.last }}{% endfor %}

{% endif %}
{% for f in event.files %}
<br>{% if f.url and f.url.startswith(("https://", "http://")) %}\
<a href="{{ f.url }}">{{ f.name }}</a>{% else %}{{ f.name }}{% endif %}

{% endfor %}
"""
)
DEFAULTS = {"text": DEFAULT_TEXT, "markdown": DEFAULT_MARKDOWN, "html": DEFAULT_HTML}


class AppriseOptions(TargetOptions):
    """What an ``apprise`` target adds. URLs carry tokens: never shown, never echoed."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    urls: list[str] = Field(min_length=1, repr=False)
    title: str = DEFAULT_TITLE
    format: Literal["text", "markdown", "html"] = "text"

    @field_validator("urls")
    @classmethod
    def _shape(cls, value: list[str]) -> list[str]:
        for i, url in enumerate(value):
            if not _SCHEME.match(url):
                raise ValueError(f"[{i}]: not an Apprise URL (scheme://...)")
        return value

    @field_validator("title")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return check_template(value)


@dataclass(frozen=True)
class Service:
    """One configured URL: what may be shown of it, and where it connects."""

    index: int
    url: str
    shown: str  # urls[0] (json://127.0.0.1:8080): no path, query or credentials
    host: str | None  # the network destination the user chose; None for fixed services
    port: int | None
    fragments: tuple[str, ...]  # parts of the URL to mask in captured messages

    @property
    def key(self) -> str:
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]


class _Capture(logging.Handler):
    """Apprise's warnings, collected per thread (green thread under gevent)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.buffers: dict[int, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        buffer = self.buffers.get(record.thread or 0)
        if buffer is not None and len(buffer) < 10:
            buffer.append(record.getMessage())

    @contextmanager
    def collect(self) -> Iterator[list[str]]:
        ident, buffer = threading.get_ident(), list[str]()
        self.buffers[ident] = buffer
        try:
            yield buffer
        finally:
            self.buffers.pop(ident, None)


_CAPTURE = _Capture()


def _quiet_apprise() -> None:
    """Apprise logs URLs (debug) and hosts: nothing of it reaches the process's logs."""
    logger = logging.getLogger("apprise")
    if _CAPTURE not in logger.handlers:
        logger.addHandler(_CAPTURE)
    logger.propagate = False
    logger.setLevel(logging.WARNING)


def _asset() -> AppriseAsset:
    """Sequential sends in the calling thread, nothing written to disk, no redirects."""
    from apprise import AppriseAsset

    settings: list[dict[str, Any]] = [{"storage_mode": "memory", "service_timeout": 0}, {}]
    for kwargs in settings:  # older releases lack these settings: their defaults do
        try:
            asset = AppriseAsset(**kwargs)
            break
        except (TypeError, AttributeError):
            continue
    asset.async_mode = False
    asset.http_redirects = False
    return asset


def _destination(plugin: NotifyBase) -> str | None:
    """The host the URL makes Apprise connect to, if the user chose it (``{host}`` in the
    plugin's templates); fixed services (Telegram, Discord, ...) keep tokens there."""
    templates: tuple[str, ...] = tuple(getattr(type(plugin), "templates", ()))
    if not any("{host}" in t for t in templates):
        return None
    if getattr(plugin, "mode", None) == "cloud":  # ntfy://topic goes to ntfy.sh
        return None
    host = getattr(plugin, "smtp_host", None) or getattr(plugin, "host", None)
    return host if isinstance(host, str) and host else None


def _service(index: int, url: str, plugin: NotifyBase) -> Service:
    host = _destination(plugin)
    port = getattr(plugin, "port", None)
    port = port if isinstance(port, int) else None
    scheme = url.partition("://")[0].lower()
    where = (f"[{host}]" if ":" in host else host) if host else "…"
    shown = f"urls[{index}] ({scheme}://{where}{f':{port}' if port and host else ''})"
    rest = url.partition("://")[2]
    pieces = {p for p in re.split(r"[/:@?&=#,]", rest) if len(p) >= 4 and p != host}
    return Service(index, url, shown, host, port, (url, *sorted(pieces, key=len, reverse=True)))


class AppriseTarget(BaseTarget):
    """Notify every configured Apprise URL; a failure is retried for the failed URLs."""

    kind: ClassVar[str] = "apprise"
    family: ClassVar[str] = "notify"
    Options: ClassVar[type[AppriseOptions]] = AppriseOptions

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        try:
            import apprise
        except ImportError:
            raise ConfigError(
                [f"targets.{config.id}.kind: apprise needs the Apprise package: {INSTALL}"]
            ) from None
        options = config.options
        if not isinstance(options, AppriseOptions):
            options = AppriseOptions.model_validate(options or {})
        self.options: AppriseOptions = options
        _quiet_apprise()
        self.asset = _asset()
        self.services: list[Service] = []
        problems = []
        for i, url in enumerate(options.urls):
            where = f"targets.{config.id}.urls[{i}]"
            with warnings.catch_warnings():  # the first use loads every plugin module; some
                warnings.simplefilter("ignore", DeprecationWarning)  # import imghdr (3.11+)
                plugin = apprise.Apprise.instantiate(url, asset=self.asset)
            if plugin is None:
                scheme = url.partition("://")[0]
                problems.append(f"{where}: Apprise does not accept this {scheme}:// URL")
                continue
            service = _service(i, url, plugin)
            if service.host is not None:
                host = f"[{service.host}]" if ":" in service.host else service.host
                try:
                    check_url(f"http://{host}/", config.allow_private)
                except ValueError as exc:
                    problems.append(f"{where}: {exc}")
                    continue
            self.services.append(service)
        if problems:
            raise ConfigError(problems)

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        fmt = self.options.format
        body = context.render(DEFAULTS[fmt], html=fmt == "html")
        try:
            title = render(self.options.title, event=context.event, mentions=context.mentions)
        except TemplateError as exc:
            raise PermanentDeliveryError(f"title {exc}") from None
        progress = Progress(context.state, context.delivery_id)
        pending = [s for s in self.services if s.key not in progress.done()]
        if not self.config.allow_private:
            for service in pending:
                self.vet(service)
        failures = []
        for service in pending:
            with vetted_connections(self.config.allow_private) as refused:
                reason = self.notify(service, body, title, context.timeout)
            if reason is None:
                progress.mark(service.key)
            elif refused:  # the policy, not the service, failed it: no retry will do
                raise PermanentDeliveryError(
                    f"refused to send to {service.shown}: {refused[0]}; {HINT}"
                )
            else:
                failures.append(f"{service.shown}: {reason}")
        if failures:
            message = "Apprise could not deliver to " + "; ".join(failures)
            raise RetryableDeliveryError(message, excerpt=excerpt(message))
        skipped = len(self.services) - len(pending)
        note = f" ({skipped} already done by an earlier attempt)" if skipped else ""
        return DeliveryResult(excerpt=f"sent to {len(pending)} Apprise URL(s){note}")

    def vet(self, service: Service) -> None:
        """Resolve the host as Apprise is about to and refuse a private address: a clear
        error before anything is sent (the connect guard is what enforces the policy)."""
        if service.host is None:
            return
        try:
            vetted_addresses(service.host, service.port or 443, allow_private=False)
        except BlockedAddress as exc:
            raise PermanentDeliveryError(f"refused to send to {service.shown}: {exc}") from None
        except (socket.gaierror, UnicodeError):
            pass  # Apprise will fail to resolve it too, and say so

    def notify(self, service: Service, body: str, title: str, timeout: float) -> str | None:
        """None if Apprise reports success, else what its warnings said (masked)."""
        import apprise

        plugin = apprise.Apprise.instantiate(service.url, asset=self.asset)
        if plugin is None:  # accepted at construction: only a broken install gets here
            return "Apprise no longer accepts the URL"
        query = urlsplit(service.url).query
        if "cto=" not in query:
            plugin.socket_connect_timeout = timeout
        if "rto=" not in query:
            plugin.socket_read_timeout = timeout
        plugin.redirects = False
        sender = apprise.Apprise(asset=self.asset)
        sender.add(plugin)
        with _CAPTURE.collect() as notes:
            try:
                ok = bool(sender.notify(body=body, title=title, body_format=self.options.format))
            except Exception as exc:  # a plugin bug must not look like a worker crash
                ok, notes[:] = False, [f"{type(exc).__name__} in the Apprise plugin"]
        if ok:
            return None
        return mask(" ".join(notes) or "Apprise reported a failure", service.fragments)


def mask(text: str, fragments: tuple[str, ...]) -> str:
    """``text`` without the URL's tokens, passwords and paths."""
    for fragment in fragments:
        text = text.replace(fragment, MASK)
    return redact(text) or ""


class Progress:
    """The URLs of one delivery that already succeeded, so a retry skips them."""

    def __init__(self, state: redis.Redis | None, delivery_id: str) -> None:
        self.state = state
        self.key = keys.sent_steps("apprise", delivery_id)
        self._done: set[str] | None = None

    def done(self) -> set[str]:
        if self._done is None:
            members: Any = self.state.smembers(self.key) if self.state is not None else set()
            self._done = {m.decode() if isinstance(m, bytes) else str(m) for m in members}
        return self._done

    def mark(self, key: str) -> None:
        if self.state is not None:
            pipe = self.state.pipeline()
            pipe.sadd(self.key, key)
            pipe.expire(self.key, PROGRESS_TTL)
            pipe.execute()
