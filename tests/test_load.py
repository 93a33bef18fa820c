from pathlib import Path

import pytest

from engine.language.errors import PolicyError
from engine.language.load import load_policy_dir, load_text

from .test_differential import deadline


def test_locations_are_kept_for_every_node():
    doc = load_text("policy: a\ndecisions:\n  tier:\n    rules:\n      - id: x\n        then: A\n", "f.yaml")
    assert doc.data["decisions"]["tier"]["rules"][0]["then"] == "A"
    loc = doc.loc(("decisions", "tier", "rules", 0, "then"))
    assert (loc.line, loc.col) == (6, 15)
    assert doc.key_loc(("decisions", "tier")).line == 3


def test_duplicate_keys_are_errors_with_both_lines():
    with pytest.raises(PolicyError) as exc:
        load_text("policy: a\nentity: b\npolicy: c\n", "f.yaml")
    (p,) = exc.value.problems
    assert p.code == "duplicate-key"
    assert (p.loc.line, p.loc.col) == (3, 1)
    assert "first at line 1" in p.message


def test_yes_and_no_stay_text():
    doc = load_text("then: no\nother: yes\nflag: true\n", "f.yaml")
    assert doc.data == {"then": "no", "other": "yes", "flag": True}


def test_unsafe_tags_are_refused():
    with pytest.raises(PolicyError) as exc:
        load_text("x: !!python/object/apply:os.system ['echo hi']\n", "f.yaml")
    assert exc.value.problems[0].code == "yaml-tag"


def test_unquoted_lookup_table_gets_a_hint():
    with pytest.raises(PolicyError) as exc:
        load_text("derive:\n  r: lookup(tier, {A: 1, B: 2})\n", "f.yaml")
    assert "quotes" in exc.value.problems[0].hint


def test_empty_folder_is_an_error(tmp_path: Path):
    with pytest.raises(PolicyError) as exc:
        load_policy_dir(tmp_path)
    assert exc.value.problems[0].code == "no-policies"


def billion_laughs(levels: int = 9) -> str:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        name, prev = chr(97 + i), chr(96 + i)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_alias_expansion_is_bounded_and_located():
    # unbounded, the bomb would expand to a billion items: the deadline only stops a hang (no timing is asserted)
    with deadline(60), pytest.raises(PolicyError) as exc:
        load_text(billion_laughs(), "bomb.yaml")
    (p,) = exc.value.problems
    assert p.code == "yaml-too-large" and "aliases" in p.message and p.loc.line == 5  # the first too large
    merges = "a0: &a0 {x: 1, y: 2}\n" + "".join(f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}]}}\n" for i in range(1, 40))
    with pytest.raises(PolicyError):
        load_text(merges, "merge.yaml")


def test_nesting_is_bounded_without_a_recursion_error():
    for text in ("x: " + "[" * 10000 + "]" * 10000 + "\n", "".join("  " * i + f"k{i}:\n" for i in range(200))):
        with pytest.raises(PolicyError) as exc:
            load_text(text, "deep.yaml")
        assert exc.value.problems[0].code == "yaml-too-large" and "nested more than 100" in exc.value.problems[0].message


def test_a_few_aliases_are_still_fine():
    doc = load_text("base: &b {type: number}\nfacts: {x: *b, y: *b}\n", "ok.yaml")
    assert doc.data["facts"] == {"x": {"type": "number"}, "y": {"type": "number"}}
