"""Invariants: proved or refuted by `kam check`, checked on every entity by `kam run`, in `kam test` and `kam diff`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from engine.run import service as api
from engine.run import inputs as run_inputs
from engine.language.compile import compile_policies
from engine.language.errors import PolicyError
from engine.language.model import Expr
from engine.language.plan import DeriveStep
from engine.analysis.invariants import prove

from .conftest import ROOT, kam_here
from .helpers import compile_text
from .test_differential import boundary_numbers, policies as random_policies, tables as random_tables

PROTECTED = '''      - id: protected
        when: loyal_long_standing or profitable_big or small_with_potential or strategic_new
        then: keep
        because: "protected ({protected_by}): a customer with one of the four protective traits is never downgraded or let go"
'''


@pytest.fixture
def moved(tmp_path: Path) -> Path:
    """The shipped policies with the `protected` rule moved below the chicken-rib rules."""
    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    path = folder / "retention.yaml"
    text = path.read_text(encoding="utf-8")
    assert PROTECTED in text
    text = text.replace(PROTECTED, "").replace("      - id: keep\n        then: keep", PROTECTED + "      - id: keep\n"
                                                "        then: keep")
    path.write_text(text, encoding="utf-8")
    return folder


def test_every_shipped_invariant_is_proved():
    r = kam_here("check", "--strict", "policies/")
    assert r.returncode == 0, r.stderr
    assert "9 of 9 invariants proved" in r.stdout
    for name in ("protected-never-let-go", "no-sale-under-floor", "key-accounts-keep-their-service"):
        assert f"note[invariant-proved]: invariant `{name}` is proved" in r.stderr


def test_a_broken_rule_order_is_refuted_with_a_real_example(moved: Path):
    r = kam_here("check", str(moved))
    assert r.returncode == 1
    error = next(line for line in r.stderr.splitlines() if "error[invariant-violated]" in line)
    assert "invariant `protected-never-let-go`" in error and "can be broken: a customer with" in error
    assert "(rule chicken-rib-" in error and "(rule trait-" in error
    # the example is real: the same population through the engine breaks it
    pl = compile_policies(moved)
    (result,) = [x for x in prove(pl) if x.status == "violated"]
    assert result.example["decided"]["retention"]["value"]["retention"] in ("exit", "downgrade-service")
    assert result.example["decided"]["protected_by"]["value"]["protected_by"] != ["none"]
    r = kam_here("check", str(moved), "--format", "github")
    notes = [line for line in r.stdout.splitlines() if "invariant-violated" in line]
    assert any(line.startswith("::error") and "retention.yaml,line=" in line for line in notes)
    assert any(line.startswith("::notice") and "rule `chicken-rib-" in line for line in notes)  # the rule to fix


def test_an_example_names_each_fact_once(tmp_path: Path):
    """A fact that the rules look at and the invariant reads was shown twice (`quoted_price = 0.89, ...,
    quoted_price = 0.89`)."""
    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    path = folder / "pricing.yaml"
    text = path.read_text(encoding="utf-8")
    assert "        when: quoted_price >= floor_price\n" in text
    path.write_text(text.replace("        when: quoted_price >= floor_price\n",
                                 "        when: quoted_price >= floor_price * 0.9\n"), encoding="utf-8")
    r = kam_here("check", str(folder))
    assert r.returncode == 1
    error = next(line for line in r.stderr.splitlines() if "error[invariant-violated]" in line)
    example = error.split("can be broken: a quote with ", 1)[1].split(" gets ", 1)[0]
    names = [part.split(" = ")[0] for part in example.split(", ")]
    assert "quoted_price" in names and "floor_price" in names
    assert len(names) == len(set(names)), example


def broken_by_moving(tmp_path: Path) -> int:
    """How many example customers the moved rule order lets go or downgrade although protected, worked
    out from the shipped policies: the protected ones that a chicken-rib rule matches, which is what the
    shipped policies decide for them once the `protected` rule is left out."""
    folder = tmp_path / "without-protected"
    shutil.copytree(ROOT / "policies", folder)
    path = folder / "retention.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(PROTECTED, ""), encoding="utf-8")
    decided = {}
    for name, policies in (("shipped", ROOT / "policies"), ("without", folder)):
        r = kam_here("run", "--policies", str(policies), "--out", str(tmp_path / name), "--entity", "customer", "-q",
                     "--allow-violations")
        assert r.returncode == 0, r.stderr
        decided[name] = pd.read_csv(tmp_path / name / "customer_decisions.csv", dtype=str)
    protected = decided["shipped"]["retention_rule"] == "protected"
    count = int((protected & decided["without"]["retention_rule"].str.startswith("chicken-rib")).sum())
    assert count > 0
    return count


def test_kam_run_stops_on_a_broken_invariant_and_writes_nothing(moved: Path, tmp_path: Path):
    broken = broken_by_moving(tmp_path)
    out = tmp_path / "out"
    r = kam_here("run", "--policies", str(moved), "--out", str(out), "--entity", "customer")
    assert r.returncode == 1 and not out.exists()
    assert "error: invariant `protected-never-let-go`" in r.stderr and f"is broken by {broken} customer(s)" in r.stderr
    assert "(protected_by: trait-potential, retention: chicken-rib-exit)" in r.stderr
    r = kam_here("run", "--policies", str(moved), "--out", str(out), "--entity", "customer", "--allow-violations", "-q")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    (inv,) = [i for i in manifest["invariants"] if i["id"] == "protected-never-let-go"]
    assert inv["violations"] == broken and inv["examples"][0]["rules"]["retention"].startswith("chicken-rib")
    c = pd.read_csv(out / "customer_decisions.csv", dtype=str)
    assert ((c["retention"] != "keep") & (c["protected_by"] != "none")).sum() == broken


def test_kam_test_and_kam_diff_report_invariants(moved: Path, tmp_path: Path):
    r = kam_here("test", str(moved))
    assert r.returncode == 1 and "invariant `protected-never-let-go`" in r.stdout
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "policies", repo / "policies")
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("add", ".")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "base")
    shutil.copy(moved / "retention.yaml", repo / "policies" / "retention.yaml")
    r = kam_here("diff", "policies", "--base", "HEAD", "--data", str(ROOT / "examples"), "--format", "json", cwd=repo)
    doc = json.loads(r.stdout)
    inv = next(i for i in doc["invariants"] if i["id"] == "protected-never-let-go")
    assert (inv["base"], inv["new"], inv["base_broken"], inv["new_broken"]) == \
        ("proved", "violated", 0, broken_by_moving(tmp_path))
    assert next(i for i in doc["invariants"] if i["id"] == "no-sale-under-floor")["changed"] is False


HEAD = """
policy: t
entity: customer
facts:
  customer_id: {type: string, key: true}
  x: {type: number}
  s: {type: string, values: [a, b, c]}
