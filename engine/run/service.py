"""The facade: wires the stages together. The CLI and the tests call these functions only."""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from .. import __version__
from ..batch.population import Calibration, build as build_calibration
from ..batch.result import InvariantReport, JoinReport, Past, RunResult, conflict_warning  # noqa: F401  (the facade)
from ..batch.facts import identifier_facts  # noqa: F401  (the facade)
from ..language.errors import InputError, Location, Problem, did_you_mean
from ..engines.durable import DurableBackend
from ..batch.evaluate import EntityResult, decide, evaluate_entity
from ..history.store import History, Recorder, needs_past
from ..language.plan import past_note
from ..batch import explain as explain_module
from ..batch.explain import Trace, output_chunks, trace_row
from ..language.compile import compile_docs, compile_policies  # noqa: F401  (part of the facade)
from ..language.plan import Plan
from ..batch.facts import FORMATS, FactsOptions, file_sha256, read_facts
from ..batch.write import OUTPUT_FORMATS, OutputTarget, Written, fault_point, write_chunks


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
            hint = f"name it {entity}s.csv (or .parquet/.jsonl/.xlsx) or pass --input {entity}=FILE"
            # a file of the right name in a format kam does not read (an old .xls, a .txt export)
            others = sorted(p.name for stem in (f"{entity}s", entity) for p in (data_dir.glob(f"{stem}.*") if data_dir
                            else []) if p.suffix.lower() not in FORMATS and p.is_file())
            if others:
                xls = next((o for o in others if o.lower().endswith(".xls")), None)
                hint = (f"{xls} is an old Excel file (.xls): open it in Excel and save it as .xlsx (Excel Workbook)"
                        if xls else f"{others[0]} is in a format kam does not read: save it as .csv, .xlsx, .parquet "
                        f"or .jsonl, or pass --input {entity}=FILE with --facts-format if it is one of these")
            problems.append(Problem("input-missing-file", f"no facts file for entity `{entity}`{where}",
                                    Location(str(data_dir or "command line")), hint))
        else:
            out[entity] = found
    if problems:
        raise InputError(problems)
    return out


def read_inputs(pl: Plan, inputs: dict[str, Path], options: FactsOptions | str | None = None,
                on_read: Callable[[str], None] | None = None) -> dict[str, pd.DataFrame]:
    """Read and check the facts of every entity; all problems of all files together."""
    ps = pl.checked.policy_set

    def read_one(entity: str) -> pd.DataFrame | InputError:
        try:
            return read_facts(inputs[entity], ps.facts(entity), options, identifier_facts(pl, entity), entity)
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


def input_records(result: RunResult, inputs: dict[str, Path]) -> list[dict[str, Any]]:
    """Per facts file: entity, path, content hash and rows (for the manifest and the history)."""
    return [{"entity": e, "path": str(p), "sha256": file_sha256(p), "rows": int(len(result.frames_in[e]))}
            for e, p in inputs.items()]


