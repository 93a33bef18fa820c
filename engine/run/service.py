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

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import pandas as pd

from ..batch.evaluate import EntityResult, decide, evaluate_entity
from ..batch.explain import Trace, trace_row
from ..batch.population import Calibration, build as build_calibration
from ..batch.extras import need
from ..batch.facts import FactsOptions, check_frame, identifier_facts
from ..batch.result import InvariantReport, Past, RunResult, release
from ..batch.write import OutputTarget
from ..engines import calibration as calibrations
from ..engines.durable import DurableBackend
from ..history.past import needs_past
from ..history.recorder import Recorder
from ..history.store import History, check_period
from ..language.compile import compile_policies
from ..language.errors import InputError, KamError, Location, Problem, did_you_mean
from ..language.plan import EntityPlan, Plan, past_note
from .inputs import find_inputs, read_inputs
from .outputs import EntityWriter, run_manifest, write_run

BACKENDS = ("pandas", "durable")


def run(pl: Plan, frames: dict[str, pd.DataFrame], on_entity: Callable[[str], None] | None = None,
        backend: str = "pandas", calibration: Calibration | None = None,
        record_calibration: bool = False, past: dict[str, pd.DataFrame] | None = None,
        on_result: Callable[[EntityResult], None] | None = None,
        reuse: Callable[[EntityPlan], Mapping[str, Any]] | None = None,
        done_with: Callable[[str], bool] | None = None) -> RunResult:
    """Evaluate every entity (joined entities first).

    `backend` decides which engine matches rule conditions; `calibration` makes population
    functions read a saved population; `record_calibration` makes one from this batch; `past` holds
    per entity the earlier values its `previous()` calls read, row by row (see `engine.batch.result.Past`);
    `on_result` gets each entity's result as soon as it is decided (see `EntityWriter`); `reuse` gives
    per entity, once the entities it joins with are decided, the steps to take over from an earlier
    run (see `evaluate_entity`); `done_with(entity)` says whether the caller is done with an entity's
    vectors (its file is written, nothing else reads them): they are then released as soon as no
    entity still to be decided joins it, and its facts narrowed to the key and the columns joins
    name (`engine.batch.result.release`).
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
                                             past=(past or {}).get(ep.entity),
                                             reuse=reuse(ep) if reuse is not None else None)
        timings[f"evaluate_{ep.entity}"] = round(time.perf_counter() - t0, 4)
        if done_with is not None:  # those this entity joined, before its file is made
            _release(pl, results, frames, done_with)
        if on_result:
            on_result(results[ep.entity])
        if on_entity:
            on_entity(ep.entity)
        if done_with is not None:
            _release(pl, results, frames, done_with)
    out = RunResult(pl, results, frames, timings)
    if record_calibration:
        out.calibration = build_calibration(ps.hash, records)
    return out


def _release(pl: Plan, results: dict[str, EntityResult], frames: dict[str, pd.DataFrame],
             done_with: Callable[[str], bool]) -> None:
    """Release every decided entity the caller is done with and no undecided entity joins."""
    for entity, r in results.items():
        if r.counts is not None or not done_with(entity):
            continue
        if any(j.entity == entity and ep.entity not in results for ep in pl.entities for j in ep.joins):
            continue
        release(r)
        keep = [r.plan.key] + [j.on for j in r.plan.joins]
        frames[entity] = frames[entity][[c for c in dict.fromkeys(keep) if c in frames[entity]]]


def decide_frames(pl: Plan, frames: dict[str, pd.DataFrame], backend: str = "pandas") -> RunResult:
    """Decide entities given as DataFrames (a notebook, a service, a page): each frame checked against
    its facts as a file would be (types, keys, ranges; every problem of every frame together), then `run`."""
    ps = pl.checked.policy_set
    checked: dict[str, pd.DataFrame] = {}
    problems: list[Problem] = []
    for ep in pl.entities:
        try:
            checked[ep.entity] = check_frame(frames[ep.entity], ps.facts(ep.entity), f"the {ep.entity} frame",
                                             identifier_facts(pl, ep.entity))
        except InputError as exc:
            problems += exc.problems
    if problems:
        raise InputError(problems)
    return run(pl, checked, backend=backend)


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


# -- the sequences the surfaces call ------------------------------------------------------------------

class InvariantsBroken(KamError):
    """Invariants broken by the decided entities, and the run was not allowed to write them: nothing
    was written (exit 1). `reports` say which, `summary` what happened."""

    exit_code = 1

    def __init__(self, reports: list[InvariantReport], hint: str):
        self.reports, self.hint = reports, hint
        n = len(reports)
        super().__init__([Problem("invariant-broken", r.text(), Location("command line")) for r in reports])
        self.summary = (f"{n} invariant{'s' if n > 1 else ''} broken: nothing was written "
                        f"({hint}--allow-violations writes the decisions anyway)")


class Progress(Protocol):
    """What a run reports as it goes (a surface shows it, e.g. as a progress bar): `start` once with
    the number of steps, then `step` with what was done, once per step."""

    def start(self, total: int) -> None:
        """The run knows how many steps it has."""

    def step(self, what: str) -> None:
        """One step is done (`read customer`, `decided customer`, `explained`, `wrote customer`)."""


@dataclass
class RunRequest:
    """One `kam run`, as every surface asks for it: where the policies and facts are, where the
    output set goes, and what else the run does (history, calibration, report)."""

    policies: Path
    data: Path | None = None  # the folder of facts files; `inputs` name single files
    inputs: dict[str, Path] = field(default_factory=dict)
    out: Path = Path("out")
    output_format: str = "csv"
    csv_bom: bool = False
    entities: tuple[str, ...] = ()  # only these (and those they join with)
    backend: str = "pandas"
    facts: FactsOptions | None = None
    calibration: Path | None = None  # population statistics from this saved calibration
    save_calibration: Path | None = None
    allow_violations: bool = False
    history: Path | None = None  # record the period here (and read the earlier ones for previous())
    period: str | None = None
    replace: bool = False
    report: Path | None = None  # also write the portfolio report here, as `render_report` makes it
    # the report is a surface of its own (engine.surfaces.report): the surface asking for one hands it in
    render_report: Callable[[RunResult], str] | None = None
    # keep every entity's vectors in the result (its features, each rule's matches) for a surface that
    # reads them after the run; otherwise they go as soon as the entity's file is written, and the
    # result answers for counts, measures, invariants, warnings and conflicts only
    keep_vectors: bool = False


@dataclass
class RunDone:
    """What a run did, for the surface to tell: the result, the files written, the notes."""

    result: RunResult
    paths: dict[str, Path]
    manifest: dict[str, Any]
    notes: list[str]  # about the history and the periods previous() read
    seconds: float


def compile_for_run(policies: Path, entities: tuple[str, ...] = ()) -> Plan:
    """The plan of a run: the policies compiled, narrowed to `entities` (and those they join with)."""
    pl = compile_policies(policies)
    if entities:
        for entity in entities:
            check_entity(pl, entity)
        pl = pl.only(list(entities))
    return pl


def check_entity(pl: Plan, entity: str) -> None:
    """An entity asked for by name (--entity) is one the policies decide."""
    names = [e.entity for e in pl.entities]
    if entity not in names:
        raise InputError(Problem("usage", f"--entity {entity} is not an entity of the policies",
                                 Location("command line"), did_you_mean(entity, names)))


def decide_files(pl: Plan, data: Path | None, inputs: dict[str, Path], timings: dict[str, float] | None = None,
                 progress: Progress | None = None, *, backend: str = "pandas", facts: FactsOptions | None = None,
                 calibration: Path | None = None, save_calibration: bool = False, history: History | None = None,
                 period: str | None = None, on_result: Callable[[EntityResult], None] | None = None,
                 done_with: Callable[[str], bool] | None = None) -> tuple[RunResult, dict[str, Path]]:
    """Find and read the facts files, read the past `previous()` needs from the history, decide every
    entity. `timings` gets how long each stage took; `on_result` gets each entity as it is decided;
    `done_with` lets its vectors go (see `run`)."""
    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    cal = calibrations.load(calibration) if calibration else None
    if data is not None and not data.is_dir():
        raise InputError(Problem("usage", f"data folder {data} does not exist", Location("command line"),
                                 "pass --data DIR or --input ENTITY=FILE"))
    files = find_inputs(pl, data, inputs)
    timings["compile"] = round(timings.get("compile", 0.0) + time.perf_counter() - t0, 4)
    t0 = time.perf_counter()
    frames = read_inputs(pl, files, facts, (lambda e: progress.step(f"read {e}")) if progress else None)
    timings["read"] = round(time.perf_counter() - t0, 4)
    t0 = time.perf_counter()
    past = load_past(pl, frames, history, period)
    if history is not None and past.frames:
        timings["previous"] = round(time.perf_counter() - t0, 4)
    t0 = time.perf_counter()
    result = run(pl, frames, (lambda e: progress.step(f"decided {e}")) if progress else None, backend=backend,
                 calibration=cal, record_calibration=save_calibration, past=dict(past.frames), on_result=on_result,
                 done_with=done_with)
    result.past = past
    timings["evaluate"] = round(time.perf_counter() - t0, 4)
    return result, files


def decide_with_history(policies: Path, data: Path | None, inputs: dict[str, Path], *,
                        entities: tuple[str, ...] = (), backend: str = "pandas", facts: FactsOptions | None = None,
                        calibration: Path | None = None, history: Path | None = None,
                        period: str | None = None, gone: bool = False) -> tuple[RunResult, list[str]]:
    """Decide every entity, previous() reading the periods of a history before `period` (nothing is
    recorded): what `kam explain` and `kam report` show; with `gone`, also who was in the previous
    period and is not in this one (the report's "since the previous period"). Also gives what opening
    the history settled (a period a stopped run left), for the surface to say."""
    pl = compile_for_run(policies, entities)
    opened = History.open(history) if history is not None else None
    try:
        notes = list(opened.notes) if opened is not None else []
        result = decide_files(pl, data, inputs, backend=backend, facts=facts, calibration=calibration,
                              history=opened, period=check_period(period) if opened and period else None)[0]
        if gone and opened is not None and result.past.periods:
            _gone(opened, result)
        return result, notes
    finally:
        if opened is not None:
            opened.close()


def _gone(history: History, result: RunResult) -> None:
    """Who was there in the previous period and is not in this run, with their decisions and money."""
    ps = result.plan.checked.policy_set
    for entity, frame in result.frames_in.items():
        key = ps.key(entity)
        if key is None or key.name not in frame:
            continue
        wanted = [d.main.name for d in ps.decisions(entity)] + [f.name for f in ps.facts(entity).values() if f.measure]
        result.past.gone[entity] = history.gone_since(entity, result.past.periods[0], key.name, frame[key.name],
                                                      wanted)


def history_notes(history: History, period: str, policy_hash: str) -> list[str]:
    """What a run should know about the periods around it: a policy change, a period recorded out of order."""
    notes = []
    before = history.before(period, 1)
    if before:
        last = history.need_period(before[0])
        if last.policy_hash != policy_hash:
            notes.append(f"the policies changed since {last.period} (recorded with {last.policy_hash[:12]}, now "
                         f"{policy_hash[:12]}): some decisions may move because of the change, not the customers")
    later = [p for p in history.periods() if p > period]
    if later:
        notes.append(f"period {period} comes before {', '.join(later[:3])} (periods are ordered as text): "
                     "what those periods read with previous() stays as it was recorded")
    return notes


def _inside(target: OutputTarget, path: Path | None) -> bool:
    """Whether a file (a calibration, the report) is to be saved inside the output folder (it is then
    part of the set)."""
    return path is not None and Path(os.path.abspath(path)).parent in (target.real, Path(os.path.abspath(target.out)))


class _Run:
    """One `run_and_write`: what it has opened, so that a failure closes and removes all of it."""

    def __init__(self, request: RunRequest):
        self.request = request
        self.target: OutputTarget | None = None
        self.history: History | None = None
        self.new_history = False  # this run made the history file: a run that fails leaves none behind
        self.recorder: Recorder | None = None
        self.writer: EntityWriter | None = None

    def on_result(self, pl: Plan, r: EntityResult) -> None:
        """An entity is decided: record it (history) and start writing its file."""
        if self.recorder is not None:
            self.recorder.decided(pl, r)
        if self.writer is not None:
            self.writer.submit(r)

    def releases(self) -> bool:
        """Whether entities' vectors can go once their files are written: nothing reads them after
        the file (no history recording, report, workbook or surface that asked to keep them)."""
        return self.writer is not None and self.recorder is None and not self.request.keep_vectors

    def written(self, entity: str) -> bool:
        assert self.writer is not None
        return self.writer.written(entity)

    def open_history(self, pl: Plan, notes: list[str]) -> None:
        req = self.request
        assert req.history is not None and req.period is not None
        label = check_period(req.period)  # before the history is opened: a bad label creates no file
        self.new_history = not req.history.exists()
        self.history = History.open(req.history, write=True)
        self.history.check_new(label, req.replace)
        notes += self.history.notes + history_notes(self.history, req.period, pl.checked.policy_set.hash)
        recorded = {"backend": req.backend, "entities": list(req.entities), "calibration": req.calibration,
                    "output": str(req.out), "output_format": req.output_format}
        self.recorder = Recorder(self.history, req.period, recorded, req.replace)

    def fail(self) -> None:
        """Undo: stop the writer, abandon the staged set and the recording, remove a new history."""
        if self.writer is not None:
            self.writer.close()  # before its folder goes
        if self.target is not None:
            self.target.abandon()
        if self.recorder is not None:
            self.recorder.abandon()
        if self.history is not None:
            self.history.close()
            if self.new_history and self.request.history is not None:
                path = self.request.history
                for leftover in (path, path.with_name(path.name + ".wal")):
                    leftover.unlink(missing_ok=True)


def run_and_write(request: RunRequest, progress: Progress | None = None) -> RunDone:
    """`kam run`: decide every entity and replace the output folder with the decisions, their
    explanations and the manifest, as one set; record the period in the history, save the calibration
    and the report, with it. Broken invariants (unless allowed) raise `InvariantsBroken` and nothing
    is written; any failure leaves the previous output set, and no new history file, behind."""
    from ..batch.write import write_text_atomic
    from ..history.store import settle

    req = request
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []
    state = _Run(req)
    try:
        # before any work: what the request needs beyond the core package is installed
        for module, wanted in (("xlsxwriter", req.output_format == "xlsx"), ("matplotlib", req.report is not None)):
            if wanted:
                need(module)
        pl = compile_for_run(req.policies, req.entities)
        # before any fact is read: a bad --out fails at once (and a killed run's history is settled)
        state.target = target = OutputTarget(req.out, settle).prepare()
        if req.history is not None:
            # also before any fact is read: a period recorded already, or a history in use, fails at once
            state.open_history(pl, notes)
        # a workbook is written whole, at the end; the report reads the whole tables, rendered once
        if req.output_format != "xlsx" and req.report is None:
            assert target.staging is not None
            state.writer = EntityWriter(target.staging, req.output_format, req.csv_bom)
        timings["compile"] = round(time.perf_counter() - t_start, 4)
        if progress is not None:
            progress.start(3 * len(pl.entities) + 1)
        # read and decide each entity, render the texts, write each file
        result, files = decide_files(pl, req.data, req.inputs, timings, progress, backend=req.backend,
                                     facts=req.facts, calibration=req.calibration,
                                     save_calibration=req.save_calibration is not None, history=state.history,
                                     period=req.period, on_result=lambda r: state.on_result(pl, r),
                                     done_with=state.written if state.releases() else None)
        broken = result.violations()
        if broken and not req.allow_violations:
            raise InvariantsBroken(broken, "see `kam explain ID`; ")
        extra = {}
        inside = _inside(target, req.save_calibration)
        if inside and result.calibration is not None and req.save_calibration is not None:
            extra[req.save_calibration.name] = calibrations.dumps(result.calibration)
        page = None
        if req.report is not None:
            assert req.render_report is not None, "a report needs its renderer"
            if state.history is not None and result.past.periods:
                _gone(state.history, result)
            page = req.render_report(result)
            if _inside(target, req.report):
                extra[req.report.name] = page.encode("utf-8")
                page = None
        paths = write_run(result, files, target, req.output_format, timings, extra,
                          (lambda what: progress.step(what)) if progress else None, state.recorder,
                          bom=req.csv_bom, writer=state.writer)
        state.new_history = False  # the period is recorded with the output set: the history stays, whatever follows
        if req.save_calibration is not None and not inside and result.calibration is not None:
            calibrations.save(result.calibration, req.save_calibration)
        if page is not None and req.report is not None:
            write_text_atomic(req.report, page)
    except BaseException:
        state.fail()
        raise
    if state.history is not None:
        state.history.close()
    if result.past.periods:
        notes.append(f"previous() read {', '.join(result.past.periods)} from {req.history}")
    return RunDone(result, paths, target.manifest or {}, notes + result.past.notes, time.perf_counter() - t_start)


@dataclass
class DaskRequest:
    """One `kam run --engine dask`: folders of Parquet partitions in, partitioned Parquet out."""

    policies: Path
    data: Path | None
    inputs: dict[str, Path]
    out: Path
    entities: tuple[str, ...] = ()
    facts: FactsOptions | None = None
    allow_violations: bool = False
    scheduler: str | None = None  # an existing scheduler's address,
    scheduler_file: Path | None = None  # or the file a scheduler wrote its address into (dask-jobqueue,
    # dask-mpi), or Dask's own configuration (DASK_SCHEDULER_ADDRESS); else a local cluster of:
    workers: int = 2
    worker_memory: str = "2GiB"
    threads_per_worker: int = 1


@dataclass
class DaskDone:
    """What a Dask run did: its merged figures (counts, measures, rows, warnings, outputs)."""

    merged: dict[str, Any]
    notes: list[str]
    seconds: float
    plan: Plan  # the policies it ran (the summary formats their measures by their units)


def _dask_client(req: DaskRequest, distributed: Any) -> tuple[Any, Any, str]:
    """The client of the cluster the request names (and the local cluster made for it, if any), and
    what the manifest calls that cluster."""
    import logging

    import dask

    configured = dask.config.get("scheduler-address", None)
    if req.scheduler is not None:
        return distributed.Client(req.scheduler), None, req.scheduler
    if req.scheduler_file is not None:
        if not req.scheduler_file.is_file():
            raise InputError(Problem("usage", f"scheduler file {req.scheduler_file} does not exist",
                                     Location("command line"), "the file a Dask scheduler writes with "
                                     "--scheduler-file (dask-jobqueue, dask-mpi)"))
        client = distributed.Client(scheduler_file=str(req.scheduler_file))
        return client, None, f"{client.scheduler.address} (from {req.scheduler_file})"
    if configured:
        return distributed.Client(configured), None, f"{configured} (from Dask's configuration)"
    # the workers' own logs stay quiet: kam reports what matters on standard error
    logging.getLogger("distributed").setLevel(logging.ERROR)
    # the dashboard on a free port of this machine (where bokeh, which the kam[dask] extra brings, is installed)
    cluster = distributed.LocalCluster(n_workers=req.workers, threads_per_worker=req.threads_per_worker,
                                       processes=True, memory_limit=req.worker_memory,
                                       dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
    workers = f"{req.workers} worker{'s' if req.workers > 1 else ''}"
    threads = f"{req.threads_per_worker} thread{'s' if req.threads_per_worker > 1 else ''}"
    return distributed.Client(cluster), cluster, f"local ({workers} of {threads}, {req.worker_memory} each)"


def _dashboard(client: Any) -> str | None:
    """The address of the cluster's dashboard, or None where it has none."""
    try:
        return client.dashboard_link if client.scheduler_info().get("services", {}).get("dashboard") else None
    except Exception:  # a scheduler that does not say: no address rather than a failed run
        return None


def run_on_dask(request: DaskRequest, on_ready: Callable[[str | None], None] | None = None,
                on_part: Callable[[str, int, int], None] | None = None) -> DaskDone:
    """`kam run --engine dask`: partitions evaluated on a cluster, one output set swapped in as usual.
    `on_ready` hears the cluster's dashboard address (None: no dashboard) once it is up; `on_part` of
    each partition done (see `engine.engines.dask.run`)."""
    from ..engines import dask as dask_engine

    req = request
    t_start = time.perf_counter()
    target = None
    cluster = client = None
    try:
        distributed = need("dask.distributed")
        pl = compile_for_run(req.policies, req.entities)
        files = dask_engine.partition_files(pl, req.data, {e: str(p) for e, p in req.inputs.items()})
        target = OutputTarget(req.out).prepare()
        client, cluster, where = _dask_client(req, distributed)
        if on_ready is not None:
            on_ready(_dashboard(client))
        assert target.staging is not None
        done = dask_engine.run(pl, files, client, target.staging, req.facts, on_part=on_part)
        merged = dask_engine.merge(pl, done)
        broken = [r for r in merged["invariants"] if r.count]
        if broken and not req.allow_violations:
            raise InvariantsBroken(broken, "")
        # hashed by the workers as they read the partitions, counted from the Parquet footers: the
        # client never reads the data
        inputs_ = [{"entity": e, "path": str(p), "sha256": h, "rows": r} for e, ps_ in files.items()
                   for p, r, h in zip(ps_, done.entities[e]["rows"], done.entities[e]["sha256"])]
        manifest = run_manifest(
            pl, inputs_, merged["counts"], merged["measures"], [r.to_dict() for r in merged["invariants"]],
            merged["warnings"], {**done.timings, "total": round(time.perf_counter() - t_start, 4)},
            engine={"name": "dask", "scheduler": where})
        target.commit({}, "parquet", manifest, staged_outputs=merged["outputs"])
    except BaseException:
        if target is not None:
            target.abandon()
        raise
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    notes = load_past(pl, {}, None, None).notes  # no history on this engine (yet)
    return DaskDone(merged, notes, time.perf_counter() - t_start, pl)
