"""The byte-preserving editor: edits touch only their span, keep comments and rhythm, and refuse to reflow."""

from __future__ import annotations

import copy
import difflib
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.language.edit import EditError, delete_item, insert_item, move_item, path_at, remove_key, set_value

ROOT = Path(__file__).resolve().parent.parent
POLICIES = sorted((ROOT / "policies").glob("*.yaml"))
SEG = (ROOT / "policies" / "segmentation.yaml").read_text(encoding="utf-8")
RULES = ("decisions", "tier", "rules")

# The rules of segmentation.yaml, written out: the golden expectations below are put together from them.
KEY_ACCOUNT = (
    "      - id: key-account\n"
    "        when: in_pareto_top and credit_score >= key_min_credit\n"
    "        then: A\n"
    '        because: "among the customers who together bring {key_share:.0%} of profit (cumulative share '
    '{profit_share:.1%}), credit {credit_score:.0f}"\n'
)
HELD = (
    "      # Hysteresis: a key account is not dropped for one bad period. It keeps tier A while this is its\n"
    "      # first period outside the 80/20 line (last period it was inside), and loses it after two in a\n"
    "      # row. Entering A needs no waiting: the first period inside the line is enough (rule above).\n"
    "      # Credit is checked every period all the same. Without a history (`kam run` without\n"
    "      # --history) previous() is missing, so this rule never matches and tiers follow this period only.\n"
    "      - id: key-account-held\n"
    "        when: previous(tier) == 'A' and previous(in_pareto_top) and credit_score >= key_min_credit\n"
    "        then: A\n"
    '        because: "a key account last period; outside the {key_share:.0%} line this period (cumulative share '
    '{profit_share:.1%}) for the first time, so it keeps tier A for now"\n'
)
IMPORTANT = (
    "      - id: important\n"
    "        when: value_position >= important_from\n"
    "        then: B\n"
    '        because: "value score {value_score:.2f} is at {value_position:.0%} of all customers, in the top '
    '{important_from:.0%}"\n'
)
GENERAL = (
    "      - id: general\n"
    "        when: value_position >= general_from\n"
    "        then: C\n"
    '        because: "value score {value_score:.2f} is at {value_position:.0%} of all customers, above the bottom '
    '{general_from:.0%}"\n'
)
MAINTENANCE = (
    "      - id: maintenance\n"
    "        then: D\n"
    '        because: "value score {value_score:.2f} is at {value_position:.0%} of all customers, in the bottom '
    '{general_from:.0%}"\n'
)
SHIPPED_RULES = "    rules:\n" + KEY_ACCOUNT + HELD + IMPORTANT + GENERAL + MAINTENANCE + "\n# Figures"


def with_rules(*blocks: str) -> str:
    """segmentation.yaml with its tier rules replaced by `blocks`, everything else as shipped."""
    return SEG.replace(SHIPPED_RULES, "    rules:\n" + "".join(blocks) + "\n# Figures")


def changed_lines(old: str, new: str) -> tuple[list[str], list[str]]:
    diff = list(difflib.ndiff(old.splitlines(), new.splitlines()))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


def comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


def scalar_span(text: str, path: tuple) -> tuple[int, int]:
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    for part in path:
        node = dict((k.value, v) for k, v in node.value)[part] if isinstance(part, str) else node.value[part]
    return node.start_mark.index, node.end_mark.index


def test_shipped_rules_are_as_written_here():
    assert SEG.count(SHIPPED_RULES) == 1


def test_key_share_changes_exactly_one_line():
    new = set_value(SEG, ("params", "key_share"), "70%")
    assert changed_lines(SEG, new) == (["  key_share: 80%"], ["  key_share: 70%"])
    assert comments(new) == comments(SEG)
    assert yaml.safe_load(new)["params"]["key_share"] == "70%"


def test_trailing_comment_stays_when_the_scalar_changes():
    text = "params:\n  key_share: 80%  # comment\n  other: 1\n"
    assert set_value(text, ("params", "key_share"), "70%") == "params:\n  key_share: 70%  # comment\n  other: 1\n"
    new = set_value(SEG, ("decisions", "tier", "target", "B"), "25%")
    assert changed_lines(SEG, new)[1] == [
        "    target: {A: 20%, B: 25%, C: 30%, D: 20%}  # the shape `kam report` draws the tiers against"]


