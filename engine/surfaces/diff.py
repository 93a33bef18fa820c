"""`kam diff`: what a policy change does to the customer base.

Runs two versions of the policy set (the base: a git revision or another folder) on the same facts
and reports, per decision, a transition matrix, how many entities changed, the money at stake
(sums of the `measure: true` facts over the entities that changed) and which rules gained or lost
entities.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..run import service
from ..run import inputs as run_inputs
from ..batch.result import RunResult
from ..language.compile import compile_docs, compile_policies
from ..language.errors import InputError, Location, PolicyError, Problem
from ..language.load import LocatedDoc, load_text
from ..language.numbers import list_text
from ..language.plan import Plan
from ..analysis.invariants import prove
from ..batch.facts import FactsOptions

NONE = "(none)"


def _git(args: list[str], cwd: Path) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    except FileNotFoundError:
        raise InputError(Problem("usage", "git is not installed", Location("command line"))) from None
    except subprocess.CalledProcessError as exc:
        raise InputError(Problem("usage", f"git {' '.join(args)} failed: {exc.stderr.strip()}",
                                 Location("command line"), "pass a revision such as HEAD~1 or main, or a folder")) \
            from None
    return out.stdout


def base_plan(base: str, policy_dir: Path) -> Plan:
    """The base policy set: a folder, or the policy folder as it was at a git revision.

    The revision is read with `git show`, so the work tree is never touched.
    """
    if Path(base).is_dir():
        return compile_policies(Path(base))
    folder = policy_dir.resolve()
    top = Path(_git(["rev-parse", "--show-toplevel"], folder).strip())
    rel = folder.relative_to(top).as_posix()
    listing = _git(["ls-tree", "--name-only", f"{base}:{rel}" if rel != "." else f"{base}:"], top)
    names = sorted(n for n in listing.splitlines() if n.endswith((".yaml", ".yml")))
    if not names:
        raise InputError(Problem("usage", f"no policy files in {rel} at {base}", Location("command line")))
    docs: list[LocatedDoc] = []
    problems: list[Problem] = []
    for name in names:
        path = f"{rel}/{name}" if rel != "." else name
        text = _git(["show", f"{base}:{path}"], top)
        try:
            docs.append(load_text(text, f"{base}:{path}"))
        except PolicyError as exc:
            problems.extend(exc.problems)
    if problems:
        raise PolicyError(problems)
    return compile_docs(docs, f"{base}:{rel}")


@dataclass
class DecisionDiff:
    entity: str
    decision: str
    total: int
    changed: int
    matrix: pd.DataFrame  # base values (rows) x new values (columns)
    money: dict[str, float] = field(default_factory=dict)
    rules: list[tuple[str, int, int]] = field(default_factory=list)  # rule id, base count, new count
    status: str = "changed"  # or "unchanged", "added", "removed"

    @property
    def share(self) -> float:
        return self.changed / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity, "decision": self.decision, "status": self.status, "entities": self.total,
            "changed": self.changed, "changed_share": round(self.share, 6),
            "transitions": {str(b): {str(n): int(v) for n, v in row.items() if v}
                            for b, row in self.matrix.iterrows()},
            "money_at_stake": {k: round(v, 2) for k, v in self.money.items()},
            "rules": [{"rule": r, "base": b, "new": n, "delta": n - b} for r, b, n in self.rules],
        }


def _labels(frame: pd.DataFrame, plan: Plan, entity: str, decision: str) -> pd.Series:
    d = next(x for x in plan.entity(entity).decisions if x.name == decision)
    if d.single:
        col = frame[d.name]
        if col.dtype == object and len(col) and isinstance(col.iloc[0], list):
            return col.map(lambda v: list_text(v) if v else NONE)
        return col.astype(object).where(col.notna(), NONE).astype(str)
    parts = [frame[o.name].astype(object).where(frame[o.name].notna(), NONE).astype(str) for o in d.outputs]
    out = parts[0]
    for p in parts[1:]:
        out = out + " / " + p
    return out


def _measures(plan: Plan, entity: str) -> list[str]:
    return [f.name for f in plan.checked.policy_set.facts(entity).values() if f.measure]


@dataclass
class InvariantDiff:
    """One invariant in the base and in the new policies: proved or not, broken by how many entities."""

    id: str
    entity: str
    base_status: str  # proved | violated | not-analysed | absent
    new_status: str
    base_broken: int | None  # entities of these facts that break it (None: not in that version)
    new_broken: int | None
    example: str = ""  # how the new rules can break it

    @property
    def changed(self) -> bool:
        return self.base_status != self.new_status or self.base_broken != self.new_broken

    def text(self) -> str:
        status = self.new_status if self.base_status == self.new_status else \
            f"{self.base_status} -> {self.new_status}"
        counts = f"broken by {self.new_broken or 0:,} {self.entity}(s) of these facts"
        if self.base_broken != self.new_broken and self.base_broken is not None:
            counts += f" (before: {self.base_broken:,})"
        word = {"violated": "NEWLY BROKEN" if self.base_status != "violated" else "still broken",
                "proved": "newly proved" if self.base_status not in ("proved",) else "proved"}.get(self.new_status, "")
        head = f"invariant `{self.id}`: {status}" + (f" ({word})" if word and self.changed else "")
        return head + f"; {counts}" + (f"; for example {self.example}" if self.example else "")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "entity": self.entity, "base": self.base_status, "new": self.new_status,
                "base_broken": self.base_broken, "new_broken": self.new_broken, "changed": self.changed,
                "example": self.example}


def compare_invariants(base: Plan, new: Plan, base_run: RunResult, new_run: RunResult) -> list[InvariantDiff]:
    """Whether the change breaks or newly proves an invariant, on the rules and on these facts."""
    base_status = {r.invariant.id: r for r in prove(base)}
    new_status = {r.invariant.id: r for r in prove(new)}
    base_counts = {i.invariant.id: i.count for i in base_run.invariants()}
    new_counts = {i.invariant.id: i.count for i in new_run.invariants()}
    out = []
    for inv_id in list(new_status) + [i for i in base_status if i not in new_status]:
        b, n = base_status.get(inv_id), new_status.get(inv_id)
        entity = (n or b).invariant.entity  # type: ignore[union-attr]
        out.append(InvariantDiff(inv_id, entity, b.status if b else "absent", n.status if n else "absent",
                                 base_counts.get(inv_id), new_counts.get(inv_id),
                                 n.reason if n is not None and n.status == "violated" else ""))
    return out


@dataclass
class Comparison:
    decisions: list[DecisionDiff]
    invariants: list[InvariantDiff] = field(default_factory=list)


def compare(base: Plan, new: Plan, inputs: dict[str, Path], options: FactsOptions | str | None = None
            ) -> Comparison:
    """Run both policy sets on the same facts and compare every decision and every invariant."""
    base_run = service.run(base, run_inputs.read_inputs(base, {e.entity: inputs[e.entity] for e in base.entities},
                                                        options))
    new_run = service.run(new, run_inputs.read_inputs(new, {e.entity: inputs[e.entity] for e in new.entities},
                                                      options))
    base_out, new_out = base_run.outputs(), new_run.outputs()
    diffs: list[DecisionDiff] = []
    for ep in new.entities:
        entity = ep.entity
        facts = new_run.frames_in[entity]
        new_decisions = [d.name for d in ep.decisions]
        base_decisions = [d.name for d in base.entity(entity).decisions] if entity in base_out else []
        for name in new_decisions + [d for d in base_decisions if d not in new_decisions]:
            total = len(facts)
            if name not in base_decisions or name not in new_decisions:
                status = "added" if name not in base_decisions else "removed"
                diffs.append(DecisionDiff(entity, name, total, total, pd.DataFrame(), status=status))
                continue
            before = _labels(base_out[entity], base, entity, name)
            after = _labels(new_out[entity], new, entity, name)
            moved = (before.to_numpy() != after.to_numpy())
            matrix = pd.crosstab(before.rename("base"), after.rename("new"))
            money = {m: float(np.nansum(facts[m].to_numpy(dtype=float)[moved])) for m in _measures(new, entity)}
            rb = _rule_counts(base_out[entity][f"{name}_rule"])
            rn = _rule_counts(new_out[entity][f"{name}_rule"])
            rules = sorted({*rb.index, *rn.index})
            rule_rows = [(str(r), int(rb.get(r, 0)), int(rn.get(r, 0))) for r in rules
                         if int(rb.get(r, 0)) != int(rn.get(r, 0))]
            changed = int(moved.sum())
            diffs.append(DecisionDiff(entity, name, total, changed, matrix, money, rule_rows,
                                      "changed" if changed else "unchanged"))
    return Comparison(diffs, compare_invariants(base, new, base_run, new_run))


def _rule_counts(column: pd.Series) -> pd.Series:
    """How many entities each rule decided (for `collect`, each rule in an entity's list counts)."""
    values = column.astype(object)
    if len(values) and isinstance(values.iloc[0], list):
        values = values.explode().dropna()
    return values.value_counts()


_FAIL_ON = re.compile(r"^\s*(?:(?P<decision>[a-z][a-z0-9_]*)\s*:\s*)?changed\s*(?P<op>>=|>|<=|<)\s*"
                      r"(?P<num>\d+(?:\.\d+)?)(?P<pct>%)?\s*$")


def parse_fail_on(text: str) -> tuple[str | None, str, float, bool]:
    """`changed > 5%` or `tier: changed >= 100`: (decision or None, operator, number, is percent)."""
    m = _FAIL_ON.match(text)
    if not m:
        raise InputError(Problem("usage", f"--fail-on {text!r} is not understood", Location("command line"),
                                 "write e.g. 'changed > 5%', 'changed >= 100' or 'tier: changed > 2%'"))
    return m.group("decision"), m.group("op"), float(m.group("num")), bool(m.group("pct"))


def failures(comparison: Comparison, rules: list[str]) -> list[str]:
    """The --fail-on conditions that hold, in words."""
    out = []
    ops = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}
    for text in rules:
        decision, op, number, pct = parse_fail_on(text)
        for d in comparison.decisions:
            if decision and d.decision != decision:
                continue
            value = d.share * 100 if pct else d.changed
            if ops[op](value, number):
                out.append(f"{d.entity} {d.decision}: {d.changed} of {d.total} changed "
                           f"({d.share:.1%}), which meets --fail-on '{text}'")
    return out


