"""Questions to the history: one entity's path through the periods, and who moved between two periods.

Both read only the history file (`engine.history.store`): values, rule ids and facts as recorded, and the
because texts rendered again with the policies of each period, so they read as that run wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AbstractSet, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..language.errors import InputError, Location, Problem, did_you_mean
from ..language.figures import Reader, reader as locale_reader
from ..language.model import PolicySet
from ..language.units import COUNT, MONEY, PLAIN, Unit, units_of
from .base import RunInfo
from .store import History
from .tables import PERIOD, quote, table_name
from ..language.numbers import MISSING_TEXT, list_text, number_text, plain_number
from ..batch.number_columns import number_texts

NEW = "(new)"
GONE = "(gone)"


def _problem(message: str, hint: str = "") -> InputError:
    return InputError(Problem("history", message, Location("command line"), hint))


def labels(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Values as kam shows them everywhere (numbers, true/false, lists `a, b`); None where missing."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        texts = number_texts(col.to_numpy(zero_copy_only=False).astype(float), missing=None)
        return np.asarray(texts.to_pylist(), dtype=object)
    if pa.types.is_boolean(col.type):
        out = np.full(len(col), None, dtype=object)
        values = col.to_numpy(zero_copy_only=False)
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        out[valid] = np.where(values[valid].astype(bool), "true", "false")
        return out
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        items = pc.binary_join(col.cast(pa.list_(pa.string())), "\x1f")
        codes, uniques = pd.factorize(pd.Series(items.to_pylist(), dtype=object), use_na_sentinel=True)
        shown = np.array([list_text(u.split("\x1f")) if u else "" for u in uniques] + [None], dtype=object)
        return shown[np.where(codes >= 0, codes, len(uniques))]
    encoded = pc.dictionary_encode(col.cast(pa.string()))
    dictionary = np.append(np.asarray(encoded.dictionary.to_pylist(), dtype=object), None)
    idx = encoded.indices.fill_null(len(dictionary) - 1).to_numpy(zero_copy_only=False)
    return dictionary[idx]


def _find_entity(history: History, key: str, entity: str | None) -> tuple[str, list[tuple[str, int]]]:
    """The entity with this id (searching all unless one is named) and where its rows are."""
    entities = history.entities()
    if entity is not None and entity not in entities:
        raise _problem(f"the history has no entity `{entity}`",
                       did_you_mean(entity, entities) or f"entities: {', '.join(entities)}")
    found = {e: rows for e in ([entity] if entity else entities) if (rows := history.find(e, key))}
    if not found:
        raise _problem(f"no {entity or 'entity'} with the id `{key}` in the history {history.path}",
                       "ids are text: keep their leading zeros (e.g. 000123)")
    if len(found) > 1:
        raise _problem(f"`{key}` is the id of a {' and a '.join(found)}", "pass --entity to choose")
    return next(iter(found.items()))


def _key_name(history: History, entity: str) -> str:
    for run in reversed(history.runs()):
        if entity in run.entities:
            return str(run.entities[entity]["key"])
    return ""


# -- one entity's path -----------------------------------------------------------------------------------

@dataclass
class Step:
    """One period of an entity's path."""

    period: str
    policy_hash: str
    policies_changed: bool
    decisions: list[dict[str, Any]]  # decision, value, rule, because
    changed: list[dict[str, Any]]  # what differs from the period before: decision or fact, before, after
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period, "policy_set": self.policy_hash, "policies_changed": self.policies_changed,
                "decisions": self.decisions, "changed": self.changed, "facts": self.facts}


@dataclass
class EntityPath:
    entity: str
    key: str
    steps: list[Step]
    absent: list[str]  # recorded periods in which the entity was not there

    def to_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "id": self.key, "periods": [s.to_dict() for s in self.steps],
                "absent_in": self.absent}

    def render_text(self, full: bool = False, reader: Reader | None = None,
                    units: dict[str, Unit] | None = None) -> str:
        """The path for people: a fact that changed is written by its unit in the reader's locale, money
        with the currency in its label (`revenue (CN¥): 291,633.03 -> 287,829.43`); `because` texts as
        the policies wrote them."""
        figures, units = reader or locale_reader(None), units or {}
        lines = [f"{self.entity} {self.key}: {len(self.steps)} period{'s' if len(self.steps) != 1 else ''}"
                 + (f" (not there in {', '.join(self.absent)})" if self.absent else "")]
        for i, step in enumerate(self.steps):
            lines.append("")
            note = " — the policies changed since the period before" if step.policies_changed else ""
            lines.append(f"{step.period}   (policies {step.policy_hash[:12]}){note}")
            if i and not full:
                if not step.changed:
                    lines.append("  nothing changed")
                for c in step.changed:
                    lines.append("  " + _change_text(c, self.steps[i - 1].facts, step.facts, figures, units))
                shown = {c["name"] for c in step.changed}
                decisions = [d for d in step.decisions if d["decision"] in shown]
            else:
                decisions = step.decisions
            for d in decisions:
                lines.append(f"  {d['decision']} = {d['value']}   rule {d['rule'] or '-'}: {d['because']}")
        return "\n".join(lines) + "\n"