def _rule_fields():
    for file in POLICIES:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
        for name, decision in data.get("decisions", {}).items():
            for i, rule in enumerate(decision.get("rules", [])):
                for field in ("when", "because"):
                    if field in rule:
                        yield pytest.param(file, ("decisions", name, "rules", i, field), rule[field],
                                           id=f"{file.stem}-{name}-{i}-{field}")


@pytest.mark.parametrize("file, path, value", list(_rule_fields()))
def test_rule_fields_of_every_shipped_policy(file: Path, path: tuple, value: str):
    text = file.read_text(encoding="utf-8")
    assert set_value(text, path, value) == text
    new_value = "credit_score >= 1" if path[-1] == "when" else value + ", edited: it's {x:.0%}"
    new = set_value(text, path, new_value)
    start, end = scalar_span(text, path)
    tail = len(text) - end
    assert new[:start] == text[:start] and new[len(new) - tail:] == text[end:]
    assert "\n" not in new[start:len(new) - tail]
    expected = yaml.safe_load(text)
    expected["decisions"][path[1]]["rules"][path[3]][path[4]] = new_value
    assert yaml.safe_load(new) == expected
    assert len(changed_lines(text, new)[0]) == 1


def test_move_takes_the_comments_above_the_rule_along():
    new = move_item(SEG, RULES + (1,), 3)
    assert new == with_rules(KEY_ACCOUNT, IMPORTANT, GENERAL, HELD, MAINTENANCE)
    assert move_item(new, RULES + (3,), 1) == SEG
    assert move_item(SEG, RULES + (4,), 0) == with_rules(MAINTENANCE, KEY_ACCOUNT, HELD, IMPORTANT, GENERAL)
    assert move_item(SEG, RULES + (0,), 4) == with_rules(HELD, IMPORTANT, GENERAL, MAINTENANCE, KEY_ACCOUNT)
    assert move_item(SEG, RULES + (2,), 2) == SEG


def test_delete_takes_the_comments_above_the_rule_away():
    assert delete_item(SEG, RULES + (1,)) == with_rules(KEY_ACCOUNT, IMPORTANT, GENERAL, MAINTENANCE)
    assert delete_item(SEG, RULES + (4,)) == with_rules(KEY_ACCOUNT, HELD, IMPORTANT, GENERAL)
    assert delete_item(SEG, RULES + (0,)) == with_rules(HELD, IMPORTANT, GENERAL, MAINTENANCE)


def test_insert_is_laid_out_like_its_siblings():
    rule = {"id": "top-tenth", "when": "value_position >= 0.9", "then": "B", "because": "top 10%: {value_position:.0%}"}
    block = ("      - id: top-tenth\n"
             "        when: value_position >= 0.9\n"
             "        then: B\n"
             '        because: "top 10%: {value_position:.0%}"\n')
    assert insert_item(SEG, RULES, 2, rule) == with_rules(KEY_ACCOUNT, HELD, block, IMPORTANT, GENERAL, MAINTENANCE)
    assert insert_item(SEG, RULES, 1, rule) == with_rules(KEY_ACCOUNT, block, HELD, IMPORTANT, GENERAL, MAINTENANCE)
    assert insert_item(SEG, RULES, 5, rule) == with_rules(KEY_ACCOUNT, HELD, IMPORTANT, GENERAL, MAINTENANCE, block)
    odd = {"id": "x", "when": "yes", "then": 3, "because": "a: b", "note": None, "on": True, "w": 0.75}
    new = insert_item(SEG, RULES, 0, odd)
    assert ('      - id: x\n        when: "yes"\n        then: 3\n        because: "a: b"\n        note: null\n'
            '        "on": true\n        w: 0.75\n' + KEY_ACCOUNT) in new
    assert yaml.safe_load(new)["decisions"]["tier"]["rules"][0] == odd


