"""The pandas backend: hit policies, quotas, missing values, population functions, joins."""

import numpy as np
import pandas as pd
import pytest

from engine.run import service as api
from engine.run import inputs as run_inputs
from engine.batch.evaluate import Context, Text, pop_cumshare, pop_pct_rank, pop_rank, pop_stat

from .helpers import at_once, compile_text, decide

HEAD = """
policy: t
entity: customer
facts:
  customer_id: {type: string, key: true}
  x: {type: number}
  y: {type: number}
  region: {type: string}
"""


def frame(xs, ys=None, regions=None):
    n = len(xs)
    return pd.DataFrame({
        "customer_id": [f"{i:03d}" for i in range(n)],
        "x": xs,
        "y": ys if ys is not None else [0] * n,
        "region": regions if regions is not None else ["n"] * n,
    })


def test_first_hit_and_default(tmp_path):
    out = decide(tmp_path, HEAD + """
decisions:
  d:
    values: [big, small, none]
    rules:
      - {id: big, when: x > 10, then: big, because: "x is {x:.1f}"}
      - {id: small, when: x > 0, then: small}
      - {id: rest, then: none, because: "nothing"}
""", frame([20, 5, -1, None]))
    assert out["d"].tolist() == ["big", "small", "none", "none"]
    assert out["d_rule"].tolist() == ["big", "small", "rest", "rest"]
    assert out["d_because"].tolist() == ["x is 20.0", "rule small", "nothing", "nothing"]
    assert out["customer_id"].tolist() == ["000", "001", "002", "003"]


def test_missing_values_never_match_and_kleene_logic(tmp_path):
    out = decide(tmp_path, HEAD + """
decisions:
  d:
    values: [a, b, c, e]
    rules:
      - {id: not-big, when: not (x > 10), then: a}
      - {id: or-true, when: x > 10 or y > 0, then: b}
      - {id: missing, when: is_missing(x), then: c}
      - {id: rest, then: e}
""", frame([None, None, 5], [1, 0, 0]))
    # row 0: not(unknown) is unknown; unknown or true is true
    assert out["d"].tolist() == ["b", "c", "a"]


def test_unique_conflict_names_both_rules(tmp_path):
    out = decide(tmp_path, HEAD + """
decisions:
  d:
    values: [a, b, z]
    hit: unique
    rules:
      - {id: ra, when: x > 0, then: a}
      - {id: rb, when: x > 5, then: b}
      - {id: rz, then: z}
""", frame([1, 10, -1]))
    assert out["d"].tolist()[0] == "a" and out["d"].tolist()[2] == "z"
    assert pd.isna(out["d"][1]) and pd.isna(out["d_rule"][1])
    assert out["d_because"][1] == "error: rules `ra` and `rb` both match (hit policy unique allows only one)"


def test_any_allows_agreeing_rules(tmp_path):
    out = decide(tmp_path, HEAD + """
decisions:
  d:
    values: [a, b]
    hit: any
    rules:
      - {id: r1, when: x > 0, then: a}
      - {id: r2, when: x > 5, then: a}
      - {id: r3, when: x > 8, then: b}
""", frame([1, 6, 9]))
    assert out["d"].tolist()[:2] == ["a", "a"]
    assert out["d_rule"].tolist()[:2] == ["r1", "r1"]
    assert "both match" in out["d_because"][2]


def test_priority_follows_declared_value_order(tmp_path):
    out = decide(tmp_path, HEAD + """
decisions:
  d:
    values: [high, mid, low]
    hit: priority
    rules:
      - {id: l, when: x > 0, then: low}
      - {id: h, when: x > 10, then: high}
      - {id: m, when: x > 5, then: mid}
""", frame([1, 7, 11, -1]))
    assert out["d"].tolist()[:3] == ["low", "mid", "high"]
    assert out["d_rule"].tolist()[:3] == ["l", "m", "h"]
    assert pd.isna(out["d"][3]) and out["d_because"][3] == "no rule matched"


def test_priority_among_equal_values_takes_the_first_written_rule(tmp_path):
    out = decide(tmp_path, HEAD + """
decisions:
  d:
    hit: priority
    outputs:
      level: {values: [high, low]}
      n: {values: [1, 2, 3]}
    rules:
      - {id: low-first, when: x > 0, then: {level: low, n: 1}}
      - {id: high-two, when: x > 5, then: {level: high, n: 2}}
      - {id: high-two-again, when: x > 7, then: {level: high, n: 2}}
      - {id: high-three, when: x > 9, then: {level: high, n: 3}}
      - {id: high-one, when: x > 11, then: {level: high, n: 1}}
""", frame([3, 6, 8, 10, 12]))
    # the first output ranks first, the second among equals, then the order the rules are written in
    assert out["d_rule"].tolist() == ["low-first", "high-two", "high-two", "high-two", "high-one"]