def _change_text(change: dict[str, Any], before: dict[str, Any], after: dict[str, Any], reader: Reader,
                 units: dict[str, Unit]) -> str:
    """One change of a path in words: a fact recorded as a number in both periods by its unit (the
    JSON keeps the exact text); a decision, or a name one period lacks, as recorded."""
    name = change["name"]
    if name not in before or name not in after:  # a decision, or a fact only one period records
        return f"{name}: {change['before']} -> {change['after']}"
    unit = units.get(name, PLAIN)
    was, now = (reader.number(v, unit) if _is_number(v) else text
                for v, text in ((before[name], change["before"]), (after[name], change["after"])))
    return f"{reader.label(name, unit) if unit.kind == MONEY else name}: {was} -> {now}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def policy_set_of(history: History, period: str) -> PolicySet:
    """The policies a period was decided with (their units and locale say how its figures read)."""
    return history.plan_of(history.need_period(period)).checked.policy_set


def entity_path(history: History, key: str, entity: str | None = None) -> EntityPath:
    """Per period, each decision of one entity with its rule and reason, and what changed."""
    entity, found = _find_entity(history, key, entity)
    rows = history.entity_path(entity, key, found)
    reasons = history.reasons(entity, rows)
    records = rows.to_dict("records")
    texts = reasons.reindex(rows.index).to_dict("records")
    runs = {r.period: r for r in history.runs()}
    steps: list[Step] = []
    previous: dict[str, str] = {}
    decided_before: set[str] = set()
    last_hash = None
    for i, row in enumerate(records):
        run = runs[row[PERIOD]]
        schema = run.entities.get(entity, {})
        columns = schema.get("columns", {})
        decisions, now = [], {}
        for name, spec in schema.get("decisions", {}).items():
            value = _row_value(row, spec["outputs"])
            rule = _cell(row, f"{name}_rule")
            rule = list_text(rule) if isinstance(rule, list) else rule
            because = texts[i].get(f"{name}_because")
            decisions.append({"decision": name, "value": value, "rule": rule,
                              "because": None if because is None or because is pd.NA else str(because)})
            now[name] = f"{value} (rule {rule or '-'})"
        # as recorded (numbers as numbers, in JSON too); the changes between periods in words
        facts = {c: _plain(_cell(row, c)) for c, role in columns.items() if role == "fact"}
        now.update({f: _shown(v) for f, v in facts.items() if f in schema.get("measures", [])})
        changed = [{"name": n, "before": previous[n], "after": v} for n, v in now.items()
                   if n in previous and previous[n] != v]
        # a name the policies of one period have and those of the other do not (added, removed, renamed)
        changed += [{"name": n, "before": "(not decided then)" if n in schema.get("decisions", {}) else
                     "(not recorded then)", "after": v} for n, v in now.items() if previous and n not in previous]
        changed += [{"name": n, "before": v, "after": f"(no longer decided: the policies of {run.period} have no "
                     f"decision `{n}`)" if n in decided_before else f"(no longer recorded: the policies of "
                     f"{run.period} do not read `{n}`)"} for n, v in previous.items() if n not in now]
        steps.append(Step(run.period, run.policy_hash, last_hash is not None and last_hash != run.policy_hash,
                          decisions, changed, facts))
        previous, last_hash = now, run.policy_hash
        decided_before = set(schema.get("decisions", {}))
    present = {s.period for s in steps}
    first = steps[0].period if steps else ""
    absent = [p for p in runs if p not in present and p > first and entity in runs[p].entities]
    return EntityPath(entity, key, steps, absent)


def _cell(row: dict[str, Any], column: str) -> Any:
    v = row.get(column)
    if isinstance(v, (np.ndarray, tuple)):
        return list(v)
    if isinstance(v, list):
        return v
    return None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v


