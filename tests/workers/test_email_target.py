"""The ``email`` target against a real SMTP server on loopback (aiosmtpd): plain,
STARTTLS with a private CA, implicit TLS, AUTH, and every reply class."""

from __future__ import annotations

import datetime
import email
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import workers.net.http
from relay.config.loader import parse_config
from relay.config.people import People
from relay.errors import ConfigError, PermanentDeliveryError, RetryableDeliveryError
from relay.events import FileRef, Party
from tests.workers.support import assert_registered, delivery_context
from workers.net.smtp import GuardedSMTP
from workers.targets.base import DeliveryContext
from workers.targets.email import EmailOptions, EmailTarget

USER, PASSWORD = "relay", "s3cret-pa55word"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: str | None


@dataclass
class Mailbox:
    """An aiosmtpd handler: records messages; answers per recipient or at DATA on demand."""

    messages: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    mail_reply: str | None = None
    data_reply: str | None = None

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        message = email.message_from_bytes(envelope.content, _class=EmailMessage, policy=default)
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        self.messages.append(
            Received(
                envelope.mail_from, list(envelope.rcpt_tos), message, session.ssl is not None, login
            )
        )
        return "250 2.0.0 Ok: queued as Q1234"


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Certs:
    ca_file: Path
    server: ssl.SSLContext


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A self-signed certificate for the name ``localhost`` only (no IP address in it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("certs")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return Certs(folder / "cert.pem", server)


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[Mailbox, int]]]:
    """``start(**smtp_kwargs)`` runs an aiosmtpd server on 127.0.0.1 and returns its port."""
    controllers: list[Controller] = []

    def start(**kwargs: Any) -> tuple[Mailbox, int]:
        mailbox = Mailbox()
        controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **kwargs)
        controller.start()
        controllers.append(controller)
        return mailbox, controller.port

    yield start
    for controller in controllers:
        controller.stop()


def make_target(allow_private: bool = True, **options: Any) -> EmailTarget:
    """Through the config parser, as ``relay.yaml`` would build it (``from`` and all)."""
    raw = {"id": "mail", "kind": "email", "allow_private": allow_private}
    defaults = {"from": "Relay <relay@example.com>", "to": ["ops@example.com"]}
    raw.update({k: v for k, v in {**defaults, **options}.items() if v is not None})
    config = parse_config(
        {"targets": [raw]}, env={}, source_options={}, target_options={"email": EmailOptions}
    )
    return EmailTarget(config.targets["mail"])


PEOPLE = People(
    parse_config(
        {
            "people": {
                "ada": {"name": "Ada Lovelace", "slack": "U1", "email": "ada@example.com"},
                "bob": {"name": "Bob", "slack": "U2"},
                "ops": {"name": "Ops Team", "slack": "U3", "email": "OPS@example.com"},
            }
        },
        env={},
        source_options={},
        target_options={},
    ).people
)


def context(
    delivery_id: str = "dlv_0001",
    *,
    text: str | None = "deploy finished <script>alert(1)</script>",
    mentions: tuple[str, ...] = (),
    template: str | None = None,
    timeout: float = 5.0,
) -> DeliveryContext:
    return delivery_context(
        delivery_id,
        timeout=timeout,
        template=template,
        source_kind="slack",
        people=PEOPLE,
        text=text,
        sender=Party(id="u9", name="Grace"),
        mentions=[Party(id=m) for m in mentions],
        files=[FileRef(name="log.txt", url="https://files.example.com/log.txt")],
    )


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return (
        str(text.get_content()).replace("\r\n", "\n"),
        str(html.get_content()).replace("\r\n", "\n"),
    )


def test_registered_as_entry_point() -> None:
    assert_registered(EmailTarget, "email", "notify")


