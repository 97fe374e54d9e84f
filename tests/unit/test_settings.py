"""Settings: environment, secret files, provider lists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from consumer.core.normalize import Limits
from consumer.settings import AmqpSettings, ConsumerSettings, LimitsSettings, MongoSettings, load_settings
from schemas.job import PROVIDERS


def test_defaults_hold_no_credentials_but_the_local_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPEECHJOBS_MONGODB_URL", raising=False)
    mongodb, amqp = MongoSettings(_env_file=None), AmqpSettings(_env_file=None)
    assert mongodb.mongodb_url is None
    assert amqp.amqp_url.get_secret_value() == "amqp://guest:guest@127.0.0.1:5672/"
    assert "guest" not in repr(load_settings())


def test_secrets_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "speechjobs_mongodb_url").write_text("mongodb://app:pw@db:27017/?tls=true")
    (tmp_path / "speechjobs_amqp_url").write_text("amqps://app:pw@mq:5671/")
    monkeypatch.delenv("SPEECHJOBS_MONGODB_URL", raising=False)
    monkeypatch.delenv("SPEECHJOBS_AMQP_URL", raising=False)
    monkeypatch.setenv("SPEECHJOBS_SECRETS_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.mongodb.mongodb_url is not None
    assert settings.mongodb.mongodb_url.get_secret_value() == "mongodb://app:pw@db:27017/?tls=true"
    assert settings.amqp.amqp_url.get_secret_value() == "amqps://app:pw@mq:5671/"


def test_environment_beats_secret_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "speechjobs_mongodb_url").write_text("mongodb://from-file/")
    monkeypatch.setenv("SPEECHJOBS_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("SPEECHJOBS_MONGODB_URL", "mongodb://from-env/")
    url = load_settings().mongodb.mongodb_url
    assert url is not None
    assert url.get_secret_value() == "mongodb://from-env/"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tingwu", ("tingwu",)),
        ("tingwu, aliyun-ice", ("tingwu", "aliyun-ice")),
        ("all", PROVIDERS),
        ("", PROVIDERS),
    ],
)
def test_providers_list(monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[str, ...]) -> None:
    monkeypatch.setenv("SPEECHJOBS_PROVIDERS", value)
    assert ConsumerSettings().providers == expected


def test_unknown_provider_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECHJOBS_PROVIDERS", "tingwu,acme")
    with pytest.raises(ValidationError):
        load_settings()


def test_durable_writes_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPEECHJOBS_MONGODB_WRITE_CONCERN", "SPEECHJOBS_MONGODB_JOURNAL"):
        monkeypatch.delenv(name, raising=False)
    mongodb = MongoSettings(_env_file=None)
    assert (mongodb.write_concern_w(), mongodb.mongodb_journal) == ("majority", True)
    monkeypatch.setenv("SPEECHJOBS_MONGODB_WRITE_CONCERN", "2")
    assert MongoSettings(_env_file=None).write_concern_w() == 2


@pytest.mark.parametrize("value", ["0", "all", "-1", "1.5"])
def test_write_concern_must_be_majority_or_a_count(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SPEECHJOBS_MONGODB_WRITE_CONCERN", value)
    with pytest.raises(ValidationError):
        MongoSettings(_env_file=None)


def test_overrides_win_and_unknown_names_are_refused() -> None:
    assert load_settings(batch_size=7, inbound_exchange="x").consumer.batch_size == 7
    assert load_settings(inbound_exchange="x").amqp.inbound_exchange == "x"
    with pytest.raises(TypeError, match="no such setting: batchsize"):
        load_settings(batchsize=7)


def test_every_setting_has_one_home_and_a_description() -> None:
    settings = load_settings()
    names = [
        name
        for section in (settings.amqp, settings.mongodb, settings.runtime, settings.limits, settings.consumer)
        for name, field in type(section).model_fields.items()
        if field.description
    ]
    assert len(names) == len(set(names))
    assert len(names) == sum(
        len(type(s).model_fields)
        for s in (settings.amqp, settings.mongodb, settings.runtime, settings.limits, settings.consumer)
    )


def test_the_core_limits_default_to_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two spellings of one set of defaults (the core imports no settings): they must not drift apart.
    for name in [n for n in os.environ if n.startswith("SPEECHJOBS_")]:
        monkeypatch.delenv(name)
    assert Limits.of(LimitsSettings(_env_file=None)) == Limits()


@pytest.mark.parametrize("value", ["0", "-1", "tingwu=0", "nobody=3", "tingwu=fast"])
def test_poll_rates_and_silences_are_positive_numbers_of_known_providers(value: str) -> None:
    with pytest.raises(ValidationError):
        load_settings(poll_rate=value)
    with pytest.raises(ValidationError):
        load_settings(poll_silence=value)


def test_poll_rates_are_one_number_or_pairs_over_the_defaults() -> None:
    assert set(load_settings(poll_rate="2").poller.poll_rate.values()) == {2.0}
    rates = load_settings(poll_rate="tingwu=1.5, aliyun-ice=7").poller.poll_rate
    assert rates == {"tingwu": 1.5, "tencent-ci": 5.0, "huawei-metastudio": 5.0, "aliyun-ice": 7.0}