def test_collect_list_and_sum(tmp_path):
    out = decide(tmp_path, HEAD + """
decisions:
  tags:
    values: [pos, big, none]
    hit: collect
    rules:
      - {id: p, when: x > 0, then: pos, because: "positive"}
      - {id: b, when: x > 10, then: big, because: "big"}
      - {id: n, then: none}
  points:
    type: number
    hit: collect
    aggregate: sum
    rules:
      - {id: p1, when: x > 0, then: 1}
      - {id: p2, when: x > 10, then: 5}
""", frame([20, 5, -1]))
    assert out["tags"].tolist() == [["pos", "big"], ["pos"], ["none"]]
    assert out["tags_rule"].tolist() == [["p", "b"], ["p"], ["n"]]
    assert out["tags_because"].tolist() == ["positive; big", "positive", "rule n"]
    assert out["points"].tolist()[:2] == [6, 1] and pd.isna(out["points"][2])


def test_quota_per_group_with_deterministic_ties(tmp_path):
    xs = [5, 5, 5, 9, 1, 7, 7, None]
    regions = ["n", "n", "n", "n", "s", "s", "s", "s"]
    out = decide(tmp_path, HEAD + """
decisions:
  d:
    values: [in, out, skip]
    rules:
      - {id: skip, when: x < 2, then: skip}
      - id: top
        quota:
          rank_by: x
          top: 2
          per: region
          else: {id: over, then: out, because: "rank {quota_rank:.0f} of {quota_size:.0f}, limit {quota_limit:.0f}"}
        then: in
""", frame(xs, regions=regions))
    # north: 9 first, then the tie at 5 goes to the smaller key (000)
    assert out["d"].tolist() == ["in", "out", "out", "in", "skip", "in", "in", "out"]
    assert out["d_because"][1] == "rank 3 of 4, limit 2"
    assert out["d_because"][7] == "rank 3 of 3, limit 2"  # missing values rank last


def test_quota_share_rounds_down(tmp_path):
    out = decide(tmp_path, HEAD + """
decisions:
  d:
    values: [in, out]
    rules:
      - id: top
        quota: {rank_by: "x asc", top: 20%, else: {id: over, then: out}}
        then: in
""", frame(list(range(14))))
    assert out["d"].tolist().count("in") == 2  # floor(0.2 * 14)
    assert out["d"].tolist()[:2] == ["in", "in"]  # ascending: the smallest win


def test_multiple_outputs_and_decisions_reading_decisions(tmp_path):
    out = decide(tmp_path, HEAD + """
decisions:
  tier:
    values: [A, B]
    rules:
      - {id: a, when: x > 10, then: A}
      - {id: b, then: B}
  service:
    outputs:
      level: {values: [gold, silver]}
      hours: {type: number}
    rules:
      - {id: g, when: "tier == 'A'", then: {level: gold, hours: 4}, because: "tier {tier}"}
      - {id: s, then: {level: silver, hours: 24.5}}
""", frame([20, 1]))
    assert out["level"].tolist() == ["gold", "silver"]
    assert out["hours"].tolist() == [4.0, 24.5]
    assert out["service_because"].tolist() == ["tier A", "rule s"]


def test_lookup_if_coalesce_and_arithmetic(tmp_path):
    out = decide(tmp_path, HEAD + """
derive:
  rate: "lookup(region, {n: 0.1, s: 0.2}, 0.5)"
  v: coalesce(x, 0) * rate + if(y > 0, 100, 0)
  q: x / y
decisions:
  d:
    type: number
    rules:
      - {id: r, then: 1, because: "{v:.2f} {q:.1f} {rate:.0%}"}
""", frame([10, None, 3], [1, 0, 0], ["n", "s", "w"]))
    assert out["d_because"].tolist() == ["101.00 10.0 10%", "0.00 missing 20%", "1.50 missing 50%"]


def test_join_reads_other_entity_and_reports_unknown(tmp_path):
    quotes = """
policy: p
entity: quote
facts:
  quote_id: {type: string, key: true}
  customer_id: {type: string}
joins:
  customer: {on: customer_id, take: [tier]}
decisions:
  ok:
    values: [yes, no, unknown]
    rules:
      - {id: u, when: is_missing(tier), then: unknown}
      - {id: y, when: "tier == 'A'", then: yes}
      - {id: n, then: no}
"""
    cust = HEAD + """
decisions:
  tier:
    values: [A, B]
    rules:
      - {id: a, when: x > 10, then: A}
      - {id: b, then: B}
"""
    pl = compile_text(tmp_path, cust, quotes)
    frame([20, 1]).to_csv(tmp_path / "c.csv", index=False)
    pd.DataFrame({"quote_id": ["q1", "q2", "q3"], "customer_id": ["000", "001", "999"]}).to_csv(
        tmp_path / "q.csv", index=False)
    frames = run_inputs.read_inputs(pl, {"customer": tmp_path / "c.csv", "quote": tmp_path / "q.csv"})
    result = api.run(pl, frames)
    out = result.outputs()["quote"]
    assert out["ok"].tolist() == ["yes", "no", "unknown"]
    assert result.warnings() == ["1 quote(s) name a customer that is not in the customer facts: q3 (999)"]


