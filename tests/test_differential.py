"""Differential: random policies and fact tables, decided by the pandas and the durable_rules backends.

Both must give identical decisions, rule ids and explanations. A bounded number of random cases
runs in CI; `KAM_DIFF_EXAMPLES=2000 python -m pytest tests/test_differential.py` (or `-m slow`
for the long test) searches longer. Every durable_rules call runs under a deadline, so a hang is
a failure, not a stuck CI.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.run import service as api
from engine.run import inputs as run_inputs
from engine.language.compile import compile_policies
from engine.language.errors import PolicyError
from engine.batch.explain import output_frame
from engine.language.nodes import to_text

from .test_properties import TEXTS, bool_expr, num_expr

HITS = ["first", "unique", "priority", "collect", "any"]
# a population function of the feature g (itself often one of population functions): what takes the
# Dask engine more than one pass, ties by key and groups included
SECOND = ["pct_rank(g)", "cumshare(g)", "rank(g)", "rank(g, ties='together', by=s)", "mean(g, by=s)", "sum(g)",
          "zscore(g)", "quantile(g, 0.3)", "count(g)", "pct_rank(g, by=s) + a"]
VALUES = ["x", "y", "z"]


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def fail(*_: object) -> None:
        raise TimeoutError(f"no answer within {seconds}s (a hang, not a slow machine)")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


LISTS = ("collect", "output-order")


def reads_first(draw, first: dict) -> str:
    """A condition on the first decision, as its shape allows: a value, a list it gathered, a total."""
    value = draw(st.sampled_from(VALUES))
    if first["aggregate"] in ("count", "sum"):
        return f"d0 {draw(st.sampled_from(['>=', '<', '==']))} {draw(st.integers(0, 2))}"
    if first["hit"] in LISTS:
        return f"{value!r} {draw(st.sampled_from(['in', 'not in']))} d0"
    if first["multi"] and draw(st.booleans()):
        return f"n0 {draw(st.sampled_from(['>', '<=']))} {draw(st.integers(0, 3))}"
    op = draw(st.sampled_from(["==", "!="]))
    return f"d0 {op} {value!r}" if draw(st.booleans()) else f"{value!r} {op} d0"


def reads_past(draw, d: int, first: dict) -> str:
    """A condition on earlier periods: a fact, the feature, a decision's own or the first decision's
    earlier value, one or two periods back, with constants on either side, text ordering included;
    or a streak of the yes/no fact."""
    back = draw(st.sampled_from(["", "", ", 2"]))
    choice = draw(st.integers(0, 6))
    if choice == 0:
        return f"previous(a{back}) {draw(st.sampled_from(['>', '<=', '==']))} {draw(st.integers(-5, 5))}"
    if choice == 1:
        return f"{draw(st.integers(-5, 5))} < previous(g{back})"
    if choice == 2:
        op = draw(st.sampled_from(["<", ">=", "==", "!="]))
        text = draw(st.sampled_from(TEXTS[:4]))
        return f"previous(s{back}) {op} {text!r}" if draw(st.booleans()) else f"{text!r} {op} previous(s{back})"
    if choice == 3:
        return f"{'not ' if draw(st.booleans()) else ''}previous(f{back})"
    if choice == 4:
        return "previous(b) > a"
    if choice == 5:  # how many periods in a row the yes/no fact held, this one included
        most, at_least = draw(st.integers(1, 3)), draw(st.integers(0, 3))
        return f"streak(f, {most}) >= {at_least}" if draw(st.booleans()) else f"{at_least} > streak(f, {most})"
    # a decision's earlier value: its own (hysteresis) or the first one's
    target = draw(st.sampled_from([0, d])) if first else d
    shape = first if target == 0 and first else None
    if shape is not None and (shape["aggregate"] in ("count", "sum")):
        return f"previous(d0{back}) >= {draw(st.integers(0, 2))}"
    if shape is not None and (shape["hit"] in LISTS or shape["multi"]):
        return f"previous(a{back}) != 0"  # a list or several outputs: no single earlier value of d0
    value = draw(st.sampled_from(VALUES))
    return f"previous(d{target}{back}) == {value!r}" if draw(st.booleans()) else \
        f"{value!r} != previous(d{target}{back})"


@st.composite
def policies(draw) -> str:
    """Random policies: every hit policy, one or two outputs, fixed or computed values, collected
    lists and totals, a second decision that reads the first (its value, its list or its total)."""
    feature = draw(num_expr(2))
    decisions = []
    first: dict = {}
    for d in range(draw(st.integers(1, 2))):
        hit = draw(st.sampled_from(HITS + ["output-order"]))
        aggregate = draw(st.sampled_from(["list", "list", "count", "sum"])) if hit == "collect" else "list"
        multi = aggregate == "list" and draw(st.booleans())
        fixed = hit in ("priority", "any") or hit in LISTS  # these compare or list the rules' fixed values
        if d == 0:
            first = {"hit": hit, "aggregate": aggregate, "multi": multi}
        rules = []
        for i in range(draw(st.integers(1, 4))):
            cond = draw(bool_expr(2))
            if d == 1 and draw(st.booleans()):  # the second decision may read the first
                cond_text = f"{reads_first(draw, first)} or ({to_text(cond)})"
            else:
                cond_text = to_text(cond)
            if draw(st.integers(0, 3)) == 0:  # and earlier periods, as a history gives them
                own_ok = aggregate == "list" and hit not in LISTS and not multi
                past = reads_past(draw, d, first if d == 1 else {}) if own_ok or d == 1 else \
                    f"previous(a) > {draw(st.integers(-5, 5))}"
                if not own_ok and "previous(d1" in past:
                    past = "previous(b) <= 0"
                cond_text = f"{past} {draw(st.sampled_from(['and', 'or']))} ({cond_text})"
            texts = ["", "a={a:.1f} s={s} g={g:,.2f}", "{f} {b:.0%}", "规则 {s}", "{a} {g:.3f}", f"own {{d{d}}}",
                     "h={h:.4f}"]
            if d == 1:
                texts.append("first {d0}")
            because = draw(st.sampled_from(texts))
            rule = f"      - id: r{i}\n        when: {json.dumps(cond_text, ensure_ascii=False)}\n" \
                   f"        then: {then_of(draw, d, aggregate, multi, fixed)}\n"
            if because:
                rule += f"        because: {json.dumps(because, ensure_ascii=False)}\n"
            rules.append(rule)
        if draw(st.booleans()):
            rules.append(f"      - id: default\n        then: {then_of(draw, d, aggregate, multi, fixed)}\n"
                         "        because: fallback\n")
        head = f"  d{d}:\n    hit: {hit}\n"
        if aggregate != "list":
            head += f"    aggregate: {aggregate}\n"
        if aggregate == "sum":
            head += "    type: number\n"
        elif multi:
            # fixed numbers may come without `values:` (under priority they then play no part in the order)
            number = "{values: [1, 2, 3]}" if fixed and draw(st.booleans()) else "{type: number}"
            head += f"    outputs:\n      d{d}: {{values: [x, y, z]}}\n      n{d}: {number}\n"
        else:
            head += "    values: [x, y, z]\n"
        decisions.append(head + "    rules:\n" + "".join(rules))
    return (
        "policy: random\nentity: customer\nfacts:\n  id: {type: string, key: true}\n"
        "  a: {type: number}\n  b: {type: number}\n  s: {type: string}\n  f: {type: boolean}\n"
        f"derive:\n  g: {json.dumps(to_text(feature), ensure_ascii=False)}\n"
        f"  h: {json.dumps(draw(st.sampled_from(SECOND)), ensure_ascii=False)}\n"
        "decisions:\n" + "".join(decisions)
    )


def then_of(draw, d: int, aggregate: str, multi: bool, fixed: bool) -> str:
    """A rule's `then`: a value, a computed number where the hit policy allows it, or two outputs."""
    if aggregate == "sum":
        return json.dumps(to_text(draw(num_expr(1)))) if draw(st.booleans()) else str(draw(st.integers(0, 3)))
    value = draw(st.sampled_from(VALUES))
    if not multi:
        return value
    if fixed or draw(st.booleans()):
        number = str(draw(st.integers(1, 3)))
    else:
        number = json.dumps(to_text(draw(num_expr(1))))
    return f"{{d{d}: {value}, n{d}: {number}}}"


