"""The language's newer parts on both backends: collected lists, parameters, ties kept together."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from engine.run import service as api
from engine.run import inputs as run_inputs
from engine.language.errors import PolicyError
from engine.batch.explain import output_frame

from .conftest import ROOT, kam_here
from .helpers import compile_text
from .test_differential import deadline

HEAD = """
policy: t
entity: customer
facts:
  customer_id: {type: string, key: true}
  x: {type: number}
  s: {type: string}
"""

TRAITS = HEAD + """
params:
  big_from: 10
  cut: 50%
decisions:
  traits:
    hit: collect
    values: [big, small, odd, none]
    rules:
      - {id: big, when: x > big_from, then: big, because: "x {x} above {big_from}"}
      - {id: huge, when: x > 20, then: big}
      - {id: small, when: x < 5, then: small}
      - {id: odd, when: x == 7, then: odd}
  n_traits:
    hit: collect
    aggregate: count
    values: [big, small, odd]
    rules:
      - {id: big, when: x > 10, then: big}
      - {id: small, when: x < 5, then: small}
  verdict:
    values: [yes, no, maybe]
    rules:
      - id: y
        when: "'big' in traits and 'odd' not in traits and n_traits >= 1 and x > cut"
        then: "yes"
        because: "traits {traits}, {n_traits} counted, cut {cut:.0%}"
      - {id: n, when: "'big' not in traits", then: "no", because: "traits: {traits}"}
      - {id: m, then: maybe}
"""


def both(tmp: Path, policy: str, frame: pd.DataFrame, *more: str, entity: str = "customer",
         files: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """The output of the pandas and the durable backends, after checking that they are identical."""
    pl = compile_text(tmp, policy, *more)
    paths = {entity: tmp / f"{entity}.csv"}
    frame.to_csv(paths[entity], index=False)
    for other, f in (files or {}).items():
        paths[other] = tmp / f"{other}.csv"
        f.to_csv(paths[other], index=False)
    frames = run_inputs.read_inputs(pl, paths)
    pandas_run = api.run(pl, frames)
    with deadline(60):
        durable_run = api.run(pl, frames, backend="durable")
    a, b = output_frame(pandas_run.results[entity]), output_frame(durable_run.results[entity])
    for column in a.columns:
        assert [str(v) for v in a[column]] == [str(v) for v in b[column]], column
    return a


def customers(xs: list, ss: list | None = None) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": [f"{i:03d}" for i in range(len(xs))], "x": xs,
                         "s": ss if ss is not None else ["a"] * len(xs)})


def test_a_decision_reads_every_value_a_collect_decision_gathered(tmp_path):
    out = both(tmp_path, TRAITS, customers([25, 7, 3, None, 12]))
    assert out["traits"].tolist() == [["big", "big"], ["odd"], ["small"], [], ["big"]]
    assert out["n_traits"].tolist() == [1, 0, 1, 0, 1]
    assert out["verdict"].tolist() == ["yes", "no", "no", "no", "yes"]
    assert out["verdict_because"][0] == "traits big, big, 1 counted, cut 50%"
    assert out["verdict_because"][1] == "traits: odd"
    assert out["traits_because"][4] == "x 12 above 10"


def test_the_shipped_retention_reason_lists_every_trait(tmp_path):
    r = kam_here("run", "--entity", "customer", "--out", str(tmp_path / "out"), "-q")
    assert r.returncode == 0, r.stderr
    c = pd.read_csv(tmp_path / "out" / "customer_decisions.csv", dtype=str, keep_default_na=False)
    both_traits = c["protected_by"] == "loyal, big-profitable"
    assert both_traits.sum() > 50
    assert c.loc[both_traits, "retention_because"].str.startswith("protected (loyal, big-profitable)").all()
    assert c.loc[both_traits, "protected_by_rule"].eq("trait-loyal, trait-big").all()


def test_collected_lists_travel_through_joins(tmp_path):
    quotes = """
policy: q
entity: quote
facts:
  quote_id: {type: string, key: true}
  customer_id: {type: string}
