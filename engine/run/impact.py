"""What a policy change does to a portfolio: two runs of the same facts compared, decision by
decision (who moves where, with the money of the `measure: true` facts per cell of the transition
matrix), invariant by invariant (on the rules and on these facts), measure by measure.

`kam diff` and the studio page both call `compare_runs`, so the page's figures are `kam diff`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.invariants import InvariantResult, prove
from ..batch.explain import row_because, rule_column, value_columns
from ..batch.result import RunResult
from ..language.figures import Reader, reader as locale_reader
from ..language.numbers import list_text
from ..language.plan import Plan
from ..language.units import COUNT, Unit, units_of

NONE = "(none)"


@dataclass
class DecisionDiff:
    """One decision in both runs: the transition matrix (base values as rows, new values as columns),
    how many entities changed, the money at stake (sums of the measure facts over those that changed),
    the rules that gained or lost entities, and the same sums per cell of the matrix."""

    entity: str
    decision: str
    total: int
    changed: int
    matrix: pd.DataFrame  # base values (rows) x new values (columns)
    money: dict[str, float] = field(default_factory=dict)
    rules: list[tuple[str, int, int]] = field(default_factory=list)  # rule id, base count, new count
    status: str = "changed"  # or "unchanged", "added", "removed"
    cells: pd.DataFrame | None = None  # per (base, new) pair: entities and the sum of each measure fact

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


Coded = tuple[np.ndarray, np.ndarray]  # per entity a code, and the label of each code


def _column_codes(col: pd.Series) -> Coded:
    if isinstance(col.dtype, pd.CategoricalDtype):  # the declared values: label the categories only
        names = np.array([str(c) for c in col.cat.categories] + [NONE], dtype=object)
        codes = col.cat.codes.to_numpy().astype(np.int64)
        return np.where(codes < 0, len(names) - 1, codes), names
    if col.dtype == object and len(col) and isinstance(col.iloc[0], list):
        text = col.map(lambda v: list_text(v) if v else NONE)
    else:
        text = col.astype(object).where(col.notna(), NONE).astype(str)
    codes, uniques = pd.factorize(text)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def coded_labels(run: RunResult, plan: Plan, entity: str, decision: str) -> Coded:
    """Each entity's decided value(s) as one label (`A`, `approve / 0.85`, `(none)`), coded: the
    comparison works on whole numbers and names only the few distinct labels."""
    d = next(x for x in plan.entity(entity).decisions if x.name == decision)
    columns = value_columns(run.results[entity].decisions[decision])
    parts = [_column_codes(pd.Series(columns[o.name])) for o in ([d.main] if d.single else d.outputs)]
    if len(parts) == 1:
        return parts[0]
    combined = parts[0][0]
    for codes, names in parts[1:]:
        combined = combined * len(names) + codes
    codes, uniques = pd.factorize(combined)
    names_of = []
    for u in uniques:
        pieces = []
        for _, names in reversed(parts):
            pieces.append(str(names[u % len(names)]))
            u //= len(names)
        names_of.append(" / ".join(reversed(pieces)))
    return codes.astype(np.int64), np.array(names_of, dtype=object)


def labels(run: RunResult, plan: Plan, entity: str, decision: str) -> np.ndarray:
    """Each entity's decided value(s) as one label (see `coded_labels`)."""
    codes, names = coded_labels(run, plan, entity, decision)
    return names[codes]


def measure_facts(plan: Plan, entity: str) -> list[str]:
    """The facts marked `measure: true` (the money a move carries)."""
    return [f.name for f in plan.checked.policy_set.facts(entity).values() if f.measure]


def rule_counts(column: pd.Series) -> pd.Series:
    """How many entities each rule decided (for `collect`, each rule in an entity's list counts)."""
    values = column.astype(object)
    if len(values) and isinstance(values.iloc[0], list):
        values = values.explode().dropna()
    return values.value_counts()


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
    because: str = ""  # what the invariant guarantees, in the policy's words
    reason: str = ""  # why it could not be analysed, or how it was proved

    @property
    def changed(self) -> bool:
        return self.base_status != self.new_status or self.base_broken != self.new_broken

    def text(self, reader: Reader | None = None) -> str:
        """The invariant's status and how many entities break it, in words (counts in the reader's locale)."""
        count = (reader or locale_reader(None)).number
        status = self.new_status if self.base_status == self.new_status else \
            f"{self.base_status} -> {self.new_status}"
        counts = f"broken by {count(self.new_broken or 0, Unit(COUNT))} {self.entity}(s) of these facts"
        if self.base_broken != self.new_broken and self.base_broken is not None:
            counts += f" (before: {count(self.base_broken, Unit(COUNT))})"
        word = {"violated": "NEWLY BROKEN" if self.base_status != "violated" else "still broken",
                "proved": "newly proved" if self.base_status not in ("proved",) else "proved"}.get(self.new_status, "")
        head = f"invariant `{self.id}`: {status}" + (f" ({word})" if word and self.changed else "")
        return head + f"; {counts}" + (f"; for example {self.example}" if self.example else "")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "entity": self.entity, "base": self.base_status, "new": self.new_status,
                "base_broken": self.base_broken, "new_broken": self.new_broken, "changed": self.changed,
                "example": self.example}