def boundary_numbers(policy: str) -> list[float]:
    """Every number a policy writes, and its neighbours: where `<` and `<=` (and a negation that
    gets them wrong) part, and where a rounding or a `>` at zero lands exactly on a constant."""
    written = {float(m) for m in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?", policy)}
    return sorted({v + step for v in written for step in (-1.0, -0.5, 0.0, 0.5, 1.0)})


@st.composite
def tables(draw, pool: list[float] | None = None) -> pd.DataFrame:
    """Facts for a random policy. With a `pool` (its boundary numbers) most numbers sit on or next to
    a constant of the policy, and in some rows `b` equals `a`, so that `a < b`, `previous(b) > a` and
    two computed sides meet where they are equal; values are missing in others."""
    n = draw(st.integers(1, 8))
    plain = st.one_of(st.integers(-20, 20), st.floats(-50, 50, allow_nan=False).map(lambda v: round(v, 2)))
    number = st.one_of(st.none(), st.sampled_from(pool), st.sampled_from(pool), plain) if pool else \
        st.one_of(st.none(), plain)
    a = draw(st.lists(number, min_size=n, max_size=n))
    b = draw(st.lists(number, min_size=n, max_size=n))
    same = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return pd.DataFrame({
        "id": draw(st.lists(st.text("0123456789ab", min_size=1, max_size=4), min_size=n, max_size=n, unique=True)),
        "a": a,
        "b": [x if equal else y for x, y, equal in zip(a, b, same, strict=True)],
        "s": draw(st.lists(st.one_of(st.none(), st.sampled_from(TEXTS[:4])), min_size=n, max_size=n)),
        "f": draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n, max_size=n)),
    })


