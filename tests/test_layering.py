"""The layering rule of docs/architecture.md, read off the source: the core never imports the application
layer, and the core's packages import each other without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import selfsup

PACKAGE = Path(selfsup.__file__).parent
APPLICATION = ("cli", "compare", "reuse")
"""The application layer: the command line, ``selfsup compare`` and the reuse of trained encoders."""


def unit_of(module: str) -> str:
    """``selfsup.data.cache`` -> ``data``; ``selfsup.presets`` -> ``presets``."""
    return module.split(".")[1]


def imports(path: Path) -> set[str]:
    """Every ``selfsup.*`` module that ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("selfsup.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "selfsup":
                found |= {f"selfsup.{alias.name}" for alias in node.names}
            elif node.module.startswith("selfsup."):
                found.add(node.module)
    return found


def graph() -> dict[str, set[str]]:
    """unit -> the units it imports (a unit is a top-level module or subpackage of selfsup)."""
    units = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()
    }
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[0] in ("__init__", "__main__"):
            continue
        unit = parts[0]
        deps = {unit_of(m) for m in imports(path)} & units  # `from selfsup import __version__` is no unit
        edges.setdefault(unit, set()).update(deps - {unit})
    return edges


def test_the_core_never_imports_the_application_layer():
    violations = {
        unit: sorted(deps & set(APPLICATION))
        for unit, deps in graph().items()
        if unit not in APPLICATION and deps & set(APPLICATION)
    }
    assert violations == {}


def test_the_core_packages_import_each_other_without_cycles():
    edges = {unit: deps - set(APPLICATION) for unit, deps in graph().items() if unit not in APPLICATION}
    done: set[str] = set()

    def visit(unit: str, path: list[str]) -> None:
        assert unit not in path, f"import cycle: {' -> '.join(path + [unit])}"
        if unit in done:
            return
        for dep in sorted(edges.get(unit, ())):
            visit(dep, path + [unit])
        done.add(unit)

    for unit in sorted(edges):
        visit(unit, [])


def test_the_checker_sees_a_violation(tmp_path):
    """The reader catches both import forms, also inside a function (a control for the two tests above)."""
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from selfsup.compare import plan\n    import selfsup.cli.main\nfrom selfsup import reuse\n"
    )
    assert imports(module) == {"selfsup.compare", "selfsup.cli.main", "selfsup.reuse"}
