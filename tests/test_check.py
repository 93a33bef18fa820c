"""validate + typecheck + plan: every kind of policy mistake, located and in plain words."""

import re
from pathlib import Path

import pytest

from engine.language.errors import PolicyError

from .conftest import kam
from .helpers import compile_text

BASE = """
policy: seg
entity: customer
facts:
  customer_id: {type: string, key: true}
  profit: {type: number}
  credit_score: {type: number}
  region: {type: string}
  vip: {type: boolean}
"""


def problems(tmp: Path, *texts: str):
    with pytest.raises(PolicyError) as exc:
        compile_text(tmp, *texts)
    return exc.value.problems


def one(tmp: Path, text: str):
    found = problems(tmp, text)
    assert len(found) == 1, [p.render() for p in found]
    return found[0]


def decision(when: str, then: str = "A", extra: str = "") -> str:
    return BASE + extra + f"""
decisions:
  tier:
    values: [A, B]
    rules:
      - id: r1
        when: "{when}"
        then: {then}
"""


def test_clean_policy_compiles(tmp_path):
    pl = compile_text(tmp_path, decision("profit > 0"))
    assert [d.name for d in pl.entity("customer").decisions] == ["tier"]


def test_unknown_name_with_did_you_mean_at_its_column(tmp_path):
    p = one(tmp_path, decision("profit > 0 and credit_scor >= 60"))
    assert p.code == "unknown-name"
    assert "credit_scor" in p.message and p.hint == "did you mean `credit_score`?"
    assert (p.loc.line, p.loc.col) == (15, 31)  # inside the quotes, at the name


@pytest.mark.parametrize(
    "when, words",
    [
        ("region > 5", "cannot compare text with a number"),
        ("vip + 1 > 2", "a yes/no value cannot be used as a number"),
        ("profit", "`when` must be a condition"),
        ("profit > 0 and region", "needs a condition"),
        ("vip < true", "cannot order yes/no values"),
    ],
)
def test_type_errors(tmp_path, when, words):
    p = one(tmp_path, decision(when))
    assert p.code == "type"
    assert words in p.message + p.hint


def test_unknown_function_and_arity(tmp_path):
    p = one(tmp_path, decision("pct_rnk(profit) > 0.5"))
    assert p.code == "unknown-function" and "did you mean `pct_rank`" in p.hint
    p = one(tmp_path, decision("abs(profit, 2) > 1"))
    assert p.code == "arity" and "1 argument" in p.message
    p = one(tmp_path, decision("pct_rank(profit, over=region) > 1"))
    assert p.code == "arity" and "by=" in p.hint


def test_value_outside_declared_set(tmp_path):
    p = one(tmp_path, decision("profit > 0", then="E"))
    assert p.code == "unknown-value" and "'E' is not a declared value of `tier`" in p.message


def test_comparing_a_decision_with_an_undeclared_value(tmp_path):
    text = decision("profit > 0") + """
  service:
    values: [gold, silver]
    rules:
      - id: s1
        when: "tier == 'Z'"
        then: gold
"""
    p = one(tmp_path, text)
    assert p.code == "unknown-value" and "'Z' is not a possible value" in p.message


def test_then_with_undeclared_output(tmp_path):
    text = BASE + """
decisions:
  service:
    outputs:
      level: {values: [gold, silver]}
      hours: {type: number}
    rules:
      - id: s1
        when: "profit > 0"
        then: {level: gold, hours: 4, manager: dedicated}
      - id: s2
        then: {level: silver, hours: 8}
"""
    p = one(tmp_path, text)
    assert p.code == "unknown-output" and "no output `manager`" in p.message
    assert p.loc.line == 18


def test_cycle_names_the_whole_cycle(tmp_path):
    text = BASE + """
derive:
  a: b + 1
  b: if(tier == 'A', 1, 0)
decisions:
  tier:
    values: [A, B]
    rules:
      - id: r1
        when: a > 1
        then: A
"""
    p = one(tmp_path, text)
    assert p.code == "cycle"
    assert "a -> b -> tier -> a" in p.message