joins:
  customer: {on: customer_id, take: [traits]}
decisions:
  flag:
    values: [small, other]
    rules:
      - {id: small, when: "'small' in traits", then: small, because: "{traits}"}
      - {id: other, then: other, because: "{traits}"}
"""
    q = pd.DataFrame({"quote_id": ["q1", "q2", "q3"], "customer_id": ["002", "000", "999"]})
    out = both(tmp_path, quotes, q, TRAITS, entity="quote", files={"customer": customers([25, 7, 3])})
    assert out["flag"].tolist() == ["small", "other", "other"]
    assert out["flag_because"].tolist() == ["small", "big, big", "missing"]


@pytest.mark.parametrize("when, words", [
    ("traits == 'big'", "so `==` cannot compare it with one value"),
    ("traits in ['big']", "`in [...]` needs one value on its left"),
    ("'bigg' in traits", "'bigg' is not a possible value here"),
    ("s in traits", "must be a fixed value"),
    ("'big' in s", "`in` needs a list after it"),
    ("traits", "`when` must be a condition"),
    ("n_traits == 'big'", "cannot compare a number with text"),
])
def test_a_list_is_only_searched(tmp_path, when, words):
    text = TRAITS.replace("'big' not in traits", when)
    rendered = refusal(tmp_path, text)
    assert words in rendered, rendered
    if "==" in words or "[...]" in words:
        assert "'loyal' in protected_by" in rendered  # the hint shows how


def test_sum_min_max_need_numbers_but_count_counts_anything(tmp_path):
    for aggregate in ("sum", "min", "max"):
        with pytest.raises(PolicyError) as exc:
            compile_text(tmp_path / aggregate, TRAITS.replace("aggregate: count", f"aggregate: {aggregate}"))
        assert any("needs a number output" in p.message for p in exc.value.problems)


def test_a_collected_value_with_the_list_separator_is_refused(tmp_path):
    with pytest.raises(PolicyError) as exc:
        compile_text(tmp_path, TRAITS.replace("values: [big, small, odd, none]", "values: ['big, bold', small, odd, none]")
                     .replace("then: big, because", "then: 'big, bold', because"))
    assert any("contains `, `" in p.message for p in exc.value.problems)


RANKED = HEAD + """
params:
  winners: 2
derive:
  r_key: rank(x)
  r_together: rank(x, ties='together')
decisions:
  pick:
    values: [in, out]
    rules:
      - id: top
        quota:
          rank_by: x
          top: 2
          ties: TIES
          else: {id: over, then: out, because: "ranked {quota_rank:.0f}{quota_tie}"}
        then: in
        because: "ranked {quota_rank:.0f}{quota_tie}"
