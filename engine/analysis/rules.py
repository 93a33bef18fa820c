"""Static analysis of a checked plan: rules that can never fire, overlaps, gaps, unused names.

Conditions built from comparisons of one field against constants (`x > 5`, `0 < x <= 10`,
`tier == 'A'`, `region in [...]`, `is_missing(x)`, yes/no fields) joined by `and`, `or`, `not` are
turned into exact sets of entities: per field an interval set (numbers) or a value set (text,
yes/no), each with or without "missing", and a condition into a union of boxes (one such set per
field). Missing values follow the engine's three-valued logic exactly: `not (x > 5)` holds only
where x is known and at most 5. Derived features and decisions are fields like facts. Anything
else (arithmetic, functions, comparing two fields) is reported as "not analysed", never guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Iterable, Union

from ..language.errors import Location, Problem
from ..language.numbers import number_text, plain_number
from ..language.model import Decision, Rule
from ..language.nodes import FLIPPED, PREVIOUS, Bool, Call, Compare, In, Logic, Member, Name, Node, Not, Num, Str, \
    names, past_key, past_reads, to_text
from ..language.plan import DecisionStep, DeriveStep, EntityPlan, Plan, decision_reads, step_nodes
from ..language.types import Checked, Symbol

MAX_BOXES = 2000
INF = math.inf

Interval = tuple[float, bool, float, bool]  # lo, lo closed, hi, hi closed


class NotAnalysed(Exception):
    """A condition outside the fragment the analysis decides exactly."""


# -- field sets ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class NumSet:
    intervals: tuple[Interval, ...]
    missing: bool
    integer: bool = False


@dataclass(frozen=True)
class ValSet:
    """Allowed values: `values` when finite, else every value except `excluded`."""

    values: frozenset | None
    excluded: frozenset = frozenset()
    missing: bool = False


@dataclass(frozen=True)
class ListSet:
    """A collected list: conditions only ask whether it holds a value (a yes/no field per value)."""

    missing: bool = False


FieldSet = Union[NumSet, ValSet]


def _norm_interval(iv: Interval, integer: bool) -> Interval | None:
    lo, lc, hi, hc = iv
    if integer:
        lo = (math.ceil(lo) if lc else math.floor(lo) + 1) if math.isfinite(lo) else lo
        hi = (math.floor(hi) if hc else math.ceil(hi) - 1) if math.isfinite(hi) else hi
        lc = hc = True
    if lo > hi or (lo == hi and not (lc and hc)) or (lo == hi and not math.isfinite(lo)):
        return None
    return (lo, lc and math.isfinite(lo), hi, hc and math.isfinite(hi))


def _merge(intervals: Iterable[Interval], integer: bool) -> tuple[Interval, ...]:
    items = sorted((i for i in (_norm_interval(iv, integer) for iv in intervals) if i is not None),
                   key=lambda i: (i[0], not i[1]))
    out: list[Interval] = []
    for lo, lc, hi, hc in items:
        if out:
            plo, plc, phi, phc = out[-1]
            touching = lo < phi or (lo == phi and (lc or phc)) or (integer and lo == phi + 1)
            if touching:
                if hi > phi or (hi == phi and hc):
                    out[-1] = (plo, plc, hi, hc)
                continue
        out.append((lo, lc, hi, hc))
    return tuple(out)


def intersect(a: FieldSet, b: FieldSet) -> FieldSet:
    if isinstance(a, NumSet) and isinstance(b, NumSet):
        integer = a.integer or b.integer
        parts = []
        for alo, alc, ahi, ahc in a.intervals:
            for blo, blc, bhi, bhc in b.intervals:
                lo, lc = (alo, alc) if alo > blo else (blo, blc) if blo > alo else (alo, alc and blc)
                hi, hc = (ahi, ahc) if ahi < bhi else (bhi, bhc) if bhi < ahi else (ahi, ahc and bhc)
                parts.append((lo, lc, hi, hc))
        return NumSet(_merge(parts, integer), a.missing and b.missing, integer)
    assert isinstance(a, ValSet) and isinstance(b, ValSet)
    missing = a.missing and b.missing
    if a.values is not None and b.values is not None:
        return ValSet(a.values & b.values, frozenset(), missing)
    if a.values is not None:
        return ValSet(a.values - b.excluded, frozenset(), missing)
    if b.values is not None:
        return ValSet(b.values - a.excluded, frozenset(), missing)
    return ValSet(None, a.excluded | b.excluded, missing)


def complement(a: FieldSet, domain: FieldSet) -> FieldSet:
    """Everything of the field's domain that `a` does not allow."""
    if isinstance(a, NumSet):
        gaps: list[Interval] = []
        lo, lc = -INF, False
        for ilo, ilc, ihi, ihc in a.intervals:
            gaps.append((lo, lc, ilo, not ilc))
            lo, lc = ihi, not ihc
        gaps.append((lo, lc, INF, False))
        return intersect(NumSet(_merge(gaps, a.integer), not a.missing, a.integer), domain)
    if a.values is not None:
        return intersect(ValSet(None, a.values, not a.missing), domain)
    return intersect(ValSet(a.excluded, frozenset(), not a.missing), domain)