def test_same_fact_with_two_types(tmp_path):
    other = """
policy: other
entity: customer
facts:
  customer_id: {type: string, key: true}
  profit: {type: string}
decisions:
  flag:
    values: [x]
    rules:
      - id: only
        then: x
"""
    found = problems(tmp_path, decision("profit > 0"), other)
    assert any(p.code == "fact-type-conflict" and "`profit`" in p.message for p in found)


def test_schema_errors_in_plain_words_at_the_yaml_node(tmp_path):
    text = BASE + """
decisions:
  tier:
    hit: frist
    rules:
      - id: r1
        whne: profit > 0
        then: A
"""
    found = problems(tmp_path, text)
    msgs = {p.message: p for p in found}
    hit = next(p for p in found if "frist" in p.message)
    assert hit.hint == "did you mean `first`?" and hit.loc.line == 12
    whne = next(p for p in found if "whne" in p.message)
    assert whne.hint == "did you mean `when`?" and (whne.loc.line, whne.loc.col) == (15, 9)
    assert len(msgs) == 2


def test_all_problems_are_reported_at_once(tmp_path):
    text = decision("profit > 0 and credit_scor > 1 and regoin == 'x'", then="E")
    codes = sorted(p.code for p in problems(tmp_path, text))
    assert codes == ["unknown-name", "unknown-name", "unknown-value"]


def test_python_internals_are_unreachable(tmp_path):
    for when in ("__import__('os').system('x') == 0", "profit.__class__ == 1", "().__class__ == 1"):
        found = problems(tmp_path / str(abs(hash(when))), decision(when))
        assert found[0].code == "syntax", found[0].render()


def test_quota_rules(tmp_path):
    text = BASE + """
decisions:
  pick:
    values: [yes_, no_]
    hit: unique
    rules:
      - id: q
        quota: {rank_by: profit, top: 2, per: regon, else: {id: rest, then: no_, because: "{quota_rnk}"}}
        then: yes_
"""
    codes = sorted(p.code for p in problems(tmp_path, text))
    assert codes == ["quota", "unknown-name", "unknown-name"]


def test_template_problems(tmp_path):
    text = BASE + """
decisions:
  tier:
    values: [A]
    rules:
      - id: r
        then: A
        because: "{profit:.2x} {region:.0%} {nope} {profit"
"""
    codes = sorted(p.code for p in problems(tmp_path, text))
    assert codes == ["template"]


def test_priority_needs_values_and_collect_sum_needs_numbers(tmp_path):
    text = BASE + """
decisions:
  p:
    hit: priority
    rules:
      - id: r
        then: x
  c:
    hit: collect
    aggregate: sum
    values: [a]
    rules:
      - id: r
        then: a
"""
    codes = sorted(p.code for p in problems(tmp_path, text))
    assert codes == ["priority-values", "type"]


def test_missing_key_and_unknown_join(tmp_path):
    text = """
policy: q
entity: quote
facts:
  quote_id: {type: string}
joins:
  customr: {on: quote_id, take: [tier]}
decisions:
  d:
    values: [x]
    rules:
      - id: r
        then: x
"""
    codes = sorted(p.code for p in problems(tmp_path, text))
    assert codes == ["no-key", "unknown-entity"]


def test_a_cycle_of_features_is_a_cycle_error_not_unknown_types(tmp_path):
    text = BASE + """
derive:
  a: b + 1
  b: a * 2
  c: a + profit
decisions:
  tier:
    values: [A, B]
    rules:
      - {id: r1, when: "c > 1", then: A}
"""
    found = problems(tmp_path, text)
    assert [p.code for p in found] == ["cycle"], [p.render() for p in found]
    assert "a -> b -> a" in found[0].message


