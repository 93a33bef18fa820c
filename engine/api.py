"""The facade: wires the stages together. The CLI and the tests call these functions only."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import __version__, calibrate
from .calibrate import Calibration
from .errors import InputError, Location, Problem, did_you_mean
from .durable import DurableBackend
from .evaluate import CONFLICT, EntityResult, decide, evaluate_entity
from .explain import Trace, decision_counts, output_frame, trace_row
from .load import LocatedDoc, load_policy_dir
from .parse import parse_policy_set
from .plan import Plan, plan
from .read import FORMATS, file_sha256, read_facts
from .typecheck import typecheck
from .validate import validate
from .write import write_outputs


def compile_policies(policy_dir: Path) -> Plan:
    """load -> validate -> parse -> type-check -> plan. Raises PolicyError with every problem found."""
    return compile_docs(load_policy_dir(policy_dir), str(policy_dir))


def compile_docs(docs: list[LocatedDoc], directory: str) -> Plan:
    """The stages after loading, for policy texts from anywhere (a folder, a git revision)."""
    policy_set = validate(docs, directory)
    policy_set = parse_policy_set(policy_set)
    return plan(typecheck(policy_set))


def find_inputs(pl: Plan, data_dir: Path | None, given: dict[str, Path]) -> dict[str, Path]:
    """The facts file of every entity: given explicitly, or `<data_dir>/<entity>s.<ext>` / `<entity>.<ext>`."""
    out: dict[str, Path] = {}
    problems: list[Problem] = []
    entities = [e.entity for e in pl.entities]
    for name in given:
        if name not in entities:
            problems.append(Problem("usage", f"--input names entity `{name}`, which no policy decides",
                                    Location("command line"), did_you_mean(name, entities)))
    for entity in entities:
        if entity in given:
            out[entity] = given[entity]
            continue
        found = None
        if data_dir is not None:
            for stem in (f"{entity}s", entity):
                for ext in FORMATS:
                    candidate = data_dir / f"{stem}{ext}"
                    if candidate.exists():
                        found = found or candidate
        if found is None:
            where = f" in {data_dir}" if data_dir else ""
            problems.append(Problem("input-missing-file", f"no facts file for entity `{entity}`{where}",
                                    Location(str(data_dir or "command line")),
                                    f"name it {entity}s.csv (or .parquet/.jsonl) or pass --input {entity}=FILE"))
        else:
            out[entity] = found
    if problems:
        raise InputError(problems)
    return out


@dataclass
class RunResult:
    plan: Plan
    results: dict[str, EntityResult]
    frames_in: dict[str, pd.DataFrame]
    timings: dict[str, float] = field(default_factory=dict)
    _counts: dict[str, dict[str, dict[str, int]]] | None = field(default=None, repr=False)
    calibration: Calibration | None = None

    def outputs(self) -> dict[str, pd.DataFrame]:
        """One output table per entity: key, decided values, rule ids and because texts."""
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            return {e: output_frame(r, pool) for e, r in self.results.items()}

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per entity and decision, how many got each value (computed once)."""
        if self._counts is None:
            self._counts = {e: decision_counts(r) for e, r in self.results.items()}
        return self._counts

    def warnings(self) -> list[str]:
        """Unknown references in joins (reported, not dropped)."""
        out = []
        for e, r in self.results.items():
            for join_name, rows in r.unknown_refs.items():
                j = next(j for j in r.plan.joins if j.name == join_name)
                sample = ", ".join(f"{k} ({v})" for k, v in rows.head(5).itertuples(index=False))
                more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
                out.append(f"{len(rows)} {e}(s) name a {j.entity} that is not in the {j.entity} facts: "
                           f"{sample}{more}")
        return out

    def conflicts(self) -> list[str]:
        """Rows where hit policy unique/any found several matching rules."""
        out = []
        for e, r in self.results.items():
            for name, res in r.decisions.items():
                rows = np.flatnonzero(res.rule_index == CONFLICT)
                if rows.size:
                    keys = ", ".join(str(r.ctx.key[i]) for i in rows[:5])
                    a, b = res.conflict_with[rows[0]]  # type: ignore[index]
                    out.append(f"decision `{name}`: {rows.size} {e}(s) match more than one rule "
                               f"(e.g. `{res.rules[a].id}` and `{res.rules[b].id}`): {keys}")
        return out


