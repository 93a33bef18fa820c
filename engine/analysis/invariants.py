"""Invariants proved or refuted on the rules, for `kam check`.

An invariant (`never: retention == 'exit' and 'none' not in protected_by`) is turned into the set of
entities that would break it, with the exact analysis of `engine.analyze` extended in three ways:

* a decision is replaced by what decides it: `retention == 'exit'` is the set of entities on which
  the rule giving `exit` fires under the decision's hit policy (its condition, minus the conditions
  of the rules before it under `first`, ...), recursively through decisions that read decisions;
  whether a collected list holds a value is the union of the rules giving it;
* a yes/no feature is replaced by its condition (`loyal_long_standing` by `tenure_years >= 5 and
  profit_prev_year > 0`); a number feature stays a field of its own, free to take any value;
* what the analysis cannot decide exactly — a comparison of two fields or of computed values — is a
  field of its own that can be `<`, `=` or `>` (the same for every place comparing the same two
  things, so `x > y` and `x <= y` stay exclusive).

Each extension can only let more entities in than exist, never fewer: when the set is empty, no
entity whatever the data can break the invariant, and it is *proved*. When it is not empty, kam
looks for a real example: it builds populations of entities from the facts that set allows, decides
them with the real engine, and checks the invariant on each. An entity that breaks it is shown
(*violated*, with its facts and the rules that decided); if none is found, the result is *not
analysed*, with the reason — never a guess.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from typing import TYPE_CHECKING

from .rules import INF, MAX_BOXES, Box, NotAnalysed, NumSet, Space, ValSet, _domain, past_domains
from ..language.errors import InputError, Location, Problem
from ..language.model import Decision, Derive, Fact, Invariant, Rule
from ..language.nodes import FLIPPED, Bool, Call, In, Member, Name, Node, Num, Str, names, to_text, walk
from ..language.numbers import number_text
from ..language.plan import DeriveStep, EntityPlan, Plan

if TYPE_CHECKING:  # the engine and the data libraries are loaded only to look for an example
    import numpy as np
    import pandas as pd

    from ..batch.evaluate import EntityResult

MISSING = object()  # the key of the region where a decision gives nothing
_ORDER = frozenset({"<", "=", ">"})
_OP_SETS = {"<": {"<"}, "<=": {"<", "="}, ">": {">"}, ">=": {">", "="}, "==": {"="}, "!=": {"<", ">"}}
SEARCH_ROUNDS = 6
ALONE_ROWS = 120  # entities tried one at a time in a population that overflows
POPULATION = 240


@dataclass
class InvariantResult:
    """What `kam check` found for one invariant."""

    invariant: Invariant
    status: str  # proved | violated | not-analysed
    reason: str = ""
    example: dict[str, Any] = field(default_factory=dict)  # id, facts, decided (name -> value, rule)
    rule_locs: list[tuple[str, Location]] = field(default_factory=list)  # rules that decided the example


class Expanding(Space):
    """A Space in which decisions and yes/no features stand for the conditions that make them."""

    def __init__(self, domains: dict[str, Any], decisions: dict[str, Decision], features: dict[str, Derive],
                 bool_features: set[str]):
        super().__init__(dict(domains))
        self.decisions = decisions  # output name -> decision
        self.features = features
        self.bool_features = bool_features
        self._values: dict[tuple[str, str], dict[Any, list[Box]]] = {}
        self._features: dict[str, tuple[list[Box], list[Box]]] = {}

    # -- fields that stand for something else ----------------------------------------------------
    def atom(self, op: str, left: Node, right: Node) -> tuple[list[Box], list[Box]]:
        """A comparison the boxes cannot express, as a field of its own: `<`, `=` or `>`."""
        lt, rt = to_text(left), to_text(right)
        if lt > rt:
            lt, rt, op = rt, lt, FLIPPED[op]
        name = f"[{lt} ? {rt}]"
        self.domains.setdefault(name, ValSet(_ORDER, frozenset(), True))
        true = frozenset(_OP_SETS[op])
        return [{name: ValSet(true)}], [{name: ValSet(_ORDER - true)}]

    def truth_atom(self, node: Node) -> tuple[list[Box], list[Box]]:
        name = f"[{to_text(node)}]"
        self.domains.setdefault(name, ValSet(frozenset({True, False}), frozenset(), True))
        return [{name: ValSet(frozenset({True}))}], [{name: ValSet(frozenset({False}))}]

    def value_regions(self, d: Decision, output: str) -> dict[Any, list[Box]]:
        """Where a decision gives each value of one output (and where it gives nothing: MISSING)."""
        key = (d.name, output)
        if key not in self._values:
            self._values[key] = self._decide(d, output)
        return self._values[key]

    def _rule_region(self, r: Rule) -> list[Box]:
        return [{}] if r.when is None or r.when.node is None else self.regions(r.when.node)[0]

    def _decide(self, d: Decision, output: str) -> dict[Any, list[Box]]:
        out: dict[Any, list[Box]] = {}

        def add(value: Any, boxes: list[Box]) -> None:
            out.setdefault(value, []).extend(boxes)
            if len(out[value]) > MAX_BOXES:
                raise NotAnalysed("too many combinations")

        def value_of(r: Rule) -> Any:
            v = dict(r.then).get(output)
            if not isinstance(v, (str, bool, int, float)) or isinstance(v, float) and math.isnan(v):
                raise NotAnalysed(f"the computed value of `{output}`")
            return v

        regions = [self._rule_region(r) for r in d.rules]
        conditional = [i for i, r in enumerate(d.rules) if not r.is_default]
        default = next((i for i, r in enumerate(d.rules) if r.is_default), None)
        anything = [b for i in conditional for b in regions[i]]
        if d.hit == "first":
            earlier: list[Box] = []
            for r, region in zip(d.rules, regions):
                fires = self.minus_all(region, earlier)
                add(value_of(r), fires)
                if r.quota is not None:  # who is inside the quota depends on the others: either can happen
                    add(value_of(r.quota.else_rule), fires)
                earlier += region
            add(MISSING, self.minus_all([{}], earlier))
            return out
        none_matched = self.minus_all([{}], anything)
        if default is not None:
            add(value_of(d.rules[default]), none_matched)
        else:
            add(MISSING, none_matched)
        if d.hit == "unique":
            for i in conditional:
                others = [b for j in conditional if j != i for b in regions[j]]
                add(value_of(d.rules[i]), self.minus_all(regions[i], others))
                add(MISSING, [c for j in conditional if j > i for x in regions[i] for y in regions[j]
                              if (c := self.box_and(x, y)) is not None])
            return out
        values = list(dict.fromkeys(value_of(d.rules[i]) for i in conditional))
        by_value = {v: [b for i in conditional if value_of(d.rules[i]) == v for b in regions[i]] for v in values}
        if d.hit == "any":
            for v in values:
                others = [b for w in values if w != v for b in by_value[w]]
                add(v, self.minus_all(by_value[v], others))
                add(MISSING, [c for w in values if w != v for x in by_value[v] for y in by_value[w]
                              if (c := self.box_and(x, y)) is not None])
            return out
        if d.hit == "priority":
            # the rule with the highest values wins (written order among equals)
            key = {i: (d.priority(d.rules[i]), i) for i in conditional}
            for i in conditional:
                higher = [b for j in conditional if key[j] < key[i] for b in regions[j]]
                add(value_of(d.rules[i]), self.minus_all(regions[i], higher))
            return out
        raise NotAnalysed(f"hit policy {d.hit} as a single value")

    def holds(self, d: Decision, output: str, value: Any) -> tuple[list[Box], list[Box]]:
        """Where a collected list holds a value, and where it does not."""
        regions = [self._rule_region(r) for r in d.rules]
        conditional = [i for i, r in enumerate(d.rules) if not r.is_default]
        giving = []
        for i, r in enumerate(d.rules):
            if dict(r.then).get(output) != value:
                continue
            if r.is_default:
                giving += self.minus_all([{}], [b for j in conditional for b in regions[j]])
            else:
                giving += regions[i]
        return giving, self.minus_all([{}], giving)

    # -- the conditions ---------------------------------------------------------------------------
    def regions(self, node: Node) -> tuple[list[Box], list[Box]]:
        if isinstance(node, Name) and node.name in self.bool_features:
            if node.name not in self._features:
                try:
                    self._features[node.name] = self.regions(self.features[node.name].expr.node)  # type: ignore[arg-type]
                except NotAnalysed:
                    self._features[node.name] = super().regions(node)
            return self._features[node.name]
        if isinstance(node, Name) and node.name in self.decisions and self._is_constant(node.name):
            d = self.decisions[node.name]
            if not d.gives_list:
                values = self.value_regions(d, node.name)
                return values.get(True, []), values.get(False, [])
        if isinstance(node, Member) and isinstance(node.collection, Name) and \
                isinstance(node.item, (Num, Str, Bool)) and node.collection.name in self.decisions:
            d = self.decisions[node.collection.name]
            if d.gives_list:
                true, false = self.holds(d, node.collection.name, node.item.value)
                return (false, true) if node.negate else (true, false)
        if isinstance(node, In) and isinstance(node.operand, Name) and node.operand.name in self.decisions \
                and all(isinstance(i, (Num, Str, Bool)) for i in node.items) and self._is_constant(node.operand.name):
            true_parts, false_parts = [], []
            for item in node.items:
                t, f = self.compare("==", node.operand, item)
                true_parts += t
                false_parts.append(f)
            false = false_parts[0] if false_parts else []
            for f in false_parts[1:]:
                false = self.conj(false, f)
            return (false, true_parts) if node.negate else (true_parts, false)
        if isinstance(node, Call) and node.func == "is_missing" and isinstance(node.args[0], Name) \
                and node.args[0].name in self.decisions and self._is_constant(node.args[0].name):
            d = self.decisions[node.args[0].name]
            values = self.value_regions(d, node.args[0].name)
            present = [b for k, v in values.items() if k is not MISSING for b in v]
            return values.get(MISSING, []), present
        try:
            return super().regions(node)
        except NotAnalysed as exc:
            if "too many" in str(exc):
                raise
            return self.truth_atom(node)

    def _is_constant(self, output: str) -> bool:
        d = self.decisions[output]
        rules = d.all_rules
        return all(isinstance(dict(r.then).get(output), (str, bool, int, float)) for r in rules) \
            and not (d.hit == "collect" and d.aggregate != "list")

    def compare(self, op: str, left: Node, right: Node) -> tuple[list[Box], list[Box]]:
        if isinstance(left, (Num, Str, Bool)) and isinstance(right, Name):
            left, right, op = right, left, FLIPPED[op]
        if isinstance(left, Name) and isinstance(right, (Num, Str, Bool)) and left.name in self.decisions \
                and self._is_constant(left.name) and self.decisions[left.name].hit not in ("collect", "output-order"):
            d = self.decisions[left.name]
            dom = self.domains.get(left.name)
            if op in ("==", "!=") and not isinstance(dom, NumSet):
                values = self.value_regions(d, left.name)
                equal = [b for k, v in values.items() if k is not MISSING and k == right.value for b in v]
                other = [b for k, v in values.items() if k is not MISSING and k != right.value for b in v]
                return (equal, other) if op == "==" else (other, equal)
        if isinstance(left, Name) and isinstance(right, (Num, Str, Bool)) and left.name in self.domains:
            try:
                return super().compare(op, left, right)
            except NotAnalysed:
                return self.atom(op, left, right)
        return self.atom(op, left, right)


def _bool_features(plan: EntityPlan, types: dict[str, str]) -> tuple[dict[str, Derive], set[str]]:
    derives = {s.name: s.derive for s in plan.steps if isinstance(s, DeriveStep)}
    return derives, {n for n in derives if types.get(n) == "boolean"}


def _space(plan: Plan, ep: EntityPlan) -> Expanding:
    checked = plan.checked
    ns = checked.namespaces[ep.entity]
    domains = {name: _domain(sym, checked, ep.entity) for name, sym in ns.symbols.items()
               if sym.type.kind in ("number", "string", "boolean", "list")}
    domains.update(past_domains(ep, domains))
    decisions = {o.name: d for d in ep.decisions for o in d.outputs}
    types = {name: sym.type.kind for name, sym in ns.symbols.items()}
    features, bools = _bool_features(ep, types)
    return Expanding(domains, decisions, features, bools)


# -- looking for a real example ---------------------------------------------------------------------

def _constants(ep: EntityPlan) -> list[float]:
    """Numbers written in the policies of an entity: cutoffs worth trying values around."""
    nodes = [s.derive.expr.node for s in ep.steps if isinstance(s, DeriveStep)]
    nodes += [r.when.node for d in ep.decisions for r in d.rules if r.when is not None]
    nodes += [i.expr.node for i in ep.invariants]
    found = {float(n.value) for root in nodes if root is not None for n in walk(root) if isinstance(n, Num)}
    return sorted(found)


def _number_candidates(fs: NumSet | None, fact: Fact, constants: list[float]) -> list[float | None]:
    lo_all = fact.min if fact.min is not None else -INF
    hi_all = fact.max if fact.max is not None else INF
    intervals = fs.intervals if fs is not None else ((lo_all, True, hi_all, True),)
    out: list[float | None] = []
    spread = [0.0, 1.0, 10.0, 1000.0, 100000.0]
    for lo, lc, hi, hc in intervals:
        points = []
        if math.isfinite(lo) and math.isfinite(hi):
            points += [lo, hi, (lo + hi) / 2, lo + (hi - lo) / 4, hi - (hi - lo) / 4]
        elif math.isfinite(lo):
            points += [lo + s for s in spread] + [lo + 0.01]
        elif math.isfinite(hi):
            points += [hi - s for s in spread] + [hi - 0.01]
        else:
            points += [s for s in spread] + [-s for s in spread[1:]]
        for c in constants:
            points += [c, c + 0.01, c - 0.01, c + 1, c - 1, c * 2, c / 2]
        for p in points:
            if not math.isfinite(p):  # `c * 2` of a constant near the largest float
                continue
            p = float(round(p)) if fact.type == "integer" else float(f"{p:.6g}")  # 0.25 - 0.01, not 0.24000000000000002
            inside = (lo < p or (lc and p == lo)) and (p < hi or (hc and p == hi))
            if inside and lo_all <= p <= hi_all:
                out.append(p)
    if fs is None or fs.missing:
        if not fact.required:
            out.append(None)
    return list(dict.fromkeys(out)) or [None]


def _text_candidates(fs: ValSet | None, fact: Fact, words: list[str]) -> list[Any]:
    if fact.type == "boolean":
        allowed = [v for v in (True, False) if fs is None or fs.values is None or v in fs.values]
    elif fs is not None and fs.values is not None:
        allowed = sorted(fs.values, key=str)
    elif fact.values is not None:
        allowed = [v for v in fact.values if fs is None or v not in fs.excluded]
    else:
        allowed = [w for w in words + ["a", "b", "other"] if fs is None or w not in fs.excluded]
    allowed = [v for v in allowed if v != ""]  # read from a file, an empty text is missing
    if (fs is None or fs.missing) and not fact.required:
        allowed = allowed + [None]
    return allowed or [None]


def _broad(rng: "np.random.Generator", fact: Fact, constants: list[float], words: list[str]) -> Any:
    if fact.type in ("number", "integer"):
        lo = fact.min if fact.min is not None else None
        hi = fact.max if fact.max is not None else None
        if lo is not None and hi is not None:
            u = rng.random()
            v = lo * (1 - u) + hi * u  # not lo + (hi - lo) * u: the width of a range may not fit in a float
        elif lo is not None:
            v = lo + rng.lognormal(6, 2.5)
        elif hi is not None:
            v = hi - rng.lognormal(6, 2.5)
        else:
            v = rng.normal(0, 1) * 10 ** rng.integers(0, 6)
        if constants and rng.random() < 0.3:
            v = constants[rng.integers(len(constants))] * rng.uniform(0.5, 1.5)
            v = min(max(v, lo if lo is not None else v), hi if hi is not None else v)
        if not math.isfinite(v):  # a constant near the largest number, scaled past it
            v = lo if lo is not None else hi if hi is not None else 0.0
        return float(round(v)) if fact.type == "integer" else round(float(v), 2)
    return _text_candidates(None, fact, words)[rng.integers(len(_text_candidates(None, fact, words)))]


def _frame(facts: dict[str, Fact], rows: list[dict[str, Any]]) -> "pd.DataFrame":
    import numpy as np
    import pandas as pd

    columns = {}
    for name, f in facts.items():
        values = [r.get(name) for r in rows]
        if f.type in ("number", "integer"):
            columns[name] = pd.Series([np.nan if v is None else float(v) for v in values], dtype=float)
        elif f.type == "boolean":
            columns[name] = pd.Series(values, dtype="boolean")
        else:
            columns[name] = pd.Series(values, dtype="string")
    return pd.DataFrame(columns)


def _joined_results(plan: Plan, ep: EntityPlan, rng: "np.random.Generator", size: int) -> dict[str, "EntityResult"]:
    """Other entities as far as this one reads them: keys, and values of what it takes, at random."""
    import numpy as np
    import pandas as pd

    from ..batch.evaluate import Context, EntityResult, ListVec, Text, Tri

    out = {}
    ns_all = plan.checked.namespaces
    for j in ep.joins:
        other = plan.entity(j.entity)
        keys = pd.Series([f"{j.entity[:1]}{i:04d}" for i in range(size)], dtype=object)
        env: dict[str, Any] = {}
        for name in j.take:
            t = ns_all[j.entity].symbols[name].type
            if t.kind == "number":
                env[name] = rng.normal(0, 1, size) * 10 ** rng.integers(0, 5, size)
            elif t.kind == "boolean":
                env[name] = Tri(rng.random(size) < 0.5, np.ones(size, bool))
            elif t.kind == "list":
                values = sorted(t.values or {"a"}, key=str)
                every_subset = np.array(np.meshgrid(*[[False, True]] * len(values))).T.reshape(-1, len(values))
                lists = tuple(tuple(v for v, keep in zip(values, bits) if keep) for bits in every_subset)
                env[name] = ListVec(rng.integers(0, len(lists), size).astype(np.int64), lists)
            else:
                values = np.array(sorted(t.values or {"a", "b"}, key=str), dtype=object)
                env[name] = Text(rng.integers(0, len(values), size).astype(np.int64), values)
        out[j.entity] = EntityResult(j.entity, other, Context(env, size, keys), {})
    return out


def _search(plan: Plan, ep: EntityPlan, inv: Invariant, boxes: list[Box]) -> tuple["EntityResult", int] | None:
    """A population, decided by the real engine, in which some entity breaks the invariant."""
    import numpy as np

    from ..batch.evaluate import decide, evaluate_entity

    ps = plan.checked.policy_set
    facts = ps.facts(ep.entity)
    types = {n: f.type for n, f in facts.items()}
    constants = _constants(ep)
    # an empty text in a facts file is a missing value: no example may hold one
    words = sorted({n.value for root in [r.when.node for d in ep.decisions for r in d.rules if r.when]
                    + [inv.expr.node] if root is not None for n in walk(root) if isinstance(n, Str) and n.value})
    pools: list[dict[str, list[Any]]] = []
    for box in boxes[:50]:
        pool = {}
        for name, f in facts.items():
            fs = box.get(name)
            if f.type in ("number", "integer"):
                pool[name] = _number_candidates(fs if isinstance(fs, NumSet) else None, f, constants)
            else:
                pool[name] = _text_candidates(fs if isinstance(fs, ValSet) else None, f, words)
        pools.append(pool)
    for round_ in range(SEARCH_ROUNDS):
        rng = np.random.default_rng(round_)
        joined = _joined_results(plan, ep, rng, 40)
        rows = []
        for i in range(POPULATION):
            pool = pools[i % len(pools)]
            background = i % 3 == 2  # others, so that ranks and shares spread out
            row: dict[str, Any] = {}
            for name, f in facts.items():
                if background or rng.random() < 0.1:
                    row[name] = _broad(rng, f, constants, words)
                else:
                    options = pool[name]
                    row[name] = options[rng.integers(len(options))]
                if f.required and row[name] is None:
                    row[name] = _broad(rng, f, constants, words)
            for j in ep.joins:
                other = joined[j.entity].ctx.key
                row[j.on] = other[rng.integers(len(other))] if rng.random() < 0.9 else "unknown-id"
            row[ep.key] = f"{ep.entity[:1]}{i:04d}"
            rows.append(row)
        try:
            result = evaluate_entity(ep, _frame(facts, rows), types, joined, decider=decide)
        except InputError as exc:
            if not all(p.code == "overflow" for p in exc.problems):
                raise
            # made-up facts at the edges of the number range overflow a formula: each entity alone then,
            # a population of one (as real as any), leaving out those that overflow
            alone = _one_at_a_time(ep, facts, rows, types, joined, inv)
            if alone is not None:
                return alone
            continue
        bad = np.flatnonzero(result.violations.get(inv.id, np.zeros(0, bool)))
        if bad.size:
            return result, int(bad[0])
    return None


def _one_at_a_time(ep: EntityPlan, facts: dict[str, Fact], rows: list[dict[str, Any]], types: dict[str, str],
                   joined: dict[str, "EntityResult"], inv: Invariant) -> tuple["EntityResult", int] | None:
    """The first of `rows` that breaks the invariant decided on its own, or None."""
    from ..batch.evaluate import decide, evaluate_entity

    for row in rows[:ALONE_ROWS]:
        try:
            result = evaluate_entity(ep, _frame(facts, [row]), types, joined, decider=decide)
        except InputError as exc:
            if all(p.code == "overflow" for p in exc.problems):
                continue
            raise
        if result.violations.get(inv.id, [False])[0]:
            return result, 0
    return None


def _example(result: "EntityResult", row: int, inv: Invariant, box_fields: set[str]
             ) -> tuple[dict[str, Any], list[tuple[str, Location]]]:
    from ..batch.evaluate import scalar_at
    from ..batch.explain import plain_value, rule_column

    ctx = result.ctx
    read = {n.name for n in walk(inv.expr.node) if isinstance(n, Name)} if inv.expr.node is not None else set()
    fact_types = getattr(ctx.env, "fact_types", {})
    # the facts the rules looked at to break it (the others do not matter to the example)
    facts = {name: scalar_at(ctx.env[name], row) for name in fact_types if name in box_fields}
    decided, locs = {}, []
    deciding: set[str] = set()  # the names the deciding rules' conditions read
    for name, res in result.decisions.items():
        outputs = {o.name for o in res.decision.outputs}
        if not read & outputs:
            continue
        rules = plain_value(rule_column(res)[row])
        value = {o.name: scalar_at(ctx.env[o.name], row) for o in res.decision.outputs if o.name in read}
        decided[name] = {"value": value, "rule": rules}
        for rule in res.rules:
            if rule.id in (rules if isinstance(rules, list) else [rules]):
                locs.append((rule.id, rule.when.loc if rule.when is not None else rule.loc))
                if rule.when is not None and rule.when.node is not None:
                    deciding |= set(names(rule.when.node))
    # and the facts those conditions read, through the features, so that the example can be run again
    derives = {s.name: s.derive for s in result.plan.steps if isinstance(s, DeriveStep)}
    pending = set(deciding)
    while pending:
        name = pending.pop()
        node = derives[name].expr.node if name in derives else None
        if node is not None:
            pending |= set(names(node)) - deciding
            deciding |= set(names(node))
    facts.update({name: scalar_at(ctx.env[name], row) for name in fact_types if name in deciding and name not in facts})
    # the other names the invariant reads (a fact shown above is not shown twice)
    others = {n: scalar_at(ctx.env[n], row) for n in read if n in ctx.env and n not in facts and not any(
        n in {o.name for o in r.decision.outputs} for r in result.decisions.values())}
    return {"id": str(ctx.key[row]), "facts": facts, "values": others, "decided": decided,
            "population": result.ctx.n}, locs


def _relevant(ep: EntityPlan, boxes: list[Box]) -> set[str]:
    """The names the boxes depend on: their fields, the names inside compared pairs, what features read."""
    derives = {s.name: s.derive for s in ep.steps if isinstance(s, DeriveStep)}
    pending = {f for box in boxes for f in box}
    pending |= {w for f in list(pending) if f.startswith("[") for w in re.findall(r"[a-z][a-z0-9_]*", f)}
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in derives and derives[name].expr.node is not None:
            pending |= set(names(derives[name].expr.node))
    return seen


def describe(example: dict[str, Any], entity: str) -> str:
    """An example in words: its facts, then what was decided and by which rules."""
    from ..batch.explain import show

    facts = ", ".join(f"{k} = {_shown(v)}" for k, v in sorted(example["facts"].items()))
    values = ", ".join(f"{k} = {_shown(v)}" for k, v in sorted(example["values"].items()))
    decided = "; ".join(
        f"{', '.join(f'{k} = {_shown(v)}' for k, v in d['value'].items())} (rule {show(d['rule'])})"
        for d in example["decided"].values())
    parts = [p for p in (facts, values) if p]
    return (f"a {entity} with {', '.join(parts) if parts else 'such facts'} gets {decided}"
            f" (in a population of {example['population']} made up to find it)")


def _shown(v: Any) -> str:
    from ..batch.explain import show

    return number_text(v) if isinstance(v, float) else show(v)


def _proof_key(plan: Plan, ep: EntityPlan) -> str:
    """What an entity's proofs depend on: its plan and the plans of the entities it joins with."""
    seen, todo = [], [ep]
    while todo:
        e = todo.pop()
        if e not in seen:
            seen.append(e)
            todo += [plan.entity(j.entity) for j in e.joins]
    return repr(seen)


