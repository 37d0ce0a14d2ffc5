"""The source package's public surface, and its independence from the simulator."""

from __future__ import annotations

import ast
from pathlib import Path

import opsentinel.source as source

SOURCE_DIR = Path(source.__file__).parent


def test_every_exported_name_exists() -> None:
    assert sorted(source.__all__) == sorted(set(source.__all__))
    for name in source.__all__:
        assert getattr(source, name) is not None, name


def test_client_code_never_imports_the_simulator() -> None:
    offenders = []
    for path in sorted(SOURCE_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("opsentinel.simulator")]
    assert offenders == []