def is_empty(a: FieldSet) -> bool:
    if a.missing:
        return False
    if isinstance(a, NumSet):
        return not a.intervals
    return a.values is not None and not a.values


def sample(a: FieldSet) -> object:
    """One value of a non-empty set, as simple as possible (None = missing)."""
    if isinstance(a, NumSet):
        for lo, lc, hi, hc in a.intervals:
            if lo <= 0 <= hi and (lo < 0 or lc) and (hi > 0 or hc):
                return 0
            if math.isfinite(lo):
                if lc:
                    return plain_number(lo)
                step = 1 if not math.isfinite(hi) or hi - lo > 1 else (hi - lo) / 2
                return plain_number(lo + step)
            if math.isfinite(hi):
                return plain_number(hi if hc else hi - 1)
        return None
    if a.values is not None:
        return sorted(a.values, key=str)[0] if a.values else None
    candidate = "other"
    while candidate in a.excluded:
        candidate += "_"
    return candidate


# -- conditions as unions of boxes ---------------------------------------------------------------

Box = dict[str, FieldSet]


@dataclass
class Space:
    """The fields an entity's conditions range over, with their full domains."""

    domains: dict[str, Any]  # FieldSet per field; ListSet for a collected list

    def field(self, name: str) -> FieldSet:
        if name not in self.domains:
            raise NotAnalysed(f"`{name}`")
        return self.domains[name]

    def box_and(self, a: Box, b: Box) -> Box | None:
        out = dict(a)
        for f, s in b.items():
            out[f] = intersect(out[f], s) if f in out else s
            if is_empty(out[f]):
                return None
        return out

    def conj(self, a: list[Box], b: list[Box]) -> list[Box]:
        out = [c for x in a for y in b if (c := self.box_and(x, y)) is not None]
        if len(out) > MAX_BOXES:
            raise NotAnalysed("too many combinations")
        return out

    def minus(self, boxes: list[Box], cut: Box) -> list[Box]:
        """`boxes` without the entities in `cut` (as disjoint boxes)."""
        out: list[Box] = []
        outsides = {f: complement(s, self.domains[f]) for f, s in cut.items()}
        for box in boxes:
            # a box the cut does not touch stays whole: cutting it field by field would only split it
            if any(is_empty(intersect(box.get(f, self.domains[f]), s)) for f, s in cut.items()):
                out.append(box)
                continue
            rest = dict(box)
            for f, s in cut.items():
                current = rest.get(f, self.domains[f])
                outside = intersect(current, outsides[f])
                if not is_empty(outside):
                    out.append({**rest, f: outside})
                rest[f] = intersect(current, s)
                if is_empty(rest[f]):
                    break
        if len(out) > MAX_BOXES:
            raise NotAnalysed("too many combinations")
        return out

    def minus_all(self, boxes: list[Box], cuts: Iterable[Box]) -> list[Box]:
        for cut in cuts:
            boxes = self.minus(boxes, cut)
            if not boxes:
                break
        return boxes

    # TRUE and FALSE regions of a condition under three-valued logic
    def regions(self, node: Node) -> tuple[list[Box], list[Box]]:
        node = as_field(node)
        if isinstance(node, Bool):
            return ([{}], []) if node.value else ([], [{}])
        if isinstance(node, Name):
            dom = self.field(node.name)
            if not isinstance(dom, ValSet) or dom.values is None or not dom.values <= {True, False}:
                raise NotAnalysed(f"`{node.name}` used as a condition")
            return [{node.name: ValSet(frozenset({True}))}], [{node.name: ValSet(frozenset({False}))}]
        if isinstance(node, Not):
            t, f = self.regions(node.operand)
            return f, t
        if isinstance(node, Logic):
            parts = [self.regions(i) for i in node.items]
            true, false = parts[0]
            for t, f in parts[1:]:
                if node.op == "and":
                    true, false = self.conj(true, t), false + f
                else:
                    true, false = true + t, self.conj(false, f)
            if len(true) > MAX_BOXES or len(false) > MAX_BOXES:
                raise NotAnalysed("too many combinations")
            return true, false
        if isinstance(node, Compare):
            true, false = [{}], []  # chained: all pairs true; false if any pair false
            for i, op in enumerate(node.ops):
                t, f = self.compare(op, node.operands[i], node.operands[i + 1])
                true, false = self.conj(true, t), false + f
            return true, false
        if isinstance(node, In):
            node = replace(node, operand=as_field(node.operand))
            if not isinstance(node.operand, Name):
                raise NotAnalysed("`in` on a computed value")
            field = node.operand.name
            dom = self.field(field)
            if not all(isinstance(i, (Num, Str, Bool)) for i in node.items):
                raise NotAnalysed("`in` with a computed value in its list")
            values = frozenset(i.value for i in node.items)  # type: ignore[union-attr]
            if isinstance(dom, NumSet):
                pts = [(float(v), True, float(v), True) for v in values]
                inside: FieldSet = NumSet(_merge(pts, dom.integer), False, dom.integer)
                outside = complement(NumSet(inside.intervals, True, dom.integer), dom)  # type: ignore[union-attr]
            else:
                inside = ValSet(values)
                outside = ValSet(None, values)
            inside = intersect(inside, replace(dom, missing=False))
            t, f = _box(field, inside), _box(field, outside)
            return (f, t) if node.negate else (t, f)
        if isinstance(node, Member) and isinstance(node.collection, Name) and \
                isinstance(node.item, (Num, Str, Bool)):
            # whether a collected list holds a value is a yes/no field of its own
            lst = self.field(node.collection.name)
            if not isinstance(lst, ListSet):
                raise NotAnalysed("`in` on a value that is not a list")
            field = to_text(Member(node.item, node.collection))
            self.domains.setdefault(field, ValSet(frozenset({True, False}), frozenset(), lst.missing))
            held: list[Box] = [{field: ValSet(frozenset({True}))}]
            lacking: list[Box] = [{field: ValSet(frozenset({False}))}]
            return (lacking, held) if node.negate else (held, lacking)
        if isinstance(node, Call) and node.func == "is_missing" and isinstance(as_field(node.args[0]), Name):
            field = as_field(node.args[0]).name  # type: ignore[union-attr]
            dom = self.field(field)
            present = replace(dom, missing=False)
            absent: FieldSet = NumSet((), True, dom.integer) if isinstance(dom, NumSet) else \
                ValSet(frozenset(), frozenset(), True)
            return _box(field, intersect(absent, dom)), _box(field, present)
        raise NotAnalysed(_describe(node))

    def compare(self, op: str, left: Node, right: Node) -> tuple[list[Box], list[Box]]:
        left, right = as_field(left), as_field(right)
        if isinstance(right, Name) and not isinstance(left, Name):
            left, right, op = right, left, FLIPPED[op]
        if not isinstance(left, Name) or not isinstance(right, (Num, Str, Bool)):
            fixed = (Num, Str, Bool)
            if isinstance(left, fixed) != isinstance(right, fixed):  # a computed value against a fixed one
                raise NotAnalysed(_describe(right if isinstance(left, fixed) else left))
            raise NotAnalysed("a comparison of two computed values")
        field = left.name
        dom = self.field(field)
        value = right.value
        if isinstance(dom, NumSet):
            v = float(value)
            sets = {"<": (-INF, False, v, False), "<=": (-INF, False, v, True), ">": (v, False, INF, False),
                    ">=": (v, True, INF, False), "==": (v, True, v, True)}
            if op == "!=":
                true = NumSet(_merge([(-INF, False, v, False), (v, False, INF, False)], dom.integer), False,
                              dom.integer)
            else:
                true = NumSet(_merge([sets[op]], dom.integer), False, dom.integer)
            true = intersect(true, replace(dom, missing=False))
            false = intersect(complement(true, dom), replace(dom, missing=False))
            return _box(field, true), _box(field, false)
        if op not in ("==", "!="):
            raise NotAnalysed("ordering of text")
        present = replace(dom, missing=False)
        eq = intersect(ValSet(frozenset({value})), present)
        ne = intersect(ValSet(None, frozenset({value})), present)
        return (_box(field, eq), _box(field, ne)) if op == "==" else (_box(field, ne), _box(field, eq))


