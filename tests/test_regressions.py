"""Bugs and backend quirks found by the differential and property tests, kept as tests."""

from __future__ import annotations

import pandas as pd
import pytest

from engine.run import service as api
from engine.run import inputs as run_inputs
from engine.language.errors import InputError, PolicyError
from engine.batch.explain import output_frame

from .helpers import compile_text
from .test_differential import deadline

POLICY = """
policy: q
entity: customer
facts:
  id: {type: string, key: true}
  a: {type: number}
  b: {type: number}
  f: {type: boolean}
decisions:
  d:
    hit: collect
    values: [less, gone, flag, unflag]
    rules:
      - {id: less, when: a < b, then: less}
      - {id: gone, when: is_missing(a), then: gone}
      - {id: flag, when: f, then: flag}
      - {id: unflag, when: not f, then: unflag}
"""


def test_durable_needs_both_fields_present_and_never_uses_absence_patterns(tmp_path):
    # durable_rules matches `m.a < m.b` when b is absent, and `-m.a` (absence) hangs: kam relies on neither
    table = pd.DataFrame({"id": ["1", "2", "3", "4"], "a": [1.0, 1.0, None, 5.0], "b": [2.0, None, 3.0, 1.0],
                          "f": [True, None, False, None]})
    pl = compile_text(tmp_path, POLICY)
    table.to_json(tmp_path / "c.jsonl", orient="records", lines=True)
    frames = run_inputs.read_inputs(pl, {"customer": tmp_path / "c.jsonl"})
    with deadline(60):
        durable = output_frame(api.run(pl, frames, backend="durable").results["customer"])
    pandas_out = output_frame(api.run(pl, frames).results["customer"])
    expected = [["less", "flag"], [], ["gone", "unflag"], []]
    assert [list(v) for v in pandas_out["d"]] == expected
    assert [list(v) for v in durable["d"]] == expected


def test_empty_lookup_table_is_a_type_error_not_a_crash(tmp_path):
    text = POLICY.replace("decisions:", 'derive:\n  r: "lookup(id, {})"\ndecisions:')
    with pytest.raises(PolicyError) as exc:
        compile_text(tmp_path, text)
    assert exc.value.problems[0].message == "the table of `lookup` is empty"


def test_json_lines_yes_no_column_with_gaps(tmp_path):
    pl = compile_text(tmp_path, POLICY)
    (tmp_path / "c.jsonl").write_text('{"id": "1", "a": 1, "b": 2, "f": null}\n{"id": "2", "a": 1, "b": 2, "f": false}\n',
                                      encoding="utf-8")
    frames = run_inputs.read_inputs(pl, {"customer": tmp_path / "c.jsonl"})
    values = frames["customer"]["f"]
    assert pd.isna(values[0]) and not bool(values[1])
    assert str(values.dtype) == "boolean"


OVERFLOWS = [
    # (what the policy adds, where the number grows too large, the words of the error)
    ("derive:\n  big: a * 1e305\n", "feature `big`: `a * 1e+305` is too large to hold (beyond about 1.8e308) for c2"),
    ("measures:\n  lost: sum(if(a < 0, a * 1e306, 0))\n",
     "measure `lost`: `a * 1e+306` is too large to hold (beyond about 1.8e308) for c2"),
    ("derive:\n  share: cumshare(b)\n", "feature `share`: a population figure (a sum, mean, share or spread) is too large"),
    ("derive:\n  spread: zscore(b)\n", "feature `spread`: a population figure"),
    ("derive:\n  total: sum(b)\n", "feature `total`: `sum(b)` is too large to hold (beyond about 1.8e308) for c1 "
     "(and 2 more)"),
    ("derive:\n  part: b / sum(b)\n", "feature `part`: `sum(b)` is too large to hold"),  # was 0 for everyone
    ("measures:\n  total: sum(b)\n", "measure `total`: `sum(b)` is too large to hold"),
    ("measures:\n  positive: sum(b) > 0\n", "measure `positive`: `sum(b)` is too large to hold"),
    ("invariants:\n  - {id: sums, never: \"sum(b) < 0\"}\n", "invariant `sums`: `sum(b)` is too large to hold"),
    ("", "rule `huge` of decision `d`: `b * 10` is too large to hold (beyond about 1.8e308) for c1 (and 1 more)"),
    ("#sum", "rule `huge` of decision `d`: `sum(b)` is too large to hold"),
]
OVERFLOW_POLICY = """
policy: o
entity: customer
facts:
  id: {type: string, key: true}
  a: {type: number}
  b: {type: number}
%s
decisions:
  d:
    values: [x, y]
    rules:
      - {id: huge, when: "%s", then: x}
      - {id: rest, then: y}
"""
OVERFLOW_FACTS = pd.DataFrame({"id": ["c1", "c2", "c3"], "a": [1.0, -6000.0, 2.0], "b": [1.7e308, 1.0, 1.7e308]})


