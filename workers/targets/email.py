"""``email`` target: one message per event over SMTP, to fixed recipients and to the
people the event @-mentions (the people map's ``email`` ids), so "assign by mention"
reaches the assignee's inbox.

The SMTP host is checked against the SSRF policy like every HTTP target: the worker
resolves it, checks every address, connects only to a checked one, and still verifies
the TLS certificate against the configured host name. ``Message-ID`` comes from the
delivery id, so a retry that the server had in fact accepted shows up in mail clients
as the same message. Reply codes follow RFC 5321 §4.2.1: 4yz retry, 5yz permanent.
Messages are 7-bit clean whatever the server offers: non-ASCII parts go as
quoted-printable or base64 and non-ASCII headers as RFC 2047 encoded-words, since a
raw UTF-8 body is only allowed with ``BODY=8BITMIME`` to a server offering it (RFC 6152).
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, parseaddr
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from relay.config.models import TargetConfig
from relay.config.people import Mention
from relay.errors import ConfigError, DeliveryError, PermanentDeliveryError
from relay.errors import RetryableDeliveryError as Retryable
from relay.templates import TemplateError, check_template, render
from workers.net.addresses import check_url
from workers.net.http import BlockedAddress
from workers.net.outcomes import excerpt
from workers.net.smtp import GuardedSMTP, GuardedSMTPSSL
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult, TargetOptions

Security = Literal["starttls", "tls", "none"]
MESSAGE_POLICY = SMTP_POLICY.clone(cte_type="7bit")
"""CRLF lines, and every part encoded to 7 bits: correct for any server."""
DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}
_ADDR = re.compile(r"^[^\s@<>,;:\"()\[\]\\]+@[^\s@<>,;:\"()\[\]\\]+$")
_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")
_WHO = "{% set who = (event.sender.name or event.sender.id) if event.sender else 'Someone' %}\n"
_WHERE = "{% set where = (event.group.name or event.group.id) if event.group else event.source %}\n"

DEFAULT_SUBJECT = (
    "[{{ (event.group.name or event.group.id) if event.group else event.source }}] "
    "{{ (event.sender.name or event.sender.id) if event.sender else 'Someone' }}: "
    "{{ (event.text or event.type) | truncate_text(60) }}"
)
# Templates also see ``format``: "text" or "html", the part being rendered.
DEFAULT_TEXT = (
    _WHO
    + _WHERE
    + """\
{{ who }} in {{ where }}:

{{ event.text or "(" ~ event.type ~ ")" }}
{% if mentions %}

Mentioned: {% for m in mentions %}{{ m.name }}{% if m.id_on("email") %} \
<{{ m.id_on("email") }}>{% endif %}{{ ", " if not loop.last }}{% endfor %}

{% endif %}
{% if event.files %}

Files:
{% for f in event.files %}
- {{ f.name }}{{ (": " ~ f.url) if f.url }}
{% endfor %}
{% endif %}
"""
)
DEFAULT_HTML = (
    _WHO
    + _WHERE
    + """\