def _plain(v: Any) -> Any:
    """A recorded value as JSON has it: numbers (whole ones without a fraction), yes/no, text, lists."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return plain_number(float(v))
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _shown(v: Any) -> str:
    if isinstance(v, list):
        return list_text(v)
    if v is None:
        return MISSING_TEXT
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return number_text(float(v))
    return str(v)


def _row_value(row: dict[str, Any], outputs: list[str]) -> str:
    if len(outputs) == 1:
        return _shown(_cell(row, outputs[0]))
    return ", ".join(f"{o}={_shown(_cell(row, o))}" for o in outputs)


# -- who moved between two periods -------------------------------------------------------------------

@dataclass
class Transition:
    """How one decision moved between two periods."""

    entity: str
    decision: str
    output: str  # the output the movement is counted on (a decision's first)
    before: str
    after: str
    matrix: pd.DataFrame  # entities per (value before, value after); NEW / GONE for those not in a period
    moves: pd.DataFrame  # the off-diagonal cells: from, to, entities, and the sum of each measure
    movers: pd.DataFrame  # every entity that moved: id, from, to, rule, because, measures
    measures: list[str]
    policies_changed: bool
    decimals: dict[str, int] = field(default_factory=dict)  # of the measures that declare them

    @property
    def moved(self) -> int:
        return len(self.movers)

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        movers = self.movers if top is None else self.movers.head(top)
        return {"entity": self.entity, "decision": self.decision, "output": self.output, "from": self.before,
                "to": self.after, "policies_changed": self.policies_changed, "moved": self.moved,
                "matrix": {str(b): {str(a): int(n) for a, n in row.items()} for b, row in self.matrix.iterrows()},
                "moves": _records(self.moves), "movers": _records(movers)}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in frame.to_dict("records"):
        out.append({k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else
                        int(v) if isinstance(v, (np.integer,)) else float(v) if isinstance(v, np.floating) else v)
                    for k, v in rec.items()})
    return out


def periods_to_compare(history: History, before: str | None, after: str | None) -> tuple[RunInfo, RunInfo]:
    """The two periods of `kam changes`: by default the last recorded one and the one before it."""
    periods = history.periods()
    if after is None:
        if not periods:
            raise _problem(f"the history {history.path} holds no period yet",
                           "record some with `kam run --history FILE --period LABEL`")
        after = periods[-1]
    to_run = history.need_period(after)
    if before is None:
        earlier = history.before(after, 1)
        if not earlier:
            raise _problem(f"{after} is the first period in the history: there is nothing to compare it with",
                           "record the next period, or pass --from and --to")
        before = earlier[0]
    return history.need_period(before), to_run


def changes(history: History, before: str | None = None, after: str | None = None, entity: str | None = None,
            decision: str | None = None) -> list[Transition]:
    """Per decision, the transition matrix between two periods, the moves with the money that moved
    (sums of the facts marked `measure: true`) and every entity that moved, biggest first."""
    a, b = periods_to_compare(history, before, after)
    entities = list(b.entities)
    if entity is not None:
        if entity not in entities:
            raise _problem(f"period {b.period} has no entity `{entity}`",
                           did_you_mean(entity, entities) or f"entities: {', '.join(entities)}")
        entities = [entity]
    out: list[Transition] = []
    for e in entities:
        schema = b.entities[e]
        wanted = [d for d, spec in schema["decisions"].items() if decision in (None, d)]
        if decision is not None and not wanted:
            if entity is not None:
                raise _problem(f"{e} has no decision `{decision}` in {b.period}",
                               did_you_mean(decision, schema["decisions"]))
            continue
        out += _entity_changes(history, e, a, b, wanted)
    if decision is not None and not out:
        names = [d for e in entities for d in b.entities[e]["decisions"]]
        raise _problem(f"no decision `{decision}` in {b.period}", did_you_mean(decision, names))
    return out


def _entity_changes(history: History, entity: str, a: RunInfo, b: RunInfo, decisions: list[str]) -> list[Transition]:
    schema = b.entities[entity]
    key = schema["key"]
    have = history.columns(entity)
    outputs = {d: schema["decisions"][d]["outputs"][0] for d in decisions}
    outputs = {d: o for d, o in outputs.items() if o in have}
    measures = [m for m in schema.get("measures", []) if m in have]
    cols = list(dict.fromkeys(list(outputs.values()) + measures))
    select = [f"coalesce(b.{quote(key)}, a.{quote(key)}) AS kam_key", f"a.{quote(key)} IS NOT NULL AS kam_before",
              f"b.{quote(key)} IS NOT NULL AS kam_after"]
    select += [f"{side}.{quote(c)} AS {quote(side + ':' + c)}" for side in 'ab' for c in cols]
    rules = [f"b.{quote(d + '_rule')} AS {quote('rule:' + d)}" for d in outputs if f"{d}_rule" in have]
    table = quote(table_name(entity))
    joined = history._arrow(
        f"WITH a AS (SELECT * FROM {table} WHERE {PERIOD} = ?), b AS (SELECT * FROM {table} WHERE {PERIOD} = ?) "
        f"SELECT {', '.join(select + rules)} FROM a FULL OUTER JOIN b ON a.{quote(key)} = b.{quote(key)}",
        [a.period, b.period])
    in_before = joined.column("kam_before").to_numpy()
    in_after = joined.column("kam_after").to_numpy()
    keys = np.asarray(joined.column("kam_key").to_pylist(), dtype=object)
    money = {m: np.where(in_after, joined.column(f"b:{m}").to_numpy(zero_copy_only=False).astype(float),
                         joined.column(f"a:{m}").to_numpy(zero_copy_only=False).astype(float)) for m in measures}
    out = []
    for d, o in outputs.items():
        was = labels(joined.column(f"a:{o}"))
        now = labels(joined.column(f"b:{o}"))
        was = np.where(in_before, np.where(was == None, MISSING_TEXT, was), NEW)  # noqa: E711
        now = np.where(in_after, np.where(now == None, MISSING_TEXT, now), GONE)  # noqa: E711
        frame = pd.DataFrame({"from": was, "to": now, **money})
        order = _value_order(schema["decisions"][d].get("values") or [], list(pd.unique(np.concatenate([was, now]))))
        matrix = pd.crosstab(frame["from"], frame["to"]).reindex(
            index=[v for v in order if v in set(was)], columns=[v for v in order if v in set(now)], fill_value=0)
        moved = np.flatnonzero(was != now)
        moves = frame.iloc[moved].groupby(["from", "to"], sort=False).agg(
            entities=("from", "size"), **{m: (m, "sum") for m in measures}).reset_index()
        for m in measures:  # sums of amounts in cents: without the float noise of adding them up
            moves[m] = moves[m].round(6)
        moves = moves.sort_values("entities", ascending=False, kind="stable").reset_index(drop=True)
        rule = joined.column(f"rule:{d}") if f"rule:{d}" in joined.column_names else pa.nulls(len(keys), pa.string())
        movers = pd.DataFrame({key: keys[moved], "from": was[moved], "to": now[moved],
                               "rule": labels(rule.take(pa.array(moved))) if len(moved) else np.array([], object),
                               **{m: money[m][moved] for m in measures}})
        if measures:
            size = np.abs(np.nan_to_num(movers[measures[0]].to_numpy(dtype=float)))
            movers = movers.iloc[np.lexsort([movers[key].to_numpy(dtype=str), -size])].reset_index(drop=True)
        else:
            movers = movers.sort_values(key, kind="stable").reset_index(drop=True)
        out.append(Transition(entity, d, o, a.period, b.period, matrix, moves, movers, measures,
                              a.policy_hash != b.policy_hash, dict(schema.get("decimals", {}))))
    return out


def _value_order(declared: list[Any], seen: list[Any]) -> list[str]:
    """Declared values first (A, B, C, D), then the others as text, then missing, new and gone."""
    first = [str(v) for v in declared]
    special = [MISSING_TEXT, NEW, GONE]
    rest = sorted(str(v) for v in seen if str(v) not in first and str(v) not in special)
    return first + rest + special


def with_reasons(history: History, t: Transition, top: int | None = None) -> pd.DataFrame:
    """The movers (or the first `top` of them) with the because text of their decision after the move."""
    movers = t.movers if top is None else t.movers.head(top)
    schema = history.need_period(t.after).entities[t.entity]
    key = schema["key"]
    present = movers[movers["to"] != GONE]
    because = pd.Series([None] * len(movers), index=movers.index, dtype=object)
    if len(present):
        rows = history.select(t.entity, f"{PERIOD} = ? AND {quote(key)} IN (SELECT unnest(?))",
                              [t.after, present[key].astype(str).tolist()])
        texts = history.reasons(t.entity, rows)
        column = f"{t.decision}_because"
        if column in texts:
            by_key = dict(zip(rows[key].astype(str), texts[column].astype(object)))
            because.loc[present.index] = [by_key.get(str(k)) for k in present[key]]
    because.loc[movers["to"] == GONE] = f"not in {t.after}"
    out = movers.copy()
    out.insert(4, "because", because.to_numpy())
    return out


# -- rendering ------------------------------------------------------------------------------------------

def _text(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def _grid(header: list[str], rows: list[list[str]], markdown: bool, numbers: AbstractSet[int] = frozenset()
          ) -> list[str]:
    """A table; the columns in `numbers` (figures) right-aligned, the others left-aligned."""
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i in numbers else "---"
                                                           for i in range(len(header))) + "|"]
        return out + ["| " + " | ".join(r) + " |" for r in rows]
    columns = list(zip(header, *rows))
    widths = [max(len(x) for x in col) for col in columns]
    fmt = lambda r: ("  " + "  ".join(c.rjust(w) if i in numbers else c.ljust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(r, widths)))).rstrip()
    return [fmt(header)] + [fmt(r) for r in rows]


def render_changes(history: History, transitions: list[Transition], top: int, markdown: bool = False,
                   reader: Reader | None = None) -> str:
    """Per decision: the transition matrix, the moves with the money that moved, the biggest movers;
    the figures in the reader's locale (en_US unless given), each measure by its unit with the
    currency in its heading (`revenue (CN¥)`)."""
    figures = reader or locale_reader(None)
    count = Unit(COUNT)
    lines: list[str] = []
    units_of_period: dict[tuple[str, str], dict[str, Unit]] = {}
    for t in transitions:
        if (t.after, t.entity) not in units_of_period:
            units_of_period[(t.after, t.entity)] = units_of(policy_set_of(history, t.after), t.entity)
        units = units_of_period[(t.after, t.entity)]
        shown_units = [units.get(m, PLAIN) for m in t.measures]
        headings = [figures.label(m, u) if u.kind == MONEY else m for m, u in zip(t.measures, shown_units)]
        total = int(t.matrix.to_numpy().sum())
        title = (f"{t.entity} / {t.decision}" + (f" ({t.output})" if t.output != t.decision else "")
                 + f": {t.before} -> {t.after}, {figures.number(t.moved, count)} of {figures.number(total, count)}"
                 " moved")
        lines += [f"## {title}" if markdown else title]
        if t.policies_changed:
            lines.append(("> " if markdown else "  ") + "the policies changed between the two periods: some moves "
                         "come from the change, not from the entities")
        lines.append("")
        header = ["from \\ to"] + [str(c) for c in t.matrix.columns]
        rows = [[str(b)] + [figures.number(int(n), count) for n in row]
                for b, row in zip(t.matrix.index, t.matrix.to_numpy())]
        lines += _grid(header, rows, markdown, set(range(1, len(header))))
        if len(t.moves):
            lines += ["", "moves:" if not markdown else "**moves**", ""] if markdown else ["", "moves:"]
            header = ["move", "entities"] + headings
            rows = [[f"{m['from']} -> {m['to']}", figures.number(int(m["entities"]), count)]
                    + [figures.number(m[x], u) for x, u in zip(t.measures, shown_units)]
                    for m in t.moves.to_dict("records")]
            lines += _grid(header, rows, markdown, set(range(1, len(header))))
            shown = with_reasons(history, t, top)
            key = shown.columns[0]
            first = f"the {len(shown)} biggest movers" if t.moved > len(shown) else "movers"
            lines += ["", f"**{first}**" if markdown else f"{first}:", ""] if markdown else ["", f"{first}:"]
            header = ["id", "move", "rule", "because"] + headings
            rows = [[str(r[key]), f"{r['from']} -> {r['to']}", _text(r["rule"]), _text(r["because"])]
                    + [figures.number(r[x], u) for x, u in zip(t.measures, shown_units)]
                    for r in shown.to_dict("records")]
            lines += _grid(header, rows, markdown, set(range(4, len(header))))
        lines.append("")
    return "\n".join(lines)


def movers_csv(history: History, transitions: list[Transition]) -> pd.DataFrame:
    """Every mover of every decision, one row each, with the reason after the move."""
    frames = []
    for t in transitions:
        movers = with_reasons(history, t)
        key = movers.columns[0]
        frames.append(pd.DataFrame({"entity": t.entity, "decision": t.decision, "from_period": t.before,
                                    "to_period": t.after, "id": movers[key].astype(str), "from": movers["from"],
                                    "to": movers["to"], "rule": movers["rule"], "because": movers["because"],
                                    **{m: movers[m] for m in t.measures}}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["entity", "decision", "from_period", "to_period", "id", "from", "to", "rule", "because"])