@pytest.mark.parametrize("backend", ["pandas", "durable"])
@pytest.mark.parametrize("added, words", OVERFLOWS, ids=[w.split(":")[0] for _, w in OVERFLOWS])
def test_a_number_too_large_to_hold_is_an_error_naming_where_and_for_whom(tmp_path, added, words, backend):
    """A feature, a measure, a population figure or a condition computed past the largest number was
    quietly missing (or infinite, and then shares of it 0): now it is an input error at the step."""
    condition = {"": "b * 10 > 0", "#sum": "sum(b) > 0"}.get(added, "a > 100")
    pl = compile_text(tmp_path, OVERFLOW_POLICY % (added, condition))
    OVERFLOW_FACTS.to_json(tmp_path / "c.jsonl", orient="records", lines=True)
    frames = run_inputs.read_inputs(pl, {"customer": tmp_path / "c.jsonl"})
    with pytest.raises(InputError) as caught, deadline(60):
        api.run(pl, frames, backend=backend)
    (problem,) = caught.value.problems
    assert problem.code == "overflow" and words in problem.message, problem.message
    assert problem.loc.file.endswith("p0.yaml") and problem.loc.line > 1


def test_numbers_beyond_the_largest_float_are_refused_where_written(tmp_path):
    """`1e400` in an expression was infinity, a 400-digit parameter a traceback: both are check errors."""
    with pytest.raises(PolicyError) as caught:
        compile_text(tmp_path, OVERFLOW_POLICY % ("", "a > 1e400"))
    assert "`1e400` is beyond the largest number kam holds" in caught.value.problems[0].message
    with pytest.raises(PolicyError) as caught:  # two written numbers whose product every run would refuse
        compile_text(tmp_path / "1", OVERFLOW_POLICY % ("", "a > 1e308 * 10"))
    assert "`1e+308 * 10` is beyond the largest number kam holds" in caught.value.problems[0].message
    with pytest.raises(PolicyError) as caught:
        compile_text(tmp_path / "2", OVERFLOW_POLICY % ("params:\n  big: " + "9" * 400 + "\n", "a > big"))
    assert "`big` is a number of 400 digits, beyond the largest kam holds" in caught.value.problems[0].message


def test_the_prover_passes_over_made_up_facts_that_overflow(tmp_path):
    """The prover decides made-up populations at the edges of the number range; a formula that
    overflows there made `kam check` fail with a run's overflow error naming a made-up entity."""
    from engine.analysis.invariants import prove

    pl = compile_text(tmp_path, OVERFLOW_POLICY.replace("decisions:", "derive:\n  big: a * 1e300\ninvariants:\n"
                                                        "  - {id: i, never: \"d == 'x' and a > 1e300\"}\ndecisions:")
                      % ("", "big > 5"))
    (result,) = prove(pl)
    assert result.status == "not-analysed", result


@pytest.mark.parametrize("rule, status", [
    ("s <= ''", "not-analysed"),  # only an empty text is <= '': no file can give one
    ("s == '' or s == 'a'", "violated"),  # the example must be 'a', never ''
])
def test_the_prover_never_gives_an_empty_text_as_an_example(tmp_path, rule, status):
    """A facts file's empty text cell is a missing value; the prover refuted `never: d == 'x'` with
    `s = ''`, an example no input can hold (found by the invariant property)."""
    from engine.analysis.invariants import prove

    text = ("policy: t\nentity: customer\nfacts:\n  id: {type: string, key: true}\n  s: {type: string}\n"
            "invariants:\n  - {id: i, never: \"d == 'x'\"}\ndecisions:\n  d:\n    values: [x, y]\n    rules:\n"
            f"      - {{id: r, when: \"{rule}\", then: x}}\n")
    (result,) = prove(compile_text(tmp_path, text))
    assert result.status == status, result
    if status == "violated":
        assert result.example["facts"]["s"] == "a"


