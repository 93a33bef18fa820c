"""The one-row evaluator of `kam stream` (engine.engines.row) against the batch engine.

The row path is a second implementation of the policy language, for one entity at a time; these
tests hold it to the batch engine's values, rule ids and because texts on the differential
generator's random policies (every hit policy, defaults, lists and totals, computed outputs,
earlier periods, population functions read from a calibration, numbers on the policies' own
boundaries, equal values and missing ones), and to the durable_rules backend of `kam stream`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.batch.explain import output_frame, rule_column, value_columns
from engine.engines import stream
from engine.engines.row import Fallback, round_half_away
from engine.language.errors import InputError
from engine.run import service as api

from .conftest import ROOT, kam, kam_here
from .test_differential import boundary_numbers, cases, compile_random, deadline, past_values, policies, tables

EXAMPLES = int(os.environ.get("KAM_ROW_EXAMPLES", "80"))


def runner_for(tmp: Path, policy: str, table: pd.DataFrame, seed: int, backend: str = "row"
               ) -> tuple[Any, pd.DataFrame, Any, stream.StreamRunner]:
    """A random policy decided by the batch engine with a calibration of its own table (what `kam run
    --save-calibration` then `kam run --calibration` give), and a stream runner with the same
    calibration and earlier periods."""
    pl, frame = compile_random(tmp, policy, table)
    past = past_values(pl, frame, seed, boundary_numbers(policy))
    cal = api.run(pl, {"customer": frame}, past=past, record_calibration=True).calibration
    try:
        batch = api.run(pl, {"customer": frame}, past=past, calibration=cal).results["customer"]
    except InputError:
        batch = None  # a number too large to hold: the row path hands such an event to the vector engine
    columns = past["customer"]
    past_frame = columns.set_index(pd.Index(frame["id"].tolist(), dtype=object)) if len(columns.columns) else None
    runner = stream.StreamRunner(pl, "customer", cal, backend, stream.Store(None), past=past_frame)
    return pl, frame, batch, runner


def facts_of(frame: pd.DataFrame, i: int) -> dict[str, Any]:
    """Row i as `kam stream` keeps an entity's facts (JSON values, None for missing)."""
    return {name: stream._jsonable(frame[name].tolist()[i]) for name in frame.columns}


def batch_row(pl: Any, batch: Any, i: int) -> dict[str, Any]:
    """Row i of the batch engine's output table, as {decision: {value, rule, because}}."""
    out = output_frame(batch)
    row = {}
    for d in pl.entity("customer").decisions:
        res = batch.decisions[d.name]
        columns = value_columns(res)
        values = {o.name: stream._jsonable(columns[o.name][i]) for o in d.outputs}
        row[d.name] = {"value": values[d.name] if d.single else values,
                       "rule": stream._jsonable(rule_column(res)[i]), "because": out[f"{d.name}_because"][i]}
    return row


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases(), st.integers(0, 2**16))
def test_the_row_path_decides_as_the_batch_engine(tmp_path_factory, case, seed):
    policy, table = case
    pl, frame, batch, runner = runner_for(tmp_path_factory.mktemp("row"), policy, table, seed)
    assert runner.row is not None  # the generator writes no quota: every event takes the row path
    for i in range(len(frame)):
        facts = facts_of(frame, i)
        if batch is None:  # an overflow: the row path must not decide it itself
            with pytest.raises(Fallback):
                runner.row.decide(facts, runner.past_rows.get(facts["id"]))
            continue
        got = runner.row.decide(facts, runner.past_rows.get(facts["id"]))
        want = batch_row(pl, batch, i)
        for name in want:
            assert got[name] == want[name], f"{name} of row {i} differs for policy:\n{policy}\n{table}"
        # and as stored: JSON round trips (a whole number is an int, a list a list)
        assert json.loads(json.dumps(got)) == got


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(policies(), tables(), st.integers(0, 2**16))
def test_the_durable_backend_of_kam_stream_decides_as_the_row_path(tmp_path_factory, policy, table, seed):
    tmp = tmp_path_factory.mktemp("durable")
    _, frame, batch, row = runner_for(tmp, policy, table, seed)
    if batch is None:
        return
    with deadline(60):
        _, _, _, durable = runner_for(tmp, policy, table, seed, backend="durable")
        for i in range(len(frame)):
            facts = facts_of(frame, i)
            assert row.decide(facts) == durable.decide(facts), policy