def _money_text(money: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.0f}" for k, v in money.items()) or "-"


def render_text(comparison: Comparison, markdown: bool = False) -> str:
    """Text (terminal) or Markdown (a pull-request comment)."""
    diffs = comparison.decisions
    lines: list[str] = []
    head = "### " if markdown else ""
    invariants: list[str] = []
    if comparison.invariants:
        invariants = [f"{head}Invariants" if markdown else "invariants:"] + ([""] if markdown else [])
        invariants += [f"{'- ' if markdown else '  '}{inv.text()}" for inv in comparison.invariants] + [""]
    if not markdown:
        lines += invariants
    if markdown:
        lines += ["## kam diff: impact of the policy change", "",
                  "| entity | decision | changed | share | money at stake (changed entities) |",
                  "| --- | --- | ---: | ---: | --- |"]
        for d in diffs:
            money = d.status if d.status in ("added", "removed") else (_money_text(d.money) if d.changed else "-")
            lines.append(f"| {d.entity} | {d.decision} | {d.changed:,} of {d.total:,} | {d.share:.1%} | {money} |")
        lines.append("")
        lines += invariants
    for d in diffs:
        if d.status in ("added", "removed"):
            lines += [f"{head}{d.entity} {d.decision}: decision {d.status}", ""]
            continue
        if not d.changed:
            lines += [f"{head}{d.entity} {d.decision}: no change ({d.total:,} entities)", ""]
            continue
        lines.append(f"{head}{d.entity} {d.decision}: {d.changed:,} of {d.total:,} changed ({d.share:.1%}); "
                     f"money at stake: {_money_text(d.money)}")
        lines.append("")
        cols = [str(c) for c in d.matrix.columns]
        rows = [(str(i), [int(v) for v in r]) for i, r in zip(d.matrix.index, d.matrix.to_numpy())]
        if markdown:
            lines.append("| base \\ new | " + " | ".join(cols) + " |")
            lines.append("| --- |" + " ---: |" * len(cols))
            for label, values in rows:
                cells = [f"**{v:,}**" if c == label else f"{v:,}" for c, v in zip(cols, values)]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        else:
            width = max([len("base \\ new")] + [len(r[0]) for r in rows])
            cw = [max(len(c), *(len(f"{r[1][i]:,}") for r in rows)) for i, c in enumerate(cols)]
            lines.append("  " + "base \\ new".ljust(width) + "  " + "  ".join(c.rjust(w) for c, w in zip(cols, cw)))
            for label, values in rows:
                figures = "  ".join(f"{v:,}".rjust(w) for v, w in zip(values, cw))
                lines.append("  " + label.ljust(width) + "  " + figures)
        if d.rules:
            lines.append("")
            lines.append("Rules that gained or lost entities:" if markdown else "rules that gained or lost entities:")
            for r, b, n in d.rules:
                lines.append(f"{'- ' if markdown else '  '}`{r}`: {b:,} -> {n:,} ({n - b:+,})")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_json(comparison: Comparison, base: str, fails: list[str]) -> str:
    return json.dumps({"base": base, "decisions": [d.to_dict() for d in comparison.decisions],
                       "invariants": [i.to_dict() for i in comparison.invariants], "fail_on": fails},
                      indent=2, ensure_ascii=False) + "\n"
