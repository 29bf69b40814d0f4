"""The WXBizMsgCrypt scheme against the official DingTalk and WeCom vectors."""

from __future__ import annotations

import base64

import pytest

from relay.intake.sources.msgcrypt import (
    CryptError,
    MsgCrypt,
    ReceiverMismatch,
    signature,
    signature_matches,
)

# open-dingtalk/DingTalk-Callback-Crypto: DingCallbackCrypto3.py __main__
DT_TOKEN = "mryue"
DT_KEY = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7"
DT_OWNER = "ding6ccabc44d2c8d38b"
DT_TS = "1608001896814"
DT_NONCE = "WL4PK6yA"
DT_ENCRYPT = (
    "0vJiX6vliEpwG3U45CtXqi+m8PXbQRARJ8p8BbDuD1EMTDf0jKpQ79QS93qEk7XHpP6u+oTTrd15NRPvNvmBKyDC"
    "YxxOK+HZeKju4yhELOFchzNukR+t8SB/qk4ROMu3"
)
DT_SIGNATURE = "03044561471240d4a14bb09372dfcfd4fd0e40cb"

# sbzhu/weworkapi_python: callback/Sample.py (URL check)
WC_TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
WC_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
WC_CORP = "ww1436e0e65a779aee"
WC_SIGNATURE = "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb"
WC_TS = "1476416373"
WC_NONCE = "47744683"
WC_ECHOSTR = (
    "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="
)


def test_dingtalk_vector_signature_and_plaintext() -> None:
    assert signature(DT_TOKEN, DT_TS, DT_NONCE, DT_ENCRYPT) == DT_SIGNATURE
    assert signature_matches(DT_SIGNATURE.upper(), DT_TOKEN, DT_TS, DT_NONCE, DT_ENCRYPT)
    assert MsgCrypt(DT_KEY, DT_OWNER).decrypt(DT_ENCRYPT) == b'{"EventType":"check_url"}'


def test_wecom_vector_url_check() -> None:
    assert signature(WC_TOKEN, WC_TS, WC_NONCE, WC_ECHOSTR) == WC_SIGNATURE
    assert MsgCrypt(WC_KEY, WC_CORP).decrypt(WC_ECHOSTR) == b"1288432023552776189"


def test_round_trip_is_deterministic_with_a_fixed_prefix() -> None:
    crypt = MsgCrypt(WC_KEY, WC_CORP)
    sealed = crypt.encrypt("你好".encode(), prefix=b"0123456789abcdef")
    assert sealed == crypt.encrypt("你好".encode(), prefix=b"0123456789abcdef")
    assert crypt.decrypt(sealed) == "你好".encode()
    assert len(base64.b64decode(sealed)) % 32 == 0


def test_line_wrapped_base64_decrypts() -> None:
    """DingTalk's Python helper seals with ``base64.encodebytes``: 76 columns and a final
    newline (CRLF from other senders); line breaks are not data (RFC 2045)."""
    crypt = MsgCrypt(DT_KEY, DT_OWNER)
    wrapped = base64.encodebytes(base64.b64decode(DT_ENCRYPT)).decode()
    assert "\n" in wrapped.rstrip("\n") and wrapped.endswith("\n")
    assert crypt.decrypt(wrapped) == b'{"EventType":"check_url"}'
    assert crypt.decrypt(wrapped.replace("\n", "\r\n")) == b'{"EventType":"check_url"}'


@pytest.mark.parametrize(
    "garbage",
    [
        DT_ENCRYPT[:40] + " " + DT_ENCRYPT[40:],  # a space is not a line break
        DT_ENCRYPT[:40] + "\t" + DT_ENCRYPT[40:],
        DT_ENCRYPT[:40] + "\n!\n" + DT_ENCRYPT[40:],
        "\n\r\n",  # nothing but line breaks
    ],
)
def test_other_characters_in_wrapped_base64_are_refused(garbage: str) -> None:
    with pytest.raises(CryptError):
        MsgCrypt(DT_KEY, DT_OWNER).decrypt(garbage)


def test_wrong_receiver_is_refused() -> None:
    with pytest.raises(ReceiverMismatch):
        MsgCrypt(DT_KEY, "ding-another-app").decrypt(DT_ENCRYPT)


@pytest.mark.parametrize(
    "damaged",
    [
        "not base64!",
        DT_ENCRYPT[:-4],  # truncated: not a multiple of 16 bytes
        base64.b64encode(base64.b64decode(DT_ENCRYPT)[:-16]).decode(),  # a block short
        "",
    ],
)
def test_damaged_ciphertext_is_a_crypt_error(damaged: str) -> None:
    with pytest.raises(CryptError):
        MsgCrypt(DT_KEY, DT_OWNER).decrypt(damaged)


def test_wrong_key_is_a_crypt_error_not_garbage() -> None:
    other = MsgCrypt(WC_KEY, DT_OWNER)
    with pytest.raises(CryptError):
        other.decrypt(DT_ENCRYPT)


@pytest.mark.parametrize("key", ["short", "!" * 43, DT_KEY + "A"])
def test_bad_encoding_aes_key_is_a_value_error(key: str) -> None:
    with pytest.raises(ValueError):
        MsgCrypt(key, DT_OWNER)