"""


def statuses(tmp: Path, text: str) -> dict[str, str]:
    return {r.invariant.id: r.status for r in prove(compile_text(tmp, text))}


def test_hit_policies_are_expanded_exactly(tmp_path):
    text = HEAD + """
decisions:
  u:
    hit: unique
    values: [lo, hi]
    rules:
      - {id: lo, when: x < 10, then: lo}
      - {id: hi, when: x > 5, then: hi}
  p:
    hit: priority
    values: [top, mid, low]
    rules:
      - {id: low, when: x > 0, then: low}
      - {id: top, when: x > 100, then: top}
      - {id: mid, when: x > 50, then: mid}
invariants:
  - {id: unique-overlap-is-no-value, never: "u == 'lo' and x > 5"}
  - {id: priority-picks-the-highest, never: "p == 'low' and x > 50"}
  - {id: always-form, always: "p != 'top' or x > 100"}
  - {id: really-broken, never: "u == 'hi' and x > 20"}
"""
    assert statuses(tmp_path, text) == {"unique-overlap-is-no-value": "proved", "priority-picks-the-highest": "proved",
                                        "always-form": "proved", "really-broken": "violated"}


def test_what_cannot_be_decided_is_said(tmp_path):
    text = HEAD + """
derive:
  sq: x * x
decisions:
  d:
    values: [p, q]
    rules:
      - {id: p, when: sq < 0, then: p}
      - {id: q, then: q}
invariants:
  - {id: squares, never: "d == 'p'"}
"""
    pl = compile_text(tmp_path, text)
    (result,) = prove(pl)
    assert result.status == "not-analysed" and "no entity that does was found" in result.reason


def test_invariants_are_checked_like_rules(tmp_path):
    with pytest.raises(PolicyError) as exc:
        compile_text(tmp_path, HEAD + """
decisions:
  d:
    values: [p]
    rules:
      - {id: p, then: p}
invariants:
  - {id: a, never: "x + 1"}
  - {id: b, never: "d == 'z'"}
  - {id: a, always: "x > 0"}
