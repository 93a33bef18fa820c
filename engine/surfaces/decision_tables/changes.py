"""The edits a workbook makes, written into the YAML files as they are now.

An edit is a cell whose value differs from the export (the workbook records the texts it was exported
from). Each is made on the file's text with the byte-preserving editor, so everything else stays as
it was; rows are matched by rule id (a new id is a new rule, a missing one a deleted rule, another
order moved rules). A file changed on disk since the export is fine where the workbook did not edit
it; where both changed the same value, or both added, removed or moved rules of one decision, the
import is refused as a conflict. The edited folder is then checked as `kam check` checks it, in
memory, and written only when it has no error.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ...analysis.findings import check_docs
from ...language.edit import EditError, delete_item, insert_item, move_item, path_at, remove_key, set_value, \
    write_atomic
from ...language.errors import InputError, KamError, Location, PolicyError, Problem
from ...language.load import LocatedDoc, load_text, policy_texts
from .reader import Book, Cells, Wanted, WantedRule, read_wanted
from .tables import Rule, Table, Tables, tables_of, text_sha
from .writer import TITLE_ROWS


@dataclass(frozen=True)
class OnDisk:
    """A policy file as it is now: its path, its text and the sha256 of its text."""

    path: Path
    text: str
    sha: str


@dataclass
class Outcome:
    """What an import would do: the edited texts, the diff, the notes and the check's warnings."""

    folder: Path
    disk: dict[str, OnDisk]
    texts: dict[str, str]  # every file of the folder, edited where the workbook edits it
    notes: list[str] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def changed(self) -> dict[str, str]:
        return {n: t for n, t in self.texts.items() if t != self.disk[n].text}

    def diff(self) -> str:
        """The unified diff of every changed file (`a/policies/tier.yaml`), as `git diff` shows it."""
        out: list[str] = []
        for name, text in self.changed.items():
            rel = (Path(self.folder.name) / name).as_posix()
            out += difflib.unified_diff(self.disk[name].text.splitlines(keepends=True),
                                        text.splitlines(keepends=True), f"a/{rel}", f"b/{rel}")
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in out)


def _same(a: Any, b: Any) -> bool:
    """Equal as YAML values, and of one type (1 is not True, "1" is not 1)."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return dict(a).keys() == dict(b).keys() and all(_same(v, dict(b)[k]) for k, v in a)
    return type(a) is type(b) and a == b


def _conflict(cell: str, file: str, book: Book, what: str) -> Problem:
    return Problem("conflict", f"{cell}: {file} changed {what} since the export, and the workbook changes it too",
                   Location(str(book.path)), "nothing was written; export again (this workbook holds the texts "
                   f"exported from {book.exported.folder}) and make the edit in the new workbook")


def _read_folder(folder: Path) -> dict[str, OnDisk]:
    return {path.name: OnDisk(path, text, text_sha(text)) for path, _, text in policy_texts(folder)}


def _files_match(book: Book, folder: Path, disk: Mapping[str, OnDisk]) -> None:
    """The folder holds the workbook's policy files (it may hold more)."""
    names = [s.name for s in book.exported.sources]
    missing = [n for n in names if n not in disk]
    if not missing:
        return
    where = Location(str(book.path))
    if len(missing) == len(names):
        raise InputError(Problem("other-folder", f"{book.path.name} was exported from another folder "
                                 f"({book.exported.folder}): none of its policy files ({', '.join(names)}) is in "
                                 f"{folder}", where, f"import it into the folder it was exported from, or export "
                                 f"{folder} and edit that workbook"))
    raise InputError(Problem("missing-file", f"{book.path.name} holds policy files that are not in {folder}: "
                             f"{', '.join(missing)}", where, "they were renamed or deleted since the export: "
                             "export again"))


@dataclass
class _Edits:
    """The edits of one import, file by file, in the order they are made, and the conflicts found."""

    book: Book
    ops: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)  # file -> (cell, operation)
    conflicts: list[Problem] = field(default_factory=list)

    def add(self, file: str, cell: str, op: Any) -> None:
        self.ops.setdefault(file, []).append((cell, op))

    def conflict(self, cell: str, file: str, what: str) -> None:
        self.conflicts.append(_conflict(cell, file, self.book, what))