<p><strong>{{ who }}</strong> in <strong>{{ where }}</strong>:</p>
<p style="white-space: pre-wrap">{{ event.text or "(" ~ event.type ~ ")" }}</p>
{% if mentions %}
<p>Mentioned: {% for m in mentions %}<strong>{{ m.name }}</strong>\
{{ ", " if not loop.last }}{% endfor %}</p>
{% endif %}
{% if event.files %}
<ul>
{% for f in event.files %}
{% if f.url and f.url.startswith(("https://", "http://")) %}
<li><a href="{{ f.url }}">{{ f.name }}</a></li>
{% else %}
<li>{{ f.name }}</li>
{% endif %}
{% endfor %}
</ul>
{% endif %}
"""
)
_STAGES: dict[type[Exception], str] = {
    smtplib.SMTPHeloError: "refused EHLO:",
    smtplib.SMTPSenderRefused: "refused the sender (MAIL FROM):",
    smtplib.SMTPDataError: "refused the message (DATA):",
}
_PAGE = '<!DOCTYPE html>\n<html><body style="font-family: sans-serif">\n{}\n</body></html>\n'


def parse_address(text: str) -> Address:
    """``ada@example.com`` or ``Ada <ada@example.com>``; ``ValueError`` if neither."""
    name, addr = parseaddr(text)
    if "\r" in text or "\n" in text or not _ADDR.match(addr):
        raise ValueError(f"{text!r} is not an email address")
    return Address(display_name=name, addr_spec=addr)


class EmailOptions(TargetOptions):
    """What an ``email`` target adds; ``from`` is spelled ``sender`` in Python."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, hide_input_in_errors=True, populate_by_name=True
    )

    host: str = Field(min_length=1, max_length=253)
    port: int | None = Field(None, ge=1, le=65535)
    security: Security = "starttls"
    username: str | None = None
    password: str | None = Field(None, repr=False)
    sender: str = Field(alias="from")
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    subject: str = DEFAULT_SUBJECT
    html: bool = True
    ca_file: str | None = None

    @field_validator("host")
    @classmethod
    def _bare_host(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9.:_-]+|\[[0-9A-Fa-f:.]+\]", value):
            raise ValueError("a host name or IP address, without scheme, port or path")
        return value.strip("[]")

    @field_validator("sender", "to", "cc")
    @classmethod
    def _addresses(cls, value: str | list[str]) -> str | list[str]:
        for i, text in enumerate([value] if isinstance(value, str) else value):
            try:
                parse_address(text)
            except ValueError as exc:
                raise ValueError(f"[{i}]: {exc}" if isinstance(value, list) else exc) from None
        return value

    @field_validator("subject")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return check_template(value)

    @field_validator("ca_file")
    @classmethod
    def _relative_to_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = info.context.get("base_dir") if isinstance(info.context, dict) else None
        if value is None or base is None:
            return value
        return str(Path(base) / Path(value).expanduser())

    @model_validator(mode="after")
    def _credentials(self) -> EmailOptions:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password, or neither")
        return self


