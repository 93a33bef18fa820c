"""A policy folder opened for editing against one loaded portfolio: what the edited policies would
decide, before anything is saved, and saving them.

The studio page is a thin shell over this: it sends the edits a user made (as operations on the
YAML, see `engine.language.edit`) and shows what `evaluate` answers. The facts are read once; an
edit re-evaluates only the features and decisions it reaches (a step whose definition and inputs
are those of the loaded policies keeps its earlier result), so moving a cutoff on a million
customers costs the steps that read the cutoff, not the whole run. What it compares with is what
`kam diff` compares with (`engine.run.impact.compare_runs`), and what it checks is what `kam check`
checks (`engine.analysis.findings.check_docs`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..analysis.findings import Findings, check_docs
from ..batch.evaluate import EntityResult
from ..batch.explain import rule_column
from ..batch.facts import FactsOptions, identifier_facts
from ..batch.result import Past, RunResult
from ..history.store import History, check_period
from ..language.edit import EditError, delete_item, insert_item, move_item, path_at, remove_key, set_value, \
    write_atomic
from ..language.errors import InputError, KamError, Location, PolicyError, Problem
from ..language.figures import Reader, reader as locale_reader
from ..language.load import LocatedDoc, load_text, policy_texts
from ..language.plan import DecisionStep, EntityPlan, Plan, decision_reads
from ..language.nodes import names
from ..language.units import COUNT, Unit
from . import service
from .impact import Comparison, compare_runs, rule_counts
from .inputs import find_inputs, read_inputs

MAX_EDITS = 2000  # operations in one request: far above what a person does in one sitting


@dataclass(frozen=True)
class SourceFile:
    """One policy file as loaded: its name in the folder, its text and the sha256 of its bytes."""

    name: str
    path: Path
    text: str
    sha: str


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_sources(folder: Path) -> dict[str, SourceFile]:
    if not folder.is_dir():
        raise PolicyError(Problem("no-policy-dir", f"{folder} is not a folder", Location(str(folder))))
    out = {path.name: SourceFile(path.name, path, text, _sha(data)) for path, data, text in policy_texts(folder)}
    if not out:
        raise PolicyError(Problem("no-policies", f"no policy files (*.yaml) in {folder}", Location(str(folder))))
    return out


class Conflict(KamError):
    """A file changed on disk since the page loaded it: nothing is written."""

    exit_code = 2


@dataclass
class Evaluation:
    """What the edited policies would do: the texts, every problem `kam check` finds in them (with the
    YAML path of the cell it is about), and, when they compile, the run and its comparison."""

    texts: dict[str, str]
    findings: Findings
    problem_paths: list[tuple[Problem, str, tuple[Any, ...]]] = field(default_factory=list)  # problem, file, path
    run: RunResult | None = None
    comparison: Comparison | None = None

    @property
    def ok(self) -> bool:
        return self.findings.plan is not None and not any(p.severity == "error" for p in self.findings.problems)


def apply_edits(texts: Mapping[str, str], edits: list[Mapping[str, Any]]) -> dict[str, str]:
    """The texts after the edits, in order. An edit names a loaded file (never a path) and an
    operation: `set`, `remove`, `delete`, `move` or `insert` (see `engine.language.edit`)."""
    if len(edits) > MAX_EDITS:
        raise InputError(Problem("too-many-edits", f"{len(edits)} edits in one request (at most {MAX_EDITS})",
                                 Location("request")))
    out = dict(texts)
    for i, e in enumerate(edits):
        name = e.get("file")
        if not isinstance(name, str) or name not in out:
            raise InputError(Problem("unknown-file", f"edit {i + 1} names {name!r}, which is not a policy file of "
                                     "this folder", Location("request"), f"one of: {', '.join(out)}"))
        raw = e.get("path") or []
        if not isinstance(raw, list) or not all(isinstance(p, (str, int)) and not isinstance(p, bool) for p in raw):
            raise InputError(Problem("bad-edit", f"edit {i + 1}: a path is a list of keys and positions",
                                     Location("request")))
        path = tuple(raw)
        try:
            out[name] = _apply(out[name], e, path)
        except EditError as exc:
            raise InputError(Problem("edit-refused", f"{name}: {exc.message}", Location(name),
                                     "this part of the file is written in a form the page does not rewrite: "
                                     "change it in an editor")) from None
    return out


def _scalar(value: Any) -> bool:
    """A value an edit may write: text, a finite number, true/false or nothing."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int, bool))