def cases() -> st.SearchStrategy[tuple[str, pd.DataFrame]]:
    """A random policy and facts on the boundaries of its own conditions."""
    return policies().flatmap(lambda policy: st.tuples(st.just(policy), tables(boundary_numbers(policy))))


def past_values(pl, table: pd.DataFrame, seed: int, pool: list[float] | None = None) -> dict[str, pd.DataFrame]:
    """Earlier values for every `previous()` of the policy, as a history would give them: some missing,
    numbers on the policy's boundaries where a `pool` of them is given."""
    rng = random.Random(seed)
    pools = {"number": [None, -3, 0, 1.5, 4, 10] + list(pool or ()), "string": [None] + VALUES + list(TEXTS[:4]),
             "boolean": [None, True, False]}
    columns = {}
    for r in pl.entity("customer").past:
        values = [rng.choice(pools[r.kind]) for _ in range(len(table))]
        dtype = {"number": float, "boolean": "boolean"}.get(r.kind, object)
        columns[r.key] = pd.Series([float("nan") if v is None and r.kind == "number" else v for v in values],
                                   dtype=dtype)
    return {"customer": pd.DataFrame(columns)}


def compile_random(tmp: Path, policy: str, table: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    """A random policy compiled and its table read as a facts file (JSON Lines)."""
    folder = tmp / "p"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "random.yaml").write_text(policy, encoding="utf-8")
    table.to_json(tmp / "customers.jsonl", orient="records", lines=True, force_ascii=False)
    try:
        pl = compile_policies(folder)
    except PolicyError as exc:
        # the generator writes valid policies, except for an empty lookup table: refused by both
        assert all("lookup" in p.message for p in exc.problems), "\n".join(p.render() for p in exc.problems)
        assume(False)
    return pl, run_inputs.read_inputs(pl, {"customer": tmp / "customers.jsonl"})["customer"]


