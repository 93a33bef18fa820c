"""Decision-table parity: computed outputs, several outputs under collect and priority, output order,
`when: true`, and decimals on decided numbers — on both backends."""

from __future__ import annotations

import pandas as pd
import pytest

from engine.analysis.rules import analyse
from engine.language.errors import PolicyError
from engine.analysis.invariants import prove

from .helpers import compile_text
from .test_language import both

QUOTES = """
policy: q
entity: customer
facts:
  customer_id: {type: string, key: true}
  list_price: {type: number, min: 0}
  quoted_price: {type: number, min: 0}
  tier: {type: string, values: [A, B]}
derive:
  floor_ratio: "lookup(tier, {A: 0.8, B: 0.9})"
decisions:
  approval:
    outputs:
      approval: {values: [approve, escalate]}
      floor_price: {type: number, min: 0, decimals: 2}
      discount: {type: number, max: 0.5}
    rules:
      - id: ok
        when: quoted_price >= list_price * floor_ratio
        then: {approval: approve, floor_price: list_price * floor_ratio, discount: 1 - quoted_price / list_price}
        because: "{quoted_price:,.0f} at or above the floor {floor_price:,.2f} (discount {discount:.1%})"
      - id: esc
        then: {approval: escalate, floor_price: list_price * floor_ratio, discount: 1 - quoted_price / list_price}
  points:
    type: number
    hit: collect
    aggregate: sum
    decimals: 2
    rules:
      - {id: a, when: quoted_price > 0, then: 0.1}
      - {id: b, when: quoted_price > 0, then: 0.2}
      - {id: c, when: quoted_price > 10, then: quoted_price * 0.001}
"""


def quotes(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "list_price", "quoted_price", "tier"])


def test_computed_outputs_and_decimals(tmp_path):
    out = both(tmp_path, QUOTES, quotes([("1", 100, 85, "A"), ("2", 100, 70, "B"), ("3", 1000.1, 10, "A")]))
    assert out["floor_price"].tolist() == [80.0, 90.0, 800.08]  # 1000.1 * 0.8 rounded to cents
    assert out["approval"].tolist() == ["approve", "escalate", "escalate"]
    assert out["approval_because"][0] == "85 at or above the floor 80.00 (discount 15.0%)"
    assert out["points"].tolist() == [0.39, 0.37, 0.3]  # 0.1 + 0.2 is 0.3 once rounded, not 0.30000000000000004


def test_a_computed_output_outside_its_range_is_an_invariant(tmp_path):
    pl = compile_text(tmp_path, QUOTES)
    ids = {i.id for i in pl.entity("customer").invariants}
    assert ids == {"floor-price-in-range", "discount-in-range"}
    results = {r.invariant.id: r for r in prove(pl)}
    assert results["discount-in-range"].status == "violated"
    assert "discount" in results["discount-in-range"].reason


@pytest.mark.parametrize("change, words", [
    ("floor_price: {type: number, min: 0, decimals: 2}", ""),
    ("floor_price: {values: [1, 2]}", "cannot declare `values`"),
    ("floor_price: {type: boolean}", "but this rule computes a number"),
])
def test_computed_outputs_are_type_checked(tmp_path, change, words):
    text = QUOTES.replace("floor_price: {type: number, min: 0, decimals: 2}", change)
    if not words:
        compile_text(tmp_path, text)
        return
    with pytest.raises(PolicyError) as exc:
        compile_text(tmp_path, text)
    assert any(words in p.message for p in exc.value.problems), [p.render() for p in exc.value.problems]


HEAD = """
policy: t
entity: customer
facts:
  customer_id: {type: string, key: true}
  x: {type: number}
"""


def test_several_outputs_under_collect_and_priority(tmp_path):
    text = HEAD + """
decisions:
  offers:
    hit: collect
    outputs:
      offer: {values: [gift, discount, call]}
      cost: {type: number}
    rules:
      - {id: gift, when: x > 10, then: {offer: gift, cost: 5}}
      - {id: call, when: x > 0, then: {offer: call, cost: 1}}
  level:
    hit: priority
    outputs:
      level: {values: [gold, silver]}
      hours: {values: [4, 8, 24]}
    rules:
      - {id: s24, when: x > 0, then: {level: silver, hours: 24}}
      - {id: s8, when: x > 5, then: {level: silver, hours: 8}}
      - {id: g24, when: x > 50, then: {level: gold, hours: 24}}
"""
    out = both(tmp_path, text, pd.DataFrame({"customer_id": ["1", "2", "3", "4"], "x": [20, 3, 60, -1]}))
    assert out["offer"].tolist() == [["gift", "call"], ["call"], ["gift", "call"], []]
    assert out["cost"].tolist() == [[5, 1], [1], [5, 1], []]
    # priority: the first output decides, then the next: gold/24 beats silver/8, silver/8 beats silver/24
    assert out["level"].tolist()[:3] == ["silver", "silver", "gold"]
    assert out["hours"].tolist()[:3] == [8, 24, 24]
    assert out["level_rule"].tolist()[:3] == ["s8", "s24", "g24"]


def test_output_order_lists_by_the_declared_values(tmp_path):
    text = HEAD + """
decisions:
  alerts:
    hit: output-order
    values: [critical, high, low]
    rules:
      - {id: low, when: x > 0, then: low}
      - {id: critical, when: x > 100, then: critical}
      - {id: high, when: x > 10, then: high}
  urgent:
    values: [yes, no]
    rules:
      - {id: yes, when: "'critical' in alerts", then: "yes"}
      - {id: no, then: "no"}
"""
    out = both(tmp_path, text, pd.DataFrame({"customer_id": ["1", "2", "3"], "x": [500, 20, -5]}))
    assert out["alerts"].tolist() == [["critical", "high", "low"], ["high", "low"], []]
    assert out["alerts_rule"].tolist() == [["critical", "high", "low"], ["high", "low"], []]
    assert out["urgent"].tolist() == ["yes", "no", "no"]
    with pytest.raises(PolicyError) as exc:
        compile_text(tmp_path / "bad", text.replace("    values: [critical, high, low]\n", "", 1))
    assert any("hit policy output-order needs `values:`" in p.message for p in exc.value.problems)


def test_when_true_and_a_default_that_is_not_last(tmp_path):
    text = HEAD + """
decisions:
  tags:
    hit: collect
    values: [always, big, none]
    rules:
      - {id: none, then: none}
      - {id: always, when: true, then: always}
      - {id: big, when: x > 10, then: big}
"""
    out = both(tmp_path, text, pd.DataFrame({"customer_id": ["1", "2"], "x": [20, 1]}))
    assert out["tags"].tolist() == [["always", "big"], ["always"]]  # `when: true` always matches; the default never
    problems = analyse(compile_text(tmp_path / "again", text))
    assert any(p.code == "default-not-last" and "write `when: true`" in p.hint for p in problems)
