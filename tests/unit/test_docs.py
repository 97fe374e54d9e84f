"""The docs: the configuration reference matches the code, and the README keeps its two commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.settings import reference_markdown

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def test_configuration_reference_is_generated_from_the_settings() -> None:
    # Regenerate with: .venv/bin/speechjobs settings > docs/configuration.md
    assert (ROOT / "docs/configuration.md").read_text() == reference_markdown()


def test_readme_links_the_configuration_reference() -> None:
    assert "docs/configuration.md" in README


@pytest.mark.parametrize("command", ["scripts/run-local", "scripts/test"])
def test_readme_command_exists(command: str) -> None:
    assert f"\n{command}\n" in README
    assert (ROOT / command).stat().st_mode & 0o111
    assert command in (ROOT / ".ci/run").read_text() or command == "scripts/run-local"


def test_the_bench_readme_tables_are_generated_from_the_result_file_they_cite() -> None:
    # Regenerate with: .venv/bin/python -m bench.report bench/results/<the file>.json
    pytest.importorskip("psutil", reason="the bench extra is not installed: pip install -e '.[bench]'")
    import json
    import re

    from bench.report import markdown

    text = (ROOT / "bench/README.md").read_text()
    found = re.search(
        r"<!-- generated: python -m bench\.report bench/results/(\S+\.json) -->\n(.*?)<!-- end generated -->",
        text,
        re.S,
    )
    assert found is not None, "bench/README.md has no generated results block"
    name, block = found.groups()
    document = json.loads((ROOT / "bench/results" / name).read_text())
    assert block == markdown(document, name)