def test_missing_key_goes_after_the_named_sibling():
    new = set_value(SEG, RULES + (4, "when"), "value_position >= 0", after="id")
    assert new == with_rules(KEY_ACCOUNT, HELD, IMPORTANT, GENERAL, MAINTENANCE.replace(
        "maintenance\n", "maintenance\n        when: value_position >= 0\n"))
    new = set_value(SEG, ("params", "floor"), "5%")
    assert changed_lines(SEG, new) == ([], ["  floor: 5%"])
    assert new.index("  floor: 5%\n") == SEG.index("  general_from: 20%\n") + len("  general_from: 20%\n")


def test_remove_key_removes_its_lines_only():
    new = remove_key(SEG, RULES + (0, "when"))
    assert changed_lines(SEG, new) == (["        when: in_pareto_top and credit_score >= key_min_credit"], [])
    new = remove_key(SEG, ("derive",))
    # up to the comment written above the next key, which is that key's
    assert new == SEG[:SEG.index("derive:")] + SEG[SEG.index("\n# How figures kam cannot tell") + 1:]
    last = remove_key(SEG, ("invariants",))
    assert last == SEG[:SEG.index("\ninvariants:")]
    text = "a:\n  b: |\n    one\n    two\n  c: 1\n"
    assert remove_key(text, ("a", "b")) == "a:\n  c: 1\n"


BLANKS = """rules:
  - id: a
    then: 1

  # about b
  - id: b
    then: 2

  - id: c
    then: 3
after: x
"""


def test_blank_line_rhythm_between_items():
    assert delete_item(BLANKS, ("rules", 1)) == "rules:\n  - id: a\n    then: 1\n\n  - id: c\n    then: 3\nafter: x\n"
    assert delete_item(BLANKS, ("rules", 2)) == BLANKS.replace("\n  - id: c\n    then: 3\n", "")
    assert delete_item(BLANKS, ("rules", 0)) == BLANKS.replace("  - id: a\n    then: 1\n\n", "")
    assert move_item(BLANKS, ("rules", 0), 2) == (
        "rules:\n  # about b\n  - id: b\n    then: 2\n\n  - id: c\n    then: 3\n\n  - id: a\n    then: 1\nafter: x\n")
    new = insert_item(BLANKS, ("rules",), 3, {"id": "d", "then": 4})
    assert new == BLANKS.replace("then: 3\n", "then: 3\n\n  - id: d\n    then: 4\n")
    new = insert_item(BLANKS, ("rules",), 1, {"id": "d", "then": 4})
    assert new == BLANKS.replace("\n  # about b", "\n  - id: d\n    then: 4\n\n  # about b")


def test_groups_of_items_stay_groups():
    text = "- a\n- b\n\n- c\n- d\n"
    assert delete_item(text, (1,)) == "- a\n\n- c\n- d\n"
    assert delete_item(text, (2,)) == "- a\n- b\n\n- d\n"
    assert delete_item(text, (3,)) == "- a\n- b\n\n- c\n"
    assert move_item(text, (3,), 0) == "- d\n- a\n\n- b\n- c\n"
    assert remove_key("a: 1\nb: 2\n\nc: 3\n", ("b",)) == "a: 1\n\nc: 3\n"


def test_refusals_name_the_path():
    with pytest.raises(EditError, match="flow-style|reformatting") as err:
        insert_item(SEG, ("decisions", "tier", "values"), 0, {"id": "x"})
    assert err.value.path == ("decisions", "tier", "values")
    with pytest.raises(EditError, match=r"no params\.nope") as err:
        set_value(SEG, ("params", "nope", "x"), 1)
    assert err.value.path == ("params", "nope", "x") and "params.nope" in err.value.message
    with pytest.raises(EditError, match=r"decisions\.tier\.rules\[9\]"):
        set_value(SEG, RULES + (9, "when"), "x")
    with pytest.raises(EditError, match="no item 9"):
        delete_item(SEG, RULES + (9,))
    with pytest.raises(EditError, match="flow mapping"):
        remove_key(SEG, ("decisions", "tier", "target", "A"))
    with pytest.raises(EditError, match="reformatting"):
        set_value(SEG, ("decisions", "tier", "target", "E"), "5%")
    with pytest.raises(EditError, match="first key"):
        remove_key(SEG, RULES + (0, "id"))
    with pytest.raises(EditError, match="only item"):
        delete_item(SEG, ("invariants", 0))
    with pytest.raises(EditError, match="only key"):
        remove_key("a:\n  b: 1\nc: 2\n", ("a", "b"))
    with pytest.raises(EditError, match="not a single value"):
        set_value(SEG, ("params",), "x")
    with pytest.raises(EditError, match="not valid YAML"):
        set_value("a: [", ("a",), 1)