def as_field(node: Node) -> Node:
    """`previous(x, k)` is a field of its own (the value k periods back), analysed like a name."""
    if isinstance(node, Call) and node.func == PREVIOUS and isinstance(node.args[0], Name):
        back = int(node.args[1].value) if len(node.args) > 1 and isinstance(node.args[1], Num) else 1
        return Name(past_key(node.args[0].name, back), node.pos)
    return node


def past_domains(ep: EntityPlan, domains: dict[str, Any]) -> dict[str, Any]:
    """The domains of the earlier values an entity reads: those of the names, and always maybe missing
    (an entity new since then has none)."""
    return {r.key: replace(domains[r.name], missing=True) for r in ep.past if r.name in domains}


def _box(field: str, fs: FieldSet) -> list[Box]:
    return [] if is_empty(fs) else [{field: fs}]


def _describe(node: Node) -> str:
    if isinstance(node, Call):
        return f"the function `{node.func}`"
    return "a computed value"


def _value_text(v: object) -> str:
    """A value as a policy would write it: 'text' quoted, true/false, numbers plain."""
    if v is None:
        return "missing"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return number_text(float(v))
    return repr(v)


def example(space: Space, box: Box) -> str:
    """A concrete entity from a box: the constrained fields and a value for each."""
    parts = []
    for f in sorted(box):
        v = sample(intersect(box[f], space.domains[f]))
        parts.append(f"{f} = {_value_text(v)}")
    return ", ".join(parts) or "any entity"