def prove(plan: Plan, cache: dict[str, list[InvariantResult]] | None = None) -> list[InvariantResult]:
    """Every invariant of the plan: proved, violated (with an example) or not analysed (with why).
    `cache` keeps each entity's answers by what they depend on (the studio page proves again at
    every edit; an edit of one policy leaves the other entities' proofs as they were)."""
    out: list[InvariantResult] = []
    for ep in plan.entities:
        if not ep.invariants:
            continue
        key = _proof_key(plan, ep) if cache is not None else ""
        if cache is not None and key in cache:
            out += cache[key]
            continue
        start = len(out)
        _prove_entity(plan, ep, out)
        if cache is not None:
            cache[key] = out[start:]
    return out


def _prove_entity(plan: Plan, ep: EntityPlan, out: list[InvariantResult]) -> None:
    """One entity's invariants, proved or refuted, appended to `out`."""
    space = _space(plan, ep)  # shared: each decision is expanded once for all the entity's invariants
    for inv in ep.invariants:
        try:
            regions = space.regions(inv.expr.node)  # type: ignore[arg-type]
        except NotAnalysed as exc:
            out.append(InvariantResult(inv, "not-analysed", f"its condition uses {exc}"))
            continue
        broken = regions[0] if inv.kind == "never" else regions[1]
        if not broken:
            out.append(InvariantResult(inv, "proved"))
            continue
        found = _search(plan, ep, inv, broken)
        if found is None:
            out.append(InvariantResult(inv, "not-analysed",
                                       "the rules may allow breaking it, but no entity that does was found"))
            continue
        result, row = found
        example, locs = _example(result, row, inv, _relevant(ep, broken))
        out.append(InvariantResult(inv, "violated", describe(example, ep.entity), example, locs))