"""


def test_ties_go_to_the_smaller_key_or_stay_together(tmp_path):
    xs = [9, 5, 5, 5, 1]
    pl = compile_text(tmp_path / "k", RANKED.replace("TIES", "key"))
    frame = customers(xs)
    frame.to_csv(tmp_path / "c.csv", index=False)
    result = api.run(pl, run_inputs.read_inputs(pl, {"customer": tmp_path / "c.csv"}))
    out = output_frame(result.results["customer"])
    env = result.results["customer"].ctx.env
    assert env["r_key"].tolist() == [1, 2, 3, 4, 5]
    assert env["r_together"].tolist() == [1, 2, 2, 2, 5]
    assert out["pick"].tolist() == ["in", "in", "out", "out", "out"]
    assert out["pick_because"][1] == "ranked 2 (tied with 2 others on the ranking; ties go to the smaller customer_id)"
    assert out["pick_because"][0] == "ranked 1"
    pl = compile_text(tmp_path / "t", RANKED.replace("TIES", "together"))
    result = api.run(pl, run_inputs.read_inputs(pl, {"customer": tmp_path / "c.csv"}))
    out = output_frame(result.results["customer"])
    assert out["pick"].tolist() == ["in", "in", "in", "in", "out"]  # the tie group is kept whole
    assert out["pick_because"][3] == "ranked 2 (tied with 2 others on the ranking; all share the best rank of the tie)"


def test_explain_says_when_a_tie_was_broken_by_key(tmp_path):
    r = kam_here("explain", "P00003")
    assert r.returncode == 0, r.stderr
    policies = tmp_path / "p"
    policies.mkdir()
    (policies / "t.yaml").write_text(RANKED.replace("TIES", "key"), encoding="utf-8")
    customers([9, 5, 5, 5, 1]).to_csv(tmp_path / "customers.csv", index=False)
    r = kam_here("explain", "002", "--policies", str(policies), "--data", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "ranked 3 of 5 eligible; quota keeps the top 2 (2) (tied with 2 others on the ranking; ties go to the " \
           "smaller customer_id)" in r.stdout
    assert "r_key = 3   <- rank(x)   (tied with 2 others; the smaller customer_id ranks first)" in r.stdout


def test_parameters_are_fixed_values_rules_and_texts_share(tmp_path):
    out = both(tmp_path, TRAITS, customers([11, 9]))
    assert out["traits"].tolist() == [["big"], []]
    pl = compile_text(tmp_path / "again", TRAITS)
    rule = next(d for d in pl.entity("customer").decisions if d.name == "traits").rules[0]
    assert rule.when.node.operands[1].value == 10.0  # written into the rule: the analysis sees a constant
    with pytest.raises(PolicyError) as exc:
        compile_text(tmp_path / "bad", TRAITS.replace("big_from: 10", "big_from: 'ten'"))
    assert any("cannot compare a number with text" in p.message for p in exc.value.problems)


def test_the_shipped_key_account_reason_shows_its_cutoff(tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    for f in (ROOT / "policies").glob("*.yaml"):
        text = f.read_text(encoding="utf-8")
        (policies / f.name).write_text(text.replace("key_share: 80%", "key_share: 75%"), encoding="utf-8")
    r = kam_here("run", "--policies", str(policies), "--entity", "customer", "--out", str(tmp_path / "out"), "-q")
    assert r.returncode == 0, r.stderr
    c = pd.read_csv(tmp_path / "out" / "customer_decisions.csv", dtype=str)
    texts = c.loc[c["tier_rule"] == "key-account", "tier_because"]
    assert len(texts) and texts.str.contains("together bring 75% of profit").all()


def test_ranks_against_a_saved_population_keep_their_ties(tmp_path):
    pl = compile_text(tmp_path, RANKED.replace("TIES", "key"))
    customers([9, 5, 5, 5, 1, None]).to_csv(tmp_path / "c.csv", index=False)
    frames = run_inputs.read_inputs(pl, {"customer": tmp_path / "c.csv"})
    batch = api.run(pl, frames, record_calibration=True)
    again = api.run(pl, frames, calibration=batch.calibration)
    for name in ("r_key", "r_together"):
        a, b = batch.results["customer"].ctx.env[name], again.results["customer"].ctx.env[name]
        assert [str(v) for v in a] == [str(v) for v in b], name


def test_parameters_work_wherever_a_fixed_value_does(tmp_path):
    policy = HEAD + """
params:
  home: a
  low: -1
  rate: 5%
derive:
  r: "lookup(s, {a: rate, b: -low}, -rate)"
decisions:
  d:
    values: [home, neg, other]
    rules:
      - {id: h, when: "s in [home, 'c']", then: home, because: "{home} {r:.1%}"}
      - {id: n, when: "x in [low, -low]", then: neg, because: "{r:.1%}"}
      - {id: o, then: other}
"""
    out = both(tmp_path, policy, customers([1, -1, 5], ["a", "b", "z"]))
    assert out["d"].tolist() == ["home", "neg", "other"]
    assert out["d_because"].tolist() == ["a 5.0%", "100.0%", "rule o"]
    r = kam_here("check", "--strict", str(tmp_path / "p"))
    assert r.returncode == 0 and "not-analysed" not in r.stderr, r.stderr


# -- previous(): the values of earlier periods ------------------------------------------------------

PAST = HEAD + """
params:
  cut: 10