_GONE = object()  # a value the file no longer has (its rule or parameter was removed on disk)


def _merge(edits: _Edits, file: str, cell: str, what: str, values: tuple[Any, Any, Any], op: Any) -> None:
    """One value three ways, (workbook, export, disk now): left as exported, or already on disk as the
    workbook has it: nothing to do; changed only in the workbook: the edit; changed on both sides to
    different values: a conflict."""
    wanted, base, now = values
    if _same(wanted, base) or (now is not _GONE and _same(now, wanted)):
        return
    if now is not _GONE and _same(now, base):
        edits.add(file, cell, op)
    else:
        edits.conflict(cell, file, what)


def _value_edits(edits: _Edits, wanted: Wanted, base: Tables, now: Tables) -> None:
    for (file, name), (value, cell) in wanted.params.items():
        was, is_now = base.param(file, name), now.param(file, name)
        if was is not None:
            _merge(edits, file, cell, f"parameter {name}", (value, was.value, is_now.value if is_now else _GONE),
                   ("set", ("params", name), value, None))
    for (file, name), (source, cell) in wanted.derives.items():
        d_was, d_now = base.derive(file, name), now.derive(file, name)
        if d_was is not None:
            _merge(edits, file, cell, f"feature {name}", (source, d_was.source, d_now.source if d_now else _GONE),
                   ("set", ("derive", name), source, None))


def _field_edits(edits: _Edits, t: Table, now: Table | None, w: WantedRule, b: Rule) -> None:
    """The cells of one rule that the workbook changed: a value set, a key added or removed."""
    rule = ("rule", t.name, w.id)
    c = now.rule(w.id) if now is not None else None
    for key, after in (("when", "id"), ("because", "then")):
        new = getattr(w, key)
        _merge(edits, t.file, w.refs[key], f"rule {w.id}'s {key}", (new, getattr(b, key), getattr(c, key, _GONE)),
               ("remove" if new is None else "set", rule + (key,), new, after))
    if not isinstance(w.then, tuple) or not isinstance(b.then, tuple):
        _merge(edits, t.file, w.refs["then"], f"rule {w.id}'s outcome", (w.then, b.then, getattr(c, "then", _GONE)),
               ("set", rule + ("then",), w.then, None))
        return
    then_new, then_old = dict(w.then), dict(b.then)
    then_now = dict(c.then) if c is not None and isinstance(c.then, tuple) else None
    for out in dict.fromkeys([*then_old, *then_new]):
        new = then_new.get(out)
        _merge(edits, t.file, w.refs[f"then:{out}"], f"rule {w.id}'s {out}",
               (new, then_old.get(out), then_now.get(out) if then_now is not None else _GONE),
               ("remove" if new is None else "set", rule + ("then", out), new, None))


def _same_rule(w: WantedRule, c: Rule) -> bool:
    return _same(w.when, c.when) and _same(w.then, c.then) and _same(w.because, c.because)


def _table_edits(edits: _Edits, t: Table, now: Table | None, rules: tuple[WantedRule, ...], sheet: str) -> None:
    """A decision's rows against its rules: the cells of each rule, then the rules added, deleted or moved
    (by id), unless the file changed its rules too."""
    ids, base_ids = [w.id for w in rules], [r.id for r in t.rules]
    now_ids = [r.id for r in now.rules] if now is not None else []
    first = f"{sheet}!A{TITLE_ROWS + 1}"
    for w in rules:
        b, c = t.rule(w.id), now.rule(w.id) if now is not None else None
        if b is not None:
            _field_edits(edits, t, now, w, b)
        elif c is not None and not _same_rule(w, c):  # a new row whose id the file has now
            edits.conflict(w.refs["id"], t.file, f"rule {w.id} (added there too)")
    if ids in (base_ids, now_ids):  # the order of the export, or already the file's
        return
    if now_ids != base_ids:
        edits.conflict(first, t.file, f"the rules of decision {t.name} (added, removed or moved)")
        return
    for b in t.rules:
        if b.id not in ids and now is not None and now.rule(b.id) != b:
            edits.conflict(first, t.file, f"rule {b.id}, which the workbook deletes,")
    edits.add(t.file, first, ("order", t.name, rules, None))