@pytest.mark.parametrize("x, digits", [(2.675, 2), (-0.5, 0), (0.125, 2), (77.92999999999999, 2), (1234.5, -1),
                                       (1e17, 2), (-2.5, 0), (0.0, 1), (-1.005, 2), (5e-324, 3)])
def test_rounding_one_number_is_the_column_rounding(x, digits):
    from engine.batch.number_columns import round_half_away as column

    import numpy as np

    assert round_half_away(x, digits) == float(column(np.array([x]), digits)[0])
    assert str(round_half_away(x, digits)) == str(float(column(np.array([x]), digits)[0]))  # -0.0 too


def test_kam_stream_decides_with_the_row_path_by_default(tmp_path: Path):
    """End to end through the `kam` entry point, default backend: the same lines as `--backend pandas`."""
    cal = tmp_path / "cal.json"
    r = kam_here("run", "--entity", "customer", "--save-calibration", str(cal), "--out", str(tmp_path / "out"), "-q")
    assert r.returncode == 0, r.stderr
    events = ROOT / "examples" / "customer_updates.jsonl"
    default = kam("stream", str(events), "--calibration", str(cal), "--initial", str(ROOT / "examples" / "customers.csv"))
    vectors = kam_here("stream", str(events), "--calibration", str(cal), "--initial", str(ROOT / "examples" / "customers.csv"),
                  "--backend", "pandas")
    assert default.returncode == vectors.returncode == 0, default.stderr + vectors.stderr
    assert default.stdout and default.stdout == vectors.stdout
    assert "events applied, 0 rejected" in default.stderr
    assert "[default: row]" in kam_here("stream", "--help").stdout


POPULATION = {
    "p1": "pct_rank(a)", "p2": "pct_rank(a, by=s)", "c1": "cumshare(a)", "c2": "cumshare(a, by=s)",
    "r1": "rank(a)", "r2": "rank(a, ties='together')", "r3": "rank(a, by=s)", "m1": "mean(a, by=s)",
    "s1": "sum(a)", "z1": "zscore(a)", "q1": "quantile(a, 0.3)", "n1": "count(a, by=s)",
}


def test_every_population_function_on_equal_and_missing_values_is_the_batch_engines(tmp_path: Path):
    """Not left to chance: each population function, read from a calibration of a table where values
    repeat (within and across groups), some are missing and a group label is missing, printed by a
    rule's text to six places for every row (the random policies reach a given function only now and then)."""
    derive = "".join(f"  {k}: \"{v}\"\n" for k, v in POPULATION.items())
    decisions = "".join(f"  d_{k}:\n    values: [x]\n    rules:\n      - id: r\n        when: \"{k} >= 0 or {k} < 0\"\n"
                        f"        then: x\n        because: \"{{{k}:.6f}}\"\n      - id: default\n        then: x\n"
                        f"        because: none\n" for k in POPULATION)
    policy = ("policy: population\nentity: customer\nfacts:\n  id: {type: string, key: true}\n"
              "  a: {type: number}\n  s: {type: string}\n" f"derive:\n{derive}decisions:\n{decisions}")
    table = pd.DataFrame({"id": ["k5", "k1", "k3", "k2", "k4", "k6", "k7", "k8"],
                          "a": [3.0, 1.0, 3.0, None, 3.0, 7.5, 1.0, 0.0],
                          "s": ["n", "n", "s", "s", None, "s", "n", "s"]})
    pl, frame, batch, runner = runner_for(tmp_path, policy, table, 0)
    assert batch is not None and runner.row is not None
    for i in range(len(frame)):
        facts = facts_of(frame, i)
        got, want = runner.row.decide(facts, None), batch_row(pl, batch, i)
        assert got == want, f"row {i}"
    # the texts carry the figures: most rows have one, so the comparison above compared numbers
    assert sum(batch_row(pl, batch, i)[f"d_{k}"]["rule"] == "r" for i in range(len(frame)) for k in POPULATION) > 60