def manifest(result: RunResult, inputs: dict[str, Path] | list[dict[str, Any]], timings: dict[str, float],
             history: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run manifest: versions, hashes, counts and timings (and where the run was recorded)."""
    return run_manifest(result.plan, input_records(result, inputs) if isinstance(inputs, dict) else inputs,
                        result.counts(), result.measures(), [i.to_dict() for i in result.invariants()],
                        result.warnings() + result.conflicts(), timings, history=history)


def run_manifest(pl: Plan, inputs: list[dict[str, Any]], counts: dict[str, Any], measures: dict[str, Any],
                 invariants: list[dict[str, Any]], warnings: list[str], timings: dict[str, float], *,
                 engine: dict[str, Any] | None = None, history: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of a run by any engine (the pandas engine's result, or the Dask engine's merged
    figures): one layout, one order of keys."""
    ps = pl.checked.policy_set
    out: dict[str, Any] = {
        "kam_version": __version__,
        "policy_set": {"directory": ps.directory, "sha256": ps.hash, "policies": [p.name for p in ps.policies]},
    }
    if engine is not None:
        out["engine"] = engine
    out.update({"inputs": inputs, "decision_counts": counts, "measures": measures, "invariants": invariants,
                "warnings": warnings})
    if history is not None:
        out["history"] = history
    out["timings_seconds"] = timings
    return out


def load_past(pl: Plan, frames: dict[str, pd.DataFrame], history: "History | None", period: str | None) -> Past:
    """The earlier values the run's `previous()` calls read: from the history, or missing for everyone."""
    if not needs_past(pl):
        return Past()
    if history is None:
        return Past(notes=[f"no --history: previous() is missing for everyone ({past_note(pl)})"])
    keys = {ep.entity: frames[ep.entity][ep.key] for ep in pl.entities if ep.past}
    return history.load_past(pl, period, keys)


class EntityWriter:
    """Writes each entity's output file into the staging folder as soon as the entity is decided,
    on a thread of its own, while the next entities are evaluated: the texts are rendered and
    written a slice of rows at a time (`explain.output_chunks`), so a big table's because texts are
    never all in memory, and evaluation (mostly one core's work) and writing share the machine."""

    def __init__(self, staging: Path, fmt: str, bom: bool = False):
        self.staging, self.fmt, self.bom = staging, fmt, bom
        self._thread = ThreadPoolExecutor(max_workers=1)
        self._texts = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
        self.pending: dict[str, Future] = {}
        self.seconds = {"explain": 0.0, "write": 0.0}

    def name(self, entity: str) -> str:
        return f"{entity}_decisions{OUTPUT_FORMATS[self.fmt]}"

    def submit(self, result: EntityResult) -> None:
        self.pending[result.entity] = self._thread.submit(self._write, result)

    def _write(self, result: EntityResult) -> Written:
        t0 = time.perf_counter()
        chunks = output_chunks(result, self._texts, explain_module.CHUNK_ROWS)

        def timed() -> Iterator[pd.DataFrame]:
            while True:
                t = time.perf_counter()
                chunk = next(chunks, None)
                self.seconds["explain"] += time.perf_counter() - t
                if chunk is None:
                    return
                yield chunk

        written = write_chunks(timed(), self.staging / self.name(result.entity), self.fmt, self.bom)
        self.seconds["write"] += time.perf_counter() - t0
        fault_point("staged-file")
        return written

    def finish(self) -> list[dict[str, Any]]:
        """Wait for every file; the manifest's entries for them (an error in a writer is raised here)."""
        try:
            done = {e: f.result() for e, f in self.pending.items()}
            return [{"entity": e, "path": self.name(e), "rows": w.rows,
                     "sha256": file_sha256(self.staging / self.name(e)), **w.record()} for e, w in done.items()]
        finally:
            self.close()

    def close(self) -> None:
        """Stop: what is being written is finished, nothing more is started (before the staging
        folder is abandoned)."""
        for f in self.pending.values():
            f.cancel()
        self._thread.shutdown(wait=True)
        self._texts.shutdown(wait=True)


def write_run(result: RunResult, inputs: dict[str, Path], target: OutputTarget, fmt: str,
              timings: dict[str, float], extra_files: dict[str, bytes] | None = None,
              on_step: Callable[[str], None] | None = None, recorder: "Recorder | None" = None,
              bom: bool = False, writer: EntityWriter | None = None) -> dict[str, Path]:
    """Render the outputs and replace the output folder with them and the manifest, as one set.

    With a `recorder`, the period is written into the history while the files are written, and
    committed just before the output folder is swapped in, with a note of the set that is removed once
    the set is in place (a failure or a kill in between is settled by the next user of either: see
    `History._settle`).
    With a `writer`, the files were written into the staging folder already, entity by entity.
    `timings` gets `explain` (rendering the texts), `write` (writing the files; the manifest itself
    is written after it, so its own few milliseconds are not in it) and `history` (recording)."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as hashing:  # hashing the inputs releases the GIL
        pending = hashing.submit(input_records, result, inputs)
        if writer is not None:
            staged = writer.finish()
            timings["explain"] = round(writer.seconds["explain"], 4)
            timings["write"] = round(writer.seconds["write"] - writer.seconds["explain"], 4)
            frames: dict[str, pd.DataFrame] = {}
        else:
            staged = []
            frames = result.outputs()
            timings["explain"] = round(time.perf_counter() - t0, 4)
        if on_step:
            on_step("explained")
        records = pending.result()
    if recorder is not None:
        recorder.finished(result, records)
    t0 = time.perf_counter()

    def on_file(entity: str) -> None:
        timings["write"] = round(time.perf_counter() - t0, 4)
        if on_step:
            on_step(f"wrote {entity}")

    def make_manifest() -> dict[str, Any]:
        if recorder is not None:
            recorder.wait()  # the history's own errors come before the manifest is made
            timings["history"] = recorder.seconds
        return manifest(result, records, timings, recorder.summary() if recorder is not None else None)

    def before_swap() -> None:
        # the period and the output set commit as one: the period first, with a note of the set
        assert recorder is not None
        target.note_history(recorder.history.path)
        recorder.commit(target.real, file_sha256(target.staged_manifest))

    try:
        paths = target.commit(frames, fmt, make_manifest, extra_files, on_file,
                              before_swap=before_swap if recorder is not None else None, bom=bom,
                              staged_outputs=staged, after_swap=recorder.finish if recorder is not None else None)
        return {**paths, **{o["entity"]: target.out / o["path"] for o in staged}}
    except BaseException:
        if recorder is not None:
            recorder.abandon()
        raise


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