@pytest.mark.parametrize("derive, code", [
    ("pct_rnk(profit)", "unknown-function"),
    ("abs(profit, 2)", "arity"),
])
def test_a_broken_feature_is_reported_once_not_at_every_use(tmp_path, derive, code):
    text = BASE + f"""
derive:
  score: {derive}
  twice: score * 2
decisions:
  tier:
    values: [A, B]
    rules:
      - id: r1
        when: "score > 1 and twice < 5 and score + twice > 0"
        then: A
        because: "{{score:.1f}} {{twice:.0%}}"
"""
    found = problems(tmp_path, text)
    assert [p.code for p in found] == [code], [p.render() for p in found]


def test_a_fact_type_conflict_is_reported_once(tmp_path):
    other = """
policy: other
entity: customer
facts:
  customer_id: {type: string, key: true}
  profit: {type: string}
derive:
  p2: profit * 2
  p3: profit + 1
decisions:
  flag:
    values: [x, y]
    rules:
      - {id: one, when: "profit > 0 and p2 > 1 and p3 > 1", then: x, because: "{profit:.1f}"}
      - {id: two, when: "profit == 'a'", then: y}
"""
    found = problems(tmp_path, decision("profit > 0 and profit < 10"), other)
    assert [p.code for p in found] == ["fact-type-conflict"], [p.render() for p in found]


def test_check_counts_rules_as_coverage_does(tmp_path):
    r = kam("check", "policies/")
    t = kam("test", "policies/", "--coverage")
    checked = int(re.search(r"(\d+) rules", r.stdout).group(1))
    covered = t.stdout.split("total: ")[1].split(" rules")[0]
    assert covered == f"{checked}/{checked}"  # the quota's `else` rule counts in both


def test_decimals_only_for_numbers(tmp_path):
    text = BASE.replace("region: {type: string}", "region: {type: string, decimals: 2}") + """
decisions:
  tier:
    values: [A]
    rules:
      - {id: r1, then: A}
"""
    p = one(tmp_path, text)
    assert p.code == "schema" and "`decimals` applies to facts of type number" in p.message


def test_an_output_without_values_plays_no_part_in_the_priority(tmp_path):
    """DMN: only the outputs that list their values order the rules; `hours` (a number without values)
    was refused with error[priority-values]. Ties keep the written order, on both backends."""
    import pandas as pd

    from engine.run import service as api
    from engine.run import inputs as run_inputs
    from engine.batch.explain import output_frame

    text = """
policy: p
entity: customer
facts:
  id: {type: string, key: true}
  x: {type: number}
decisions:
  p:
    hit: priority
    outputs:
      level: {values: [high, low]}
      hours: {type: number}
    rules:
      - {id: low-slow, when: x > 1, then: {level: low, hours: 48}}
      - {id: high-late, when: x > 2, then: {level: high, hours: 72}}
      - {id: high-soon, when: x > 3, then: {level: high, hours: 4}}
  o:
    hit: output-order
    outputs:
      o_level: {values: [high, low]}
      n: {type: number}
    rules:
      - {id: a, when: x > 1, then: {o_level: low, n: 1}}
      - {id: b, when: x > 3, then: {o_level: high, n: 2}}
"""
    pl = compile_text(tmp_path, text)
    path = tmp_path / "c.csv"
    pd.DataFrame({"id": ["1", "2", "3", "4"], "x": [0, 2, 3, 4]}).to_csv(path, index=False)
    frames = run_inputs.read_inputs(pl, {"customer": path})
    for backend in ("pandas", "durable"):
        out = output_frame(api.run(pl, frames, backend=backend).results["customer"])
        rules = [None if pd.isna(v) else v for v in out["p_rule"].astype(object)]
        assert rules == [None, "low-slow", "high-late", "high-late"], backend  # high-late ties high-soon: written order
        assert list(out["hours"].astype(object).where(out["hours"].notna(), None)) == [None, 48, 72, 72], backend
        assert [list(v) for v in out["o_rule"]] == [[], ["a"], ["a"], ["b", "a"]], backend
    bad = text.replace("level: {values: [high, low]}", "level: {type: string}")
    codes = [p.code for p in problems(tmp_path / "bad", bad.split("  o:")[0])]
    assert codes == ["priority-values"]
