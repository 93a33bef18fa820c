"""The recorder: one run's period written into the history in a thread of its own while the run goes on."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..batch.result import Past
from ..language.plan import Plan
from .store import History, yield_to_run
from .tables import history_problem

if TYPE_CHECKING:
    from ..batch.evaluate import EntityResult
    from ..batch.result import RunResult


class Recorder:
    """Records one run's period while the run goes on: each entity's rows as soon as it is decided,
    in one background thread (DuckDB sorts, compresses and writes while the engine decides the next
    entity, renders the texts and writes the files), all in one transaction that `commit` ends right
    before the output folder is swapped in, with a note of that output set that `finish` removes
    once it is in place (see `History._settle` in engine.history.store)."""

    def __init__(self, history: History, period: str, options: dict[str, Any], replace: bool = False):
        self.history = history
        self.period = period
        self.label = history.label_for(period)
        self.options = options
        self.replace = replace
        self.past = Past()
        self.seconds = 0.0  # time the recording thread was busy
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._rows: dict[str, int] = {}
        self._committed = False
        _ = history.w  # the recording connection is made here, before its thread starts (DuckDB's own rule)
        self._thread = threading.Thread(target=self._work, name="kam-history", daemon=True)
        self._thread.start()
        self._queue.put(lambda: history.begin(period, self.label, replace))

    def _work(self) -> None:
        yield_to_run({threading.get_native_id()})
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is not None:
                continue  # after a failure the rest is skipped; wait() reports it
            t0 = time.perf_counter()
            try:
                job()
            except BaseException as exc:  # handed to the main thread by wait()
                self._error = exc
                self.history.rollback()
            finally:
                self.seconds = round(self.seconds + time.perf_counter() - t0, 4)

    def decided(self, pl: Plan, r: EntityResult) -> None:
        """An entity is decided: its rows can be written."""
        self._rows[r.entity] = r.ctx.n
        self._queue.put(lambda: self.history.insert_entity(pl, r, self.label))

    def finished(self, result: "RunResult", inputs: list[dict[str, Any]]) -> None:
        """Every entity is decided: the run's own row closes the period."""
        self.past = result.past
        self._queue.put(lambda: self.history.insert_run(result.plan, result.results, self.label, inputs,
                                                        self.options))

    def wait(self, raise_error: bool = True) -> None:
        """Wait until everything submitted is written; raise the recording's error (once) unless told not to."""
        import duckdb

        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if raise_error and self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, duckdb.Error):
                raise history_problem(f"cannot record period {self.period} in the history {self.history.path}: "
                                      f"{str(error).splitlines()[0]}") from error
            raise error

    def commit(self, out: Path, manifest_sha256: str) -> None:
        """Everything is staged: commit the period with the note of its output set (folder and manifest)."""
        from ..batch.write import fault_point

        self.wait()
        self.history.commit_pending(self.period, self.label, out, manifest_sha256)
        self._committed = True
        fault_point("history-committed")

    def finish(self) -> None:
        """The output set is in place: the period is recorded for good."""
        self.history.finish_pending()
        self._committed = False

    def abandon(self) -> None:
        """The run failed: nothing of the period stays, unless its output set is in place already."""
        self.wait(raise_error=False)
        if self._committed:
            self.history._settle()
            self._committed = False
        else:
            self.history.rollback()

    def summary(self) -> dict[str, Any]:
        """What the manifest says of the history."""
        return {"file": str(self.history.path), "period": self.period, "replaced": self.replace,
                "previous_periods": self.past.periods, "notes": self.past.notes, "rows": self._rows}
