"""The README documents every setting and keeps the two commands it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.settings import Settings

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_setting_is_documented(name: str) -> None:
    assert f"`SPEECHJOBS_{name.upper()}`" in README


@pytest.mark.parametrize("command", ["scripts/run-local", "scripts/test"])
def test_readme_command_exists(command: str) -> None:
    assert f"\n{command}\n" in README
    assert (ROOT / command).stat().st_mode & 0o111
    assert command in (ROOT / ".ci/run").read_text() or command == "scripts/run-local"
