"""What a run decided, for every surface to read: per entity the decisions and their
explanations, counts, measures, joins whose references found no partner, invariants and conflicts.

The pandas engine makes a `RunResult` whole; the Dask engine makes the same reports from its merged
figures. The files, the report, the history, the Python API and the CLI's summary read these.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..language.model import Invariant
from ..language.nodes import names
from ..language.plan import DeriveStep, Plan
from .evaluate import CONFLICT, EntityResult, vector_arrow
from .explain import decision_counts, output_frame, plain_value, rule_column, show
from .population import Calibration


@dataclass
class Past:
    """The earlier values a run's `previous()` calls read, per entity aligned with its rows."""

    frames: dict[str, dict[str, pd.Series]] = field(default_factory=dict)
    periods: list[str] = field(default_factory=list)  # most recent first: periods[k-1] is k back
    notes: list[str] = field(default_factory=list)
    history: str | None = None  # the file they come from (None: no history was given)
    # per entity, those recorded in the previous period that this run does not have (for the report)
    gone: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass
class JoinReport:
    """References of one join that name no entity of the other side."""

    SAMPLE = 5
    MOSTLY = 0.5  # above this share of unmatched references, a data mistake is almost certain

    entity: str
    other: str
    on: str
    total: int  # references given (not missing)
    unmatched: pd.DataFrame  # key and reference of each row that found no partner (or of the first ones)
    other_keys: list[str]
    count: int | None = None  # how many found no partner, when `unmatched` holds only the first

    @property
    def unmatched_count(self) -> int:
        return len(self.unmatched) if self.count is None else self.count

    @property
    def share(self) -> float:
        return self.unmatched_count / self.total if self.total else 0.0

    @property
    def mostly_unmatched(self) -> bool:
        return self.share > self.MOSTLY

    def text(self) -> str:
        n = self.unmatched_count
        sample = ", ".join(f"{k} ({v})" for k, v in self.unmatched.head(self.SAMPLE).itertuples(index=False))
        more = f" and {n - self.SAMPLE} more" if n > self.SAMPLE else ""
        return (f"{n} {self.entity}(s) name a {self.other} that is not in the {self.other} facts: "
                f"{sample}{more}")

    def alarm(self) -> str:
        """The message when most references find no partner: almost always ids written differently."""
        refs = [str(v) for v in self.unmatched.iloc[: self.SAMPLE, 1]]
        others = (f"{self.other} ids look like {', '.join(repr(k) for k in self.other_keys)}" if self.other_keys
                  else f"the {self.other} facts hold no {self.other} at all")
        text = (f"{self.unmatched_count:,} of {self.total:,} {self.entity}s ({self.share:.0%}) name a {self.other} "
                f"that is not in the {self.other} facts, so their decisions were made without it. "
                f"Their `{self.on}` values look like {', '.join(repr(r) for r in refs)}; {others}.")
        if any(r.isdigit() for r in refs) and any(k.isdigit() and k.startswith("0") for k in self.other_keys):
            text += (" The ids may have lost their leading zeros (a spreadsheet or a number column): "
                     "keep ids as text in both files.")
        return text


def deciding_rules(result: EntityResult, inv: Invariant, row: int) -> dict[str, Any]:
    """For one entity, the rule (or, for `collect`, the rules) that decided each decision an invariant reads."""
    read = set(names(inv.expr.node)) if inv.expr.node is not None else set()
    out: dict[str, Any] = {}
    for name, res in result.decisions.items():
        if read & {o.name for o in res.decision.outputs}:
            out[name] = plain_value(rule_column(res)[row])
    return out


@dataclass
class InvariantReport:
    """How one invariant fared on a run: how many entities break it, and the first of them."""

    SHOW = 5

    invariant: Invariant
    entity: str
    count: int
    examples: list[tuple[str, dict[str, Any]]]  # id, decision -> deciding rule(s)

    def text(self) -> str:
        inv = self.invariant
        shown = "; ".join(f"{key} ({', '.join(f'{d}: {show(r)}' for d, r in rules.items())})" if rules else key
                          for key, rules in self.examples)
        more = f" and {self.count - len(self.examples)} more" if self.count > len(self.examples) else ""
        return (f"invariant `{inv.id}` ({inv.loc}) is broken by {self.count} {self.entity}(s): {shown}{more}"
                + (f" — {inv.because}" if inv.because else ""))

    def to_dict(self) -> dict[str, Any]:
        inv = self.invariant
        return {"id": inv.id, "entity": self.entity, "condition": inv.text, "file": inv.loc.file,
                "line": inv.loc.line, "violations": self.count,
                "examples": [{"id": k, "rules": r} for k, r in self.examples]}


