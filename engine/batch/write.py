"""Stage 8, write: the output set (one file per entity, the manifest, optionally a calibration),
replaced as a whole.

An output folder only ever holds one complete set. A run writes its set into a new folder next to
the output folder (`.<name>.kam-<token>`), flushes it to disk, then swaps the two folders in one
step (Linux `renameat2(RENAME_EXCHANGE)`), and only then deletes the previous set. A reader of the
output folder therefore finds either the complete previous set or the complete new one, with the
manifest that describes the files beside it, whenever the writer is stopped, even by `kill -9`.
A lock file held while a run works marks its folders as alive; the next run deletes what a killed
run left (and, where the swap had to be done in two renames, puts a previous set back in place).

Files follow the umask like any other file, and the folder keeps the permissions it had.

Formats carry the same values: numbers in CSV and JSON Lines exactly as `engine.language.numbers` writes
them (shortest round-trip form, whole numbers without `.0`), lists of a `collect` decision as lists
in Parquet and JSON Lines and as `a, b` in CSV. The workbook (`--output-format xlsx`) is
`engine.batch.workbook_out`'s.
"""

from __future__ import annotations

import codecs
import ctypes
import errno
import fcntl
import json
import os
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..language.errors import InputError, Location, Problem
from ..language.numbers import list_text
from .facts import file_sha256, shown
from .number_columns import number_texts
from .text_columns import is_list_column, list_codes, write_texts
from .workbook_out import RunSheets, write_workbook

OUTPUT_FORMATS = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl", "xlsx": ".xlsx"}
WORKBOOK = "decisions.xlsx"  # --output-format xlsx: one workbook, a sheet per entity and a summary
MANIFEST = "manifest.json"
SHOW_FOREIGN = 5

# Tests stop the writer at these points (`KAM_KILL_AT=name[:count]` kills the process with SIGKILL
# the count-th time the point is reached) to check that the output folder is never torn.
KILL_ENV = "KAM_KILL_AT"


def fault_point(name: str) -> None:
    """A place where a test may kill the writer; does nothing unless KAM_KILL_AT names it."""
    target = os.environ.get(KILL_ENV)
    if not target:
        return
    point, _, count = target.partition(":")
    if point != name:
        return
    _HITS[name] = _HITS.get(name, 0) + 1
    if _HITS[name] >= int(count or 1):
        os.kill(os.getpid(), 9)


