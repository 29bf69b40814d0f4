"""SMTP sessions that connect only to addresses the SSRF policy allows.

Like the guarded HTTP session (``workers.net.http``), the worker resolves the host itself,
checks every address and connects only to a checked one; the session keeps the
configured host name, so STARTTLS and implicit TLS verify the certificate for it.
An 8-bit message is declared with ``BODY=8BITMIME``, and never sent to a server that
does not offer it (RFC 6152; RFC 5321 §2.4 allows only 7-bit data otherwise).

In a shadow delivery's dry run (``workers.net.dryrun``) a session opens no connection:
it captures the envelope and the message as the server would have received them and
answers as a server that accepted it.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Sequence
from functools import cache
from typing import Any

from workers.net import dryrun
from workers.net.http import vetted_addresses

_DRY_FEATURES = {"8bitmime": "", "smtputf8": "", "starttls": "", "auth": "PLAIN LOGIN"}
_DRY_REPLY = (250, b"dry run: nothing was sent")


class GuardedSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` that connects only to addresses the SSRF policy allows. The
    session keeps the configured name, so ``starttls`` verifies the certificate for it."""

    data_reply: tuple[int, bytes] | None = None

    def __init__(
        self, host: str, port: int, allow_private: bool, timeout: float, tls: ssl.SSLContext
    ) -> None:
        self.allow_private = allow_private
        self.tls = tls
        self.dry = dryrun.current()  # set before the constructor connects
        self.dry_at = f"{host}:{port}"
        super().__init__(host, port, local_hostname=_local_name(), timeout=timeout)

    def connect(
        self, host: str = "localhost", port: int = 0, source_address: Any = None
    ) -> tuple[int, bytes]:
        if self.dry is not None:
            return 220, b"dry run"
        return super().connect(host, port, source_address)

    def ehlo(self, name: str = "") -> tuple[int, bytes]:
        if self.dry is None:
            return super().ehlo(name)
        self.ehlo_resp, self.does_esmtp = b"dry run", True
        self.esmtp_features = dict(_DRY_FEATURES)
        return 250, b"dry run"

    def starttls(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        return (220, b"dry run") if self.dry is not None else super().starttls(*args, **kwargs)

    def login(self, user: str, password: str, *, initial_response_ok: bool = True) -> Any:
        if self.dry is not None:
            return 235, b"dry run"
        return super().login(user, password, initial_response_ok=initial_response_ok)

    def quit(self) -> Any:
        return (221, b"dry run") if self.dry is not None else super().quit()

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        error: OSError | None = None
        for family, kind, proto, _, address in vetted_addresses(host, port, self.allow_private):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
                return sock
            except OSError as exc:  # like socket.create_connection: try the next one
                sock.close()
                error = exc
        raise error or OSError(f"{host} has no address to connect to")

    def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: Any,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> dict[str, tuple[int, bytes]]:
        """Declare 8-bit data (smtplib does not, unless SMTPUTF8 is needed)."""
        options = list(mail_options)
        declared = any(o.upper().startswith("BODY=") for o in options)
        if isinstance(msg, bytes) and not msg.isascii() and not declared:
            self.ehlo_or_helo_if_needed()
            if not self.has_extn("8bitmime"):
                raise smtplib.SMTPNotSupportedError(
                    "the message has 8-bit data and the server does not offer 8BITMIME"
                )
            options.append("BODY=8BITMIME")
        if self.dry is not None:
            self._capture(self.dry, from_addr, to_addrs, msg)
            return {}
        return super().sendmail(from_addr, to_addrs, msg, options, rcpt_options)

    def _capture(
        self, run: dryrun.DryRun, from_addr: str, to_addrs: str | Sequence[str], msg: Any
    ) -> None:
        """The envelope as headers and the message as the body of one captured request."""
        recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        data = msg if isinstance(msg, bytes) else str(msg).encode()
        envelope = {"MAIL FROM": from_addr, "RCPT TO": ", ".join(recipients)}
        scheme = "smtps" if isinstance(self, smtplib.SMTP_SSL) else "smtp"
        run.capture("SMTP", f"{scheme}://{self.dry_at}", envelope, data)
        self.data_reply = _DRY_REPLY

    def data(self, msg: Any) -> tuple[int, bytes]:
        self.data_reply = super().data(msg)  # keep "250 … queued as …" for the record
        return self.data_reply


class GuardedSMTPSSL(GuardedSMTP, smtplib.SMTP_SSL):
    """Implicit TLS (port 465) over a vetted connection."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return self.tls.wrap_socket(super()._get_socket(host, port, timeout), server_hostname=host)


@cache
def _local_name() -> str:
    """The EHLO name, looked up once per process (``getfqdn`` may wait on DNS)."""
    return socket.getfqdn()