def compare_invariants(base: Plan, new: Plan, base_run: RunResult, new_run: RunResult,
                       proofs: tuple[list[InvariantResult], list[InvariantResult]] | None = None
                       ) -> list[InvariantDiff]:
    """Whether the change breaks or newly proves an invariant, on the rules and on these facts
    (`proofs`: the prover's answers for both plans, when the caller has them already)."""
    base_proofs, new_proofs = proofs if proofs is not None else (prove(base), prove(new))
    base_status = {r.invariant.id: r for r in base_proofs}
    new_status = {r.invariant.id: r for r in new_proofs}
    base_counts = {i.invariant.id: i.count for i in base_run.invariants()}
    new_counts = {i.invariant.id: i.count for i in new_run.invariants()}
    out = []
    for inv_id in list(new_status) + [i for i in base_status if i not in new_status]:
        b, n = base_status.get(inv_id), new_status.get(inv_id)
        either = n or b
        assert either is not None
        out.append(InvariantDiff(inv_id, either.invariant.entity, b.status if b else "absent",
                                 n.status if n else "absent", base_counts.get(inv_id), new_counts.get(inv_id),
                                 n.reason if n is not None and n.status == "violated" else "",
                                 either.invariant.because or "", n.reason if n is not None else ""))
    return out


@dataclass
class Comparison:
    """Every decision and invariant of two runs compared, with the units of the new policies' numbers
    per entity (how the money of a move is shown; the JSON keeps the numbers exact)."""

    decisions: list[DecisionDiff]
    invariants: list[InvariantDiff] = field(default_factory=list)
    units: dict[str, dict[str, Unit]] = field(default_factory=dict)


def _same(base_run: RunResult, new_run: RunResult, entity: str, name: str) -> bool:
    """Whether the new run took this decision's result over from the base run unchanged."""
    b, n = base_run.results.get(entity), new_run.results.get(entity)
    return b is not None and n is not None and b.decisions.get(name) is n.decisions.get(name)


def compare_runs(base: Plan, new: Plan, base_run: RunResult, new_run: RunResult, cells: bool = False,
                 proofs: tuple[list[InvariantResult], list[InvariantResult]] | None = None,
                 memo: dict[tuple[str, str, str], Any] | None = None) -> Comparison:
    """Compare two runs of the same facts: every decision (with the money per matrix cell when
    `cells`) and every invariant. `memo` keeps, across calls with the same base run, what depends on
    it only: its labels, and the comparison of each decision the new run took over from it."""
    memo = {} if memo is None else memo
    diffs: list[DecisionDiff] = []
    for ep in new.entities:
        entity = ep.entity
        facts = new_run.frames_in[entity]
        new_decisions = [d.name for d in ep.decisions]
        base_decisions = [d.name for d in base.entity(entity).decisions] if entity in base_run.results else []
        for name in new_decisions + [d for d in base_decisions if d not in new_decisions]:
            total = len(facts)
            if name not in base_decisions or name not in new_decisions:
                status = "added" if name not in base_decisions else "removed"
                diffs.append(DecisionDiff(entity, name, total, total, pd.DataFrame(), status=status))
                continue
            same = _same(base_run, new_run, entity, name)
            if same and ("diff", entity, name) in memo:
                diffs.append(memo[("diff", entity, name)])
                continue
            if ("labels", entity, name) not in memo:
                memo[("labels", entity, name)] = coded_labels(base_run, base, entity, name)
            before = memo[("labels", entity, name)]
            after = before if same else coded_labels(new_run, new, entity, name)
            diffs.append(_decision_diff(new, base_run, new_run, entity, name, before, after, cells))
            if same:
                memo[("diff", entity, name)] = diffs[-1]
    units = {ep.entity: units_of(new.checked.policy_set, ep.entity) for ep in new.entities}
    return Comparison(diffs, compare_invariants(base, new, base_run, new_run, proofs), units)