def _rule_ids(text: str, file: str, decision: str) -> list[str]:
    data = load_text(text, file).data
    return [r["id"] for r in data["decisions"][decision]["rules"]]


def _item(w: WantedRule) -> dict[str, Any]:
    item: dict[str, Any] = {"id": w.id}
    if w.when is not None:
        item["when"] = w.when
    item["then"] = dict(w.then) if isinstance(w.then, tuple) else w.then
    if w.because is not None:
        item["because"] = w.because
    return item


def _reorder(text: str, file: str, decision: str, rules: tuple[WantedRule, ...]) -> str:
    """The rules of a decision in the workbook's order: deleted, moved, then new ones inserted."""
    seq = ("decisions", decision, "rules")
    wanted = [w.id for w in rules]
    for rule_id in [i for i in _rule_ids(text, file, decision) if i not in wanted]:
        text = delete_item(text, seq + (_rule_ids(text, file, decision).index(rule_id),))
    kept = [i for i in wanted if i in _rule_ids(text, file, decision)]
    for pos, rule_id in enumerate(kept):
        now = _rule_ids(text, file, decision)
        if now[pos] != rule_id:
            text = move_item(text, seq + (now.index(rule_id),), pos)
    existing = set(kept)
    for pos, w in enumerate(rules):
        if w.id not in existing:
            text = insert_item(text, seq, pos, _item(w))
    return text


def _apply(text: str, file: str, op: tuple[Any, ...]) -> str:
    kind, target, value, after = op
    if kind == "order":
        return _reorder(text, file, target, value)
    if target[0] == "rule":
        index = _rule_ids(text, file, target[1]).index(target[2])
        path: tuple[Any, ...] = ("decisions", target[1], "rules", index) + tuple(target[3:])
    else:
        path = target
    if kind == "remove":
        return remove_key(text, path)
    return set_value(text, path, value, after=after)


def _edited(edits: _Edits, disk: Mapping[str, OnDisk]) -> dict[str, str]:
    texts = {n: f.text for n, f in disk.items()}
    problems = []
    for file, ops in edits.ops.items():
        for cell, op in ops:
            try:
                texts[file] = _apply(texts[file], str(disk[file].path), op)
            except EditError as exc:
                problems.append(Problem("edit-refused", f"{cell}: this edit cannot be written into {file} without "
                                        f"reformatting other parts of it ({exc.message})",
                                        Location(str(edits.book.path)), "make this change in the YAML file"))
    if problems:
        raise InputError(problems)
    return texts


def _cell_of(path: tuple[Any, ...], data: Any, file: str, wanted: Wanted) -> str:
    """The workbook cell of a YAML path of an edited file ("" where it has none)."""
    if len(path) >= 2 and path[0] == "params":
        return wanted.params.get((file, path[1]), (None, ""))[1]
    if len(path) >= 2 and path[0] == "derive":
        return wanted.derives.get((file, path[1]), ("", ""))[1]
    if len(path) >= 4 and path[0] == "decisions" and path[2] == "rules":
        try:
            rule_id = data["decisions"][path[1]]["rules"][path[3]]["id"]
        except (KeyError, IndexError, TypeError):
            return ""
        w = next((r for r in wanted.tables.get((file, path[1]), ()) if r.id == rule_id), None)
        if w is None:
            return ""
        rest = path[4:]
        key = f"then:{rest[1]}" if rest[:1] == ("then",) and len(rest) > 1 else str(rest[0]) if rest else "id"
        return w.refs.get(key) or w.refs.get("then") or w.refs["id"]
    return ""


