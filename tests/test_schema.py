"""The JSON Schemas of policy files and test-case files: every key described (what an editor shows on
hover), the files kam ships valid against them, `kam schema --write` for another layout, and an
editor's language server (yaml-language-server) validating and describing through the modelines."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from .conftest import ROOT, kam_here

SCHEMAS = ROOT / "schemas"


def _properties(node: object, path: str = "") -> list[tuple[str, dict]]:
    """Every property of a schema, wherever it is declared, with its path."""
    out: list[tuple[str, dict]] = []
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            out.append((f"{path}/{name}", sub))
        for key, sub in node.items():
            if isinstance(sub, (dict, list)):
                out += _properties(sub, f"{path}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            out += _properties(sub, f"{path}[{i}]")
    return out


@pytest.mark.parametrize("name", ["policy.schema.json", "tests.schema.json"])
def test_every_key_is_described(name):
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    props = _properties(schema)
    assert len(props) >= 8
    missing = [p for p, sub in props if not isinstance(sub, dict) or not sub.get("description")]
    assert not missing, f"properties without a description: {missing}"
    assert not schema["$id"].startswith("http"), "the $id must not pretend to be a public address"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_shipped_test_files_are_valid_and_point_at_their_schema():
    schema = json.loads((SCHEMAS / "tests.schema.json").read_text(encoding="utf-8"))
    files = sorted((ROOT / "policies" / "tests").glob("*.yaml"))
    assert files
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert text.startswith("# yaml-language-server: $schema=../../schemas/tests.schema.json\n"), f
        jsonschema.validate(yaml.safe_load(text), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"case": []}, schema)


def test_kam_schema_writes_both_where_modelines_find_them(tmp_path):
    r = kam_here("schema", "--write", str(tmp_path / "schemas"))
    assert r.returncode == 0, r.stderr
    for name in ("policy.schema.json", "tests.schema.json"):
        assert (tmp_path / "schemas" / name).read_bytes() == (SCHEMAS / name).read_bytes()
    assert kam_here("schema", "--tests").stdout == (SCHEMAS / "tests.schema.json").read_text(encoding="utf-8")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    r = kam_here("schema", "--write", str(tmp_path / "file"))
    assert r.returncode == 2 and "is a file" in r.stderr


def _layout(root: Path) -> tuple[Path, Path]:
    """A policy repository as `kam init` makes it: policies/, policies/tests/, schemas/."""
    assert kam_here("init", str(root)).returncode == 0
    return root / "policies" / "segmentation.yaml", root / "policies" / "tests" / "segmentation.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["kam", "kam init"])
def test_an_editor_validates_and_describes_every_key(tmp_path, layout):
    from .lsp import Editor

    root = ROOT if layout == "kam" else tmp_path
    policy, tests = (ROOT / "policies" / "segmentation.yaml", ROOT / "policies" / "tests" / "segmentation.yaml") \
        if layout == "kam" else _layout(tmp_path)
    editor = Editor(root)
    try:
        editor.open(policy)
        lines = policy.read_text(encoding="utf-8").splitlines()
        assert "Named features computed from facts" in editor.hover(policy, lines.index("derive:"), 2)
        rule_line = next(i for i, t in enumerate(lines) if t.strip().startswith("- id:"))
        assert "the deciding rule by it" in editor.hover(policy, rule_line, lines[rule_line].index("id:"))
        text = "\n".join(lines).replace("\ndecisions:", "\ndecisons:", 1)
        found = editor.diagnostics(policy, text)
        assert "Property decisons is not allowed." in found and 'Missing property "decisions".' in found, found
        editor.open(tests)
        cases = tests.read_text(encoding="utf-8").replace("\ncases:", "\ncase:", 1)
        found = editor.diagnostics(tests, cases)
        assert "Property case is not allowed." in found, found
    finally:
        editor.close()