derive:
  above: x > cut
  grew: x - previous(x)
decisions:
  level:
    values: [high, held, low]
    rules:
      - {id: high, when: above, then: high}
      - id: held
        when: previous(level) == 'high' and previous(above) and 'held' != previous(level, 2)
        then: held
        because: "was {level} before; grew {grew}"
      - {id: low, then: low}
"""


@pytest.mark.parametrize("when, words", [
    ("previous(cut) > 1", "`cut` is a parameter: it has no earlier values"),
    ("previous(x + 1) > 1", "`previous` reads the earlier value of one name"),
    ("previous(x, 0) > 1", "a fixed whole number from 1 to 24"),
    ("previous(x, 25) > 1", "a fixed whole number from 1 to 24"),
    ("previous(x, 1.5) > 1", "a fixed whole number from 1 to 24"),
    ("previous(nope) > 1", "`nope` is not a fact, feature or decision"),
    ("previous(level) == 'hgh'", "'hgh' is not a possible value"),
    ("previous(x) == 'a'", "cannot compare a number with text"),
])
def test_previous_reads_one_name_a_fixed_number_of_periods_back(tmp_path, when, words):
    text = PAST.replace("previous(level) == 'high' and previous(above)", when)
    rendered = refusal(tmp_path, text)
    assert words in rendered, rendered


def test_a_feature_cannot_read_its_own_previous_value_but_a_decision_can(tmp_path):
    with pytest.raises(PolicyError) as exc:
        compile_text(tmp_path, PAST.replace("grew: x - previous(x)", "grew: coalesce(previous(grew), 0) + x"))
    assert "the type of `grew` depends on its own previous value" in str(exc.value)
    pl = compile_text(tmp_path, PAST)  # `level` reads previous(level): fine, its values are declared
    ep = pl.entity("customer")
    assert {(r.name, r.back) for r in ep.past} == {("x", 1), ("level", 1), ("above", 1), ("level", 2)}
    assert set(ep.past_direct) == {"grew", "level"}


def past_on_both_backends(pl, frames, past):
    """Runs with earlier values on both backends, which must give the same outputs: the pandas run and
    the outputs of both."""
    runs = [api.run(pl, frames, past=past)]
    with deadline(60):
        runs.append(api.run(pl, frames, backend="durable", past=past))
    outs = [output_frame(r.results["customer"]) for r in runs]
    for column in outs[0].columns:
        assert [str(v) for v in outs[0][column]] == [str(v) for v in outs[1][column]], column
    return runs[0], outs


STREAK = HEAD + """
derive:
  low: x < 10
  low_run: streak(low, 3)
decisions:
  level:
    values: [out, watch, ok]
    rules:
      - id: out
        when: streak(low, 3) >= 3
        then: out
        because: "low {low_run} periods in a row"
      - id: watch
        when: 1 <= low_run
        then: watch
      - {id: ok, then: ok}
