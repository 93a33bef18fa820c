"""The run service: the one sequence every surface calls to decide a portfolio.

Below it: the policy language (compile), the batch primitives (read, evaluate, explain, write),
the history and the other engines. Above it: the CLI, the Python API, the report, `kam test` and
`kam diff`, which parse their input, call these functions and present what they return; none of
them orchestrates a run itself.

* `run` decides facts already in memory (any backend, a calibration, the past of `previous()`).
* `decide_files` reads the facts files first; `decide_with_history` also reads the earlier periods
  from a history (what `kam explain` and `kam report` show).
* `run_and_write` is `kam run`: decide, check the invariants, write the output set, record the
  period, save a calibration and a report, as one; `run_on_dask` the same on a Dask cluster.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..batch.evaluate import EntityResult, decide, evaluate_entity
from ..batch.explain import Trace, trace_row
from ..batch.population import Calibration, build as build_calibration
from ..batch.result import Past, RunResult
from ..engines.durable import DurableBackend
from ..history.store import History, needs_past
from ..language.errors import InputError, Location, Problem, did_you_mean
from ..language.plan import Plan, past_note


BACKENDS = ("pandas", "durable")


def run(pl: Plan, frames: dict[str, pd.DataFrame], on_entity: Callable[[str], None] | None = None,
        backend: str = "pandas", calibration: Calibration | None = None,
        record_calibration: bool = False, past: dict[str, pd.DataFrame] | None = None,
        on_result: Callable[[EntityResult], None] | None = None) -> RunResult:
    """Evaluate every entity (joined entities first).

    `backend` decides which engine matches rule conditions; `calibration` makes population
    functions read a saved population; `record_calibration` makes one from this batch; `past` holds
    per entity the earlier values its `previous()` calls read, row by row (see `history.Past`);
    `on_result` gets each entity's result as soon as it is decided (see `EntityWriter`).
    """
    results: dict[str, EntityResult] = {}
    timings: dict[str, float] = {}
    ps = pl.checked.policy_set
    if calibration is not None:
        calibration.check(ps.hash, "given")
    durable = DurableBackend(pl) if backend == "durable" else None
    records: dict[str, dict[str, Any]] = {}
    for ep in pl.entities:
        t0 = time.perf_counter()
        types = {name: f.type for name, f in ps.facts(ep.entity).items()}
        cal = calibration.stats.get(ep.entity, {}) if calibration is not None else None
        record = records.setdefault(ep.entity, {}) if record_calibration else None
        decider = durable.decider(ep.entity) if durable is not None else decide
        results[ep.entity] = evaluate_entity(ep, frames[ep.entity], types, results, cal, record, decider,
                                             past=(past or {}).get(ep.entity))
        timings[f"evaluate_{ep.entity}"] = round(time.perf_counter() - t0, 4)
        if on_result:
            on_result(results[ep.entity])
        if on_entity:
            on_entity(ep.entity)
    out = RunResult(pl, results, frames, timings)
    if record_calibration:
        out.calibration = build_calibration(ps.hash, records)
    return out


def load_past(pl: Plan, frames: dict[str, pd.DataFrame], history: "History | None", period: str | None) -> Past:
    """The earlier values the run's `previous()` calls read: from the history, or missing for everyone."""
    if not needs_past(pl):
        return Past()
    if history is None:
        return Past(notes=[f"no --history: previous() is missing for everyone ({past_note(pl)})"])
    keys = {ep.entity: frames[ep.entity][ep.key] for ep in pl.entities if ep.past}
    return history.load_past(pl, period, keys)


def suggest_id(key: str, keys: list[str]) -> str:
    """A hint for an id that does not exist: the same id with its leading zeros (ids typed as numbers
    lose them), with other capitals or spaces, else the closest id."""
    wanted = key.strip().lstrip("0").casefold()
    same = [k for k in keys if k.strip().lstrip("0").casefold() == wanted]
    if same:
        others = f" (or {', '.join(f'`{k}`' for k in same[1:3])})" if len(same) > 1 else ""
        return f"did you mean `{same[0]}`?{others}"
    return did_you_mean(key, keys[:100000])


def explain(result: RunResult, key: str, entity: str | None = None) -> Trace:
    """The full trace of the entity with this key (searching every entity unless one is named)."""
    candidates = [entity] if entity else list(result.results)
    found = []
    for e in candidates:
        r = result.results.get(e)
        if r is None:
            raise InputError(Problem("usage", f"no entity `{e}` in the policies", Location("command line"),
                                     did_you_mean(e, result.results)))
        rows = np.flatnonzero(r.ctx.key == key)
        if rows.size:
            found.append((e, int(rows[0])))
    if not found:
        keys = [str(k) for e in candidates for k in result.results[e].ctx.key]
        raise InputError(Problem("unknown-id", f"no {' or '.join(candidates)} has the id `{key}`",
                                 Location("command line"), suggest_id(key, keys)))
    if len(found) > 1:
        raise InputError(Problem("ambiguous-id", f"`{key}` is the id of a {' and a '.join(e for e, _ in found)}",
                                 Location("command line"), "pass --entity to choose"))
    e, row = found[0]
    r = result.results[e]
    facts = list(result.plan.checked.policy_set.facts(e))
    return trace_row(r, row, facts, result.past.periods if result.past.history else None)