def _position(e: Mapping[str, Any], key: str, path: tuple[Any, ...]) -> int:
    value = e.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise EditError(f"`{key}` is a position (a whole number)", path)
    return value


def _apply(text: str, e: Mapping[str, Any], path: tuple[Any, ...]) -> str:
    op = e.get("op")
    after = e.get("after")
    if op == "set":
        value = e.get("value")
        if not _scalar(value) or (after is not None and not isinstance(after, str)):
            raise EditError("a value is text, a finite number, true/false or null", path)
        return set_value(text, path, value, after=after)
    if op == "remove":
        return remove_key(text, path)
    if op == "delete":
        return delete_item(text, path)
    if op == "move":
        return move_item(text, path, _position(e, "to", path))
    if op == "insert":
        item = e.get("item")
        if not isinstance(item, dict) or not all(isinstance(k, str) and _scalar(v) and v is not None
                                                 for k, v in item.items()):
            raise EditError("a new rule is a mapping of names to texts or numbers", path)
        return insert_item(text, path, _position(e, "index", path), item)
    raise EditError(f"unknown operation {op!r}", path)


def _step_reads(step: Any) -> list[str]:
    if isinstance(step, DecisionStep):
        return decision_reads(step.decision)
    node = step.derive.expr.node
    return names(node) if node is not None else []


def _reusable(base: EntityPlan | None, new: EntityPlan, old: EntityResult | None, changed: dict[str, set[str]]
              ) -> dict[str, Any]:
    """The steps of `new` that compute exactly what they computed in the loaded run: the same
    definition (parameters are written into it, so a moved cutoff changes its readers), reading
    only names that did not change. Records in `changed[entity]` the names that may have."""
    moved: set[str] = set()
    changed[new.entity] = moved
    if base is None or old is None or base.joins != new.joins or base.past != new.past:
        moved.update(name for s in new.steps for name in _step_names(s))
        moved.update(name for j in new.joins for name in j.take)
        return {}
    for j in new.joins:
        moved.update(name for name in j.take if name in changed.get(j.entity, {name}))
    before = {s.name: s for s in base.steps}
    keep: dict[str, Any] = {}
    for step in new.steps:
        same = before.get(step.name) == step and not (set(_step_reads(step)) & moved)
        if same and step.name in (old.decisions if isinstance(step, DecisionStep) else old.ctx.env):
            keep[step.name] = old.decisions[step.name] if isinstance(step, DecisionStep) else old.ctx.env[step.name]
        else:
            moved.update(_step_names(step))
    return keep


def _step_names(step: Any) -> list[str]:
    """The names a step gives values to: a feature's, or a decision's and each of its outputs'."""
    if isinstance(step, DecisionStep):
        return [step.name] + [o.name for o in step.decision.outputs]
    return [step.name]