""")
    codes = sorted(p.code for p in exc.value.problems)
    assert codes == ["duplicate-invariant"], codes  # reported first; the rest once ids are unique


def _invariant_on(policy: str, data) -> tuple[str, str, str, str, str]:
    """An invariant on one of a random policy's decisions, in the form its shape allows: a value, a
    list it collected, or a total; or one true by construction. Returns (target, its shape, the
    condition on it, extra, kind)."""
    decisions = re.findall(r"^  (d\d):\n    hit: ([\w-]+)\n(?:    aggregate: (\w+)\n)?", policy, re.M)
    target, hit, aggregate = data.draw(st.sampled_from(decisions))
    value = data.draw(st.sampled_from("xyz"))
    if hit in ("first", "unique", "any", "priority") and data.draw(st.booleans()):
        # true by construction: a value is decided only by a rule that gives it, so it never comes
        # without one of their conditions (a default rule's condition is true)
        block = policy.split(f"  {target}:\n", 1)[1].split("\n  d", 1)[0] + "\n"
        rules = re.findall(r"      - id: \w+\n(?:        when: (.*)\n)?        then: (.*)\n", block)
        giving = [json.loads(when) if when else "true" for when, then in rules
                  if re.fullmatch(rf"{value}|\{{{target}: {value}, .*\}}", then)]
        reasons = " or ".join(f"({c})" for c in giving) or "false"
        return target, "implied", f"{target} == '{value}' and not ({reasons})", "", "never"
    if aggregate in ("count", "sum"):
        shape, cond = "total", f"{target} {data.draw(st.sampled_from(['>=', '<', '==']))} {data.draw(st.integers(0, 2))}"
    elif hit in ("collect", "output-order"):
        shape, cond = "list", f"'{value}' {data.draw(st.sampled_from(['in', 'not in']))} {target}"
    else:
        shape, cond = "value", f"{target} {data.draw(st.sampled_from(['==', '!=']))} '{value}'"
    extra = data.draw(st.sampled_from(["", " and a > 0", " and s == 'north'", " and f", " and is_missing(b)"]))
    return target, shape, cond, extra, data.draw(st.sampled_from(["never", "always"]))


def _reads_population(pl) -> bool:
    """Whether any decision or feature reads a population function: then an entity's decisions depend
    on the others, and a one-entity run is not the population the prover searched."""
    from engine.language.functions import POPULATION_FUNCTIONS
    from engine.language.nodes import Call, Name, walk

    ep = pl.entity("customer")
    roots = [e.node for d in ep.decisions for r in d.all_rules
             for e in [r.when] + [v for _, v in r.then if isinstance(v, Expr)] if e is not None]
    read = {n.name for root in roots for n in walk(root) if isinstance(n, Name)}
    for step in reversed([s for s in ep.steps if isinstance(s, DeriveStep)]):  # the features decisions read
        if step.name in read:
            roots.append(step.derive.expr.node)
            read |= {n.name for n in walk(step.derive.expr.node) if isinstance(n, Name)}
    return any(isinstance(n, Call) and n.func in POPULATION_FUNCTIONS for root in roots for n in walk(root))


@settings(max_examples=int(os.environ.get("KAM_INVARIANT_EXAMPLES", "40")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(random_policies(), st.data())
def test_a_proved_invariant_holds_on_any_data_and_a_refuted_one_breaks(tmp_path_factory, policy, data):
    """Soundness: whatever `kam check` proves, no table breaks (tables on the boundaries of the policy's
    conditions); what it refutes comes with an example that the engine confirms: run alone, the
    example entity breaks the invariant (where no decision depends on the rest of the population),
    and its decided value is one that breaks it."""
    target, shape, cond, extra, kind = _invariant_on(policy, data)
    text = policy + f"invariants:\n  - id: i\n    {kind}: {json.dumps(cond + extra)}\n"
    tmp = tmp_path_factory.mktemp("inv")
    try:
        pl = compile_text(tmp, text)
    except PolicyError as exc:
        # the generator writes valid policies and invariants, except for an empty lookup table
        assert all("lookup" in p.message for p in exc.problems), "\n".join(p.render() for p in exc.problems)
        assume(False)
    (result,) = prove(pl)
    event(f"{shape}: {result.status}")
    assert not (shape == "implied" and result.status == "violated"), f"true by construction, refuted:\n{text}"
    if result.status == "proved":
        for _ in range(3):
            table = data.draw(random_tables(boundary_numbers(text)))
            frame_path = tmp / "c.jsonl"
            table.to_json(frame_path, orient="records", lines=True, force_ascii=False)
            frames = run_inputs.read_inputs(pl, {"customer": frame_path})
            run = api.run(pl, frames)
            assert not run.violations(), f"proved but broken:\n{text}\n{table}"
    elif result.status == "violated":
        example = result.example
        decided = example["decided"][target]["value"][target]
        if kind == "never":  # the decision's part of the condition holds for the example
            holds = {"value": lambda: (decided == cond.split("'")[1]) == (" == " in cond),
                     "list": lambda: (cond.split("'")[1] in (decided or [])) == (" not in " not in cond),
                     "total": lambda: decided is not None and eval(cond.replace(target, repr(decided)))}[shape]
            assert holds(), f"the example's {target} = {decided!r} does not break `{cond}`:\n{text}\n{example}"
        if not _reads_population(pl) and "previous(" not in text and "streak(" not in text:
            event("refutation run alone")  # the whole example: no population, no earlier periods
            row = {"id": example["id"], "a": None, "b": None, "s": None, "f": None, **example["facts"]}
            (tmp / "e.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
            run = api.run(pl, run_inputs.read_inputs(pl, {"customer": tmp / "e.jsonl"}))
            assert run.violations(), f"refuted, but the example alone breaks nothing:\n{text}\n{example}"
