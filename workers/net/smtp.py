"""SMTP sessions that connect only to addresses the SSRF policy allows.

Like the guarded HTTP session (``workers.net.http``), the worker resolves the host itself,
checks every address and connects only to a checked one; the session keeps the
configured host name, so STARTTLS and implicit TLS verify the certificate for it.
An 8-bit message is declared with ``BODY=8BITMIME``, and never sent to a server that
does not offer it (RFC 6152; RFC 5321 §2.4 allows only 7-bit data otherwise).
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Sequence
from functools import cache
from typing import Any

from workers.net.http import vetted_addresses


class GuardedSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` that connects only to addresses the SSRF policy allows. The
    session keeps the configured name, so ``starttls`` verifies the certificate for it."""

    data_reply: tuple[int, bytes] | None = None

    def __init__(
        self, host: str, port: int, allow_private: bool, timeout: float, tls: ssl.SSLContext
    ) -> None:
        self.allow_private = allow_private
        self.tls = tls
        super().__init__(host, port, local_hostname=_local_name(), timeout=timeout)

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
        return super().sendmail(from_addr, to_addrs, msg, options, rcpt_options)

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
