"""Settings: environment, secret files, provider lists."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from consumer.settings import Settings, load_settings
from schemas.job import PROVIDERS


def test_defaults_hold_no_credentials_but_the_local_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPEECHJOBS_MONGODB_URL", raising=False)
    settings = Settings(_env_file=None)
    assert settings.mongodb_url is None
    assert settings.amqp_url.get_secret_value() == "amqp://guest:guest@127.0.0.1:5672/"
    assert "guest" not in repr(settings)


def test_secrets_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "speechjobs_mongodb_url").write_text("mongodb://app:pw@db:27017/?tls=true")
    (tmp_path / "speechjobs_amqp_url").write_text("amqps://app:pw@mq:5671/")
    monkeypatch.delenv("SPEECHJOBS_MONGODB_URL", raising=False)
    monkeypatch.delenv("SPEECHJOBS_AMQP_URL", raising=False)
    monkeypatch.setenv("SPEECHJOBS_SECRETS_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.mongodb_url is not None
    assert settings.mongodb_url.get_secret_value() == "mongodb://app:pw@db:27017/?tls=true"
    assert settings.amqp_url.get_secret_value() == "amqps://app:pw@mq:5671/"


def test_environment_beats_secret_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "speechjobs_mongodb_url").write_text("mongodb://from-file/")
    monkeypatch.setenv("SPEECHJOBS_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("SPEECHJOBS_MONGODB_URL", "mongodb://from-env/")
    url = load_settings().mongodb_url
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
    assert Settings().providers == expected


def test_unknown_provider_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECHJOBS_PROVIDERS", "tingwu,acme")
    with pytest.raises(ValidationError):
        Settings()