class Workspace:
    """One policy folder and one portfolio, loaded once; edits evaluated against them."""

    def __init__(self, folder: Path, data: Path | None, inputs: dict[str, Path], facts: FactsOptions | None = None,
                 history: Path | None = None, period: str | None = None):
        self.folder = folder
        self.period = check_period(period) if period is not None else None
        self.facts = facts
        self.history_path = history
        self.lock = threading.Lock()
        self.proofs: dict[str, Any] = {}  # the prover's answers by what they depend on
        self.data, self.given = data, inputs
        self._load(_read_sources(folder))

    def _load(self, sources: dict[str, SourceFile]) -> None:
        """The policies as the files hold them, checked, and the portfolio decided with them."""
        findings = check_docs(self._docs({n: s.text for n, s in sources.items()}), str(self.folder), self.proofs)
        if findings.plan is None or any(p.severity == "error" for p in findings.problems):
            raise PolicyError([p for p in findings.problems if p.severity == "error"] or findings.problems)
        self.sources = sources
        self.memo: dict[tuple[str, str, str], Any] = {}  # what comparisons with the loaded run keep
        self.findings = findings
        self.plan: Plan = findings.plan
        self.inputs = find_inputs(self.plan, self.data, self.given)
        self.frames = read_inputs(self.plan, self.inputs, self.facts)
        self.past = self._past()
        self.run = service.run(self.plan, self.frames, past=dict(self.past.frames))
        self.run.past = self.past
        self._last: tuple[str, Evaluation] | None = None

    def _on_disk(self) -> dict[str, SourceFile]:
        return _read_sources(self.folder)

    def refresh(self) -> bool:
        """Load the policies again where a file changed on disk (another editor, a git checkout); the
        page asks when it is opened or reloaded. Whether anything changed."""
        with self.lock:
            now = self._on_disk()
            if {n: s.sha for n, s in now.items()} == {n: s.sha for n, s in self.sources.items()}:
                return False
            self._load(now)
            return True

    def warm_up(self) -> None:
        """Work out now what every evaluation keeps (the loaded run's labels and comparisons, the proofs),
        so that a page's first edit answers as quickly as the next."""
        self.evaluate([])

    def _past(self) -> Past:
        if self.history_path is None:
            return service.load_past(self.plan, self.frames, None, None)
        opened = History.open(self.history_path)
        try:
            return service.load_past(self.plan, self.frames, opened, self.period)
        finally:
            opened.close()

    def _docs(self, texts: Mapping[str, str]) -> list[LocatedDoc]:
        docs, problems = [], []
        for name, text in texts.items():
            try:
                docs.append(load_text(text, str(self.folder / name)))
            except PolicyError as exc:
                problems += exc.problems
        if problems:
            raise PolicyError(problems)
        return docs

    def counted(self, run: RunResult, entity: str, decision: str) -> dict[str, int]:
        """How many entities each rule of a decision decides in a run (kept per decision result: an
        edit that does not reach the decision asks again for the same one)."""
        res = run.results[entity].decisions[decision]
        key = ("rules", entity, decision)
        kept = self.memo.get(key)
        if kept is None or kept[0] is not res:
            kept = (res, {str(k): int(v) for k, v in rule_counts(pd.Series(rule_column(res))).items()})
            self.memo[key] = kept
        return kept[1]

    def summary(self, reader: Reader | None = None) -> dict[str, str]:
        """How many entities of each kind are loaded, grouped (in the reader's locale; en_US unless given)."""
        count = (reader or locale_reader(None)).number
        return {e: count(len(f), Unit(COUNT)) for e, f in self.run.frames_in.items()}

    def texts(self) -> dict[str, str]:
        return {n: s.text for n, s in self.sources.items()}

    def evaluate(self, edits: list[Mapping[str, Any]]) -> Evaluation:
        """Check the edited policies and, when they compile, decide the portfolio with them and
        compare with the loaded policies (the last answer is kept: the page asks about it again for
        movers and traces)."""
        key = json.dumps(edits, sort_keys=True, default=str)
        with self.lock:
            if self._last is not None and self._last[0] == key:
                return self._last[1]
            texts = apply_edits(self.texts(), edits)
            try:
                findings = check_docs(self._docs(texts), str(self.folder), self.proofs)
            except PolicyError as exc:
                findings = Findings(None, list(exc.problems), 0, exc.exit_code)
            ev = Evaluation(texts, findings, self._locate(findings.problems, texts))
            if ev.ok:
                assert findings.plan is not None
                try:
                    ev.run = self._decide(findings.plan)
                except KamError as exc:  # the facts cannot be decided this way (read against new declarations)
                    findings.problems += exc.problems
                    ev.problem_paths += self._locate(exc.problems, texts)
                    self._last = (key, ev)
                    return ev
                ev.comparison = compare_runs(self.plan, findings.plan, self.run, ev.run, cells=True,
                                             proofs=(self.findings.proofs, findings.proofs), memo=self.memo)
            self._last = (key, ev)
            return ev

    def _locate(self, problems: list[Problem], texts: Mapping[str, str]) -> list[tuple[Problem, str, tuple[Any, ...]]]:
        out = []
        for p in problems:
            name = Path(p.loc.file).name
            where: tuple[Any, ...] = ()
            if name in texts and p.loc.line:
                try:
                    where = path_at(texts[name], p.loc.line, max(p.loc.col, 1))
                except Exception:  # a text that does not parse has no paths: the line says where
                    where = ()
            out.append((p, name if name in texts else "", where))
        return out

    def _decide(self, new: Plan) -> RunResult:
        """The edited plan on the loaded facts, re-evaluating only what the edit reaches. An entity whose
        facts are declared differently is read again with the new declarations."""
        ps, base_ps = new.checked.policy_set, self.plan.checked.policy_set
        frames = dict(self.frames)
        stale = [ep.entity for ep in new.entities if ep.entity not in frames
                 or ps.facts(ep.entity) != base_ps.facts(ep.entity)
                 or identifier_facts(new, ep.entity) != identifier_facts(self.plan, ep.entity)]
        if stale:
            sub = Plan(new.checked, tuple(ep for ep in new.entities if ep.entity in stale))
            frames.update(read_inputs(sub, {e: self.inputs[e] for e in stale}, self.facts))
        changed: dict[str, set[str]] = {}
        base_entities = {e.entity: e for e in self.plan.entities}

        def reuse(ep: EntityPlan) -> dict[str, Any]:
            if frames[ep.entity] is not self.frames.get(ep.entity):
                changed[ep.entity] = {name for s in ep.steps for name in _step_names(s)}
                return {}
            return _reusable(base_entities.get(ep.entity), ep, self.run.results.get(ep.entity), changed)

        result = service.run(new, frames, past=dict(self.past.frames), reuse=reuse)
        result.past = self.past
        return result

    def diff(self, texts: Mapping[str, str]) -> str:
        """The unified diff of the edited files against the loaded ones (what saving writes)."""
        out: list[str] = []
        for name, text in texts.items():
            old = self.sources[name].text
            if text != old:
                rel = self._relative(name)
                out += difflib.unified_diff(old.splitlines(keepends=True), text.splitlines(keepends=True),
                                            f"a/{rel}", f"b/{rel}")
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in out)

    def _relative(self, name: str) -> str:
        return (Path(self.folder.name) / name).as_posix()

    def save(self, edits: list[Mapping[str, Any]], loaded: Mapping[str, str]) -> list[str]:
        """Write the edited files (only those that changed), each atomically, after checking that none
        changed on disk since it was loaded (`loaded`: name -> sha256 the page saw) and that the
        edited policies have no check error. The loaded policies become the saved ones."""
        ev = self.evaluate(edits)
        with self.lock:
            changed = {n: t for n, t in ev.texts.items() if t != self.sources[n].text}
            if not ev.ok:
                errors = [p for p, _, _ in ev.problem_paths if p.severity == "error"]
                raise PolicyError(errors or [Problem("not-saved", "the edited policies do not compile",
                                                     Location(str(self.folder)))])
            # every file, not only the edited ones: the check ran against the others as they were loaded
            disk = {n: s.sha for n, s in self._on_disk().items()}
            known = {n: s.sha for n, s in self.sources.items()}
            stale = sorted({n for n in changed if loaded.get(n) != known[n]}
                           | {n for n in {*disk, *known} if disk.get(n) != known.get(n)})
            if stale:
                raise Conflict([Problem("conflict", f"{n} was changed on disk since the page loaded it; nothing was "
                                        "saved", Location(str(self.folder / n)),
                                        "copy your change, reload the page (it loads the files again) and make "
                                        "it again") for n in stale])
            root = self.folder.resolve()
            for n in changed:
                if self.sources[n].path.resolve().parent != root:
                    raise InputError(Problem("outside-folder", f"{n} is a link to a file outside {self.folder}: "
                                             "not written", Location(str(self.sources[n].path))))
            for n, text in changed.items():
                write_atomic(self.sources[n].path.resolve(), text)  # a link stays a link: its file is written
            self._rebase(ev, changed)
            return list(changed)

    def _rebase(self, ev: Evaluation, changed: Mapping[str, str]) -> None:
        for n, text in changed.items():
            src = self.sources[n]
            self.sources[n] = SourceFile(n, src.path, text, _sha(text.encode("utf-8")))
        if ev.findings.plan is not None and ev.run is not None:
            self.findings, self.plan, self.run = ev.findings, ev.findings.plan, ev.run
            self.frames = dict(ev.run.frames_in)
        self._last = None
        self.memo = {}

