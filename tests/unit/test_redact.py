"""Signatures and credentials never survive redact()."""

from __future__ import annotations

import pytest

from consumer.core.redact import redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("http://b.oss.com/a.mp3?Expires=1&OSSAccessKeyId=LTAIsecret&Signature=sig%3D", "LTAIsecret"),
        ("http://b.oss.com/a.mp3?Expires=1&OSSAccessKeyId=LTAI&Signature=sig%3D", "sig%3D"),
        ("http://b/a?x=1&amp;Signature=ampsig", "ampsig"),
        ("q-sign-algorithm=sha1&q-ak=AKIDxyz&q-signature=f267d01a", "f267d01a"),
        ("q-sign-algorithm=sha1&q-ak=AKIDxyz&q-signature=f267d01a", "AKIDxyz"),
        ("X-ICE-SIGNATURE: 0123456789abcdef", "0123456789abcdef"),
        ("amqp://user:hunter2@rabbit:5672/", "hunter2"),
        ("mongodb://admin:pa55@db/?authSource=admin", "pa55"),
        ("https://x/y?AccessKeyId=AK1&other=1", "AK1"),
        ("https://x/y?password=pw1", "pw1"),
    ],
)
def test_secret_is_removed(text: str, secret: str) -> None:
    assert secret not in redact(text)


def test_plain_text_is_untouched() -> None:
    text = "http://b.oss.com/a.mp3?Expires=1706064016 job failed: Audio file link invalid."
    assert redact(text) == text
