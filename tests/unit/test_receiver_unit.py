"""The ICE callback signer and verifier, and the receiver's token settings, without any I/O."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from consumer.settings import ReceiverSettings
from consumer.vendors.aliyun_ice import webhook

# The vendor's documented check value.
URL = "https://www.example.com/your/callback"
TIMESTAMP = "1519375990"
NOW = 1519375990.0


def verdict(
    signature: str | None,
    timestamp: str | None = TIMESTAMP,
    *,
    keys: tuple[str, ...] = ("test123",),
    now: float = NOW,
    url: str = URL,
) -> str:
    return webhook.verify(signature, timestamp, callback_url=url, keys=keys, now=now, window_s=300)


def test_sign_matches_the_vendors_check_values() -> None:
    assert webhook.sign(URL, TIMESTAMP, "test123") == "c72b60894140fa98920f1279219b7ed4"
    assert webhook.sign(URL, TIMESTAMP, "Test123") == "c587b80d2d0ede300e8967937da7219b"


def test_a_fresh_signature_of_the_key_is_ok_in_any_hex_case() -> None:
    assert verdict("c72b60894140fa98920f1279219b7ed4") == "ok"
    assert verdict("C72B60894140FA98920F1279219B7ED4") == "ok"
    assert verdict(" c72b60894140fa98920f1279219b7ed4 ") == "ok"


@pytest.mark.parametrize(
    ("signature", "timestamp"),
    [
        (None, TIMESTAMP),
        ("", TIMESTAMP),
        ("c72b60894140fa98920f1279219b7ed4", None),
        ("c72b60894140fa98920f1279219b7ed4", ""),
        ("c72b60894140fa98920f1279219b7ed4", "yesterday"),
        ("c72b60894140fa98920f1279219b7ed4", "1519375990.0"),
    ],
)
def test_a_missing_signature_or_timestamp_is_missing(signature: str | None, timestamp: str | None) -> None:
    assert verdict(signature, timestamp) == "missing"


@pytest.mark.parametrize("skew", [-301, 301, -86_400, 10**9])
def test_a_timestamp_outside_the_window_is_stale_even_when_signed(skew: int) -> None:
    sent = str(int(NOW) + skew)
    assert verdict(webhook.sign(URL, sent, "test123"), sent) == "stale"


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_a_timestamp_at_the_window_edge_is_accepted(skew: int) -> None:
    sent = str(int(NOW) + skew)
    assert verdict(webhook.sign(URL, sent, "test123"), sent) == "ok"


@pytest.mark.parametrize(
    "signature",
    [
        "c587b80d2d0ede300e8967937da7219b",  # the right URL and time, another key (case matters in keys)
        webhook.sign("https://www.example.com/other/callback", TIMESTAMP, "test123"),
        webhook.sign(URL, "1519375991", "test123"),  # signed for another second
        "c72b60894140fa98920f1279219b7ed",  # one digit short
        "not even hex",
    ],
)
def test_any_other_signature_is_bad(signature: str) -> None:
    assert verdict(signature) == "bad-signature"


def test_with_no_keys_nothing_verifies() -> None:
    assert verdict("c72b60894140fa98920f1279219b7ed4", keys=()) == "bad-signature"


def test_during_key_rotation_either_key_verifies_and_a_retired_one_does_not() -> None:
    old, new = "test123", "Test123"
    old_signed, new_signed = webhook.sign(URL, TIMESTAMP, old), webhook.sign(URL, TIMESTAMP, new)
    assert verdict(old_signed, keys=(old, new)) == "ok"
    assert verdict(new_signed, keys=(old, new)) == "ok"
    assert verdict(old_signed, keys=(new,)) == "bad-signature"


def test_tokens_parse_pairs_with_several_tokens_per_provider() -> None:
    settings = ReceiverSettings(callback_tokens=" tingwu = a1 ,tencent-ci=c1,, tingwu=a2,aliyun-ice=x=y ")
    assert settings.tokens() == {"tingwu": ("a1", "a2"), "tencent-ci": ("c1",), "aliyun-ice": ("x=y",)}


def test_no_tokens_means_no_provider_accepts_anything() -> None:
    assert ReceiverSettings(callback_tokens="").tokens() == {}
    assert ReceiverSettings(callback_tokens=" , ").tokens() == {}


def test_ice_keys_are_split_and_trimmed() -> None:
    assert ReceiverSettings(ice_auth_keys=" k1, k2 ,,").ice_keys() == ("k1", "k2")
    assert ReceiverSettings(ice_auth_keys="").ice_keys() == ()


@pytest.mark.parametrize(
    ("tokens", "named"),
    [
        ("tingwu=ok,nosuch=tok-S3CRET", "nosuch"),
        ("tingwu", "tingwu"),  # a provider without a token
        ("tingwu=", "tingwu"),
        ("Tingwu=tok-S3CRET", "Tingwu"),  # names are exact
        ("=tok-S3CRET", ""),
    ],
)
def test_the_validator_refuses_pairs_of_unknown_providers_naming_only_the_provider(
    tokens: str, named: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        ReceiverSettings(callback_tokens=tokens)
    (error,) = caught.value.errors()
    assert repr(named) in error["msg"]
    assert "S3CRET" not in error["msg"]


def test_the_refusal_text_never_echoes_a_token() -> None:
    with pytest.raises(ValidationError) as caught:
        ReceiverSettings(callback_tokens="tingwu=good-S3CRET,nosuch=tok-S3CRET")
    assert "S3CRET" not in str(caught.value)
    assert "S3CRET" not in repr(caught.value.errors(include_input=False))
