"""`kam stream`: decisions that follow facts as they change, one entity at a time.

Each input line is a JSON object: the key of one entity plus the facts that changed (a full or
partial update), optionally with `event_time`. The entity's facts are merged, its decisions are
made again (by the one-row evaluator `engine.engines.row` by default, or by the vector engine with
`pandas` or `durable` rule matching; population functions from a calibration), and one JSON line
is written per decision whose result changed.

With `--state FILE` the facts, decisions and the number of lines read per input are kept in SQLite.
Each event is committed together with the lines it produces (an outbox) before they are printed;
after a crash the pending lines are printed first and the input resumes after the last committed
event, so nothing is lost. A line may be printed twice only if the process dies between printing
and clearing the outbox; every line carries `seq`, so a reader can drop such a repeat.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TextIO

import numpy as np
import pandas as pd

from ..batch.population import Calibration
from .durable import DurableBackend
from .row import Fallback, RowEvaluator, Unsupported, round_half_away as round_one
from ..language.errors import InputError, Location, Problem, did_you_mean
from ..batch.evaluate import Text, Tri, collected, column_to_vec, decide, decision_vectors, evaluate_entity, \
    scalar_at
from ..batch.explain import FEW_ROWS, because_column, plain_value, rule_column, value_columns
from ..language.functions import POPULATION_FUNCTIONS
from ..language.model import Fact
from ..language.nodes import Call, walk
from ..language.plan import Plan
from ..language.numbers import plain_number
from ..batch.facts import FALSE_WORDS, TRUE_WORDS


class EventError(Exception):
    """A line that cannot be applied: reported with its line number, then skipped."""


@dataclass
class Change:
    entity: str
    key: str
    decision: str
    old: Any
    new: Any
    rule: str | None
    because: str | None
    event_time: Any

    def to_dict(self, seq: int) -> dict[str, Any]:
        return {"seq": seq, "entity": self.entity, "id": self.key, "decision": self.decision, "old": self.old,
                "new": self.new, "rule": self.rule, "because": self.because, "event_time": self.event_time}


def uses_population(plan: Plan, entity: str) -> bool:
    ep = plan.entity(entity)
    nodes = [s.derive.expr.node for s in ep.steps if hasattr(s, "derive")]
    nodes += [r.when.node for d in ep.decisions for r in d.rules if r.when is not None]
    return any(isinstance(n, Call) and n.func in POPULATION_FUNCTIONS for root in nodes if root for n in walk(root))


def coerce(fact: Fact, value: Any) -> Any:
    """One fact value from an event, checked against its declaration (None = missing)."""
    if value is None or value == "":
        if fact.required:
            raise EventError(f"`{fact.name}` must not be empty")
        return None
    if fact.type in ("number", "integer"):
        if isinstance(value, bool):
            raise EventError(f"`{fact.name}` must be a number, not {json.dumps(value)}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise EventError(f"`{fact.name}` must be a number, not {json.dumps(value, ensure_ascii=False)}") from None
        if not math.isfinite(number):
            raise EventError(f"`{fact.name}` must be a finite number")
        if fact.decimals is not None:
            number = round_one(number, fact.decimals)
        if fact.type == "integer" and not number.is_integer():
            raise EventError(f"`{fact.name}` must be a whole number, not {value}")
        if fact.min is not None and number < fact.min:
            raise EventError(f"`{fact.name}` = {value} is below the minimum {fact.min:g}")
        if fact.max is not None and number > fact.max:
            raise EventError(f"`{fact.name}` = {value} is above the maximum {fact.max:g}")
        return number
    if fact.type == "boolean":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise EventError(f"`{fact.name}` must be yes/no, not {json.dumps(value, ensure_ascii=False)}")
    if isinstance(value, (dict, list)):
        raise EventError(f"`{fact.name}` must be text")
    text = str(value)
    if fact.values is not None and text not in {str(v) for v in fact.values}:
        raise EventError(f"`{fact.name}` = {text!r} is not one of {', '.join(map(str, fact.values))}")
    return text


class Store:
    """Entity state: in memory, or in SQLite with one transaction per event."""

    def __init__(self, path: Path | None):
        self.db = sqlite3.connect(str(path)) if path else None
        self.memory: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.seq = 0  # last line number written, when kept in memory
        if self.db is not None:
            # WAL with NORMAL sync: every event is its own transaction and survives a crash of
            # the process; only a power cut may lose the last few
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            with self.db:
                self.db.execute("CREATE TABLE IF NOT EXISTS entities "
                                "(key TEXT PRIMARY KEY, facts TEXT, decisions TEXT)")
                self.db.execute("CREATE TABLE IF NOT EXISTS sources (name TEXT PRIMARY KEY, lines INTEGER)")
                self.db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, line TEXT)")
                self.db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")

    def close(self) -> None:
        """Close the state file (each event was committed as it was applied)."""
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def check_policy(self, policy_hash: str, entity: str) -> None:
        if self.db is None:
            return
        row = self.db.execute("SELECT value FROM meta WHERE name = 'policy'").fetchone()
        mark = f"{policy_hash}:{entity}"
        if row is None:
            with self.db:
                self.db.execute("INSERT INTO meta VALUES ('policy', ?)", (mark,))
        elif row[0] != mark:
            raise InputError(Problem("state-mismatch", "the state file was written for other policies or another "
                                     "entity", Location("--state"), "use a new state file for these policies"))

    def get(self, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.db is None:
            return self.memory.get(key, ({}, {}))
        row = self.db.execute("SELECT facts, decisions FROM entities WHERE key = ?", (key,)).fetchone()
        return (json.loads(row[0]), json.loads(row[1])) if row else ({}, {})

    def count(self) -> int:
        if self.db is None:
            return len(self.memory)
        return int(self.db.execute("SELECT COUNT(*) FROM entities").fetchone()[0])

    def put_many(self, entries: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
        if self.db is None:
            self.memory.update({k: (f, d) for k, f, d in entries})
            return
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO entities VALUES (?, ?, ?)",
                                [(k, json.dumps(f, ensure_ascii=False), json.dumps(d, ensure_ascii=False))
                                 for k, f, d in entries])

    def lines_done(self, source: str) -> int:
        if self.db is None:
            return 0
        row = self.db.execute("SELECT lines FROM sources WHERE name = ?", (source,)).fetchone()
        return int(row[0]) if row else 0

    def next_seq(self) -> int:
        if self.db is None:
            return self.seq + 1
        row = self.db.execute("SELECT value FROM meta WHERE name = 'seq'").fetchone()
        return int(row[0]) + 1 if row else 1

    def commit(self, source: str, line_no: int, key: str | None, facts: dict[str, Any] | None,
               decisions: dict[str, Any] | None, lines: list[str], last_seq: int) -> None:
        if self.db is None:
            if key is not None:
                self.memory[key] = (facts or {}, decisions or {})
            self.seq = last_seq
            return
        with self.db:  # one transaction: state, input position and output lines together
            if key is not None:
                self.db.execute("INSERT OR REPLACE INTO entities VALUES (?, ?, ?)",
                                (key, json.dumps(facts, ensure_ascii=False), json.dumps(decisions, ensure_ascii=False)))
            self.db.execute("INSERT OR REPLACE INTO sources VALUES (?, ?)", (source, line_no))
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('seq', ?)", (str(last_seq),))
            self.db.executemany("INSERT INTO outbox VALUES (?, ?)",
                                [(last_seq - len(lines) + 1 + i, line) for i, line in enumerate(lines)])

    def pending(self) -> list[str]:
        if self.db is None:
            return []
        return [r[0] for r in self.db.execute("SELECT line FROM outbox ORDER BY seq")]

    def clear_outbox(self) -> None:
        if self.db is not None:
            with self.db:
                self.db.execute("DELETE FROM outbox")


BACKENDS = ("row", "pandas", "durable")  # how an event is decided; the starting state is always one batch


@dataclass
class StreamRunner:
    plan: Plan
    entity: str
    calibration: Calibration | None
    backend: str = "row"
    store: Store = field(default_factory=lambda: Store(None))
    past: pd.DataFrame | None = None  # what previous() reads, per key (from a history; None: missing)

    def __post_init__(self) -> None:
        self.plan = self.plan.only([self.entity])
        if len(self.plan.entities) > 1:
            others = [e.entity for e in self.plan.entities if e.entity != self.entity]
            raise InputError(Problem("usage", f"`{self.entity}` joins {', '.join(others)}; kam stream decides one "
                                     "entity without joins", Location("command line")))
        ps = self.plan.checked.policy_set
        if self.calibration is not None:
            self.calibration.check(ps.hash, "given with --calibration")
        elif uses_population(self.plan, self.entity):
            raise InputError(Problem("calibration-needed", f"the {self.entity} policies use population functions "
                                     "(ranks, shares, means), which need the population of a batch",
                                     Location("command line"),
                                     "make one with `kam run --save-calibration FILE`, then pass --calibration FILE"))
        self.facts = ps.facts(self.entity)
        self.ep = self.plan.entity(self.entity)
        self.types = {name: f.type for name, f in self.facts.items()}
        self.decider = DurableBackend(self.plan, [self.entity]).decider(self.entity) \
            if self.backend == "durable" else decide
        self.row: RowEvaluator | None = None
        if self.backend == "row":
            try:
                self.row = RowEvaluator.compile(self.ep, self.types, self.calibration.stats.get(self.entity, {})
                                                if self.calibration is not None else None)
            except Unsupported:
                self.row = None  # a quota: every event takes the vector engine, as with --backend pandas
        self.past_rows = self._past_rows() if self.row is not None else {}
        self.store.check_policy(ps.hash, self.entity)

    def _past_rows(self) -> dict[str, dict[str, Any]]:
        """Per key, the earlier values `previous()` reads, as plain values (read once, not per event)."""
        if self.past is None or not len(self.past.columns):
            return {}
        kinds = {r.key: r.kind for r in self.ep.past}
        columns = {c: column_to_vec(self.past[c], kinds[c]) for c in self.past.columns if c in kinds}
        keys = [str(k) for k in self.past.index.tolist()]
        return {k: {c: scalar_at(v, i) for c, v in columns.items()} for i, k in enumerate(keys)}

    def seed(self, frame: pd.DataFrame) -> int:
        """Start from a whole facts table (already checked): decide all of it, print nothing.

        Skipped when the state already holds entities (a restart)."""
        if self.store.count():
            return 0
        # The starting state is one batch: decided column-wise by the shared evaluator, which the
        # differential tests hold to the same decisions as durable_rules; events then go through the
        # chosen backend one at a time.
        decided = self._decide_frame(frame, decider=decide, keys=frame[self.ep.key].tolist())
        columns = {name: [_jsonable(v) for v in frame[name].tolist()] for name in self.types}
        keys = columns[self.ep.key]
        entries = [(str(keys[i]), {name: columns[name][i] for name in self.types}, decided[i])
                   for i in range(len(frame))]
        self.store.put_many(entries)
        return len(entries)

    def _past_of(self, keys: list[Any]) -> dict[str, pd.Series] | None:
        if self.past is None or not len(self.past.columns):
            return None
        rows = self.past.reindex(pd.Index(keys, dtype=object))
        return {c: rows[c].reset_index(drop=True) for c in rows.columns}

    def _decide_frame(self, frame: Any, n: int | None = None, decider: Any = None,
                      keys: list[Any] | None = None) -> list[dict[str, Any]]:
        """Decisions per row, read straight from the decided columns (no output table is built)."""
        cal = self.calibration.stats.get(self.entity, {}) if self.calibration is not None else None
        past = self._past_of(keys) if keys is not None else None
        result = evaluate_entity(self.ep, frame, self.types, {}, cal, None, decider or self.decider, n=n, past=past,
                                 measures=False)
        rows: list[dict[str, Any]] = [{} for _ in range(result.ctx.n)]
        for d in self.ep.decisions:
            res = result.decisions[d.name]
            if result.ctx.n <= FEW_ROWS:  # an event: the values read straight from the vectors
                vectors = decision_vectors(res)
                values = {o.name: [_jsonable(scalar_at(vectors[o.name], i)) for i in range(result.ctx.n)]
                          for o in d.outputs}
                rules = [_jsonable(_rule_of(res, i)) for i in range(result.ctx.n)]
            else:
                values = {name: [_jsonable(v) for v in col] for name, col in value_columns(res).items()}
                rules = [_jsonable(v) for v in rule_column(res)]
            texts = because_column(res, result.ctx.env).to_pylist()
            for i, row in enumerate(rows):
                value = values[d.name][i] if d.single else {o.name: values[o.name][i] for o in d.outputs}
                row[d.name] = {"value": value, "rule": rules[i], "because": texts[i]}
        return rows

    def decide(self, facts: dict[str, Any]) -> dict[str, Any]:
        """Every decision for one entity's facts: {decision: {value, rule, because}}."""
        if self.row is not None:
            try:
                return self.row.decide(facts, self.past_rows.get(facts.get(self.ep.key)))  # type: ignore[arg-type]
            except Fallback:
                pass  # an overflow to report, a population of one row: the vector engine answers
        return self.decide_vectors(facts)

    def decide_vectors(self, facts: dict[str, Any]) -> dict[str, Any]:
        """`decide` with the vector engine (the `pandas` and `durable` backends, and the row path's fallback)."""
        columns: dict[str, Any] = {}
        for name, kind in self.types.items():
            v = facts.get(name)
            if name == self.ep.key:
                columns[name] = pd.Series([v], dtype=object)  # the key is read as a column of ids
            elif kind in ("number", "integer"):
                columns[name] = np.array([np.nan if v is None else float(v)])
            elif kind == "boolean":
                columns[name] = Tri(np.array([bool(v)]) & (v is not None), np.array([v is not None]))
            else:
                columns[name] = Text(np.array([0 if v is not None else -1], dtype=np.int64),
                                     np.array([v] if v is not None else [], dtype=object))
        # one-row vectors made directly: pandas columns would cost more than the decisions
        return self._decide_frame(columns, n=1, keys=[facts.get(self.ep.key)])[0]

    def apply(self, event: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any], list[Change]]:
        """One event: merged into the entity's facts, decided, and the decisions whose value changed."""
        key, facts, old_decisions = self.merge(event)
        decisions = self.decide(facts)
        return key, facts, decisions, self.changes(key, old_decisions, decisions, event.get("event_time"))

    def merge(self, event: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The event checked and merged into the entity's stored facts: (key, facts, earlier decisions)."""
        key_name = self.ep.key
        if not isinstance(event, dict):
            raise EventError("a line must be a JSON object")
        if event.get(key_name) in (None, ""):
            raise EventError(f"the event has no `{key_name}`")
        if not isinstance(event[key_name], str):
            raise EventError(f"`{key_name}` must be text (in quotes), not {json.dumps(event[key_name])}: "
                             "ids keep their leading zeros only as text")
        key = event[key_name]
        old_facts, old_decisions = self.store.get(key)
        facts = dict(old_facts)
        for name, value in event.items():
            if name in ("event_time", key_name):
                continue
            fact = self.facts.get(name)
            if fact is None:
                raise EventError(f"`{name}` is not a fact of {self.entity}"
                                 + (f" ({did_you_mean(name, self.facts)})" if did_you_mean(name, self.facts) else ""))
            facts[name] = coerce(fact, value)
        facts[key_name] = key
        lacking = [f.name for f in self.facts.values() if f.required and facts.get(f.name) is None]
        if lacking:
            raise EventError(f"{self.entity} {key} lacks the required fact{'s' if len(lacking) > 1 else ''} "
                             f"{', '.join(lacking)} (a first event must carry them)")
        return key, facts, old_decisions

    def changes(self, key: str, old_decisions: dict[str, Any], decisions: dict[str, Any],
                event_time: Any) -> list[Change]:
        """A change record per decision whose value is new or differs from the stored one."""
        return [Change(self.entity, key, name, old_decisions.get(name, {}).get("value"), now["value"],
                       now["rule"], now["because"], event_time)
                for name, now in decisions.items()
                if name not in old_decisions or old_decisions[name]["value"] != now["value"]]

    def run(self, lines: Iterable[str], source: str, out: TextIO, err: TextIO) -> tuple[int, int]:
        """Process lines; returns (events applied, lines rejected)."""
        for pending in self.store.pending():  # from a run that stopped between commit and print
            out.write(pending + "\n")
        out.flush()
        self.store.clear_outbox()
        skip = self.store.lines_done(source)
        applied = rejected = 0
        seq = self.store.next_seq() - 1
        for line_no, text in enumerate(lines, start=1):
            if line_no <= skip or not text.strip():
                continue
            try:
                try:
                    event = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise EventError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
                try:
                    key, facts, decisions, changes = self.apply(event)
                except InputError as exc:  # what the event's facts make the rules do (an overflow)
                    raise EventError(exc.problems[0].message) from None
            except EventError as exc:
                err.write(f"{source}:{line_no}: error: {exc}; line skipped\n")
                err.flush()
                rejected += 1
                self.store.commit(source, line_no, None, None, None, [], seq)
                continue
            rendered = []
            for c in changes:
                seq += 1
                rendered.append(json.dumps(c.to_dict(seq), ensure_ascii=False))
            self.store.commit(source, line_no, key, facts, decisions, rendered, seq)
            for line in rendered:
                out.write(line + "\n")
            out.flush()
            self.store.clear_outbox()
            applied += 1
        return applied, rejected


def _rule_of(res: Any, i: int) -> Any:
    """The deciding rule's id of row i (every matching rule's, for `collect`), as `rule_column` gives it."""
    if res.collected is not None:
        return list(collected(res, "", values=False).objects()[i])
    k = int(res.rule_index[i])
    return res.rules[k].id if k >= 0 else None


def _jsonable(v: Any) -> Any:
    """A cell as JSON: whole numbers without a trailing `.0`, as the facts were written."""
    v = plain_value(v)
    if isinstance(v, list):
        return [plain_number(x) if isinstance(x, float) else x for x in v]
    return plain_number(v) if isinstance(v, float) else v