# -- the analysis --------------------------------------------------------------------------------

def _domain(sym: Symbol, checked: Checked, entity: str) -> FieldSet | ListSet:
    ps = checked.policy_set
    if sym.type.kind == "list":
        return ListSet(missing=sym.kind == "join")
    fact = ps.facts(entity).get(sym.name) if sym.kind == "fact" else None
    if sym.type.kind == "number":
        lo = fact.min if fact and fact.min is not None else -INF
        hi = fact.max if fact and fact.max is not None else INF
        integer = bool(fact and fact.type == "integer")
        return NumSet(_merge([(lo, True, hi, True)], integer), not (fact and fact.required), integer)
    missing = not (fact and fact.required)
    if sym.kind == "decision":
        decision = next(d for d in ps.decisions(entity) if d.name == sym.owner)
        missing = not any(r.is_default for r in decision.rules) or decision.hit in ("unique", "any")
    if sym.type.kind == "boolean":
        return ValSet(frozenset({True, False}), frozenset(), missing)
    return ValSet(frozenset(sym.type.values) if sym.type.values else None, frozenset(), missing)


def _warn(code: str, message: str, loc: Location, hint: str = "", severity: str = "warning") -> Problem:
    return Problem(code, message, loc, hint, severity)


def _rule_loc(rule: Rule) -> Location:
    return rule.when.loc if rule.when is not None else rule.loc


