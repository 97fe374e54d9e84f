"""Signatures and credentials never survive redact(), redact_value() or a header named like a secret."""

from __future__ import annotations

import time

import pytest

from consumer.core.redact import is_secret_header, redact, redact_value

SECRET = "s3cr3tMARKER"


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
        # Routing keys: the stress run's, and a secret after a dot.
        (f"callback.tingwu?Signature={SECRET}", SECRET),
        (f"callback.tingwu.Signature={SECRET}", SECRET),
        # The parameter families of OSS, S3, COS, GCS, Azure and API gateways.
        (f"https://b/o?x-oss-signature={SECRET}&x-oss-credential=c", SECRET),
        (f"https://b/o?x-oss-security-token={SECRET}", SECRET),
        (f"https://b/o?x-oss-access-key-id={SECRET}", SECRET),
        (f"https://b/o?X-Amz-Security-Token={SECRET}&X-Amz-Signature=s", SECRET),
        (f"https://b/o?X-Goog-Credential={SECRET}", SECRET),
        (f"https://api/v1?api_key={SECRET}", SECRET),
        (f"https://api/v1?apikey={SECRET}", SECRET),
        (f"https://api/v1?x-api-key={SECRET}", SECRET),
        (f"https://api/v1?key={SECRET}", SECRET),
        (f"https://acct.blob/c/b?sv=2024&sig={SECRET}", SECRET),
        (f"https://x/cb?credential={SECRET}", SECRET),
        (f"https://x/cb?client_secret={SECRET}&refresh_token=r", SECRET),
        (f"u=http://x/y?a=1?Signature={SECRET}", SECRET),  # inside another parameter's value
        # Header dumps, JSON, dict reprs, key=value logs.
        (f"Authorization: Bearer {SECRET}", SECRET),
        (f"Authorization: SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, Signature={SECRET}", SECRET),
        (f"Cookie: session=1; token={SECRET}", SECRET),
        (f'{{"x-api-key": "{SECRET}", "a": 1}}', SECRET),
        (f"{{'x-oss-signature': '{SECRET}'}}", SECRET),
        (f'token="{SECRET}" next', SECRET),
        (f"x-auth-token = {SECRET}", SECRET),
    ],
)
def test_secret_is_removed(text: str, secret: str) -> None:
    assert secret not in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "http://b.oss.com/a.mp3?Expires=1706064016 job failed: Audio file link invalid.",
        "callback.tingwu",
        "q-sign-algorithm=sha1&q-sign-time=1;2",
        "x-original-routing-key: callback.tingwu",
        "designed=1 signal=2 monkey=3",
    ],
)
def test_plain_text_is_untouched(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    "name",
    [
        "authorization",
        "Proxy-Authorization",
        "cookie",
        "Set-Cookie",
        "x-api-key",
        "api-key",
        "apikey",
        "api_key",
        "x-auth-token",
        "x-access-token",
        "x-oss-signature",
        "x-oss-security-token",
        "x-acs-signature-nonce",
        "x-acs-signature-method",
        "x-acs-security-token",
        "x-acs-accesskey-id",
        "X-ICE-SIGNATURE",
        "x-amz-security-token",
        "X-Amz-Credential",
        "x-cos-security-token",
        "x-tc-token",
        "x-goog-api-key",
        "x-sdk-signature",
        "X-Subject-Token",
        "client_secret",
        "password",
        "passwd",
        "x-pwd",
        "x-sign",
        "q-ak",
        "key",
    ],
)
def test_secret_header_names(name: str) -> None:
    assert is_secret_header(name)


@pytest.mark.parametrize(
    "name",
    [
        "x-provider",
        "x-task-id",
        "traceparent",
        "x-received-at",
        "x-polled-at",
        "x-delivery-count",
        "x-death",
        "routing-keys",
        "x-original-routing-key",
        "x-original-exchange",
        "x-speechjobs-reason",
        "x-speechjobs-dropped-headers",
        "content-type",
        "q-sign-time",
        "q-sign-algorithm",
        "cloudEvents:source",
    ],
)
def test_ordinary_header_names(name: str) -> None:
    assert not is_secret_header(name)


def test_redact_value_walks_every_container() -> None:
    value = {
        "routing_key": f"callback.tingwu?Signature={SECRET}",
        "x-api-key": SECRET,
        "nested": [{"authorization": f"Bearer {SECRET}"}, (f"http://u/?token={SECRET}", 1), None],
        "raw": f"pw password={SECRET}".encode(),
        "n": 3,
    }
    redacted = redact_value(value)
    assert SECRET not in repr(redacted)
    assert redacted == {
        "routing_key": "callback.tingwu?Signature=***",
        "x-api-key": "***",
        "nested": [{"authorization": "***"}, ("http://u/?token=***", 1), None],
        "raw": "pw password=***",
        "n": 3,
    }


def test_redact_value_stops_at_a_depth_instead_of_recursing_without_end() -> None:
    deep: object = SECRET
    for _ in range(5_000):
        deep = [deep]
    assert SECRET not in repr(redact_value(deep))


@pytest.mark.parametrize(
    "text",
    [
        "a" * 1_000_000 + "=",  # one long name, no value
        "token" * 200_000 + ":",  # a secret name everywhere, no separator until the end
        "a=" * 500_000,
        "Signature=" * 100_000,
    ],
)
def test_redaction_takes_linear_time(text: str) -> None:
    started = time.perf_counter()
    redact(text)
    assert time.perf_counter() - started < 5