def _with_cells(problems: list[Problem], docs: Mapping[str, LocatedDoc], wanted: Wanted) -> list[Problem]:
    """The check's problems, each with the workbook cell it is about where there is one."""
    out = []
    for p in problems:
        name = Path(p.loc.file).name
        doc = docs.get(name)
        cell = ""
        if doc is not None and p.loc.line:
            cell = _cell_of(path_at(doc.text, p.loc.line, max(p.loc.col, 1)), doc.data, name, wanted)
        out.append(Problem(p.code, f"{p.message} (workbook cell {cell})" if cell else p.message, p.loc, p.hint,
                           p.severity))
    return out


def _check(outcome: Outcome, wanted: Wanted) -> None:
    """`kam check` on the edited texts, in memory: errors raise PolicyError (exit 1); the warnings the
    edits bring are kept to be shown."""
    docs: dict[str, LocatedDoc] = {}
    problems: list[Problem] = []
    for name, text in outcome.texts.items():
        try:
            docs[name] = load_text(text, str(outcome.folder / name))
        except PolicyError as exc:
            problems += exc.problems
    if problems:
        raise PolicyError(_with_cells(problems, docs, wanted))
    found = check_docs(list(docs.values()), str(outcome.folder))
    errors = [p for p in found.problems if p.severity == "error"]
    if errors or found.plan is None:
        raise PolicyError(_with_cells(errors or found.problems, docs, wanted))
    outcome.warnings = _with_cells([p for p in found.problems if p.severity == "warning"], docs, wanted)


def plan_import(book: Book, folder: Path) -> Outcome:
    """What importing `book` into `folder` writes: the edits made on the files as they are now and
    checked. Raises InputError (exit 2) for cells that do not read, a workbook of another folder and
    conflicts, PolicyError (exit 1) when the edited policies do not pass the check."""
    disk = _read_folder(folder)
    _files_match(book, folder, disk)
    exported = {s.name: s.text for s in book.exported.sources}
    base = tables_of(exported, folder)
    cells = Cells(book.path)
    wanted = read_wanted(cells, book, base)
    if cells.problems:
        raise InputError(cells.problems)
    try:
        # the files as they are now: the same tables where none changed since the export
        now = base if all(disk[s.name].sha == s.sha for s in book.exported.sources) else \
            tables_of({n: disk[n].text for n in exported}, folder)
    except KamError as exc:
        raise InputError([Problem(p.code, f"{p.message} (changed since the export)", p.loc, p.hint)
                          for p in exc.problems]) from None
    for s in base.sources:
        s_now = now.source(s.name)
        if s_now is not None and s_now.policy != s.policy:
            raise InputError(Problem("other-folder", f"{s.name} holds policy {s_now.policy} now, and {s.policy} when "
                                     f"{book.path.name} was exported", Location(str(book.path)),
                                     "import the workbook into the folder it was exported from, or export again"))
    edits = _Edits(book)
    _value_edits(edits, wanted, base, now)
    for t in base.decisions:
        rules = wanted.tables.get((t.file, t.name))
        if rules is not None:
            _table_edits(edits, t, now.table(t.file, t.name), rules, wanted.sheets[(t.file, t.name)])
    if edits.conflicts:
        raise InputError(edits.conflicts)
    outcome = Outcome(folder, disk, _edited(edits, disk), list(cells.notes))
    if outcome.changed:
        _check(outcome, wanted)
    return outcome


def write(outcome: Outcome) -> list[Path]:
    """Write the changed files, each atomically, after checking that none changed on disk since they
    were read for the import. The paths written."""
    changed = outcome.changed
    root = outcome.folder.resolve()
    for name in changed:
        f = outcome.disk[name]
        if f.path.resolve().parent != root:
            raise InputError(Problem("outside-folder", f"{name} is a link to a file outside {outcome.folder}: not "
                                     "written", Location(str(f.path))))
        if text_sha(f.path.read_bytes().decode("utf-8", "replace")) != f.sha:
            raise InputError(Problem("conflict", f"{name} changed on disk while the workbook was imported; nothing "
                                     "was written", Location(str(f.path)), "import again"))
    for name, text in changed.items():
        write_atomic(outcome.disk[name].path.resolve(), text)  # a link stays a link: its file is written
    return [outcome.disk[n].path for n in changed]
