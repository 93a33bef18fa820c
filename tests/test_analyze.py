"""Static analysis: every finding on a small policy that has it, and silence on one that does not."""

from __future__ import annotations

from pathlib import Path


from engine.language.compile import compile_policies
from engine.analysis.rules import analyse

from .helpers import compile_text

HEAD = """
policy: t
entity: customer
facts:
  customer_id: {type: string, key: true}
  profit: {type: number}
  orders: {type: integer, min: 0, required: true}
  region: {type: string, values: [north, south], required: true}
  vip: {type: boolean}
"""


def findings(tmp: Path, decisions: str, head: str = HEAD) -> list:
    return [p for p in analyse(compile_text(tmp, head + decisions))]


def codes(found) -> list[str]:
    return sorted(p.code for p in found)


def rules(body: str, hit: str = "first", values: str = "[a, b, c]") -> str:
    return f"""
derive:
  score: profit * 2
decisions:
  d:
    hit: {hit}
    values: {values}
    rules:
{body}
"""


USE_ALL = "      - {id: use, when: \"profit > 0 and orders > 0 and region == 'north' and vip and score > 1\", then: a}\n"


def test_clean_policy_has_no_findings(tmp_path):
    body = USE_ALL + "      - {id: b, when: profit > 0, then: b}\n      - {id: c, then: c}\n"
    assert findings(tmp_path, rules(body)) == []


def test_shadowed_rule_under_first(tmp_path):
    body = USE_ALL + ("      - {id: positive, when: profit > 0, then: b}\n"
                      "      - {id: big, when: profit > 1000, then: c}\n      - {id: rest, then: a}\n")
    (p,) = [p for p in findings(tmp_path, rules(body)) if p.code == "never-fires"]
    assert "`big`" in p.message and "taken first by `use`, `positive`" in p.message
    assert (p.loc.line, p.loc.col) == (19, 25)  # at the condition of `big`
    ok = USE_ALL + ("      - {id: big, when: profit > 1000, then: c}\n"
                    "      - {id: positive, when: profit > 0, then: b}\n      - {id: rest, then: a}\n")
    assert findings(tmp_path / "ok", rules(ok)) == []


def test_shadowing_by_a_union_of_earlier_rules(tmp_path):
    body = USE_ALL + ("      - {id: low, when: orders <= 10, then: b}\n"
                      "      - {id: high, when: orders > 10, then: c}\n      - {id: never, when: orders == 5, then: a}\n")
    (p,) = findings(tmp_path, rules(body))
    assert "`never`" in p.message and "`low`" in p.message and "`high`" not in p.message


def test_contradictory_condition(tmp_path):
    body = USE_ALL + "      - {id: odd, when: profit > 5 and profit < 3, then: b}\n      - {id: rest, then: c}\n"
    found = findings(tmp_path, rules(body))
    assert codes(found) == ["never-fires", "unused-value"]
    assert "never true" in found[0].message
    # integers: 5 < orders < 6 holds for no whole number
    body = USE_ALL + "      - {id: odd, when: orders > 5 and orders < 6, then: b}\n      - {id: rest, then: c}\n"
    assert "never-fires" in codes(findings(tmp_path / "int", rules(body)))
    body = USE_ALL + "      - {id: fine, when: profit > 5 and profit < 6, then: b}\n      - {id: rest, then: c}\n"
    assert findings(tmp_path / "ok", rules(body)) == []


def test_rule_after_unconditional_default(tmp_path):
    body = USE_ALL + "      - {id: rest, then: b}\n      - {id: late, when: profit > 0, then: c}\n"
    (p,) = [p for p in findings(tmp_path, rules(body)) if p.code == "never-fires"]
    assert "`late`" in p.message and "after `rest`, which applies to every entity" in p.message