# -- population functions against straightforward definitions -----------------------------------

def ctx_of(values, keys=None, groups=None):
    n = len(values)
    keys = np.array(keys if keys is not None else [f"{i:03d}" for i in range(n)], dtype=object)
    env = {"g": Text.of_objects(np.array(groups, dtype=object))} if groups is not None else {}
    return Context(env, n, keys)


def test_rank_ties_go_to_smaller_key():
    x = np.array([3.0, 5.0, 5.0, np.nan, 1.0])
    r = pop_rank(x, ctx_of(x, keys=["e", "d", "c", "b", "a"]), None)
    assert r[[0, 1, 2, 4]].tolist() == [3, 2, 1, 4] and np.isnan(r[3])


def test_pct_rank_counts_values_at_or_below():
    x = np.array([1.0, 2.0, 2.0, 4.0, np.nan])
    assert pop_pct_rank(x, ctx_of(x), None)[:4].tolist() == [0.25, 0.75, 0.75, 1.0]


def test_cumshare_is_the_pareto_curve():
    x = np.array([50.0, 30.0, 10.0, 10.0, -0.0])
    share = pop_cumshare(x, ctx_of(x), None)
    assert share.tolist() == pytest.approx([0.5, 0.8, 1.0, 1.0, 1.0])


def test_group_statistics():
    x = np.array([1.0, 3.0, 10.0, np.nan, 20.0])
    ctx = ctx_of(x, groups=["a", "a", "b", "b", "b"])
    assert pop_stat("mean", x, ctx, "g").tolist() == [2, 2, 15, 15, 15]
    assert pop_stat("sum", x, ctx, "g").tolist() == [4, 4, 30, 30, 30]
    assert pop_stat("count", x, ctx, "g").tolist() == [2, 2, 2, 2, 2]
    assert pop_stat("zscore", x, ctx, "g")[[0, 1, 2, 4]].tolist() == [-1, 1, -1, 1]
    assert pop_stat("quantile", x, ctx, "g", 0.5).tolist() == [2, 2, 15, 15, 15]
    assert pop_cumshare(x, ctx, "g")[[0, 1, 2, 4]].tolist() == pytest.approx([1.0, 0.75, 1.0, 20 / 30])


def test_a_fact_column_is_made_once_however_many_threads_ask():
    """The writer's threads and the history's recorder read columns of the same FactEnv while the main
    thread does: each column is made once, and every thread gets that one vector (two threads making
    it at once kept the one made last, so a thread could hold a vector the environment no longer had)."""
    from engine.batch.evaluate import FactEnv

    n = 50_000
    frame = pd.DataFrame({f"x{i}": (np.arange(n) % 997).astype(str) for i in range(12)})  # text: slow to make
    for _ in range(10):
        env = FactEnv(frame, {c: "string" for c in frame.columns}, n)
        seen = at_once(lambda env=env: {c: id(env[c]) for c in frame.columns}, 8)
        assert all(s == {c: id(env[c]) for c in frame.columns} for s in seen)


def test_the_shipped_policies_side_by_side_give_the_sequential_figures(monkeypatch):
    """The shipped policies (measures, invariants, joins, a quota) evaluated wave by wave on threads give
    every output column, count, measure and invariant of the sequential order."""
    import engine.batch.evaluate as ev
    from engine.language.compile import compile_policies
    from engine.batch.explain import output_frame

    from .conftest import ROOT

    pl = compile_policies(ROOT / "policies")
    frames = run_inputs.read_inputs(pl, run_inputs.find_inputs(pl, ROOT / "examples", {}))
    took = []
    original = ev._evaluate_waves
    monkeypatch.setattr(ev, "_evaluate_waves", lambda *a: took.append(a[0].entity) or original(*a))
    sequential = api.run(pl, frames)
    assert took == []
    monkeypatch.setattr(ev, "SIDE_BY_SIDE_ROWS", 0)
    waves = api.run(pl, frames)
    assert took == ["customer", "quote", "prospect"]
    assert waves.counts() == sequential.counts()
    assert repr(waves.measures()) == repr(sequential.measures())
    assert [i.to_dict() for i in waves.invariants()] == [i.to_dict() for i in sequential.invariants()]
    for entity in sequential.results:
        assert output_frame(waves.results[entity]).equals(output_frame(sequential.results[entity])), entity