def _decision_diff(new: Plan, base_run: RunResult, new_run: RunResult, entity: str, name: str, before: Coded,
                   after: Coded, cells: bool) -> DecisionDiff:
    facts = new_run.frames_in[entity]
    measures = measure_facts(new, entity)
    (bc, bn), (ac, an) = before, after
    # the new labels in the base's numbering (a label only the new run gives counts as moved)
    where = {label: i for i, label in enumerate(bn)}
    moved = np.take(np.array([where.get(label, -1) for label in an], dtype=np.int64), ac) != bc
    pair = bc * len(an) + ac
    counts = np.bincount(pair, minlength=len(bn) * len(an)).reshape(len(bn), len(an))
    rows, cols = np.flatnonzero(counts.sum(axis=1)), np.flatnonzero(counts.sum(axis=0))
    rows, cols = rows[np.argsort(bn[rows].astype(str))], cols[np.argsort(an[cols].astype(str))]
    matrix = pd.DataFrame(counts[np.ix_(rows, cols)], index=pd.Index(bn[rows], name="base"),
                          columns=pd.Index(an[cols], name="new"))
    money = {m: float(np.nansum(facts[m].to_numpy(dtype=float)[moved])) for m in measures}
    rb = rule_counts(pd.Series(rule_column(base_run.results[entity].decisions[name])))
    same = _same(base_run, new_run, entity, name)
    rn = rb if same else rule_counts(pd.Series(rule_column(new_run.results[entity].decisions[name])))
    rule_rows = [(str(r), int(rb.get(r, 0)), int(rn.get(r, 0))) for r in sorted({*rb.index, *rn.index})
                 if int(rb.get(r, 0)) != int(rn.get(r, 0))]
    changed = int(moved.sum())
    table = None
    if cells:
        seen = np.flatnonzero(counts.reshape(-1))
        table = pd.DataFrame({"entities": counts.reshape(-1)[seen]},
                             index=pd.MultiIndex.from_arrays([bn[seen // len(an)], an[seen % len(an)]],
                                                             names=["base", "new"]))
        for m in measures:
            values = np.nan_to_num(facts[m].to_numpy(dtype=float))  # a missing amount adds nothing
            table[m] = np.bincount(pair, weights=values, minlength=len(bn) * len(an))[seen]
    return DecisionDiff(entity, name, len(facts), changed, matrix, money, rule_rows,
                        "changed" if changed else "unchanged", table)


def movers(base_run: RunResult, new_run: RunResult, base: Plan, new: Plan, entity: str, decision: str,
           before: str | None = None, after: str | None = None, limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
    """The entities whose decision moved (from `before` to `after` where given; an unmoved cell lists
    those who stayed), biggest first by the first measure fact: how many there are, and for the first
    `limit` their id, money, and old and new value, rule and reason."""
    b_lab = labels(base_run, base, entity, decision)
    n_lab = labels(new_run, new, entity, decision)
    mask = b_lab != n_lab if before is None and after is None else np.ones(len(b_lab), dtype=bool)
    if before is not None:
        mask &= b_lab == before
    if after is not None:
        mask &= n_lab == after
    rows = np.flatnonzero(mask)
    facts = new_run.frames_in[entity]
    measures = measure_facts(new, entity)
    if measures and rows.size:
        weight = np.abs(np.nan_to_num(facts[measures[0]].to_numpy(dtype=float)[rows]))
        rows = rows[np.argsort(-weight, kind="stable")]
    shown = []
    b_res, n_res = base_run.results[entity], new_run.results[entity]
    b_rules, n_rules = rule_column(b_res.decisions[decision]), rule_column(n_res.decisions[decision])
    for i in rows[:limit]:
        i = int(i)
        shown.append({
            "id": str(n_res.ctx.key[i]),
            "money": {m: _number(facts[m].iloc[i]) for m in measures},
            "before": {"value": str(b_lab[i]), "rule": _text(b_rules[i]),
                       "because": row_because(b_res.decisions[decision], b_res.ctx.env, i)},
            "after": {"value": str(n_lab[i]), "rule": _text(n_rules[i]),
                      "because": row_because(n_res.decisions[decision], n_res.ctx.env, i)},
        })
    return int(mask.sum()), shown


def _number(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def _text(v: Any) -> str:
    if isinstance(v, (list, np.ndarray)):
        return ", ".join(str(x) for x in v)
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
