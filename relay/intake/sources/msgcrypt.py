"""The WXBizMsgCrypt scheme shared by WeCom callbacks and DingTalk event pushes.

Signature: ``hex(SHA1(''.join(sorted([token, timestamp, nonce, encrypt]))))``.
Encryption: AES-256-CBC with ``key = b64decode(EncodingAESKey + "=")`` and
``iv = key[:16]``, PKCS#7 padding to 32-byte blocks, over
``random(16) ‖ len(msg) as 4 bytes big-endian ‖ msg ‖ receiver id`` (WeCom's corp id,
DingTalk's app key or corp id). Decryption checks the padding, the length field and the
receiver id, so a message sealed for another app is refused. Line breaks in the base64
are ignored (RFC 2045): DingTalk's own Python helper wraps it at 76 columns.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32  # the scheme pads to 32 bytes, not AES's 16


class CryptError(ValueError):
    """The ciphertext cannot be opened: bad base64, length, padding or framing."""


class ReceiverMismatch(CryptError):
    """The message decrypts but is sealed for another receiver id (corp id, app key)."""


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """The SHA-1 ``msg_signature`` over the sorted parts."""
    joined = "".join(sorted([token, timestamp, nonce, encrypt]))
    return hashlib.sha1(joined.encode()).hexdigest()


def signature_matches(
    expected_hex: str, token: str, timestamp: str, nonce: str, encrypt: str
) -> bool:
    """Constant-time comparison of a received ``msg_signature``."""
    computed = signature(token, timestamp, nonce, encrypt)
    return hmac.compare_digest(computed.encode(), expected_hex.strip().lower().encode())


def decode_aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte key from a 43-character EncodingAESKey; ``ValueError`` if it is not one."""
    if len(encoding_aes_key) != 43:
        raise ValueError(f"must be 43 characters, not {len(encoding_aes_key)}")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error:
        raise ValueError("is not base64") from None
    if len(key) != 32:
        raise ValueError("does not decode to 32 bytes")
    return key


class MsgCrypt:
    """Seal and open messages for one receiver id under one EncodingAESKey."""

    def __init__(self, encoding_aes_key: str, receiver_id: str) -> None:
        self.key = decode_aes_key(encoding_aes_key)
        self.receiver_id = receiver_id.encode()

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))

    def encrypt(self, message: bytes, *, prefix: bytes | None = None) -> str:
        """Base64 ciphertext of ``message``; ``prefix`` (16 bytes) fixes the random part."""
        prefix = os.urandom(16) if prefix is None else prefix
        plain = prefix + struct.pack(">I", len(message)) + message + self.receiver_id
        pad = BLOCK - len(plain) % BLOCK
        encryptor = self._cipher().encryptor()
        sealed = encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()
        return base64.b64encode(sealed).decode()

    def decrypt(self, encrypted: str) -> bytes:
        """The message inside ``encrypted``; ``CryptError``/``ReceiverMismatch`` if not."""
        unwrapped = encrypted.replace("\r", "").replace("\n", "")
        try:
            sealed = base64.b64decode(unwrapped, validate=True)
        except (binascii.Error, ValueError):
            raise CryptError("the ciphertext is not valid base64") from None
        if not sealed or len(sealed) % 16:
            raise CryptError(f"the ciphertext is {len(sealed)} bytes, not a multiple of 16")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(sealed) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise CryptError("the padding is invalid (wrong key or damaged ciphertext)")
        content = plain[16:-pad]
        if len(content) < 4:
            raise CryptError("the plaintext is too short")
        (length,) = struct.unpack(">I", content[:4])
        if length > len(content) - 4:
            raise CryptError("the length field exceeds the plaintext")
        message, receiver = content[4 : 4 + length], content[4 + length :]
        if not hmac.compare_digest(receiver, self.receiver_id):
            raise ReceiverMismatch("the message is sealed for another receiver id")
        return message