def release(result: EntityResult) -> None:
    """Let go of an entity's vectors once its file is written and no entity still to be decided joins
    it: its facts and features, its decided values and each rule's matches (at a million customers
    about 300 MB). What the run's summary and manifest read stays: the counts (taken now), the
    deciding rules, the invariants' rows, the measures, the keys and the unknown references."""
    result.counts = decision_counts(result)
    result.ctx.env.clear()
    for res in result.decisions.values():
        res.values = {}
        res.matches = []
        res.quota_vars = {}


@dataclass
class RunResult:
    plan: Plan
    results: dict[str, EntityResult]
    frames_in: dict[str, pd.DataFrame]
    timings: dict[str, float] = field(default_factory=dict)
    _counts: dict[str, dict[str, dict[str, int]]] | None = field(default=None, repr=False)
    calibration: Calibration | None = None
    past: Past = field(default_factory=Past)  # the earlier values previous() read, and notes about them
    _outputs: dict[str, pd.DataFrame] | None = field(default=None, repr=False)

    def outputs(self) -> dict[str, pd.DataFrame]:
        """One output table per entity: key, decided values, rule ids and because texts (rendered once:
        the files, the report and the Python API read the same tables)."""
        if self._outputs is None:
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
                self._outputs = {e: output_frame(r, pool) for e, r in self.results.items()}
        return dict(self._outputs)

    def measures(self) -> dict[str, dict[str, Any]]:
        """Per entity, its measures' values (the entities without measures left out)."""
        return {e: dict(r.measures) for e, r in self.results.items() if r.measures}

    def features(self, entity: str) -> pd.DataFrame:
        """An entity's derived features, a column each, in the order they were computed."""
        r = self.results[entity]
        return pd.DataFrame({s.name: vector_arrow(r.ctx.env[s.name]).to_pandas() for s in r.plan.steps
                             if isinstance(s, DeriveStep)})

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per entity and decision, how many got each value (computed once)."""
        if self._counts is None:
            self._counts = {e: decision_counts(r) for e, r in self.results.items()}
        return self._counts

    def joins(self) -> list[JoinReport]:
        """Per join, how many references found no partner (reported, never dropped)."""
        out = []
        for e, r in self.results.items():
            for j in r.plan.joins:
                rows = r.unknown_refs.get(j.name)
                if rows is None or not len(rows):
                    continue
                ref = self.frames_in[e][j.on]
                total = int(ref.notna().sum())
                other = self.results[j.entity].ctx.key
                out.append(JoinReport(e, j.entity, j.on, total, rows,
                                      [str(k) for k in other[: JoinReport.SAMPLE]]))
        return out

    def warnings(self) -> list[str]:
        """Unknown references in joins, in words."""
        return [j.text() for j in self.joins()]

    def invariants(self) -> list[InvariantReport]:
        """Every invariant of the run and the entities that break it (none when it held)."""
        out = []
        for e, r in self.results.items():
            for inv in r.plan.invariants:
                rows = np.flatnonzero(r.violations.get(inv.id, np.zeros(0, dtype=bool)))
                examples = [(str(r.ctx.key[i]), deciding_rules(r, inv, int(i))) for i in rows[:InvariantReport.SHOW]]
                out.append(InvariantReport(inv, e, int(rows.size), examples))
        return out

    def violations(self) -> list[InvariantReport]:
        return [i for i in self.invariants() if i.count]

    def conflicts(self) -> list[str]:
        """Rows where hit policy unique/any found several matching rules."""
        out = []
        for e, r in self.results.items():
            for name, res in r.decisions.items():
                rows = np.flatnonzero(res.rule_index == CONFLICT)
                if rows.size:
                    a, b = res.conflict_with[rows[0]]  # type: ignore[index]
                    out.append(conflict_warning(e, name, int(rows.size), [str(r.ctx.key[i]) for i in rows[:5]],
                                                (res.rules[a].id, res.rules[b].id)))
        return out


def conflict_warning(entity: str, decision: str, count: int, keys: list[str], pair: tuple[str, str]) -> str:
    """Rows of a unique/any decision that matched several rules: how many, the first ids, the first pair."""
    return (f"decision `{decision}`: {count} {entity}(s) match more than one rule "
            f"(e.g. `{pair[0]}` and `{pair[1]}`): {', '.join(keys[:5])}")
