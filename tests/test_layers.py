"""The architecture as a rule: `engine/` is packages by layer, and a module imports only from its own
layer and the layers below it, with no circles between modules (type-only and function-local
imports included: a circle in the design is one whether Python notices it or not).

The import graph is read from the source (every `import` statement, wherever it stands), so the
test needs nothing imported and a forbidden import fails it even on a path no other test runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "engine"

# each layer and the layers it may import from (its own always)
BELOW: dict[str, set[str]] = {
    "language": set(),
    "batch": {"language"},
    "analysis": {"language", "batch"},
    "history": {"language", "batch"},
    "engines": {"language", "batch", "history"},
    "run": {"language", "batch", "analysis", "history", "engines"},
    "surfaces": {"language", "batch", "analysis", "history", "engines", "run"},
}
# what `kam check` and the pre-commit hooks load: policy checks install and start light
DATA_LIBRARIES = {"numpy", "pandas", "pyarrow", "duckdb", "dask", "distributed", "matplotlib", "xlsxwriter",
                  "python_calamine", "durable", "openpyxl"}


def _module(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module a file imports (absolute dotted names), with the line."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            # `from . import x` / `from ..batch import explain` import modules by name
            out += [(f"{target}.{a.name}", node.lineno) for a in node.names
                    if (ENGINE.parent / f"{target}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                    or (ENGINE.parent / f"{target}.{a.name}".replace(".", "/") / "__init__.py").exists()]
    return out


def _graph() -> dict[str, list[tuple[str, int]]]:
    return {_module(p): [(t, line) for t, line in _imports(p) if t == "engine" or t.startswith("engine.")]
            for p in sorted(ENGINE.rglob("*.py"))}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_is_in_a_layer():
    loose = [p.name for p in ENGINE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside the layer packages: {loose}"
    assert {p.name for p in ENGINE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(BELOW)


def test_no_layer_imports_a_layer_above_it():
    wrong = []
    for module, targets in _graph().items():
        layer = _layer(module)
        for target, line in targets:
            other = _layer(target)
            if layer is None:
                continue  # engine/__init__.py is the public API, above every layer
            if other is None:
                wrong.append(f"{module}:{line} imports the package root (the public API, above every layer)")
                continue
            if other != layer and other not in BELOW[layer]:
                wrong.append(f"{module}:{line} imports {target} ({layer} may import {sorted(BELOW[layer])})")
    assert not wrong, "\n".join(wrong)


def test_pyproject_and_the_package_agree_on_the_version():
    import tomllib

    from engine.language.version import __version__

    project = tomllib.loads((ENGINE.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["version"] == __version__


def test_no_circles_between_modules():
    graph = {m: {t for t, _ in ts if t in _graph_modules()} - {m} for m, ts in _graph().items()}
    # a package's __init__ is not a step in a circle of its modules (it only re-exports)
    graph = {m: {t for t in ts if _layer(t) is None or "." in t.removeprefix("engine.")} for m, ts in graph.items()}
    seen: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if seen.get(t) == 1:
                circles.append(stack[stack.index(t):] + [t])
            elif t not in seen:
                visit(t)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def _graph_modules() -> set[str]:
    return {_module(p) for p in ENGINE.rglob("*.py")}


def test_the_language_imports_no_data_library():
    found = [f"{_module(p)}:{line} imports {t}" for p in (ENGINE / "language").rglob("*.py")
             for t, line in _imports(p) if t.split(".")[0] in DATA_LIBRARIES]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("source, layer, allowed", [
    ("from ..run.service import RunResult\n", "batch", False),
    ("    from ..surfaces import report\n", "history", False),
    ("from ..batch.evaluate import Tri\n", "analysis", True),
])
def test_the_rule_catches_a_planted_import(tmp_path, monkeypatch, source, layer, allowed):
    """The check itself: an upward import planted in a scratch copy of a layer fails it."""
    import shutil

    root = tmp_path / "engine"
    shutil.copytree(ENGINE, root, ignore=shutil.ignore_patterns("__pycache__"))
    target = next(p for p in sorted((root / layer).glob("*.py")) if p.name != "__init__.py")
    text = target.read_text(encoding="utf-8")
    target.write_text(text + ("\n\ndef _planted() -> None:\n" + source if source.startswith(" ") else "\n" + source),
                      encoding="utf-8")
    monkeypatch.setattr(__import__(__name__, fromlist=["ENGINE"]), "ENGINE", root)
    if allowed:
        test_no_layer_imports_a_layer_above_it()
    else:
        with pytest.raises(AssertionError, match="imports engine"):
            test_no_layer_imports_a_layer_above_it()


CLASS_LINES, FUNCTION_LINES = 250, 80


def test_no_class_or_function_outgrows_a_reading():
    """A class over about 250 lines or a function over about 80 (docstring included) has seams of its own:
    split it along them (as the type checker and the history were) rather than let it grow."""
    big = []
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = CLASS_LINES if isinstance(node, ast.ClassDef) else FUNCTION_LINES
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > limit:
                    big.append(f"{_module(path)}:{node.lineno} {node.name}: {size} lines (at most {limit})")
    assert not big, "\n".join(big)
