"""What a policy folder shows as tables: its params, its derived features (a `lookup(...)` of numbers
as a grid of key/value cells) and one table per decision (a row per rule), each cell with the YAML
value behind it.

Worked out from the texts alone (no compiling), the same way at export and at import: the import
builds the tables of the texts the workbook was exported from and of the files as they are now, and
compares cells, never YAML lines.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from ...language.errors import Location, PolicyError, Problem
from ...language.edit import comment_above
from ...language.load import LocatedDoc, load_text
from ...language.numbers import number_text
from ...language.validate import param_value

Scalar = Union[str, int, float, bool]
Then = Union[Scalar, tuple[tuple[str, Scalar], ...], None]

SHEET_CHARS = 31  # Excel's longest sheet name
_NOT_IN_SHEET_NAMES = re.compile(r"[\[\]:*?/\\]")
# sheet names kam writes itself (and Excel's own `History`): a decision never takes one
FIXED_SHEETS = ("instructions", "params", "derive", "lists", "_kam")
_RESERVED = {s.lower() for s in FIXED_SHEETS} | {"history"}
PERCENT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*%\s*$")  # a share as `validate.param_value` reads it
# a feature that is a table of numbers by one value, in the one form a cell edit writes back (as the
# studio page reads it): `lookup(tier, {A: 0.80, B: 0.85})`
_LOOKUP = re.compile(r"lookup\((\w+), \{([^{}]*)\}\)")
_ENTRY = re.compile(r"([\w-]+): (-?[0-9]+(?:\.[0-9]+)?%?)")
# libyaml's parser where PyYAML has it (ten times quicker); only the marks of nodes are read from it
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Source:
    """One policy file: its name in the folder, its text, the sha256 of its text and its policy."""

    name: str
    text: str
    sha: str
    policy: str


def text_sha(text: str) -> str:
    """The sha256 of a text's UTF-8 bytes (of a policy file's bytes, for a file that is UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Param:
    """A row of the params sheet."""

    file: str
    policy: str
    name: str
    value: Scalar  # as the YAML holds it: "80%" stays the text it was written as
    description: str
    used_by: str

    @property
    def unit(self) -> str:
        """How the value is shown and read: `%` for a share written with %, `number`, `yes/no`, `text`."""
        if isinstance(self.value, bool):
            return "yes/no"
        if isinstance(self.value, (int, float)):
            return "number"
        return "%" if PERCENT.match(self.value) else "text"


@dataclass(frozen=True)
class Entry:
    """One cell of a lookup grid: its key and its number as written (`0.80`, `80%`)."""

    key: str
    token: str

    @property
    def value(self) -> float:
        return float(param_value(self.token)) if self.token.endswith("%") else float(self.token)


@dataclass(frozen=True)
class Derive:
    """A derived feature: its expression, or (`over` set) a lookup grid of numbers by `over`."""

    file: str
    policy: str
    name: str
    source: str
    description: str
    over: str | None = None
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True)
class Output:
    """One outcome column of a decision (`name` None for a decision of one unnamed output)."""

    name: str | None
    type: str  # string | number | boolean
    values: tuple[Scalar, ...] | None


@dataclass(frozen=True)
class Rule:
    """A row of a decision table: the rule's cells as the YAML holds them (None: the key is absent)."""

    id: str
    when: Scalar | None
    then: Then
    because: Scalar | None
    quota: str  # read-only: what the quota does, in words ("" without one)
    note: str  # read-only: the comment written above the rule

    def output(self, name: str | None) -> Scalar | None:
        """The value of one outcome: the `then` itself, or its entry `name`."""
        if name is None:
            return self.then if not isinstance(self.then, tuple) else None
        return dict(self.then).get(name) if isinstance(self.then, tuple) else None


@dataclass(frozen=True)
class Column:
    """A column of a decision sheet: `kind` is id, when, then, because, quota or note."""

    kind: str
    header: str
    output: Output | None = None

    @property
    def editable(self) -> bool:
        return self.kind not in ("quota", "note")


@dataclass(frozen=True)
class Table:
    """One decision as a sheet."""

    sheet: str
    file: str
    policy: str
    name: str
    description: str
    hit: str
    outputs: tuple[Output, ...]
    rules: tuple[Rule, ...]

    @property
    def single(self) -> bool:
        return len(self.outputs) == 1 and self.outputs[0].name is None

    @property
    def columns(self) -> tuple[Column, ...]:
        cols = [Column("id", "rule id"), Column("when", "when (condition)")]
        cols += [Column("then", "then" if o.name is None else f"then: {o.name}", o) for o in self.outputs]
        cols.append(Column("because", "because (reason)"))
        if any(r.quota for r in self.rules):
            cols.append(Column("quota", "quota (read-only)"))
        if any(r.note for r in self.rules):
            cols.append(Column("note", "note (read-only)"))
        return tuple(cols)

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


