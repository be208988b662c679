"""The dependency rule (SPEC §2, STYLE 1): ``core`` imports no channel code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = frozenset({"telegram", "slack_bolt", "slack_sdk", "bots"})


def imported_packages(source: str) -> set[str]:
    """Top-level packages that ``source`` imports, statically or via ``import_module``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import telegram.ext", {"telegram"}),
        ("from slack_bolt.async_app import AsyncApp", {"slack_bolt"}),
        ("def f():\n    import slack_sdk\n", {"slack_sdk"}),
        ("from bots import cli", {"bots"}),
        ("import importlib\nimportlib.import_module('telegram')", {"importlib", "telegram"}),
        ("from . import sibling\nfrom core.errors import ConfigError", {"core"}),
    ],
)
def test_import_scanner_sees_every_form(source: str, expected: set[str]) -> None:
    assert imported_packages(source) == expected


def test_core_imports_no_channel_code() -> None:
    sources = sorted((ROOT / "core").rglob("*.py"))
    assert len(sources) > 5

    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path.read_text("utf-8")) & FORBIDDEN)
        for path in sources
    }

    assert {path: names for path, names in offenders.items() if names} == {}


def test_import_linter_contract_holds() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), "import-linter is a dev dependency"

    done = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "core stays channel-agnostic KEPT" in done.stdout