def invariant_problems(results: list[InvariantResult]) -> list[Problem]:
    """The results as problems for `kam check`: an error for a broken invariant (and a note at each rule
    that decided the example), a warning when one could not be analysed, a note when it is proved."""
    out = []
    for r in results:
        inv = r.invariant
        if r.status == "proved":
            out.append(Problem("invariant-proved", f"invariant `{inv.id}` is proved: no {inv.entity} can break it, "
                               "whatever its facts", inv.loc, severity="note"))
        elif r.status == "violated":
            out.append(Problem("invariant-violated", f"invariant `{inv.id}` ({inv.text}) can be broken: {r.reason}",
                               inv.loc, inv.because or "change the rules so that no entity can meet the condition"))
            for rule_id, loc in r.rule_locs:
                out.append(Problem("invariant-violated", f"rule `{rule_id}` decides the example that breaks "
                                   f"invariant `{inv.id}`", loc, severity="note"))
        else:
            # a range kam adds for a computed output is checked on every run; only a written
            # guarantee that cannot be analysed deserves a warning
            out.append(Problem("invariant-not-analysed", f"invariant `{inv.id}` is not analysed: {r.reason}",
                               inv.loc, "kam run still checks it on every entity",
                               severity="warning" if inv.declared else "note"))
    return out