def test_durable_rulesets_do_not_grow_with_backends_or_runs(tmp_path):
    """Every backend registered its own rulesets, never released: a notebook or a server deciding again
    and again grew without bound (and durable_rules dispatches every ruleset on its timers)."""
    from durable.lang import get_host

    pl = compile_text(tmp_path, POLICY)
    frames = {"customer": pd.DataFrame({"id": ["1", "2"], "a": [1.0, 3.0], "b": [2.0, 2.0], "f": [True, None]})}
    first = output_frame(api.run(pl, frames, backend="durable").results["customer"])
    registered = len(get_host()._ruleset_directory)
    for _ in range(100):
        again = output_frame(api.run(pl, frames, backend="durable").results["customer"])
    assert len(get_host()._ruleset_directory) == registered
    assert again.equals(first)
    # an edit registers the decision whose conditions changed, and only it
    edited = compile_text(tmp_path / "edited", POLICY.replace("when: a < b", "when: a <= b"))
    api.run(edited, frames, backend="durable")
    assert len(get_host()._ruleset_directory) == registered + 1


@pytest.mark.parametrize("facts, derive, rules, status", [
    # an integer fact past 1.5e308 (a traceback: a made-up value scaled to infinity, then rounded)
    ("  n: {type: integer}\n", "derive:\n  y: n + 1\n", "y > 1.5e308", "violated"),
    # a range wider than a float holds (a traceback: numpy's uniform draw of it)
    ("  n: {type: number, min: -1.7e+308, max: 1.7e+308}\n", "derive:\n  y: n + 1\n", "y > 5", "violated"),
    # no finite number exceeds the largest float (refuted with n = inf, which no input can hold)
    ("  n: {type: number}\n", "", "n > 1.7976931348623157e308", "not-analysed"),
    # every made-up population held a square too large to hold: refuted now by a population of one
    ("  n: {type: number}\n", "derive:\n  sq: n * n\n", "n < 1e200 and sq > 100", "violated"),
])
def test_the_prover_at_the_edges_of_the_number_range(tmp_path, facts, derive, rules, status):
    from engine.analysis.invariants import prove

    text = (f"policy: t\nentity: customer\nfacts:\n  customer_id: {{type: string, key: true}}\n{facts}{derive}"
            "invariants:\n  - {id: i, never: \"d == 'hi'\"}\ndecisions:\n  d:\n    values: [hi, rest]\n    rules:\n"
            f"      - {{id: big, when: \"{rules}\", then: hi}}\n      - {{id: rest, then: rest}}\n")
    (result,) = prove(compile_text(tmp_path, text))
    assert result.status == status, result
    if status == "violated":
        assert all(isinstance(v, (int, float)) and abs(v) < 1.8e308 for v in result.example["facts"].values())


def test_durable_is_given_numbers_its_parser_reads(tmp_path):
    """Python writes 0.00001 as `1e-05` and 1e20 as `1e+20`; durable_rules' parser refuses a number without
    a point before its exponent (error 204), so such a fact or constant was a traceback on durable."""
    policy = POLICY.replace("when: a < b", "when: a > 0.00001 and b < 1e20")
    pl = compile_text(tmp_path, policy)
    frames = {"customer": pd.DataFrame({"id": ["1", "2", "3", "4"], "a": [0.00001, 1e-7, 2e-5, 1e20],
                                        "b": [1e19, 9e18, 1e20, 5.0], "f": [True, False, None, True]})}
    with deadline(60):
        durable_out = output_frame(api.run(pl, frames, backend="durable").results["customer"])
    pandas_out = output_frame(api.run(pl, frames).results["customer"])
    assert durable_out.equals(pandas_out)
    assert [("less" in v) for v in pandas_out["d"]] == [False, False, False, True]
