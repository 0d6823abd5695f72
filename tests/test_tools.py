"""The benchmarks and scripts name only what the package has.

They live outside the package (mypy checks ``dotseg`` only) and most of their imports sit inside
functions that only a long run reaches, so a name moved inside the package broke them silently:
``benchmarks/serve.py`` imported ``png_bytes`` for two sessions after it became
``dotseg.inference.images.encode_png``. This reads every ``from dotseg... import name`` in them,
wherever it is, and checks that the module has the name; it runs nothing else.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = sorted([*REPO.glob("benchmarks/*.py"), *REPO.glob("scripts/*.py"), *REPO.glob("jobs/*.py")])


def _imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name or None for ``import module``) of every dotseg import in the file."""
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "dotseg":
            found += [(node.lineno, node.module or "", a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "dotseg"]
    return found


@pytest.mark.parametrize("path", TOOLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_dotseg_name_a_tool_imports_exists(path: Path) -> None:
    missing = []
    for line, module, name in _imports(path):
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"line {line}: import {module}: {e}")
            continue
        if name is not None and not hasattr(mod, name):
            try:  # a submodule imported by name (from dotseg import cli)
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"line {line}: {module} has no {name}")
    assert not missing, f"{path.relative_to(REPO)}: " + "; ".join(missing)


def test_the_check_sees_imports_inside_functions() -> None:
    found = _imports(REPO / "benchmarks" / "serve.py")
    assert ("dotseg.inference.images", "encode_png") in {(m, n) for _, m, n in found}