def analyse_decision(space: Space, d: Decision) -> tuple[list[Problem], set[str]]:
    """Findings for one decision, and the ids of its rules that can never fire."""
    out: list[Problem] = []
    dead: set[str] = set()
    regions: list[list[Box] | None] = []
    for r in d.rules:
        if r.when is None or r.when.node is None:
            regions.append([{}])
            continue
        try:
            regions.append(space.regions(r.when.node)[0])
        except NotAnalysed as exc:
            regions.append(None)
            out.append(_warn("not-analysed", f"rule `{r.id}` of `{d.name}` is not analysed: its condition uses {exc}",
                             _rule_loc(r), "only comparisons of one field with fixed values are analysed",
                             severity="note"))
    conditional = [i for i, r in enumerate(d.rules) if not r.is_default]
    for r in d.rules[:-1]:
        if r.is_default:
            out.append(_warn("default-not-last", f"rule `{r.id}` of `{d.name}` has no `when` but is not the last rule",
                             r.loc, "a rule without `when` is the default: write it last; for a rule that always "
                             "matches where it stands, write `when: true`"))
    for i, r in enumerate(d.rules):
        reg = regions[i]
        if reg is not None and not reg and r.when is not None:
            dead.add(r.id)
            out.append(_warn("never-fires", f"rule `{r.id}` of `{d.name}` can never fire: its condition is never true",
                             _rule_loc(r), "the comparisons contradict each other (e.g. `x > 5 and x < 3`)"))
    if d.hit == "first":
        for i, r in enumerate(d.rules):
            reg = regions[i]
            if not reg or any(regions[j] is None for j in range(i)):
                continue
            earlier = [j for j in range(i) if regions[j]]
            default = next((j for j in earlier if d.rules[j].is_default or
                            (d.rules[j].quota is not None and d.rules[j].when is None)), None)
            if default is not None:
                dead.add(r.id)
                out.append(_warn("never-fires", f"rule `{r.id}` of `{d.name}` can never fire: it comes after "
                                 f"`{d.rules[default].id}`, which applies to every entity", r.loc,
                                 "move it before that rule, or remove it"))
                continue
            if not space.minus_all(reg, [b for j in earlier for b in regions[j]]):  # type: ignore[union-attr]
                dead.add(r.id)
                blockers = [d.rules[j].id for j in earlier
                            if any(space.box_and(x, y) for x in reg for y in regions[j])]  # type: ignore[union-attr]
                out.append(_warn("never-fires", f"rule `{r.id}` of `{d.name}` can never fire: every entity it "
                                 f"matches is taken first by {', '.join(f'`{b}`' for b in blockers)}",
                                 _rule_loc(r), "put the narrower rule first"))
    if d.hit in ("unique", "any"):
        for a_pos, i in enumerate(conditional):
            for j in conditional[a_pos + 1:]:
                ri, rj = regions[i], regions[j]
                if not ri or not rj:
                    continue
                if d.hit == "any" and d.rules[i].then == d.rules[j].then:
                    continue
                both = next((c for x in ri for y in rj if (c := space.box_and(x, y)) is not None), None)
                if both is not None:
                    out.append(_warn("overlap", f"rules `{d.rules[i].id}` and `{d.rules[j].id}` of `{d.name}` can "
                                     f"both match the same entity (hit policy {d.hit}), for example: "
                                     f"{example(space, both)}", _rule_loc(d.rules[j]),
                                     "make the conditions exclusive, or use hit policy first"))
    has_default = any(r.is_default for r in d.rules) or any(r.quota is not None and r.when is None for r in d.rules)
    analysable = all(regions[i] is not None for i in range(len(d.rules)))
    if analysable and not has_default and not d.gives_list and d.hit != "collect":  # nothing collected: []
        rest = space.minus_all([{}], [b for reg in regions for b in reg])  # type: ignore[union-attr]
        if rest:
            out.append(_warn("gap", f"decision `{d.name}` has no default and some entities match no rule, "
                             f"for example: {example(space, rest[0])}", d.loc,
                             "add a last rule without `when`, or widen the conditions"))
    if analysable and has_default and d.hit != "first":
        default = next((r for r in d.rules if r.is_default), None)
        covered = [b for i in conditional for b in regions[i]]  # type: ignore[union-attr]
        if default is not None and conditional and not space.minus_all([{}], covered):
            dead.add(default.id)
            out.append(_warn("never-fires", f"default rule `{default.id}` of `{d.name}` can never fire: "
                             "the other rules cover every entity", default.loc))
    return out, dead