def both_backends(tmp: Path, policy: str, table: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    pl, frame = compile_random(tmp, policy, table)
    frames = {"customer": frame}
    past = past_values(pl, frames["customer"], seed, boundary_numbers(policy))
    pandas_out = output_frame(api.run(pl, frames, past=past).results["customer"])
    with deadline(60):
        durable_out = output_frame(api.run(pl, frames, backend="durable", past=past).results["customer"])
    return pandas_out, durable_out


def assert_same(policy: str, a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    for column in a.columns:
        left = [str(v) for v in a[column].tolist()]
        right = [str(v) for v in b[column].tolist()]
        assert left == right, f"{column} differs for policy:\n{policy}"


EXAMPLES = int(os.environ.get("KAM_DIFF_EXAMPLES", "120"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases(), st.integers(0, 2**16))
def test_backends_agree_on_random_policies(tmp_path_factory, case, seed):
    policy, table = case
    tmp = tmp_path_factory.mktemp("diff")
    assert_same(policy, *both_backends(tmp, policy, table, seed))


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases(), st.integers(0, 2**16))
def test_backends_agree_long_run(tmp_path_factory, case, seed):
    policy, table = case
    tmp = tmp_path_factory.mktemp("diff")
    assert_same(policy, *both_backends(tmp, policy, table, seed))


def test_the_generator_reads_earlier_periods():
    """The generator does produce previous(): of facts, features and decisions, with constants on either
    side, text ordering and two periods back, and puts it into the random policies."""
    found = set()
    first = {"hit": "first", "aggregate": "list", "multi": False}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    @given(st.data())
    def collect(data):
        text = reads_past(data.draw, 1, first)
        found.update(m for m in ("previous(a", "previous(g", "previous(s", "previous(f", "previous(d0",
                                 "previous(d1", ", 2)", "' != previous(", "< previous(", "previous(b) > a",
                                 "streak(f", "> streak(") if m in text)

    collect()
    assert {"previous(a", "previous(g", "previous(s", "previous(f", "previous(d0", "previous(d1", ", 2)",
            "' != previous(", "< previous(", "previous(b) > a", "streak(f", "> streak("} <= found

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    @given(policies())
    def in_policies(policy):
        found.add("policy" if "previous(" in policy else "")

    in_policies()
    assert "policy" in found


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(policies(), tables())
def test_a_few_rows_render_as_many_rows_do(tmp_path_factory, policy, table):
    """The because texts of a handful of rows (`kam stream`'s events, `kam explain`) are made with
    Python's string formatting, those of larger tables with Arrow kernels: the same texts."""
    import engine.batch.explain as ex

    pl, frame = compile_random(tmp_path_factory.mktemp("few"), policy, table)
    result = api.run(pl, {"customer": frame}).results["customer"]
    few = output_frame(result)
    saved, ex.FEW_ROWS = ex.FEW_ROWS, -1
    try:
        many = output_frame(result)
    finally:
        ex.FEW_ROWS = saved
    assert_same(policy, few, many)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(policies(), tables())
def test_an_event_reads_the_values_the_output_columns_hold(tmp_path_factory, policy, table):
    """`kam stream` reads an event's decided values and rule ids straight from the vectors; they are
    the values of the output table's columns, row by row."""
    from engine.batch.explain import rule_column, value_columns
    from engine.batch.evaluate import decision_vectors, scalar_at
    from engine.engines.stream import _jsonable, _rule_of

    pl, frame = compile_random(tmp_path_factory.mktemp("event"), policy, table)
    result = api.run(pl, {"customer": frame}).results["customer"]
    for d in pl.entity("customer").decisions:
        res = result.decisions[d.name]
        columns, vectors = value_columns(res), decision_vectors(res)
        for o in d.outputs:
            assert [_jsonable(v) for v in columns[o.name]] == \
                [_jsonable(scalar_at(vectors[o.name], i)) for i in range(len(frame))], policy
        assert [_jsonable(v) for v in rule_column(res)] == [_jsonable(_rule_of(res, i)) for i in range(len(frame))]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases(), st.integers(0, 2**16))
def test_steps_side_by_side_give_what_the_sequential_order_gives(tmp_path_factory, case, seed):
    """A large table's independent steps are evaluated on threads, wave by wave (engine.batch.evaluate
    `_evaluate_waves`): the same values, rule ids, texts, invariants and measures as one step after the
    other, and the same error when a step fails (threads are forced here on the small random tables)."""
    import engine.batch.evaluate as ev

    policy, table = case
    pl, frame = compile_random(tmp_path_factory.mktemp("waves"), policy, table)
    past = past_values(pl, frame, seed, boundary_numbers(policy))

    def decided(rows: int) -> tuple[Any, Any]:
        saved, ev.SIDE_BY_SIDE_ROWS = ev.SIDE_BY_SIDE_ROWS, rows
        try:
            result = api.run(pl, {"customer": frame}, past=past)
        except Exception as exc:  # the same failure, in words, either way
            return None, str(exc)
        finally:
            ev.SIDE_BY_SIDE_ROWS = saved
        r = result.results["customer"]
        return output_frame(r), ({k: v.tolist() for k, v in r.violations.items()}, repr(r.measures))

    sequential, waves = decided(10**12), decided(0)
    assert waves[1] == sequential[1]
    if sequential[0] is not None:
        assert_same(policy, sequential[0], waves[0])
