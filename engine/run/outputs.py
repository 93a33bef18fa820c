"""A run's output set: each entity's file written while the next is decided, the manifest, and the
history's period committed with the set (see `engine.batch.write.OutputTarget` for the swap)."""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

import pandas as pd

from ..batch import explain as explain_module
from ..batch.evaluate import EntityResult
from ..batch.explain import output_chunks
from ..batch.facts import file_sha256, release_memory
from ..batch.result import RunResult
from ..batch.workbook_out import run_sheets
from ..batch.write import OUTPUT_FORMATS, OutputTarget, Written, fault_point, write_chunks
from ..language.plan import Plan
from ..language.version import __version__

if TYPE_CHECKING:
    from ..history.recorder import Recorder

T = TypeVar("T")
# whether the next entity is evaluated while the previous one's file is written (see EntityWriter.submit)
OVERLAP = (os.cpu_count() or 1) > 1


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


class EntityWriter:
    """Writes each entity's output file into the staging folder as soon as the entity is decided,
    on a thread of its own, while the next entities are evaluated: the texts are rendered and
    written a slice of rows at a time (`explain.output_chunks`), so a big table's because texts are
    never all in memory, and evaluation (mostly one core's work) and writing share the machine."""

    def __init__(self, staging: Path, fmt: str, bom: bool = False):
        self.staging, self.fmt, self.bom = staging, fmt, bom
        self._thread = ThreadPoolExecutor(max_workers=1)
        self._texts = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
        self._ahead = ThreadPoolExecutor(max_workers=1)
        self.pending: dict[str, Future] = {}
        self.seconds = {"explain": 0.0, "write": 0.0}

    def name(self, entity: str) -> str:
        return f"{entity}_decisions{OUTPUT_FORMATS[self.fmt]}"

    def submit(self, result: EntityResult) -> None:
        """Start writing an entity's file, and go on to the next entity while it is written (on one
        core, wait for it). Rendering and writing a slice at a time keeps two cores busy only part of
        the time: evaluating the next entity beside them (joining the quotes to the customers is one
        core's work) took the 1M benchmark on 2 cores from 5.28 to 4.87 s, for about 150 MB more
        at the peak: 985 against 840 MiB, with the C library keeping freed blocks for reuse (see
        engine/surfaces/cli/allocator.py; before that, overlapping cost 190 MB over about 1 GiB)."""
        self.pending[result.entity] = self._thread.submit(self._write, result)
        if not OVERLAP:
            self.pending[result.entity].result()

    def written(self, entity: str) -> bool:
        """Whether an entity's file is written (its texts no longer read its vectors)."""
        pending = self.pending.get(entity)
        return pending is not None and pending.done() and pending.exception() is None

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

        written = write_chunks(read_ahead(timed(), self._ahead), self.staging / self.name(result.entity), self.fmt,
                               self.bom)
        self.seconds["write"] += time.perf_counter() - t0
        fault_point("staged-file")
        release_memory()
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
        self._ahead.shutdown(wait=True)
        self._texts.shutdown(wait=True)


def read_ahead(items: Iterator[T], pool: Executor) -> Iterator[T]:
    """The items of an iterator, the next one made on `pool` while the caller works on the current
    one: a slice's texts are rendered while the previous slice is compressed and written (both
    release the GIL), so the two overlap instead of taking turns."""
    end = object()
    pending = pool.submit(next, items, end)
    while True:
        item = pending.result()
        if item is end:
            return
        pending = pool.submit(next, items, end)
        yield item  # type: ignore[misc]


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

    # a workbook shows, beside the decisions, the facts and figures they read, the measures and the run
    run = run_sheets(result, records, recorder.period if recorder is not None else None) if fmt == "xlsx" else None
    try:
        paths = target.commit(frames, fmt, make_manifest, extra_files, on_file,
                              before_swap=before_swap if recorder is not None else None, bom=bom,
                              staged_outputs=staged, after_swap=recorder.finish if recorder is not None else None,
                              run=run)
        return {**paths, **{o["entity"]: target.out / o["path"] for o in staged}}
    except BaseException:
        if recorder is not None:
            recorder.abandon()
        raise