@dataclass(frozen=True)
class Tables:
    """Everything a workbook shows of a policy folder."""

    folder: str
    sources: tuple[Source, ...]
    params: tuple[Param, ...]
    derives: tuple[Derive, ...]
    decisions: tuple[Table, ...]

    def source(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)

    def param(self, file: str, name: str) -> Param | None:
        return next((p for p in self.params if p.file == file and p.name == name), None)

    def derive(self, file: str, name: str) -> Derive | None:
        return next((d for d in self.derives if d.file == file and d.name == name), None)

    def table(self, file: str, name: str) -> Table | None:
        return next((t for t in self.decisions if t.file == file and t.name == name), None)


def cell_text(value: Any) -> str:
    """A YAML scalar as the text of a text cell (`when: true` is the condition `true`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return number_text(value)
    return str(value)


def sheet_name(wanted: str, taken: set[str]) -> str:
    """A valid Excel sheet name for `wanted`, unique (without regard to case, as Excel compares) among
    `taken`, which it joins: at most 31 characters, none of []:*?/\\, no quote at either end."""
    base = _NOT_IN_SHEET_NAMES.sub("_", wanted).strip("'") or "decision"
    name, n = base[:SHEET_CHARS], 1
    while name.lower() in taken or name.lower() in _RESERVED:
        n += 1
        suffix = f" ({n})"
        name = base[:SHEET_CHARS - len(suffix)] + suffix
    taken.add(name.lower())
    return name


def _refuse(message: str, loc: Location, hint: str = "run kam check on the folder and fix what it says") -> PolicyError:
    return PolicyError(Problem("tables", message, loc, hint))



def _inline_comments(text: str) -> dict[tuple[str, str], str]:
    """The comment written after a value of `params:` or `derive:` on its own line (`key_share: 80%  # the
    cutoff`), by (section, name)."""
    try:
        root = yaml.compose(text, Loader=_COMPOSER)
    except yaml.YAMLError:
        return {}
    found = {}
    for k, v in root.value if isinstance(root, yaml.MappingNode) else []:
        if isinstance(k, yaml.ScalarNode) and k.value in ("params", "derive") and isinstance(v, yaml.MappingNode):
            for name, node in v.value:
                if isinstance(node, yaml.ScalarNode) and node.style not in ("|", ">"):
                    rest = text[node.end_mark.index:].split("\n", 1)[0].strip()
                    if rest.startswith("#"):
                        found[(k.value, str(name.value))] = rest.lstrip("#").strip()
    return found


def _used_by(name: str, data: Mapping[str, Any]) -> str:
    """Where a parameter is read in its file: features, rules (condition, outcome, reason), measures."""
    word = re.compile(rf"(?<![\w.]){re.escape(name)}(?![\w])")
    out = [f"feature {f}" for f, src in _mapping(data.get("derive")).items() if word.search(cell_text(src))]
    for d in _mapping(data.get("decisions")).values():
        for r in _mapping(d).get("rules") or []:
            if isinstance(r, dict):
                parts = [part for part, key in (("condition", "when"), ("outcome", "then"), ("reason", "because"))
                         if word.search(str(r.get(key, "")))]
                if parts:
                    out.append(f"rule {r.get('id')} ({', '.join(parts)})")
    out += [f"measure {m}" for m, src in _mapping(data.get("measures")).items() if word.search(cell_text(src))]
    out += [f"invariant {i.get('id')}" for i in data.get("invariants") or [] if isinstance(i, dict)
            and word.search(str(i.get("never", i.get("always", ""))))]
    return "; ".join(out)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def lookup_grid(source: str) -> tuple[str, tuple[Entry, ...]] | None:
    """`(over, entries)` of a feature written `lookup(over, {key: number, ...})` in the plain form a cell
    edit writes back; None for any other expression (shown and edited as text)."""
    m = _LOOKUP.fullmatch(source)
    if not m or not m.group(2).strip():
        return None
    entries = []
    for part in m.group(2).split(", "):
        e = _ENTRY.fullmatch(part)
        if not e:
            return None
        entries.append(Entry(e.group(1), e.group(2)))
    if len({e.key for e in entries}) < len(entries):
        return None
    return m.group(1), tuple(entries)


def lookup_source(over: str, entries: tuple[Entry, ...]) -> str:
    """The expression of a lookup grid: the inverse of `lookup_grid`."""
    return f"lookup({over}, {{{', '.join(f'{e.key}: {e.token}' for e in entries)}}})"


def _outputs(d: Mapping[str, Any]) -> tuple[Output, ...]:
    def kind(o: Mapping[str, Any]) -> str:
        values = o.get("values") or []
        if o.get("type"):
            return str(o["type"])
        if values and all(isinstance(v, bool) for v in values):
            return "boolean"
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return "number"
        return "string"

    def values(o: Mapping[str, Any]) -> tuple[Scalar, ...] | None:
        v = o.get("values")
        return tuple(v) if isinstance(v, list) and v else None

    if "outputs" in d:
        return tuple(Output(str(n), kind(_mapping(o)), values(_mapping(o))) for n, o in _mapping(d["outputs"]).items())
    return (Output(None, kind(d), values(d)),)


def _quota_words(q: Mapping[str, Any]) -> str:
    rank = q.get("rank_by")
    ranks = ", ".join(str(x) for x in rank) if isinstance(rank, list) else str(rank)
    words = f"the top {cell_text(q.get('top'))} by {ranks}"
    if q.get("per"):
        words += f" per {q['per']}"
    if q.get("ties"):
        words += f" (ties: {q['ties']})"
    e = _mapping(q.get("else"))
    then = e.get("then")
    then_text = (", ".join(f"{k}: {cell_text(v)}" for k, v in then.items()) if isinstance(then, dict)
                 else cell_text(then))
    words += f"; the others: rule {cell_text(e.get('id'))} gives {then_text}"
    if e.get("because"):
        words += f", because \"{e['because']}\""
    return words


def _rule(doc: LocatedDoc, lines: list[str], path: tuple[Any, ...], r: Any, outputs: tuple[Output, ...]) -> Rule:
    loc = doc.loc(path)
    if not isinstance(r, dict) or not isinstance(r.get("id"), str) or "then" not in r:
        raise _refuse("a rule needs an `id` and a `then` to be a row of a decision table", loc)
    then = r["then"]
    single = len(outputs) == 1 and outputs[0].name is None
    if isinstance(then, dict) and not single and all(not isinstance(v, (dict, list)) for v in then.values()):
        shown: Then = tuple((str(k), v) for k, v in then.items())
    elif not isinstance(then, (dict, list)) and single:
        shown = then
    else:
        raise _refuse(f"the `then` of rule `{r['id']}` does not fit its decision's outputs", doc.loc(path + ("then",)))
    quota = _quota_words(r["quota"]) if isinstance(r.get("quota"), dict) else ""
    return Rule(r["id"], r.get("when"), shown, r.get("because"), quota, comment_above(lines, loc.line))


def _decisions(doc: LocatedDoc, name: str, policy: str, lines: list[str]) -> list[Table]:
    out = []
    for d_name, d in _mapping(doc.data.get("decisions")).items():
        path = ("decisions", d_name)
        rules = d.get("rules") if isinstance(d, dict) else None
        if not isinstance(rules, list) or not rules:
            raise _refuse(f"decision `{d_name}` has no list of rules", doc.loc(path))
        outputs = _outputs(d)
        table_rules = tuple(_rule(doc, lines, path + ("rules", i), r, outputs) for i, r in enumerate(rules))
        ids = [r.id for r in table_rules]
        if len(set(ids)) < len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise _refuse(f"rule id `{dup}` appears twice in decision `{d_name}`: rows are matched by id",
                          doc.loc(path + ("rules",)))
        out.append(Table("", name, policy, str(d_name), cell_text(d.get("description")), str(d.get("hit", "first")),
                         outputs, table_rules))
    return out


def _file_tables(name: str, text: str, folder: Path) -> tuple[Source, list[Param], list[Derive], list[Table]]:
    doc = load_text(text, str(folder / name))
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("policy"), str):
        raise _refuse("not a policy file (it needs `policy:`, `entity:` and `decisions:`)", Location(doc.file, 1, 1))
    policy, lines = data["policy"], text.splitlines()
    inline = _inline_comments(text)
    params = [Param(name, policy, str(p), v,
                    comment_above(lines, doc.key_loc(("params", p)).line) or inline.get(("params", str(p)), ""),
                    _used_by(str(p), data))
              for p, v in _mapping(data.get("params")).items()]
    for p in params:
        if not isinstance(p.value, (str, int, float, bool)):
            raise _refuse(f"parameter `{p.name}` is not a single value", doc.loc(("params", p.name)))
    derives = []
    for f, src in _mapping(data.get("derive")).items():
        source = cell_text(src)
        grid = lookup_grid(source) if isinstance(src, str) else None
        description = comment_above(lines, doc.key_loc(("derive", f)).line) or inline.get(("derive", str(f)), "")
        derives.append(Derive(name, policy, str(f), source, description, *(grid or (None, ()))))
    return Source(name, text, text_sha(text), policy), params, derives, _decisions(doc, name, policy, lines)


def tables_of(texts: Mapping[str, str], folder: Path) -> Tables:
    """The tables of policy files given by name and text (in name order). Raises PolicyError, located
    in the file, for a file that does not parse or whose rules cannot be rows (no id, a `then` of the
    wrong shape, an id twice)."""
    sources, params, derives, decisions = [], [], [], []
    for name in sorted(texts):
        source, p, d, t = _file_tables(name, texts[name], folder)
        sources.append(source)
        params += p
        derives += d
        decisions += t
    taken: set[str] = set()
    named = tuple(Table(sheet_name(t.name, taken), t.file, t.policy, t.name, t.description, t.hit, t.outputs, t.rules)
                  for t in decisions)
    return Tables(str(folder), tuple(sources), tuple(params), tuple(derives), named)