"""


def test_streak_counts_the_periods_in_a_row_on_both_backends(tmp_path):
    pl = compile_text(tmp_path, STREAK)
    assert {(r.name, r.back) for r in pl.entity("customer").past} == {("low", 1), ("low", 2)}
    frame = customers([5, 5, 5, 5, 20, None])
    path = tmp_path / "customer.csv"
    frame.to_csv(path, index=False)
    frames = run_inputs.read_inputs(pl, {"customer": path})
    past = {"customer": pd.DataFrame({
        # 000: low three times; 001: twice, then not there; 002: a missing value ends the row;
        # 003: not low before; 004 and 005: not low (or unknown) now
        "previous(low, 1)": pd.array([True, True, None, False, True, True], dtype="boolean"),
        "previous(low, 2)": pd.array([True, None, True, True, True, True], dtype="boolean"),
    })}
    run, outs = past_on_both_backends(pl, frames, past)
    assert list(run.results["customer"].ctx.env["low_run"]) == [3, 2, 1, 1, 0, 0]
    assert list(outs[0]["level"]) == ["out", "watch", "watch", "watch", "ok", "ok"]
    assert outs[0]["level_because"][0] == "low 3 periods in a row"


@pytest.mark.parametrize("expr, words", [
    ("streak(low, 0)", "a fixed whole number from 1 to 24"),
    ("streak(low, 25)", "a fixed whole number from 1 to 24"),
    ("streak(x < 10, 2)", "`streak` counts the periods in a row in which one yes/no name held"),
    ("streak(x, 2)", "`streak` counts periods in which a yes/no value held; `x` is a number"),
    ("streak(nope, 2)", "`nope` is not a fact, feature or decision"),
    ("streak(low)", "streak"),
])
def test_streak_counts_one_yes_no_name_a_fixed_number_of_periods(tmp_path, expr, words):
    rendered = refusal(tmp_path, STREAK.replace("low_run: streak(low, 3)", f"low_run: {expr}"))
    assert words in rendered, rendered


def refusal(tmp_path: Path, text: str) -> str:
    """The problems a policy is refused for, as `kam check` prints them."""
    with pytest.raises(PolicyError) as exc:
        compile_text(tmp_path, text)
    return "\n".join(p.render() for p in exc.value.problems)


def test_previous_on_both_backends_with_missing_earlier_values(tmp_path):
    pl = compile_text(tmp_path, PAST)
    frame = customers([20, 5, 5, 5, 5])
    path = tmp_path / "customer.csv"
    frame.to_csv(path, index=False)
    frames = run_inputs.read_inputs(pl, {"customer": path})
    past = {"customer": pd.DataFrame({
        "previous(x, 1)": [10.0, 12.0, None, 12.0, 12.0],
        "previous(level, 1)": ["high", "high", "high", None, "high"],
        "previous(above, 1)": pd.array([True, True, True, True, False], dtype="boolean"),
        "previous(level, 2)": ["low", "low", None, "low", "held"],
    })}
    _, outs = past_on_both_backends(pl, frames, past)
    out = outs[0]
    # 000: above now; 001: held; 002: held needs previous(level, 2) != 'held', and missing is unknown
    assert list(out["level"]) == ["high", "held", "low", "low", "low"]
    assert out["level_because"][1] == "was held before; grew -7"
    # without a history every entity is new: previous() is missing, the held rule never matches
    plain = output_frame(api.run(pl, frames).results["customer"])
    assert list(plain["level"]) == ["high", "low", "low", "low", "low"]


def test_check_notes_which_decisions_read_the_past_and_analyses_them(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "t.yaml").write_text(PAST.lstrip(), encoding="utf-8")
    r = kam_here("check", str(folder))
    assert r.returncode == 0, r.stderr
    assert "note[reads-past]: decision `level` reads earlier periods (previous(level), previous(above), " \
           "previous(level, 2), previous(x))" in r.stderr
    assert "not-analysed" not in r.stderr  # previous(x) is a field of its own for the rule analysis
    # what a missing previous value means is up to the rules (here: `unknown`), not "every customer is new"
    assert "without a history previous() is missing for every customer, and its rules decide as they do for " \
           "a missing value" in r.stderr
    assert "counts as new" not in r.stderr


def test_kam_test_cases_give_the_earlier_values(tmp_path):
    folder = tmp_path / "p"
    (folder / "tests").mkdir(parents=True)
    (folder / "t.yaml").write_text(PAST.lstrip(), encoding="utf-8")
    (folder / "tests" / "t.yaml").write_text("""
cases:
  - name: held for one period
    customer:
      - {customer_id: "1", x: 5}
      - {customer_id: "2", x: 5}
    previous:
      customer:
        "1": [{level: high, above: true, x: 12}, {level: low}]
        "2": {level: high, above: false}
    expect:
      customer:
        "1": {level: {value: held, rule: held, because: "grew -7"}}
        "2": {level: low}
  - name: a typo in the earlier values is reported
    customer:
      - {customer_id: "1", x: 5}
    previous:
      customer:
        "1": {levl: high}
    expect:
      customer:
        "1": {level: low}
  - name: a typo in a fact is reported too
    customer:
      - {customer_id: "1", xx: 5}
    expect:
      customer:
        "1": {level: low}