def test_delivers_multipart_message_with_stable_ids(smtp_server: Callable[..., Any]) -> None:
    mailbox, port = smtp_server()
    target = make_target(host="127.0.0.1", port=port, security="none", cc=["audit@example.com"])
    result = target.deliver(context())
    assert (result.status, result.excerpt) == (250, "2.0.0 Ok: queued as Q1234")
    [received] = mailbox.messages
    assert received.mail_from == "relay@example.com"
    assert received.rcpt_tos == ["ops@example.com", "audit@example.com"]
    msg = received.message
    assert msg["Message-ID"] == "<dlv_0001@group-relay>"
    assert msg["X-Relay-Delivery-Id"] == "dlv_0001"
    assert msg["From"] == "Relay <relay@example.com>"
    assert (msg["To"], msg["Cc"]) == ("ops@example.com", "audit@example.com")
    assert msg["Subject"] == "[Ops room] Grace: deploy finished <script>alert(1)</script>"
    assert msg["Date"] and msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = parts(msg)
    assert "Grace in Ops room:" in text and "<script>alert(1)</script>" in text
    assert "- log.txt: https://files.example.com/log.txt" in text
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<a href="https://files.example.com/log.txt">log.txt</a>' in html
    target.deliver(context())  # a retry: same Message-ID, so clients can spot the duplicate
    assert mailbox.messages[1].message["Message-ID"] == "<dlv_0001@group-relay>"


def test_mentions_become_recipients_and_are_named(smtp_server: Callable[..., Any]) -> None:
    mailbox, port = smtp_server()
    target = make_target(host="127.0.0.1", port=port, security="none", html=False)
    target.deliver(context(mentions=("U1", "U2", "U3", "U1")))
    [received] = mailbox.messages
    # Ada by her people-map email; Bob has none; Ops is already in `to` (case-insensitive).
    assert received.rcpt_tos == ["ops@example.com", "ada@example.com"]
    assert received.message["To"] == "ops@example.com, Ada Lovelace <ada@example.com>"
    assert received.message.get_content_type() == "text/plain"
    body = str(received.message.get_content())
    assert "Mentioned: Ada Lovelace <ada@example.com>, Bob, Ops Team <OPS@example.com>" in body


def test_mentions_alone_are_enough_and_no_recipient_sends_nothing(
    smtp_server: Callable[..., Any],
) -> None:
    mailbox, port = smtp_server()
    target = make_target(host="127.0.0.1", port=port, security="none", to=[])
    target.deliver(context(mentions=("U1",)))
    assert mailbox.messages[0].rcpt_tos == ["ada@example.com"]
    result = target.deliver(context(mentions=("U2",)))
    assert result.excerpt is not None and result.excerpt.startswith("not sent: no recipients")
    assert len(mailbox.messages) == 1


def test_partly_refused_recipients_are_a_success_that_names_them(
    smtp_server: Callable[..., Any],
) -> None:
    mailbox, port = smtp_server()
    mailbox.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    target = make_target(
        host="127.0.0.1", port=port, security="none", to=["ops@example.com", "gone@example.com"]
    )
    result = target.deliver(context())
    assert result.excerpt == "refused: gone@example.com (550 5.1.1 no such user)"
    assert mailbox.messages[0].rcpt_tos == ["ops@example.com"]


@pytest.mark.parametrize(
    ("replies", "outcome"),
    [
        (["450 4.2.1 mailbox busy", "451 4.3.0 try later"], RetryableDeliveryError),
        (["550 5.1.1 no such user", "550 5.1.1 no such user"], PermanentDeliveryError),
        (["450 4.2.1 mailbox busy", "550 5.1.1 no such user"], PermanentDeliveryError),
    ],
)
def test_every_recipient_refused(
    smtp_server: Callable[..., Any], replies: list[str], outcome: type[Exception]
) -> None:
    mailbox, port = smtp_server()
    mailbox.rcpt_replies = dict(zip(["a@example.com", "b@example.com"], replies, strict=True))
    target = make_target(
        host="127.0.0.1", port=port, security="none", to=list(mailbox.rcpt_replies)
    )
    with pytest.raises(outcome, match="every recipient was refused: a@example.com") as info:
        target.deliver(context())
    assert type(info.value) is outcome
    assert not mailbox.messages


@pytest.mark.parametrize(
    ("stage", "reply", "outcome", "status"),
    [
        ("data", "451 4.3.0 queue full", RetryableDeliveryError, 451),
        ("data", "554 5.7.1 spam", PermanentDeliveryError, 554),
        ("mail", "553 5.7.1 sender not allowed", PermanentDeliveryError, 553),
        ("mail", "421 4.7.0 too many connections", RetryableDeliveryError, 421),
    ],
)
def test_reply_classes(
    smtp_server: Callable[..., Any],
    stage: str,
    reply: str,
    outcome: type[Exception],
    status: int,
) -> None:
    mailbox, port = smtp_server()
    setattr(mailbox, f"{stage}_reply", reply)
    target = make_target(host="127.0.0.1", port=port, security="none")
    with pytest.raises(outcome) as info:
        target.deliver(context())
    assert type(info.value) is outcome
    assert getattr(info.value, "status", None) == status
    assert reply.split(" ", 1)[1] in str(info.value)


