"""The layout is the architecture: import contracts hold, and every module says what it exports."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import consumer
import schemas

ROOT = Path(__file__).parents[2]


def test_import_contracts_hold() -> None:
    # The contracts live in pyproject.toml: layers (no upward import) and a pure core and pure parsers.
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


def _modules() -> list[str]:
    names = []
    for package in (consumer, schemas):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return names


def _defined_public_names(path: Path) -> set[str]:
    """Top-level classes, functions and constants a module defines itself (not the ones it imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_") and n not in {"log", "T", "M"}}


@pytest.mark.parametrize("name", _modules())
def test_module_exports_are_explicit_and_complete(name: str) -> None:
    module = importlib.import_module(name)
    path = Path(module.__file__ or "")
    defined = _defined_public_names(path)
    exported = getattr(module, "__all__", None)
    if exported is None:
        # Only a package that is nothing but its docstring may go without one.
        assert not defined, f"{name} defines {sorted(defined)} but has no __all__"
        return
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"
    assert defined <= set(exported), f"{name} does not export {sorted(defined - set(exported))}"
    assert len(exported) == len(set(exported))