def read_inputs(pl: Plan, inputs: dict[str, Path], fmt: str | None = None,
                on_read: Callable[[str], None] | None = None) -> dict[str, pd.DataFrame]:
    """Read and check the facts of every entity; all problems of all files together."""
    ps = pl.checked.policy_set

    def read_one(entity: str) -> pd.DataFrame | InputError:
        try:
            return read_facts(inputs[entity], ps.facts(entity), fmt)
        except InputError as exc:
            return exc
        finally:
            if on_read:
                on_read(entity)

    # files are independent; Parquet decoding and text conversion release the GIL
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        read = dict(zip([ep.entity for ep in pl.entities], pool.map(read_one, [ep.entity for ep in pl.entities])))
    problems = [p for r in read.values() if isinstance(r, InputError) for p in r.problems]
    if problems:
        raise InputError(problems)
    return {e: r for e, r in read.items() if isinstance(r, pd.DataFrame)}


BACKENDS = ("pandas", "durable")


def run(pl: Plan, frames: dict[str, pd.DataFrame], on_entity: Callable[[str], None] | None = None,
        backend: str = "pandas", calibration: Calibration | None = None,
        record_calibration: bool = False) -> RunResult:
    """Evaluate every entity (joined entities first).

    `backend` decides which engine matches rule conditions; `calibration` makes population
    functions read a saved population; `record_calibration` makes one from this batch.
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
        results[ep.entity] = evaluate_entity(ep, frames[ep.entity], types, results, cal, record, decider)
        timings[f"evaluate_{ep.entity}"] = round(time.perf_counter() - t0, 4)
        if on_entity:
            on_entity(ep.entity)
    out = RunResult(pl, results, frames, timings)
    if record_calibration:
        out.calibration = calibrate.build(ps.hash, records)
    return out


def manifest(result: RunResult, inputs: dict[str, Path], timings: dict[str, float]) -> dict[str, Any]:
    """The run manifest: versions, hashes, counts and timings."""
    ps = result.plan.checked.policy_set
    return {
        "kam_version": __version__,
        "policy_set": {"directory": ps.directory, "sha256": ps.hash,
                       "policies": [p.name for p in ps.policies]},
        "inputs": [
            {"entity": e, "path": str(p), "sha256": file_sha256(p), "rows": int(len(result.frames_in[e]))}
            for e, p in inputs.items()
        ],
        "decision_counts": result.counts(),
        "warnings": result.warnings() + result.conflicts(),
        "timings_seconds": timings,
    }


def write_run(result: RunResult, inputs: dict[str, Path], out_dir: Path, fmt: str,
              timings: dict[str, float]) -> dict[str, Path]:
    """Render outputs and write them with the manifest, atomically."""
    t0 = time.perf_counter()
    frames = result.outputs()
    timings = {**timings, "explain": round(time.perf_counter() - t0, 4)}
    return write_outputs(out_dir, frames, fmt, manifest(result, inputs, timings))


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
        keys = [str(k) for e in candidates for k in result.results[e].ctx.key[:100000]]
        raise InputError(Problem("unknown-id", f"no {' or '.join(candidates)} has the id `{key}`",
                                 Location("command line"), did_you_mean(key, keys)))
    if len(found) > 1:
        raise InputError(Problem("ambiguous-id", f"`{key}` is the id of a {' and a '.join(e for e, _ in found)}",
                                 Location("command line"), "pass --entity to choose"))
    e, row = found[0]
    r = result.results[e]
    facts = list(result.plan.checked.policy_set.facts(e))
    return trace_row(r, row, facts)