""", encoding="utf-8")
    r = kam_here("test", str(folder))
    assert "PASS" in r.stdout and r.stdout.count("FAIL") == 2, r.stdout
    assert "`levl`, which is not a fact, feature or decision of customer" in r.stdout
    assert "`xx` is not a fact of customer" in r.stdout


# -- measures: figures of the whole population ------------------------------------------------------------

MEASURES = HEAD + """
params:
  top: 0.8
derive:
  position: pct_rank(x)
measures:
  customers: count()
  total: sum(x)
  top_share: sum(if(position > top, x, 0)) / sum(x)
  losers: sum(if(x < 0, 1, 0))
  cutoff: quantile(x, 0.8)
  any_loss: sum(if(x < 0, 1, 0)) > 0
  empty_share: sum(if(s == 'none', x, 0)) / sum(if(s == 'none', 1, 0))
decisions:
  level:
    values: [hi, lo]
    rules:
      - {id: hi, when: position > top, then: hi}
      - {id: lo, then: lo}
"""


def test_measures_are_one_figure_per_run_on_both_backends(tmp_path):
    pl = compile_text(tmp_path, MEASURES)
    frame = customers([100, 50, -10, 10, 0])
    path = tmp_path / "customer.csv"
    frame.to_csv(path, index=False)
    frames = run_inputs.read_inputs(pl, {"customer": path})
    x = frame["x"].astype(float)
    expected = {"customers": 5, "total": 150, "top_share": 100 / 150, "losers": 1,
                "cutoff": float(x.quantile(0.8)), "any_loss": True, "empty_share": None}  # 0 / 0 is missing
    runs = [api.run(pl, frames), api.run(pl, frames, backend="durable")]
    for run in runs:
        got = run.measures()["customer"]
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            assert got[name] == pytest.approx(value) if isinstance(value, float) else got[name] == value, name
        assert isinstance(got["total"], int)  # whole numbers as written everywhere: 150, not 150.0
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={path}", "--out",
                 str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["measures"]["customer"]["total"] == 150 and manifest["measures"]["customer"]["empty_share"] is None
    # the manifest keeps the exact figure; the summary writes it for people (a plain number: 3 decimals)
    assert manifest["measures"]["customer"]["top_share"] == 100 / 150
    assert "top_share" in r.stdout and " 0.667 " in r.stdout and "0.6666" not in r.stdout


@pytest.mark.parametrize("measure, words", [
    ("x * 2", "measure `bad` reads `x`, which differs from one entity to the next"),
    ("sum(x, by=s)", "measure `bad` computes sum() per group (`by=`)"),
    ("sum(previous(x))", "measure `bad` reads earlier periods with previous()"),
    ("rank(x)", "measure `bad` uses rank(), which gives each entity a value of its own"),
    ("sum(x) + level", "measure `bad` reads `level`"),
    ("quantile(s, 0.5)", "`quantile` needs a number"),
])
def test_a_measure_reads_entities_only_through_aggregates(tmp_path, measure, words):
    rendered = refusal(tmp_path, MEASURES.replace("  customers: count()", f"  bad: {measure}"))
    assert words in rendered, rendered
    assert "`position` is already a name of customer" in \
        refusal(tmp_path, MEASURES.replace("  customers: count()", "  position: count()"))


def test_a_decisions_target_shape_names_its_values_and_adds_up(tmp_path):
    pl = compile_text(tmp_path, MEASURES.replace("    values: [hi, lo]", "    values: [hi, lo]\n    target: {hi: 20%, lo: 0.8}"))
    assert pl.checked.policy_set.decisions("customer")[0].target == (("hi", 0.2), ("lo", 0.8))
    rendered = refusal(tmp_path, MEASURES.replace("    values: [hi, lo]", "    values: [hi, lo]\n    target: {hi: 90%, mid: 20%}"))
    assert "`target` names `mid`, which is not a value of `level`" in rendered
    assert "the `target` shares of `level` add up to 110%" in rendered