_HITS: dict[str, int] = {}


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """One file written next to its place and renamed into it: readers see the old file or the new one."""
    if not path.absolute().parent.is_dir():
        raise _usage(f"the folder of {path} does not exist", "create it first", path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


# -- the output folder -------------------------------------------------------------------------------

def _is_kam_output(folder: Path, name: str, listed: set[str]) -> bool:
    """Files kam itself puts in an output folder (now or in earlier versions)."""
    if name == MANIFEST or name in listed:
        return True
    stem, dot, ext = name.rpartition(".")
    if dot and f".{ext}" in OUTPUT_FORMATS.values() and stem.endswith("_decisions"):
        return True
    if name.endswith(".json"):  # a calibration an earlier kam saved here without listing it
        try:
            with (folder / name).open("rb") as fh:
                head = fh.read(200)
            return head.startswith(b'{"format": ') and b'"kam_version"' in head
        except OSError:
            return False
    return name.startswith(".") and name.endswith(".tmp")  # an older kam's temporary files


def _is_output_set(folder: Path) -> bool:
    """Whether a folder holds an output set (a manifest that kam wrote)."""
    try:
        with (folder / MANIFEST).open("rb") as fh:
            head = fh.read(200)
    except OSError:
        return False
    return head.startswith(b"{") and b'"kam_version"' in head


def _free_folder(out: Path, beside: Path) -> Path:
    """A folder next to `beside` that nothing uses yet, for a hint (relative where --out was)."""
    names = ["decisions", "kam-out"] + [f"{beside.name}-{i}" for i in range(2, 100)]
    candidate = next((beside.parent / n for n in names if not (beside.parent / n).exists()),
                     beside.parent / f"{beside.name}-{secrets.token_hex(2)}")
    return candidate if Path(out).is_absolute() else Path(os.path.relpath(candidate))


def _listed(folder: Path) -> set[str]:
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return {str(o["path"]).rstrip("/") for o in doc.get("outputs", []) + doc.get("extra_files", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def _usage(message: str, hint: str, where: Path) -> InputError:
    return InputError(Problem("output-folder", message, Location(str(where)), hint))


@dataclass
class OutputTarget:
    """The output folder of one run, checked and reserved before any fact is read.

    `prepare` checks that the folder can be replaced (it is a folder or absent, kam wrote what is in
    it, the folder around it is writable), takes a lock and makes the empty staging folder;
    `commit` writes the set there and swaps it in; `abandon` removes the staging folder.
    """

    out: Path
    settle_history: Callable[[Path], None] | None = None  # see clean_leftovers
    real: Path = field(init=False)
    token: str = field(init=False, default="")
    staging: Path | None = field(init=False, default=None)
    manifest: dict[str, Any] | None = field(init=False, default=None)  # the manifest of the set swapped in
    lock_path: Path | None = field(init=False, default=None)
    _lock_fd: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.real = Path(os.path.abspath(self.out))
        if self.real.is_symlink() or (self.real.exists() and self.real.resolve() != self.real):
            self.real = self.real.resolve()

    @property
    def prefix(self) -> str:
        return f".{self.real.name}.kam-"

    def prepare(self) -> "OutputTarget":
        out, real = self.out, self.real
        if real.exists() and not real.is_dir():
            raise _usage(f"--out {out} is a file, not a folder",
                         f"give a folder for the decisions, e.g. --out {_free_folder(out, real)}", out)
        if real.parent == real:
            raise _usage(f"--out {out} is the root of the file system", "give a folder of its own", out)
        outer = next((p for p in real.parents if _is_output_set(p)), None)
        if outer is not None:
            raise _usage(f"--out {out} is inside the output set {outer} (it holds {outer / MANIFEST})",
                         f"kam replaces an output folder as a whole, so the next run into {outer} would find this "
                         f"one in its way; give this run a folder outside it, e.g. --out {_free_folder(out, outer)}",
                         out)
        if real.is_dir():
            self._refuse_foreign(out, real)
        try:
            real.parent.mkdir(parents=True, exist_ok=True)
            self.token = f"{os.getpid()}-{secrets.token_hex(4)}"
            # the lock is taken under another name and then renamed, so that no other run ever sees
            # this run's lock file unlocked (and takes the run for a dead one)
            locking = real.parent / f"{self.prefix}{self.token}.locking"
            self._lock_fd = os.open(locking, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.lock_path = real.parent / f"{self.prefix}{self.token}.lock"
            os.rename(locking, self.lock_path)
            self.staging = real.parent / f"{self.prefix}{self.token}"
            os.mkdir(self.staging)
        except OSError as exc:
            self.abandon()
            raise _usage(f"cannot write the output folder {out}: {exc.strerror or exc}",
                         f"kam builds the new set next to it and swaps it in, so {real.parent} must be writable; "
                         "choose --out inside a folder you can write to", out) from None
        busy = self._other_run()
        if busy:
            self.abandon()
            raise _usage(f"another kam run (process {busy}) is writing the output folder {out} right now",
                         "wait for it to finish, or give this run another --out: two runs into one folder would "
                         "leave only the last one's set", out)
        # an empty folder goes whatever its mode (removing it is its parent's business); files need it writable
        if real.is_dir() and not os.access(real, os.W_OK | os.X_OK) and any(real.iterdir()):
            self.abandon()
            raise _usage(f"cannot replace the output folder {out}: it is read-only, so the files of its previous "
                         "set cannot be removed", "make it writable, or choose another --out", out)
        clean_leftovers(real, self.settle_history)
        return self

    def _refuse_foreign(self, out: Path, real: Path) -> None:
        """An output folder holds only what kam wrote there: other files, or the output sets of other
        runs, would go with the next swap."""
        listed = _listed(real)
        foreign = sorted(p.name for p in real.iterdir() if not _is_kam_output(real, p.name, listed))
        if not foreign:
            return
        sets = [name for name in foreign if _is_output_set(real / name)]
        others = [name for name in foreign if name not in sets]

        def names(items: list[str]) -> str:
            more = f" and {len(items) - SHOW_FOREIGN} more" if len(items) > SHOW_FOREIGN else ""
            return ", ".join(items[:SHOW_FOREIGN]) + more

        what = []
        if sets:
            what.append(f"the output sets of other runs ({names([f'{n}/' for n in sets])})")
        if others:
            what.append(f"files kam did not write ({names(others)})")
        raise _usage(f"--out {out} holds {' and '.join(what)}",
                     "kam replaces the whole output folder at every run (so it never holds a mix of two runs), "
                     f"which would delete them; give this run a folder of its own, e.g. --out "
                     f"{_free_folder(out, real)}", out)

    def _other_run(self) -> str | None:
        """The process of another run working on the same output folder (its lock is held), if any."""
        assert self.lock_path is not None
        for lock in sorted(self.real.parent.glob(f"{self.prefix}*.lock")):
            if lock == self.lock_path:
                continue
            try:
                fd = os.open(lock, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return lock.name[len(self.prefix):].split("-")[0]
            finally:
                os.close(fd)  # closing releases a lock taken here: the run it belonged to is dead
        return None

    def commit(self, frames: dict[str, pd.DataFrame], fmt: str,
               manifest: dict[str, Any] | Callable[[], dict[str, Any]],
               extra_files: dict[str, bytes] | None = None,
               on_file: Callable[[str], None] | None = None,
               before_swap: Callable[[], None] | None = None, bom: bool = False,
               staged_outputs: list[dict[str, Any]] | None = None,
               after_swap: Callable[[], None] | None = None, run: RunSheets | None = None) -> dict[str, Path]:
        """Write every file into the staging folder, then swap it in for the output folder.

        `manifest` (or a function making it once the files are written) gets the list of outputs;
        `before_swap` runs once everything is staged, right before the swap (an error there leaves the
        output folder as it was). `bom` starts CSV files with a UTF-8 byte order mark (for Excel).
        `staged_outputs` lists outputs others wrote into the staging folder already (the Dask
        workers' partitions): they are listed in the manifest and swapped in with the rest.
        `after_swap` runs once the new set is in place. `run`: what a workbook (`xlsx`) shows beside the
        decisions (`workbook_out.run_sheets`)."""
        assert self.staging is not None, "prepare() first"
        staging, real = self.staging, self.real
        ext = OUTPUT_FORMATS[fmt]
        names = {entity: WORKBOOK if fmt == "xlsx" else f"{entity}_decisions{ext}" for entity in frames}

        written: dict[str, Written] = {}

        def write_one(entity: str) -> None:
            written[entity] = write_frame(frames[entity], staging / names[entity], fmt, bom)
            fault_point("staged-file")
            if on_file:
                on_file(entity)

        if fmt == "xlsx":
            write_workbook(frames, staging / WORKBOOK, run)
            fault_point("staged-file")
            for entity in frames:
                if on_file:
                    on_file(entity)
        else:
            # the files are independent; writers release the GIL while encoding and compressing
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
                list(pool.map(write_one, frames))
        for name, data in (extra_files or {}).items():
            (staging / name).write_bytes(data)
        manifest = dict(manifest() if callable(manifest) else manifest)
        manifest["outputs"] = [{"entity": e, "path": names[e], **({"sheet": e} if fmt == "xlsx" else {}),
                                "rows": int(len(frames[e])), "sha256": file_sha256(staging / names[e]),
                                **written.get(e, Written()).record()}
                               for e in frames]
        manifest["outputs"] += staged_outputs or []
        if extra_files:
            manifest["extra_files"] = [{"path": name, "sha256": file_sha256(staging / name)} for name in extra_files]
        manifest["identity_sha256"] = identity(manifest)
        self.manifest = manifest
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=_json_default)
                                        + "\n", encoding="utf-8")
        fault_point("staged-manifest")
        for p in staging.rglob("*"):
            _fsync(p)
        if real.is_dir():
            _keep_mode(real, staging)
        _fsync(staging)
        if before_swap is not None:
            before_swap()
        swap_in(staging, real)
        _fsync(real.parent)
        fault_point("swapped")
        if after_swap is not None:
            after_swap()
        # the staging path now holds the previous set (or nothing, on a first run)
        _remove_tree(staging)
        self.staging = None
        self._unlock()
        return {e: self.out / names[e] for e in frames}

    @property
    def staged_manifest(self) -> Path:
        assert self.staging is not None, "prepare() first"
        return self.staging / MANIFEST

    def note_history(self, history: Path) -> None:
        """Say in the run's lock file which history records this set, so that whoever cleans up after
        this run, should it be killed, settles that history first (see `clean_leftovers`)."""
        assert self.lock_path is not None, "prepare() first"
        with open(self.lock_path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"history": os.path.abspath(history)}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def abandon(self) -> None:
        """Remove what this run staged (after an error); the output folder is untouched."""
        if self.staging is not None:
            _remove_tree(self.staging)
            self.staging = None
        self._unlock()

    def _unlock(self) -> None:
        if self.lock_path is not None:
            self.lock_path.unlink(missing_ok=True)
            self.lock_path = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def clean_leftovers(real: Path, settle_history: Callable[[Path], None] | None = None) -> None:
    """Remove the folders of runs that were killed (their lock is free), restoring a previous set
    that a two-step swap had moved aside when the output folder is missing. A killed run that was
    recording a history (its lock file names it) has that history settled first by `settle_history`
    (`history.settle`), while the output folder still shows whether the run's set was swapped in."""
    prefix = f".{real.name}.kam-"
    for locking in sorted(real.parent.glob(f"{prefix}*.locking")):  # killed while taking its lock
        fd = os.open(locking, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locking.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)
    for lock in sorted(real.parent.glob(f"{prefix}*.lock")):
        fd = os.open(lock, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a run still working
            base = lock.name[: -len(".lock")]
            aside = real.parent / f"{base}-previous"
            if aside.is_dir() and not real.exists():
                os.rename(aside, real)
            if settle_history is not None:
                _settle_history_of(lock, settle_history)
            for leftover in (real.parent / base, aside):
                if leftover.exists():
                    _remove_tree(leftover)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _settle_history_of(lock: Path, settle_history: Callable[[Path], None]) -> None:
    try:
        note = json.loads(lock.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return
    if isinstance(note, dict) and note.get("history"):
        try:
            settle_history(Path(note["history"]))
        except InputError:
            pass  # in use (its user settled it on opening), or gone: nothing to settle from here


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in(staging: Path, real: Path) -> None:
    """Make `staging` the output folder; the previous set ends up at the staging path."""
    if not real.exists():
        os.rename(staging, real)  # atomic: nothing was there
        staging.mkdir()
        return
    if _exchange(staging, real):
        return
    # no atomic exchange on this system: move the previous set aside first; a run killed between
    # the two renames leaves no output folder, and the next run puts the previous set back
    aside = staging.with_name(staging.name + "-previous")
    os.rename(real, aside)
    fault_point("moved-aside")
    os.rename(staging, real)
    os.rename(aside, staging)


def _remove_tree(path: Path) -> None:
    for child in sorted(path.iterdir()) if path.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
        fault_point("removing-previous")
    if path.is_dir():
        path.rmdir()


def _keep_mode(old: Path, new: Path) -> None:
    """The new folder gets the permissions and group the output folder had."""
    st = old.stat()
    os.chmod(new, st.st_mode & 0o7777)
    try:
        os.chown(new, -1, st.st_gid)
    except OSError:
        pass


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_NOT_IDENTITY = ("timings_seconds", "identity_sha256")  # what two runs of the same inputs may differ in


def identity(manifest: dict[str, Any]) -> str:
    """What identifies a run's set: the sha256 of its manifest without the seconds it took (two runs of
    the same policies, inputs and options have the same identity, and their files the same bytes)."""
    import hashlib

    same = {k: v for k, v in manifest.items() if k not in _NOT_IDENTITY}
    return hashlib.sha256(json.dumps(same, sort_keys=True, ensure_ascii=False, default=_json_default)
                          .encode("utf-8")).hexdigest()


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


# -- the formats -------------------------------------------------------------------------------------

# OWASP's list for CSV injection: a spreadsheet reads a cell that starts with one of these as a formula
FORMULA_START = "=+-@\t\r"
_FORMULA_PATTERN = "^[=+\\-@\t\r]"


@dataclass
class Written:
    """What writing one output file did: its rows, and the text cells a spreadsheet would take for a
    formula (`formula_cells`, the first of them in `formula_example`; in CSV only)."""

    rows: int = 0
    formula_cells: int = 0
    formula_example: str | None = None
    escaped: bool = False  # the formula cells were written with a leading `'` (a CSV meant for Excel)

    def add(self, other: "Written") -> None:
        self.rows += other.rows
        self.formula_cells += other.formula_cells
        self.formula_example = self.formula_example or other.formula_example

    def record(self) -> dict[str, Any]:
        """The manifest's words for it (nothing when there were no such cells)."""
        if not self.formula_cells:
            return {}
        return {"formula_cells": self.formula_cells, "formula_cells_escaped": self.escaped,
                "formula_example": shown(self.formula_example)}


def _csv_cells(col: pd.Series) -> tuple[pa.Array, bool]:
    """One column's cells as CSV text the way kam shows values everywhere (numbers by `number_text`,
    true/false, `a, b` lists), missing as null; and whether the column holds text (numbers and
    yes/no are never formulas)."""
    if is_list_column(col):
        codes, lists = list_codes(col)
        texts = pa.array([None if v is None else list_text(v) for v in lists], pa.string())
        return texts.take(pa.array(codes)), True
    if pd.api.types.is_bool_dtype(col.dtype):
        return pc.if_else(pa.Array.from_pandas(col.astype("boolean")), "true", "false"), False
    if pd.api.types.is_float_dtype(col.dtype):
        return number_texts(col.to_numpy(dtype=float, na_value=np.nan), missing=None), False
    if pd.api.types.is_integer_dtype(col.dtype):
        return pa.Array.from_pandas(col).cast(pa.string()), False
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = pa.array(col.cat.categories.astype(str).tolist(), pa.string())
        codes = col.cat.codes.to_numpy()
        return cats.take(pa.array(codes, mask=codes < 0)), True
    arr = pa.Array.from_pandas(col.astype("string"))
    return (arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr).cast(pa.string()), True


def csv_field(texts: pa.Array) -> pa.Array:
    """CSV's own quoting rule (RFC 4180): a cell holding a quote, the comma, a line feed or a carriage
    return is written in quotes with its quotes doubled; missing is an empty cell."""
    if not len(texts):
        return texts
    needs = pc.match_substring_regex(texts, '[",\r\n]')
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(texts, '"', '""'), '"', "")
    return pc.fill_null(pc.if_else(needs, quoted, texts), "")


def _csv_lines(frame: pd.DataFrame, excel: bool, header: bool) -> tuple[list[pa.Array], Written]:
    """The rows of a table as CSV lines (each ending in a line feed), and the formula cells found."""
    written = Written(rows=len(frame), escaped=excel)
    parts: list[Any] = []
    comma, newline = pa.scalar(",", pa.large_string()), pa.scalar("\n", pa.large_string())
    for i, name in enumerate(frame.columns):
        texts, is_text = _csv_cells(frame[name])
        if is_text and len(texts):
            formula = pc.fill_null(pc.match_substring_regex(texts, _FORMULA_PATTERN), False)
            n = pc.sum(formula).as_py() or 0
            if n:
                written.formula_cells += n
                if written.formula_example is None:
                    written.formula_example = pc.filter(texts, formula)[0].as_py()
                if excel:  # OWASP: a leading apostrophe makes a spreadsheet take the cell as text
                    texts = pc.if_else(formula, pc.binary_join_element_wise("'", texts, ""), texts)
        parts += [comma] if i else []
        parts.append(csv_field(texts).cast(pa.large_string()))
    parts.append(newline)
    lines = [pc.binary_join_element_wise(*parts, pa.scalar("", pa.large_string()))] if len(frame) else []
    if header:
        names = csv_field(pa.array([str(c) for c in frame.columns], pa.string())).to_pylist()
        lines.insert(0, pa.array([",".join(names) + "\n"], pa.large_string()))
    return lines, written


def write_csv(frames: Iterable[pd.DataFrame], fh: Any, excel: bool = False) -> Written:
    """Tables (slices of one table) as one CSV text on a binary file: a header, then a line per row,
    every cell quoted where CSV needs it. `excel`: the file is meant for a spreadsheet (`--csv-bom`),
    so text cells that start like a formula (`=`, `+`, `-`, `@`, tab, carriage return) get a leading
    `'`; otherwise they are written as they are and counted, for a warning."""
    total = Written(escaped=excel)
    for i, frame in enumerate(frames):
        lines, written = _csv_lines(frame, excel, header=i == 0)
        write_texts(fh, lines)
        total.add(written)
    return total


_LIST_ITEMS = {"boolean": pa.bool_(), "number": pa.float64(), "integer": pa.float64(), "string": pa.string()}


def _arrow_column(col: pd.Series, declared: str | None = None) -> pa.Array:
    if declared is not None or is_list_column(col):
        if declared is not None:
            item = _LIST_ITEMS.get(declared, pa.string())
        else:  # a frame that did not come from output_frame: guess from the values
            sample = next((x for v in col if v for x in v), "")
            item = pa.bool_() if isinstance(sample, bool) else pa.float64() \
                if isinstance(sample, (int, float)) else pa.string()
        if not len(col):
            return pa.array([], type=pa.list_(item))
        codes, lists = list_codes(col)
        distinct = pa.array([None if v is None else list(v) for v in lists], type=pa.list_(item))
        return distinct.take(pa.array(codes))
    return pa.Array.from_pandas(col)


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    declared = frame.attrs.get("kam_list_types", {})
    return pa.table({name: _arrow_column(frame[name], declared.get(name)) for name in frame.columns})


def _json_strings(values: pa.Array) -> pa.Array:
    """Text as JSON strings (quoted and escaped; null where missing), column-wise."""
    s = values.cast(pa.string())
    s = pc.replace_substring(pc.replace_substring(s, "\\", "\\\\"), '"', '\\"')
    if len(s) and pc.any(pc.match_substring_regex(s, "[\\x00-\\x1f]")).as_py():
        for code in range(32):
            s = pc.replace_substring(s, chr(code), json.dumps(chr(code))[1:-1])
    quoted = pc.binary_join_element_wise('"', s, '"', "")
    return pc.fill_null(quoted, "null")


def _json_fragments(col: pd.Series) -> pa.Array:
    """One column as JSON values, one text per row."""
    if is_list_column(col):
        codes, lists = list_codes(col)
        texts = [("null" if v is None else "[" + ",".join(_json_scalar(x) for x in v) + "]") for v in lists]
        return pa.array(texts, pa.string()).take(pa.array(codes))
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = _json_strings(pa.array(col.cat.categories.astype(str).tolist(), pa.string()))
        codes = col.cat.codes.to_numpy()
        table = pa.concat_arrays([cats, pa.array(["null"], pa.string())])
        return table.take(pa.array(np.where(codes >= 0, codes, len(cats))))
    if pd.api.types.is_bool_dtype(col.dtype):
        arr = pa.Array.from_pandas(col)
        return pc.fill_null(pc.if_else(arr, "true", "false"), "null")
    if pd.api.types.is_integer_dtype(col.dtype):
        return pc.fill_null(pa.Array.from_pandas(col).cast(pa.string()), "null")
    if pd.api.types.is_float_dtype(col.dtype):
        x = col.to_numpy(dtype=float)
        return number_texts(np.where(np.isfinite(x), x, np.nan), missing="null")  # JSON has no infinity
    return _json_strings(pa.Array.from_pandas(col.astype("string")))


def _json_scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return number_texts(np.array([float(v)]), missing="null")[0].as_py()
    return json.dumps(str(v), ensure_ascii=False)


JSONL_CHUNK = 250_000  # rows rendered at a time, so the text of a large output never sits in memory whole


def _write_jsonl(frame: pd.DataFrame, path: Path, append: bool = False) -> None:
    with path.open("ab" if append else "wb") as fh:
        if len(frame.columns) == 0:
            return
        names = [("{" if i == 0 else ",") + json.dumps(str(name), ensure_ascii=False) + ":"
                 for i, name in enumerate(frame.columns)]
        for start in range(0, len(frame), JSONL_CHUNK):
            chunk = frame.iloc[start:start + JSONL_CHUNK]
            parts: list[Any] = []
            for name, prefix in zip(frame.columns, names):
                parts.append(pa.scalar(prefix, pa.large_string()))
                parts.append(_json_fragments(chunk[name]).cast(pa.large_string()))
            parts.append(pa.scalar("}\n", pa.large_string()))
            write_texts(fh, [pc.binary_join_element_wise(*parts, pa.scalar("", pa.large_string()))])


def write_frame(frame: pd.DataFrame, path: Path, fmt: str, bom: bool = False) -> Written:
    """One output table in one format (`bom`: CSV starts with a UTF-8 byte order mark and is written
    for a spreadsheet, see `write_csv`)."""
    return write_chunks([frame], path, fmt, bom)


def write_chunks(chunks: Iterable[pd.DataFrame], path: Path, fmt: str, bom: bool = False) -> Written:
    """An output table given in slices (`explain.output_chunks`), written slice by slice into one
    file: the same file `write_frame` makes of the whole table, except that Parquet gets a row
    group per slice."""
    if fmt == "csv":
        with path.open("wb") as fh:
            if bom:
                fh.write(codecs.BOM_UTF8)
            return write_csv(chunks, fh, excel=bom)
    written = Written()
    writer = None
    try:
        for i, frame in enumerate(chunks):
            written.rows += len(frame)
            if fmt == "parquet":
                # no pandas metadata: it embeds library versions, and identical runs must be identical bytes
                table = _arrow_table(frame)
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema, compression="zstd")
                writer.write_table(table)
            elif fmt == "jsonl":
                _write_jsonl(frame, path, append=i > 0)
            else:
                raise ValueError(fmt)
    finally:
        if writer is not None:
            writer.close()
    return written


def write_outputs(out_dir: Path, frames: dict[str, pd.DataFrame], fmt: str, manifest: dict[str, Any],
                  extra_files: dict[str, bytes] | None = None) -> dict[str, Path]:
    """Replace the output folder with one file per entity plus `manifest.json`: all or nothing."""
    target = OutputTarget(out_dir).prepare()
    try:
        return target.commit(frames, fmt, manifest, extra_files)
    except BaseException:
        target.abandon()
        raise
