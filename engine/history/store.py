"""The decision history across runs, kept in one DuckDB file.

`kam run --history FILE --period LABEL` appends the run: one row in `kam_runs` (period, time,
policy-set hash and the policy files themselves, inputs, options, what each entity table holds)
and, per entity, one row per entity in `<entity>_history`: its facts, joined values, features,
decided values and rule ids (plus the quota ranks its texts quote), under the names of the output
files plus `kam_period`. A later question ("why was she A in March") is answered from the history
alone: the because texts are rendered again from the stored values with the policies of that
period, so they read exactly as that run's output files did, and the past values that `previous()`
reads come from it.

The whole period is one transaction, committed just before the output folder is swapped in: a
killed run leaves the history without that period, never half of it. Periods are ordered as text,
so labels must sort in time order (2026-09, 2026-10, 2026-11; 2026-Q1).

The file is a plain DuckDB database: `duckdb history.duckdb "select * from customer_history"`.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..batch.facts import file_sha256
from ..language.errors import InputError
from ..language.version import __version__
from .past import PastReading
from .reading import Reading
from .recording import Recording
from .tables import FORMAT, META, RUNS, history_problem

if TYPE_CHECKING:
    pass

PERIOD_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")


def check_period(label: str) -> str:
    """A period label: letters, digits, `-`, `_` and `.`, up to 64; ordered as text."""
    if not PERIOD_PATTERN.fullmatch(label):  # `$` alone lets a final newline through
        # as Python writes it (quoted, control characters escaped): a newline in it would break the message
        shown_ = repr(label) if len(label) <= 64 else f"{repr(label[:60])[:-1]}… ({len(label):,} characters)"
        raise history_problem(f"{shown_} is not a period label kam can keep",
                              "write the period so that labels sort in time order, e.g. 2026-11 or 2026-Q4 "
                              "(letters, digits, - _ and ., at most 64)")
    return label



class History(Reading, PastReading, Recording):
    """One history file, open for reading (queries) or for one run to record a period."""

    @classmethod
    def open(cls, path: Path, write: bool = False) -> "History":
        """Open (and, for writing, create) a history. Only one process may write at a time. A period
        left half-done by a run that was stopped is settled first (see `_settle`)."""
        from ..batch.extras import need

        duckdb = need("duckdb")
        path = Path(path)
        if not write and not path.exists():
            raise history_problem(f"there is no history at {path}",
                                  "record one with `kam run --history FILE --period LABEL`")
        if path.is_dir():
            raise history_problem(f"{path} is a folder, not a history file", "pass the path of a .duckdb file")
        if write:
            _check_writable(path)
        _check_not_other_database(path)
        threads_before = _threads()
        try:
            # never fetch or load an extension: a file that is not a DuckDB database is refused, not
            # handed to a reader downloaded from the internet
            con = duckdb.connect(str(path), read_only=not write,
                                 config={"autoload_known_extensions": False, "autoinstall_known_extensions": False})
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise history_problem(f"the history {path} is in use by another kam process",
                                      "wait for the other run to finish: a history is written by one run at a "
                                      "time") from None
            raise history_problem(f"cannot open the history {path}: {str(exc).splitlines()[0]}") from None
        except duckdb.Error as exc:
            raise history_problem(f"{path} is not a kam history (DuckDB cannot read it: {str(exc).splitlines()[0]})",
                                  "pass the file written by `kam run --history`") from None
        if write:
            # rows of a period need no order: DuckDB then writes them straight into the file, compressed,
            # in parallel, instead of through its write-ahead log (measured: the close after a
            # million-row period drops from 2.4 s to 0.06 s, and the file to half its size)
            con.execute("SET preserve_insertion_order = false")
            # a period fills whole row groups but its last: merging those small last ones into
            # neighbours at every close cost 0.27 s per run and saves a few kilobytes (a replaced
            # period's deleted rows are still reclaimed: `begin` turns the merging back on then)
            con.execute("SET max_vacuum_tasks = 0")
            # DuckDB's worker threads: those that appeared meanwhile, but for Python's own (a thread pool
            # of the run started by then keeps its priority)
            yield_to_run(_threads() - threads_before - {t.native_id for t in threading.enumerate()})
        h = cls(con, path, write)
        try:
            h._check_format()
            if write:
                h._settle()
            elif META in h._tables() and h._pending() is not None:
                con.close()
                return cls._settled_then_read(path)
        except BaseException:
            con.close()
            raise
        return h

    @classmethod
    def _settled_then_read(cls, path: Path) -> "History":
        """A history opened for reading that holds a period half-done by a stopped run: settled with a
        writable connection first, then opened for reading."""
        try:
            with cls.open(path, write=True) as w:
                notes = w.notes
        except InputError as exc:
            raise history_problem(f"the history {path} holds a period that a stopped run left half-done, and kam "
                                  f"cannot write to it to settle it ({exc.problems[0].message})",
                                  "make the file and its folder writable and run the command again") from None
        h = cls.open(path)
        h.notes = notes
        return h

    def close(self) -> None:
        if self._recording:
            self.rollback()
        if self._writer is not None:
            self._writer.close()
        self.con.close()

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_format(self) -> None:
        tables = self._tables()
        if META not in tables:
            if tables:
                raise history_problem(f"{self.path} is a DuckDB file, but not a kam history",
                                      "pass another file, or a new name to start a history")
            if self.writable:
                self.con.execute(f"CREATE TABLE {META} (key VARCHAR PRIMARY KEY, value VARCHAR)")
                self.con.execute(f"INSERT INTO {META} VALUES ('format', ?), ('created_by', ?)",
                                 [FORMAT, f"kam {__version__}"])
                self.con.execute(f"""CREATE TABLE {RUNS} (
                    period VARCHAR PRIMARY KEY, recorded_at VARCHAR, policy_hash VARCHAR, kam_version VARCHAR,
                    inputs VARCHAR, options VARCHAR, entities VARCHAR, policies VARCHAR)""")
            return
        # fetchall: DuckDB 2 keeps a result open after a fetchone and refuses the next query
        rows = self.con.execute(f"SELECT value FROM {META} WHERE key = 'format'").fetchall()
        found = rows[0] if rows else None
        if found is None or found[0] != FORMAT:
            raise history_problem(f"the history {self.path} was written in format {found[0] if found else '?'}; "
                                  f"this kam reads format {FORMAT}", "use the kam version that wrote it")

    def _settle(self) -> None:
        """Settle the period of a run killed between recording it and swapping its output set in."""
        note = self._pending()
        if note is None:
            return
        manifest = Path(note["out"]) / "manifest.json"
        try:
            swapped = file_sha256(manifest) == note["manifest_sha256"]
        except OSError:
            swapped = False
        if swapped:
            self.finish_pending()
            self.notes.append(f"the run that recorded period {note['period']} was stopped after swapping in its "
                              f"output set ({note['out']}): the period is kept")
        else:
            self.undo_pending()
            self.notes.append(f"the run that recorded period {note['period']} was stopped before its output set "
                              f"was swapped in ({note['out']} holds the set before it): the period is taken out "
                              "of the history again" + (" and the period it was to replace is kept"
                                                         if note["label"] != note["period"] else ""))


def _check_writable(path: Path) -> None:
    """Before a run reads any fact: the history and its folder can be written (DuckDB writes a
    journal, `<name>.wal`, beside the file), or a message now instead of a failure after the work."""
    folder = path.absolute().parent
    if not folder.is_dir():
        raise history_problem(f"the folder of {path} does not exist", "create it first")
    if path.exists() and not os.access(path, os.W_OK):
        raise history_problem(f"the history {path} is read-only: kam cannot record a period in it",
                              "make it writable (chmod u+w), or pass another --history")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise history_problem(f"cannot write the history {path}: its folder {folder} is read-only (DuckDB keeps a "
                              f"journal, {path.name}.wal, beside the file while it writes)",
                              "make the folder writable, or keep the history in a folder you can write to")


_OTHER_DATABASES = {b"SQLite format 3\x00": "a SQLite database", b"PAR1": "a Parquet file", b"PK\x03\x04": "a zip file"}


def _check_not_other_database(path: Path) -> None:
    """A file that is plainly something else is named as such (DuckDB would try to load a reader for it)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError:
        return
    for magic, what in _OTHER_DATABASES.items():
        if head.startswith(magic):
            raise history_problem(f"{path} is {what}, not a DuckDB history file", "pass the file written by "
                                  "`kam run --history`, or a new name to start a history")


def _threads() -> set[int]:
    """The ids of this process's threads (none where the system does not list them)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def yield_to_run(threads: set[int]) -> None:
    """Lower the scheduling priority of the threads that record a history. The recording runs beside
    the run (on a 2-core machine the run itself keeps about one core busy) and only has to be done by
    the end: at equal priority it took half the CPU from the texts and files and slowed them by 60%;
    at low priority it fills the idle core instead. (Linux sets priorities per thread; elsewhere this
    does nothing.)"""
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, 10)
        except (OSError, AttributeError):
            pass


def settle(path: Path) -> None:
    """Settle a history that a killed run was recording into (opening it for writing does)."""
    if Path(path).exists():
        History.open(path, write=True).close()