def raw_server(script: Callable[[socket.socket], None]) -> int:
    """A TCP server on loopback that runs ``script`` on each connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                script(conn)

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


@pytest.mark.parametrize(
    ("script", "match"),
    [
        (lambda c: c.sendall(b"421 4.3.2 shutting down\r\n"), "refused the session: 421"),
        (lambda c: (c.sendall(b"220 hi\r\n"), c.recv(100)), "closed the connection"),
        (lambda c: c.recv(100), "did not answer within"),
    ],
)
def test_transport_failures_are_retried(script: Callable[[socket.socket], Any], match: str) -> None:
    port = raw_server(script)
    target = make_target(host="127.0.0.1", port=port, security="none")
    with pytest.raises(RetryableDeliveryError, match=match):
        target.deliver(context(timeout=0.5))


def test_connection_refused_is_retried() -> None:
    target = make_target(host="127.0.0.1", port=free_port(), security="none")
    with pytest.raises(RetryableDeliveryError, match="connection to 127.0.0.1:.* failed"):
        target.deliver(context())


def test_starttls_verifies_the_host_name_with_a_private_ca(
    smtp_server: Callable[..., Any], certs: Certs
) -> None:
    mailbox, port = smtp_server(tls_context=certs.server, require_starttls=True)
    # The worker connects to the vetted 127.0.0.1 yet checks the certificate for localhost.
    target = make_target(host="localhost", port=port, ca_file=str(certs.ca_file))
    assert target.deliver(context()).status == 250
    assert mailbox.messages[0].tls
    untrusted = make_target(host="localhost", port=port)
    with pytest.raises(RetryableDeliveryError, match="certificate .* did not verify.*ca_file"):
        untrusted.deliver(context())
    by_ip = make_target(host="127.0.0.1", port=port, ca_file=str(certs.ca_file))
    with pytest.raises(RetryableDeliveryError, match="IP address mismatch"):
        by_ip.deliver(context())
    assert len(mailbox.messages) == 1


def test_starttls_not_offered_is_a_config_error(smtp_server: Callable[..., Any]) -> None:
    mailbox, port = smtp_server()
    target = make_target(host="127.0.0.1", port=port)
    with pytest.raises(PermanentDeliveryError, match="STARTTLS extension not supported"):
        target.deliver(context())
    assert not mailbox.messages


def test_auth_over_starttls(smtp_server: Callable[..., Any], certs: Certs) -> None:
    # aiosmtpd's default auth_require_tls=True stays on: AUTH is offered only after STARTTLS.
    mailbox, port = smtp_server(tls_context=certs.server, authenticator=authenticate)
    options = {"host": "localhost", "port": port, "ca_file": str(certs.ca_file)}
    make_target(**options, username=USER, password=PASSWORD).deliver(context())
    assert mailbox.messages[0].login == USER and mailbox.messages[0].tls
    with pytest.raises(PermanentDeliveryError) as info:
        make_target(**options, username=USER, password="wrong-password").deliver(context())
    message = str(info.value)
    assert (
        "refused the login of 'relay' (535" in message and "check username and password" in message
    )
    assert "wrong-password" not in message and PASSWORD not in message
    assert len(mailbox.messages) == 1


def test_implicit_tls(smtp_server: Callable[..., Any], certs: Certs) -> None:
    mailbox, port = smtp_server(ssl_context=certs.server)
    target = make_target(host="localhost", port=port, security="tls", ca_file=str(certs.ca_file))
    assert target.deliver(context()).status == 250
    assert mailbox.messages[0].rcpt_tos == ["ops@example.com"]


def test_host_that_resolves_to_a_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, smtp_server: Callable[..., Any]
) -> None:
    mailbox, port = smtp_server()

    def fake_dns(host: str, port: int) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(workers.net.http, "resolve", fake_dns)
    target = make_target(allow_private=False, host="smtp.example.com", port=port)
    with pytest.raises(PermanentDeliveryError, match="resolves to 127.0.0.1, a loopback address"):
        target.deliver(context())
    assert not mailbox.messages


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (
            {"host": "127.0.0.1"},
            "targets.mail.host: 127.0.0.1 is a loopback address; set allow_private",
        ),
        ({"host": "localhost"}, "targets.mail.host: localhost is a private host name"),
        ({"host": "smtp.example.com", "security": "none"}, "targets.mail.security: 'none' sends"),
        ({"host": "smtp.example.com", "ca_file": "/nonexistent.pem"}, "targets.mail.ca_file:"),
    ],
)
def test_construction_refuses(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_target(allow_private=False, **options)
    assert info.value.problems[0].startswith(problem)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"from": None}, "targets[0].from: required key is missing"),
        ({"to": ["ops@example.com", "nope"]}, "targets[0].to: [1]: 'nope' is not an email"),
        ({"username": None}, "targets[0]: set both username and password, or neither"),
        ({"host": "smtp://example.com"}, "targets[0].host: a host name or IP address"),
        ({"subject": "{{ event.text "}, "targets[0].subject: template line 1"),
        ({"security": "ssl"}, "targets[0].security:"),
    ],
)
def test_options_are_validated(options: dict[str, Any], problem: str) -> None:
    raw = {"host": "smtp.example.com", "username": "relay", "password": "hunter2-secret"}
    with pytest.raises(ConfigError) as info:
        make_target(**{**raw, **options})
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems
    assert "hunter2-secret" not in str(info.value)


def test_custom_templates(smtp_server: Callable[..., Any]) -> None:
    mailbox, port = smtp_server()
    target = make_target(
        host="127.0.0.1", port=port, security="none", subject="Task for {{ mentions[0].name }}"
    )
    template = "{{ format }}: {{ event.text }}\nby {{ event.sender.name }}"
    target.deliver(context(text="<b>fix</b> it", mentions=("U1",), template=template))
    msg = mailbox.messages[0].message
    assert msg["Subject"] == "Task for Ada Lovelace"
    text, html = parts(msg)
    assert text.strip() == "text: <b>fix</b> it\nby Grace"
    assert (
        '<div style="white-space: pre-wrap">html: &lt;b&gt;fix&lt;/b&gt; it\nby Grace</div>' in html
    )


def test_templates_that_fail_to_render_are_permanent(smtp_server: Callable[..., Any]) -> None:
    mailbox, port = smtp_server()
    target = make_target(host="127.0.0.1", port=port, security="none")
    with pytest.raises(PermanentDeliveryError, match="template line 2"):
        target.deliver(context(template="ok\n{{ event.nope }}"))
    bad_subject = make_target(
        host="127.0.0.1", port=port, security="none", subject="{{ mentions[0].name }}"
    )
    with pytest.raises(PermanentDeliveryError, match="subject template line 1"):
        bad_subject.deliver(context())
    assert not mailbox.messages


def test_end_to_end_through_a_worker(
    smtp_server: Callable[..., Any], relay_event: Callable[..., None]
) -> None:
    mailbox, port = smtp_server()
    target = {
        "id": "mail",
        "kind": "email",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from": "relay@example.com",
        "to": ["ops@example.com"],
    }
    relay_event(target)
    [received] = mailbox.messages
    assert received.message["Subject"] == "[Ops] u1: hi"
    assert received.message["Message-ID"].startswith("<dlv_")


def test_non_ascii_text_and_names(smtp_server: Callable[..., Any]) -> None:
    mailbox, port = smtp_server()
    target = make_target(host="127.0.0.1", port=port, security="none", to=["Zoë <zoe@example.com>"])
    target.deliver(context(text="部署完成 ✅"))
    msg = mailbox.messages[0].message
    assert msg["Subject"] == "[Ops room] Grace: 部署完成 ✅"
    assert msg["To"] == "Zoë <zoe@example.com>"
    assert "部署完成 ✅" in parts(msg)[0]


def test_default_ports() -> None:
    ports = {s: make_target(host="smtp.example.com", security=s).port for s in ("starttls", "tls")}
    assert ports == {"starttls": 587, "tls": 465}
    assert make_target(host="127.0.0.1", security="none").port == 25


@dataclass
class RawMailbox(Mailbox):
    """Also keeps the bytes and ``MAIL FROM`` parameters; may hide ``8BITMIME`` in EHLO."""

    offer_8bitmime: bool = True
    raw: list[tuple[list[str], bytes]] = field(default_factory=list)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [r for r in responses if self.offer_8bitmime or r[4:].upper() != "8BITMIME"]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.raw.append((list(envelope.mail_options), envelope.content))
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def raw_smtp_server() -> Iterator[Callable[[bool], tuple[RawMailbox, int]]]:
    """``start(offer_8bitmime)``: an aiosmtpd server that records the raw message."""
    controllers: list[Controller] = []

    def start(offer_8bitmime: bool) -> tuple[RawMailbox, int]:
        mailbox = RawMailbox(offer_8bitmime=offer_8bitmime)
        controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
        controller.start()
        controllers.append(controller)
        return mailbox, controller.port

    yield start
    for controller in controllers:
        controller.stop()


@pytest.mark.parametrize("offer_8bitmime", [True, False])
def test_chinese_mail_is_7bit_clean_and_decodes_to_the_text(
    raw_smtp_server: Callable[[bool], tuple[RawMailbox, int]], offer_8bitmime: bool
) -> None:
    """RFC 6152 / RFC 5321 §2.4: 8-bit data only with BODY=8BITMIME to a server offering
    it. The relay always sends 7-bit MIME (base64/quoted-printable bodies, RFC 2047
    headers), which every server accepts, and the reader sees the same text."""
    mailbox, port = raw_smtp_server(offer_8bitmime)
    ehlo = smtplib.SMTP("127.0.0.1", port)
    ehlo.ehlo()
    assert ehlo.has_extn("8bitmime") is offer_8bitmime  # the server really differs
    ehlo.quit()
    target = make_target(
        host="127.0.0.1", port=port, security="none", to=["张伟 <zhang@example.com>"]
    )
    target.deliver(
        delivery_context(
            "dlv_0001",
            timeout=5.0,
            source_kind="slack",
            people=PEOPLE,
            text="部署完成 ✅ 请检查日志",
            group=Party(id="g1", name="运维群"),
            sender=Party(id="u9", name="李娜"),
        )
    )
    [(options, raw)] = mailbox.raw
    assert raw.isascii(), "8-bit bytes sent without BODY=8BITMIME"
    assert not any(o.upper().startswith("BODY=") for o in options)
    assert "部署完成".encode() not in raw and b"=?utf-8?" in raw  # encoded-words
    msg = mailbox.messages[0].message
    assert msg["Subject"] == "[运维群] 李娜: 部署完成 ✅ 请检查日志"
    assert msg["To"] == "张伟 <zhang@example.com>"
    text, html = parts(msg)
    assert "李娜 in 运维群:" in text and "部署完成 ✅ 请检查日志" in text
    assert "部署完成 ✅ 请检查日志" in html
    for part in (msg.get_body(("plain",)), msg.get_body(("html",))):
        assert part is not None
        assert part["Content-Transfer-Encoding"] in ("base64", "quoted-printable")


@pytest.mark.parametrize("offer_8bitmime", [True, False])
def test_an_8bit_message_is_declared_or_not_sent(
    raw_smtp_server: Callable[[bool], tuple[RawMailbox, int]], offer_8bitmime: bool
) -> None:
    """The SMTP layer itself: raw UTF-8 goes out as BODY=8BITMIME where offered, and is
    refused before DATA where not, instead of being sent undeclared."""
    mailbox, port = raw_smtp_server(offer_8bitmime)
    data = "Subject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n部署完成\r\n".encode()
    smtp = GuardedSMTP("127.0.0.1", port, True, 5.0, ssl.create_default_context())
    try:
        if offer_8bitmime:
            assert smtp.sendmail("relay@example.com", ["ops@example.com"], data) == {}
            [(options, raw)] = mailbox.raw
            assert "BODY=8BITMIME" in [o.upper() for o in options]
            assert "部署完成".encode() in raw
        else:
            with pytest.raises(smtplib.SMTPNotSupportedError, match="8BITMIME"):
                smtp.sendmail("relay@example.com", ["ops@example.com"], data)
            assert mailbox.raw == []
    finally:
        smtp.close()