def test_values_that_need_quoting():
    text = "target: {A: 20%, B: 30%}\nlist: [a, b]\nplain: x\nsingle: 'x'\n"
    assert set_value(text, ("target", "A"), "a, b") == text.replace("{A: 20%", '{A: "a, b"')
    assert set_value(text, ("target", "A"), "25%").startswith("target: {A: 25%, B: 30%}\n")
    assert set_value(text, ("list", 1), "c]").startswith('target: {A: 20%, B: 30%}\nlist: [a, "c]"]\n')
    for value, written in [("yes", '"yes"'), ("0.7", '"0.7"'), ("null", '"null"'), ("1e3", '"1e3"'), ("0o17", '"0o17"'), ("Off", '"Off"'),
                           ("- x", '"- x"'), ("a: b", '"a: b"'), ("#", '"#"'), ("*x", '"*x"'), ("", '""'),
                           ("70%", "70%"), ("a b", "a b"), (0.75, "0.75"), (1e16, "1.0e+16"), (False, "false"),
                           (None, "null"), (12, "12"), ("two\nlines", '"two\\nlines"')]:
        assert set_value(text, ("plain",), value).endswith(f"plain: {written}\nsingle: 'x'\n"), value
    assert set_value(text, ("single",), "it's").endswith("single: 'it''s'\n")
    assert set_value(text, ("single",), "yes").endswith("single: 'yes'\n")
    assert set_value("a: |\n  one\n  two\nb: 1\n", ("a",), "three") == 'a: "three"\nb: 1\n'
    assert set_value("a:\nb: 1\n", ("a",), "x") == "a: x\nb: 1\n"
    assert set_value("a: 60\n", ("a",), "60") == 'a: "60"\n'


def test_on_and_yes_keys_are_text_as_kam_reads_them():
    text = "joins:\n  customer:\n    on: customer_id\n    how: left\n"
    assert set_value(text, ("joins", "customer", "on"), "id") == text.replace("on: customer_id", "on: id")
    assert remove_key(text, ("joins", "customer", "how")) == "joins:\n  customer:\n    on: customer_id\n"
    assert set_value("a: 1\n", ("yes",), "no") == 'a: 1\n"yes": "no"\n'


def test_path_at_finds_the_cell():
    lines = SEG.splitlines()
    line = next(n for n, text in enumerate(lines, 1) if "when: previous(tier)" in text)
    assert path_at(SEG, line, lines[line - 1].index("previous") + 3) == RULES + (1, "when")
    assert path_at(SEG, line, lines[line - 1].index("when") + 1) == RULES + (1, "when")
    target = next(n for n, text in enumerate(lines, 1) if "target:" in text)
    assert path_at(SEG, target, lines[target - 1].index("30%") + 1) == ("decisions", "tier", "target", "B")
    assert path_at(SEG, 1, 1) == ()
    assert path_at(SEG, 10_000, 1) == ()
    assert path_at("a: [", 1, 1) == ()


def _ops(text: str) -> list[str]:
    rule = {"id": "n", "when": "x > 1", "then": "B"}
    return [set_value(text, ("params", "key_share"), "70%"), set_value(text, RULES + (4, "when"), "y", after="id"),
            remove_key(text, ("params", "general_from")), delete_item(text, RULES + (1,)),
            delete_item(text, RULES + (4,)), move_item(text, RULES + (1,), 4), insert_item(text, RULES, 1, rule),
            insert_item(text, RULES, 5, rule), set_value(text, ("measures", "loss_makers"), "count()")]


