"""Invariants: proved or refuted by `kam check`, checked on every entity by `kam run`, in `kam test` and `kam diff`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import api
from engine.errors import PolicyError
from engine.prove import prove

from .conftest import ROOT, kam_here
from .helpers import compile_text
from .test_differential import policies as random_policies, tables as random_tables

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
    pl = api.compile_policies(moved)
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


def test_kam_run_stops_on_a_broken_invariant_and_writes_nothing(moved: Path, tmp_path: Path):
    out = tmp_path / "out"
    r = kam_here("run", "--policies", str(moved), "--out", str(out), "--entity", "customer")
    assert r.returncode == 1 and not out.exists()
    assert "error: invariant `protected-never-let-go`" in r.stderr and "is broken by 58 customer(s)" in r.stderr
    assert "(protected_by: trait-potential, retention: chicken-rib-exit)" in r.stderr
    r = kam_here("run", "--policies", str(moved), "--out", str(out), "--entity", "customer", "--allow-violations", "-q")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    (inv,) = [i for i in manifest["invariants"] if i["id"] == "protected-never-let-go"]
    assert inv["violations"] == 58 and inv["examples"][0]["rules"]["retention"].startswith("chicken-rib")
    c = pd.read_csv(out / "customer_decisions.csv", dtype=str)
    assert ((c["retention"] != "keep") & (c["protected_by"] != "none")).sum() == 58


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
    assert (inv["base"], inv["new"], inv["base_broken"], inv["new_broken"]) == ("proved", "violated", 0, 58)
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


@settings(max_examples=int(os.environ.get("KAM_INVARIANT_EXAMPLES", "40")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(random_policies(), st.data())
def test_a_proved_invariant_holds_on_any_data(tmp_path_factory, policy, data):
    """Soundness: whatever `kam check` proves, no table breaks; what it refutes comes with a real example."""
    decisions = [line.strip()[:-1] for line in policy.splitlines() if line.startswith("  d") and line.endswith(":")]
    target = data.draw(st.sampled_from(decisions))
    hit = policy.split(f"  {target}:\n    hit: ")[1].split("\n")[0]
    if hit == "collect":
        if f"  {target}:\n    hit: collect\n    aggregate: count" in policy:
            return
        cond = f"'{data.draw(st.sampled_from('xyz'))}' {data.draw(st.sampled_from(['in', 'not in']))} {target}"
    else:
        cond = f"{target} {data.draw(st.sampled_from(['==', '!=']))} '{data.draw(st.sampled_from('xyz'))}'"
    extra = data.draw(st.sampled_from(["", " and a > 0", " and s == 'north'", " and f", " and is_missing(b)"]))
    kind = data.draw(st.sampled_from(["never", "always"]))
    text = policy + f"invariants:\n  - id: i\n    {kind}: {json.dumps(cond + extra)}\n"
    tmp = tmp_path_factory.mktemp("inv")
    try:
        pl = compile_text(tmp, text)
    except PolicyError:
        return
    (result,) = prove(pl)
    if result.status == "proved":
        for _ in range(3):
            table = data.draw(random_tables())
            frame_path = tmp / "c.jsonl"
            table.to_json(frame_path, orient="records", lines=True, force_ascii=False)
            frames = api.read_inputs(pl, {"customer": frame_path})
            run = api.run(pl, frames)
            assert not run.violations(), f"proved but broken:\n{text}\n{table}"