class EmailTarget(BaseTarget):
    """Send each event as a multipart (text + HTML) message over SMTP."""

    kind: ClassVar[str] = "email"
    family: ClassVar[str] = "notify"
    Options: ClassVar[type[EmailOptions]] = EmailOptions

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        options = config.options
        if not isinstance(options, EmailOptions):
            options = EmailOptions.model_validate(options or {})
        self.options: EmailOptions = options
        where = f"targets.{config.id}"
        if options.security == "none" and not config.allow_private:
            raise ConfigError(
                [
                    f"{where}.security: 'none' sends messages and the password unencrypted; "
                    "it is allowed only for a server on this host or a private network, "
                    "with allow_private: true"
                ]
            )
        self.port = options.port or DEFAULT_PORTS[options.security]
        host = f"[{options.host}]" if ":" in options.host else options.host
        try:
            check_url(f"http://{host}:{self.port}/", config.allow_private)
        except ValueError as exc:
            raise ConfigError([f"{where}.host: {exc}"]) from None
        try:
            self.tls = ssl.create_default_context(cafile=options.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([f"{where}.ca_file: cannot load {options.ca_file}: {exc}"]) from None
        self.sender = parse_address(options.sender)
        self.to = [parse_address(a) for a in options.to]
        self.cc = [parse_address(a) for a in options.cc]

    def recipients(self, mentions: list[Mention]) -> tuple[list[Address], list[Address]]:
        """To (configured, then each mentioned person with an email) and Cc, deduplicated."""
        seen: set[str] = set()

        def fresh(address: Address) -> bool:
            new = address.addr_spec.lower() not in seen
            seen.add(address.addr_spec.lower())
            return new

        mentioned = [(m.name, m.id_on("email")) for m in mentions]
        extra = [Address(name, addr_spec=a) for name, a in mentioned if a and _ADDR.match(a)]
        to = [a for a in [*self.to, *extra] if fresh(a)]
        cc = [a for a in self.cc if fresh(a)]
        return to, cc

    def message(
        self, context: DeliveryContext, to: list[Address], cc: list[Address]
    ) -> EmailMessage:
        """The message; HTML parts render with autoescape, so event text cannot inject markup."""
        try:
            subject = render(
                self.options.subject, event=context.event, mentions=context.mentions, format="text"
            )
        except TemplateError as exc:
            raise PermanentDeliveryError(f"subject {exc}") from None
        msg = EmailMessage(policy=MESSAGE_POLICY)
        msg["From"] = self.sender
        if to:
            msg["To"] = to
        if cc:
            msg["Cc"] = cc
        msg["Subject"] = " ".join(subject.split())[:250]
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = f"<{_MSGID_UNSAFE.sub('-', context.delivery_id)}@group-relay>"
        msg["X-Relay-Delivery-Id"] = context.delivery_id
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
        msg.set_content(context.render(DEFAULT_TEXT, format="text") + "\n")
        if self.options.html:
            body = context.render(DEFAULT_HTML, html=True, format="html")
            if context.template:  # a chat-style template: keep its line breaks
                body = f'<div style="white-space: pre-wrap">{body}</div>'
            msg.add_alternative(_PAGE.format(body), subtype="html")
        return msg

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        to, cc = self.recipients(context.mentions)
        if not to and not cc:
            return DeliveryResult(excerpt="not sent: no recipients (to is empty, no one mentioned)")
        msg = self.message(context, to, cc)
        envelope = [a.addr_spec for a in [*to, *cc]]
        refused, reply = self.send(msg, envelope, context.timeout)
        code, text = reply if reply else (None, b"")
        summary = text.decode(errors="replace")
        if refused:
            summary = "refused: " + ", ".join(_refusal(a, c, t) for a, (c, t) in refused.items())
        return DeliveryResult(status=code, excerpt=excerpt(summary))

    def send(
        self, msg: EmailMessage, envelope: list[str], timeout: float
    ) -> tuple[dict[str, tuple[int, bytes]], tuple[int, bytes] | None]:
        """One SMTP session; the refused recipients and the server's reply to DATA."""
        kind = GuardedSMTPSSL if self.options.security == "tls" else GuardedSMTP
        smtp: GuardedSMTP | None = None
        try:  # the constructor connects, through the address guard
            smtp = kind(self.options.host, self.port, self.config.allow_private, timeout, self.tls)
            if self.options.security == "starttls":
                smtp.starttls(context=self.tls)  # verifies against host, not the IP
            if self.options.username is not None and self.options.password is not None:
                smtp.login(self.options.username, self.options.password)
            refused = smtp.send_message(msg, self.sender.addr_spec, envelope)
        except Exception as exc:
            if smtp is not None:
                smtp.close()  # no QUIT: a server that timed out would make us wait again
            raise self.failure(exc) from None
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):  # the message is already accepted
            smtp.close()
        return refused, smtp.data_reply

    def failure(self, exc: Exception) -> Exception:
        """The typed outcome of an SMTP exception; anything else as it is."""
        server = f"{self.options.host}:{self.port}"
        if isinstance(exc, BlockedAddress):
            return PermanentDeliveryError(f"refused to connect to {server}: {exc}")
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            every = ", ".join(_refusal(a, c, t) for a, (c, t) in exc.recipients.items())
            cls = Retryable if all(400 <= c < 500 for c in codes) else PermanentDeliveryError
            return cls(f"every recipient was refused: {every}", excerpt=excerpt(every))
        if isinstance(exc, smtplib.SMTPConnectError):
            return Retryable(f"{server} refused the session: {_reply(exc)}", status=exc.smtp_code)
        if isinstance(exc, smtplib.SMTPAuthenticationError) and exc.smtp_code >= 500:
            return PermanentDeliveryError(
                f"{server} refused the login of {self.options.username!r} ({_reply(exc)}): "
                "check username and password",
                status=exc.smtp_code,
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            stage = _STAGES.get(type(exc), "answered")
            return _by_code(f"{server} {stage} {_reply(exc)}", exc.smtp_code)
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            if isinstance(exc.__context__, TimeoutError):  # smtplib wraps read timeouts
                return Retryable(f"{server} did not answer within the timeout")
            return Retryable(f"{server} closed the connection: {exc}")
        if isinstance(exc, smtplib.SMTPException):  # STARTTLS or AUTH not offered, ...
            return PermanentDeliveryError(f"{server}: {exc}; check security and the server")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return Retryable(
                f"the TLS certificate of {server} did not verify ({exc.verify_message}); "
                "set ca_file if the server uses a private CA"
            )
        if isinstance(exc, socket.gaierror):
            return Retryable(f"{self.options.host} did not resolve")
        if isinstance(exc, TimeoutError):
            return Retryable(f"{server} did not answer within the timeout")
        if isinstance(exc, OSError):  # refused, reset, TLS handshake failures
            return Retryable(f"connection to {server} failed: {exc.strerror or exc}")
        return exc


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
    return f"{exc.smtp_code} {' '.join(str(text or exc.smtp_error).split())}"[:300]


def _refusal(address: str, code: int, text: bytes) -> str:
    return f"{address} ({code} {' '.join(text.decode(errors='replace').split())[:200]})"


def _by_code(message: str, code: int) -> DeliveryError:
    """RFC 5321: 5yz will fail again; 4yz (and anything odd) may not."""
    if 500 <= code < 600:
        return PermanentDeliveryError(message, status=code)
    return Retryable(message, status=code)