def test_crlf_lines_stay_crlf():
    crlf = SEG.replace("\n", "\r\n")
    assert [op.replace("\n", "\r\n") for op in _ops(SEG)] == _ops(crlf)


def test_no_trailing_newline_and_bom():
    tail = "  - id: a\n    then: 1\n  - id: b\n    then: 2"
    text = SEG + "tail:\n" + tail
    assert delete_item(text, ("tail", 1)) == SEG + "tail:\n  - id: a\n    then: 1"
    assert move_item(text, ("tail", 1), 0) == SEG + "tail:\n  - id: b\n    then: 2\n  - id: a\n    then: 1"
    assert insert_item(text, ("tail",), 2, {"id": "c"}) == text + "\n  - id: c"
    assert remove_key(text, ("tail", 1, "then")) == SEG + "tail:\n  - id: a\n    then: 1\n  - id: b"
    assert set_value(text, ("tail", 1, "x"), 3) == text + "\n    x: 3"
    assert [op.rstrip("\n") for op in _ops(SEG)] == _ops(SEG.rstrip("\n"))
    bom = "\ufeff- a: 1\n- a: 2\n"
    assert delete_item(bom, (0,)) == "\ufeff- a: 2\n"
    assert move_item(bom, (1,), 0) == "\ufeff- a: 2\n- a: 1\n"
    assert insert_item(bom, (), 0, {"a": 0}) == "\ufeff- a: 0\n- a: 1\n- a: 2\n"
    assert set_value(bom, (0, "a"), 5) == "\ufeff- a: 5\n- a: 2\n"
    assert path_at(bom, 1, 3) == (0, "a")


STYLES = """\
# a comment
plain: x  # trailing
single: 'x'
double: "x"
block: |
  one
  two
flow: {A: 20%, B: 30%}  # after
seq: [a, b, c]
empty:
rules:
  - id: a
    when: x
end: 1
"""
POSITIONS = [("plain",), ("single",), ("double",), ("block",), ("flow", "A"), ("flow", "B"), ("seq", 1),
             ("seq", 2), ("empty",), ("rules", 0, "when")]
VALUES = st.one_of(st.text(), st.text(alphabet=" ,:#-[]{}'\"%&*!|>?@`\\ab0.\t\n"), st.integers(),
                   st.floats(), st.booleans(), st.none())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(POSITIONS), VALUES)
def test_any_value_round_trips_and_keeps_the_rest(path: tuple, value):
    new = set_value(STYLES, path, value)
    expected = copy.deepcopy(yaml.safe_load(STYLES))
    target = expected
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    got = yaml.safe_load(new)
    written = got
    for part in path[:-1]:
        written = written[part]
    assert type(written[path[-1]]) is type(value)
    if isinstance(value, float) and math.isnan(value):  # NaN equals nothing, itself included
        assert math.isnan(written[path[-1]])
        written[path[-1]] = target[path[-1]] = None
    assert got == expected
    start, end = scalar_span(STYLES, path)
    end = start + len(STYLES[start:end].rstrip())
    tail = len(STYLES) - end
    assert new[:start] == STYLES[:start]
    assert new[len(new) - tail:] == STYLES[end:]
    assert comments(new) == comments(STYLES)


@settings(max_examples=25, deadline=None)
@given(st.permutations(range(5)), st.integers(0, 4))
def test_moves_and_deletes_keep_every_other_line(order: list[int], drop: int):
    text = SEG
    blocks = [KEY_ACCOUNT, HELD, IMPORTANT, GENERAL, MAINTENANCE]
    current = list(range(5))
    for target, rule in enumerate(order):
        text = move_item(text, RULES + (current.index(rule),), target)
        current.insert(target, current.pop(current.index(rule)))
    assert text == with_rules(*(blocks[i] for i in order))
    assert delete_item(text, RULES + (drop,)) == with_rules(*(blocks[i] for i in order if i != order[drop]))