def _unused(checked: Checked, plan: Plan) -> list[Problem]:
    ps = checked.policy_set
    out: list[Problem] = []
    for entity in ps.entities:
        read: set[str] = set()
        for p in ps.of_entity(entity):
            for dv in p.derives:
                read |= set(names(dv.expr.node, past=True)) if dv.expr.node else set()
            for d in p.decisions:
                read |= set(decision_reads(d))
                read |= {n for node in step_nodes(DecisionStep(d)) for n in names(node, past=True)}
            for j in p.joins:
                read.add(j.on)
            for inv in p.invariants:
                read |= set(names(inv.expr.node, past=True)) if inv.expr.node else set()
            for m in p.measures:
                read |= set(names(m.expr.node, past=True)) if m.expr.node else set()
        for p in ps.policies:  # names other entities take through joins
            for j in p.joins:
                if j.entity == entity:
                    read |= set(j.take)
        key = ps.key(entity)
        for p in ps.of_entity(entity):
            for prm in p.params:
                if prm.name not in read:
                    out.append(_warn("unused", f"parameter `{prm.name}` is declared but no rule, feature or text "
                                     "uses it", prm.loc, "remove it, or use it by its name"))
            for f in p.facts:
                if f.name not in read and not f.key and not f.measure and not (key and f.name == key.name):
                    out.append(_warn("unused", f"fact `{f.name}` is declared but no rule or feature reads it",
                                     f.loc, "remove it, or mark it `measure: true` if reports should sum it"))
            for dv in p.derives:
                if dv.name not in read:
                    out.append(_warn("unused", f"feature `{dv.name}` is derived but never used", dv.loc,
                                     "remove it, or use it in a rule"))
            for j in p.joins:
                for name, loc in zip(j.take, j.take_locs):
                    if name not in read:
                        out.append(_warn("unused", f"`{name}` is joined from {j.entity} but never used", loc))
    return out


def _unproducible(d: Decision, dead: set[str]) -> list[Problem]:
    out = []
    rules = d.all_rules
    for o in d.outputs:
        if not o.values:
            continue
        produced = {dict(r.then).get(o.name) for r in rules if r.id not in dead}
        for v in o.values:
            if v not in produced:
                out.append(_warn("unused-value", f"`{o.name}` declares the value {v!r}, but no rule that can fire "
                                 f"gives it", d.loc, "remove the value, or add a rule that gives it"))
    return out


def analyse(plan: Plan) -> list[Problem]:
    """Warnings (and notes on what was not analysed) for every decision of the plan."""
    checked = plan.checked
    out: list[Problem] = []
    for ep in plan.entities:
        ns = checked.namespaces[ep.entity]
        space = Space({name: _domain(sym, checked, ep.entity) for name, sym in ns.symbols.items()
                       if sym.type.kind in ("number", "string", "boolean", "list")})
        space.domains.update(past_domains(ep, space.domains))
        for d in ep.decisions:
            found, dead = analyse_decision(space, d)
            out += found + _unproducible(d, dead)
        out += _past_notes(ep)
    return out + _unused(checked, plan)


def _past_notes(ep: EntityPlan) -> list[Problem]:
    """A note per decision that reads earlier periods: which values, and what follows from it."""
    out = []
    steps = {s.name: s for s in ep.steps}
    for d in ep.decisions:
        if d.name not in ep.past_direct:
            continue
        reads: list[str] = []
        pending, seen = [d.name], set()
        while pending:  # its own expressions and those of the features it reads
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            step = steps[name]
            for node in step_nodes(step):
                reads += [f"previous({n})" if back == 1 else f"previous({n}, {back})" for n, back in past_reads(node)]
            reads_of = decision_reads(step.decision) if isinstance(step, DecisionStep) else \
                names(step.derive.expr.node) if step.derive.expr.node is not None else []  # type: ignore[union-attr]
            pending += [n for n in reads_of if n in steps and isinstance(steps[n], DeriveStep)]
        follow = [n for n in ep.from_past if n not in ep.past_direct and n in {x.name for x in ep.decisions}]
        then = f"; {', '.join(follow)} depend{'s' if len(follow) == 1 else ''} on it" if follow else ""
        out.append(_warn("reads-past", f"decision `{d.name}` reads earlier periods ({', '.join(dict.fromkeys(reads))})"
                         f"{then}", d.loc, f"run it with --history FILE --period LABEL; without a history previous() "
                         f"is missing for every {ep.entity}, and its rules decide as they do for a missing value",
                         "note"))
    return out
