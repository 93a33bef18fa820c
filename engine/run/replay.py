"""Champion and challenger over time: edited policies replayed over the periods a history recorded,
beside what was decided then.

Per recorded period, the facts of that period (as the history kept them) are decided twice: with
the policies of that period, reading the recorded earlier periods (what was decided then), and with
the edited policies, whose `previous()` reads what the edited policies themselves decided in the
periods before (a replay from the first recorded period on, so a hysteresis rule acts on its own
past). Each period's decisions are compared as `kam diff` compares them, and per decision the
entities whose value changed since the period before are counted for both: how many bounce
between tiers, which is what hysteresis rules exist for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..batch.evaluate import vector_arrow
from ..batch.facts import check_frame, identifier_facts
from ..batch.result import Past, RunResult
from ..history.past import past_series
from ..history.store import History
from ..history.tables import PERIOD, ROW
from ..language.errors import InputError
from ..language.plan import Plan
from . import service
from .impact import DecisionDiff, coded_labels, compare_runs


@dataclass
class PeriodReplay:
    """One recorded period: the edited policies against what was decided then, and per decision how
    many entities (present in the period before too) changed value since it, then and edited."""

    period: str
    entities: dict[str, int]
    decisions: list[DecisionDiff] = field(default_factory=list)
    bounced: dict[tuple[str, str], tuple[int, int, int]] = field(default_factory=dict)  # then, edited, of
    note: str = ""


def _frames(history: History, plan: Plan, period: str) -> dict[str, pd.DataFrame]:
    """The facts of one period as the history kept them, in their recorded order, checked as a file."""
    ps = plan.checked.policy_set
    out = {}
    for ep in plan.entities:
        facts = ps.facts(ep.entity)
        rows = history.select(ep.entity, f"{PERIOD} = ?", [period], [ROW, *facts])
        missing = [f for f in facts if f not in rows.columns]
        if missing:
            raise ValueError(f"the {ep.entity} facts of {period} have no `{missing[0]}` (the policies of then did "
                             "not declare it)")
        rows = rows.sort_values(ROW).reset_index(drop=True)
        out[ep.entity] = check_frame(rows[list(facts)], facts, f"the {ep.entity} facts of {period}",
                                     identifier_facts(plan, ep.entity))
    return out


def _own_past(plan: Plan, frames: dict[str, pd.DataFrame], earlier: list[RunResult]) -> Past:
    """What `previous()` reads in a replay: the replay's own earlier periods (most recent first)."""
    past = Past(periods=[str(i) for i in range(len(earlier))])
    for ep in plan.entities:
        if not ep.past:
            continue
        current = pa.array(frames[ep.entity][ep.key].astype(object), type=pa.string())
        columns: dict[str, pd.Series] = {}
        for r in ep.past:
            if r.back > len(earlier):
                continue
            before = earlier[r.back - 1].results[ep.entity]
            pos = pc.index_in(current, value_set=pa.array(before.ctx.key.astype(object), type=pa.string()))
            values = vector_arrow(before.ctx.env[r.name])
            if pa.types.is_dictionary(values.type):
                values = values.cast(pa.string())
            columns[r.key] = past_series(values.take(pos), r.kind)
        past.frames[ep.entity] = columns
    return past


def _bounced(now: RunResult, before: RunResult | None, entity: str, decision: str) -> tuple[int, int]:
    """Of the entities present in both periods, how many have another value now (and how many there are),
    each period labelled by its own policies."""
    if before is None or entity not in before.results or decision not in before.results[entity].decisions:
        return 0, 0
    codes_now, names_now = coded_labels(now, now.plan, entity, decision)
    codes_then, names_then = coded_labels(before, before.plan, entity, decision)
    keys_now = pd.Index(np.asarray(now.results[entity].ctx.key, dtype=object))
    at = pd.Index(np.asarray(before.results[entity].ctx.key, dtype=object)).get_indexer(keys_now)
    both = at >= 0
    changed = names_now[codes_now[both]] != names_then[codes_then[at[both]]]
    return int(changed.sum()), int(both.sum())


def replay(history_path: Path, edited: Plan) -> list[PeriodReplay]:
    """Every recorded period, decided then and decided by the edited policies (see the module)."""
    out: list[PeriodReplay] = []
    history = History.open(history_path)
    try:
        mine: list[RunResult] = []  # the replay's periods, most recent first
        then_before: RunResult | None = None
        for period in history.periods():
            then_plan = history.plan_of(history.need_period(period))
            try:
                frames = _frames(history, edited, period)
                then_frames = _frames(history, then_plan, period)
            except (ValueError, InputError) as exc:
                note = str(exc) if isinstance(exc, ValueError) else exc.problems[0].message
                out.append(PeriodReplay(period, {}, note=f"not replayed: {note}"))
                mine, then_before = [], None
                continue
            keys = {ep.entity: then_frames[ep.entity][ep.key] for ep in then_plan.entities if ep.past}
            then_past = history.load_past(then_plan, period, keys) if keys else Past()
            then_run = service.run(then_plan, then_frames, past=dict(then_past.frames))
            new_run = service.run(edited, frames, past=dict(_own_past(edited, frames, mine).frames))
            shared = [e for e in (ep.entity for ep in edited.entities) if e in then_run.results]
            rep = PeriodReplay(period, {e: len(frames[e]) for e in frames})
            comparison = compare_runs(then_plan, edited.only(shared), then_run, new_run, proofs=([], []))
            rep.decisions = [d for d in comparison.decisions if d.status not in ("removed", "added")]
            for d in rep.decisions:
                then_count, of = _bounced(then_run, then_before, d.entity, d.decision)
                mine_count, _ = _bounced(new_run, mine[0] if mine else None, d.entity, d.decision)
                rep.bounced[(d.entity, d.decision)] = (then_count, mine_count, of)
            out.append(rep)
            mine = [new_run] + mine[:8]
            then_before = then_run
        return out
    finally:
        history.close()


def replay_summary(periods: list[PeriodReplay]) -> list[dict[str, Any]]:
    """The replay as plain data: per period and decision, changed entities, money and bounces."""
    out = []
    for p in periods:
        rows = []
        for d in p.decisions:
            then, mine, of = p.bounced.get((d.entity, d.decision), (0, 0, 0))
            rows.append({"entity": d.entity, "decision": d.decision, "changed": d.changed, "total": d.total,
                         "money": {k: float(np.round(v, 2)) for k, v in d.money.items()},
                         "bounced_then": then, "bounced_edited": mine, "present_both": of})
        out.append({"period": p.period, "entities": p.entities, "note": p.note, "decisions": rows})
    return out