def test_overlap_under_unique_with_example(tmp_path):
    body = USE_ALL.replace("then: a", "then: a") + ("      - {id: small, when: profit < 100, then: b}\n"
                                                   "      - {id: mid, when: 50 <= profit < 200, then: c}\n"
                                                   "      - {id: rest, then: c}\n")
    found = findings(tmp_path, rules(body, hit="unique"))
    overlap = [p for p in found if p.code == "overlap"]
    assert len(overlap) == 3  # use/small, use/mid, small/mid
    assert any("`small` and `mid`" in p.message and "for example: profit = 50" in p.message for p in overlap)
    exclusive = ("      - {id: n, when: \"region == 'north' and vip and score > 0 and orders > 0\", then: a}\n"
                 "      - {id: s, when: \"region == 'south' and profit > 0\", then: b}\n      - {id: rest, then: c}\n")
    assert codes(findings(tmp_path / "ok", rules(exclusive, hit="unique"))) == []


def test_any_allows_overlap_with_the_same_result(tmp_path):
    body = USE_ALL + "      - {id: x, when: profit > 0, then: a}\n      - {id: y, when: profit > 10, then: b}\n" \
        "      - {id: rest, then: c}\n"
    found = [p for p in findings(tmp_path, rules(body, hit="any")) if p.code == "overlap"]
    assert [("`use` and `x`" in p.message, "`x` and `y`" in p.message) for p in found].count((False, True)) == 1
    assert not any("`use` and `x`" in p.message for p in found)


def test_gap_without_default_and_missing_values(tmp_path):
    body = USE_ALL + "      - {id: gain, when: profit > 0, then: b}\n      - {id: loss, when: profit < 0, then: c}\n"
    (p,) = [p for p in findings(tmp_path, rules(body)) if p.code == "gap"]
    assert "for example: profit = 0" in p.message
    closed = USE_ALL + ("      - {id: gain, when: profit >= 0, then: b}\n      - {id: loss, when: profit < 0, then: c}\n"
                        "      - {id: unknown, when: is_missing(profit), then: a}\n")
    assert "gap" not in codes(findings(tmp_path / "ok", rules(closed)))
    no_missing = USE_ALL + ("      - {id: gain, when: profit >= 0, then: b}\n"
                            "      - {id: loss, when: profit < 0, then: c}\n")
    (p,) = [p for p in findings(tmp_path / "m", rules(no_missing)) if p.code == "gap"]
    assert "profit = missing" in p.message


def test_gap_respects_declared_values_and_required(tmp_path):
    body = ("      - {id: n, when: \"region == 'north' and profit > 0 and orders > 0 and vip and score > 0\", then: a}\n"
            "      - {id: n2, when: \"region == 'north'\", then: b}\n"
            "      - {id: s, when: \"region in ['south']\", then: c}\n")
    assert codes(findings(tmp_path, rules(body))) == []


def test_default_that_can_never_fire(tmp_path):
    body = USE_ALL + "      - {id: t, when: vip, then: b}\n      - {id: f, when: not vip, then: c}\n" \
        "      - {id: m, when: is_missing(vip), then: a}\n      - {id: rest, then: a}\n"
    found = [p for p in findings(tmp_path, rules(body, hit="unique")) if p.code == "never-fires"]
    assert len(found) == 1 and "default rule `rest`" in found[0].message


def test_unused_names_and_values(tmp_path):
    head = HEAD + "  spare: {type: number}\n  revenue: {type: number, measure: true}\n"
    body = """
derive:
  unused_feature: profit * 2
decisions:
  d:
    values: [a, b, never]
    rules:
      - {id: use, when: "profit > 0 and orders > 0 and region == 'north' and vip", then: a}
      - {id: rest, then: b}
"""
    found = findings(tmp_path, body, head)
    messages = sorted(p.message for p in found)
    assert codes(found) == ["unused", "unused", "unused-value"]
    assert any("fact `spare`" in m for m in messages) and any("feature `unused_feature`" in m for m in messages)
    assert any("'never'" in m for m in messages)


def test_not_analysed_is_a_note_not_a_guess(tmp_path):
    body = USE_ALL + "      - {id: ratio, when: profit / orders > 3, then: b}\n      - {id: x, when: profit > 5, then: c}\n"
    found = findings(tmp_path, rules(body))
    assert [(p.code, p.severity) for p in found] == [("not-analysed", "note")]
    assert "the function" in found[0].message or "computed value" in found[0].message


def test_shipped_policies_have_no_false_alarms():
    found = analyse(compile_policies(Path(__file__).resolve().parent.parent / "policies"))
    assert [p for p in found if p.severity != "note"] == []
