"""Stage 5, plan: order derived features and decisions into a DAG per entity, entities by their joins.

A cycle (a feature reading a decision that reads the feature, or two entities joining each other)
is an error that names the whole cycle.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, replace
from typing import Any, Callable, Union

from .errors import Location, PolicyError, Problem
from .model import Decision, Derive, Expr, Invariant, Join, Measure, Param, Rule, Template
from .nodes import Node, names, past_key, past_reads, substitute
from .types import QUOTA_VARIABLES, Checked, literal_node


@dataclass(frozen=True)
class DeriveStep:
    derive: Derive

    @property
    def name(self) -> str:
        return self.derive.name


@dataclass(frozen=True)
class DecisionStep:
    decision: Decision

    @property
    def name(self) -> str:
        return self.decision.name


Step = Union[DeriveStep, DecisionStep]


@dataclass(frozen=True)
class PastRead:
    """One `previous(name, back)` the entity's expressions read: filled from the history before the
    run (missing for everyone without one)."""

    name: str
    back: int
    kind: str  # number | string | boolean

    @property
    def key(self) -> str:
        return past_key(self.name, self.back)


def step_nodes(step: "Step | Invariant") -> list[Node]:
    """Every expression tree of a step (or an invariant)."""
    if isinstance(step, Invariant):
        exprs = [step.expr]
    elif isinstance(step, DeriveStep):
        exprs = [step.derive.expr]
    else:
        exprs = []
        for r in step.decision.all_rules:
            exprs += [r.when] if r.when is not None else []
            exprs += [v for _, v in r.then if isinstance(v, Expr)]
            exprs += [k.expr for k in r.quota.rank_by] if r.quota is not None else []
    return [e.node for e in exprs if e is not None and e.node is not None]


@dataclass(frozen=True)
class EntityPlan:
    """The work for one entity. Parameters are already written into the expressions as fixed values
    (so every backend and the rule analysis see constants); `params` keeps them for the texts."""

    entity: str
    key: str
    joins: tuple[Join, ...]
    steps: tuple[Step, ...]
    params: tuple[Param, ...] = ()
    invariants: tuple[Invariant, ...] = ()  # checked once every step is done
    past: tuple[PastRead, ...] = ()  # the earlier values the expressions read
    from_past: tuple[str, ...] = ()  # features and decisions that read the past, directly or through others
    past_direct: tuple[str, ...] = ()  # those that call previous() themselves or through features
    measures: tuple[Measure, ...] = ()  # figures of the population, computed once the decisions are made
    # the steps in waves (positions in `steps`): a step reads only steps of earlier waves, so the steps
    # of one wave can be evaluated side by side
    waves: tuple[tuple[int, ...], ...] = ()

    @property
    def decisions(self) -> list[Decision]:
        return [s.decision for s in self.steps if isinstance(s, DecisionStep)]


@dataclass(frozen=True)
class Plan:
    checked: Checked
    entities: tuple[EntityPlan, ...]

    def only(self, names: list[str]) -> "Plan":
        """The plan for some entities and those they join with."""
        wanted = set(names)
        for ep in reversed(self.entities):
            if ep.entity in wanted:
                wanted |= {j.entity for j in ep.joins}
        return Plan(self.checked, tuple(ep for ep in self.entities if ep.entity in wanted))

    def entity(self, name: str) -> EntityPlan:
        for e in self.entities:
            if e.entity == name:
                return e
        raise KeyError(name)


def template_names(tpl: Template | None) -> list[str]:
    """Names a `because` template inserts."""
    if tpl is None:
        return []
    return [f for _, f, _, _ in string.Formatter().parse(tpl.text) if f]


def decision_reads(d: Decision) -> list[str]:
    """Every name a decision's rules read: conditions, texts, quota ranking and groups. Its texts may
    show its own outputs: they are rendered once the decision is made."""
    own = {o.name for o in d.outputs}
    out: list[str] = []
    for r in d.rules:
        if r.when is not None and r.when.node is not None:
            out += names(r.when.node)
        out += [n for n in template_names(r.because) if n not in own]
        for rule in [r] + ([r.quota.else_rule] if r.quota is not None else []):
            out += [n for _, v in rule.then if isinstance(v, Expr) and v.node is not None for n in names(v.node)]
        if r.quota is not None:
            for k in r.quota.rank_by:
                if k.expr.node is not None:
                    out += names(k.expr.node)
            if r.quota.per:
                out.append(r.quota.per)
            out += [n for n in template_names(r.quota.else_rule.because) if n not in own]
    return [n for n in dict.fromkeys(out) if n not in QUOTA_VARIABLES]


def _toposort(nodes: dict[str, list[str]], locs: dict[str, Location], label: str) -> list[str]:
    """Depth-first topological order keeping declaration order; raises on a cycle, naming it."""
    order: list[str] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = stack[stack.index(n):] + [n]
            raise PolicyError(Problem(
                "cycle", f"{label} depend on each other in a cycle: {' -> '.join(cycle)}", locs[n],
                "break the cycle: one of them must not read the other",
            ))
        state[n] = 1
        stack.append(n)
        for dep in nodes[n]:
            if dep in nodes:
                visit(dep)
        stack.pop()
        state[n] = 2
        order.append(n)

    for n in nodes:
        visit(n)
    return order


def _inliner(params: tuple[Param, ...]) -> Callable[[Any], Any]:
    """Replaces parameter names by their values in a step's expressions."""
    values: dict[str, Node] = {p.name: literal_node(p.value) for p in params}

    def expr(e: Expr) -> Expr:
        return replace(e, node=substitute(e.node, values)) if e.node is not None else e

    def then(r: Rule) -> tuple:
        return tuple((name, expr(v) if isinstance(v, Expr) else v) for name, v in r.then)

    def rule(r: Rule) -> Rule:
        quota = r.quota
        if quota is not None:
            keys = tuple(replace(k, expr=expr(k.expr)) for k in quota.rank_by)
            quota = replace(quota, rank_by=keys, else_rule=replace(quota.else_rule, then=then(quota.else_rule)))
        return replace(r, when=expr(r.when) if r.when is not None else None, quota=quota, then=then(r))

    def step(s: Step | Invariant | Measure) -> Any:
        if not values:
            return s
        if isinstance(s, Measure):
            return replace(s, expr=expr(s.expr))
        if isinstance(s, Invariant):
            return replace(s, expr=expr(s.expr))
        if isinstance(s, DeriveStep):
            return DeriveStep(replace(s.derive, expr=expr(s.derive.expr)))
        return DecisionStep(replace(s.decision, rules=tuple(rule(r) for r in s.decision.rules)))

    return step


def plan(checked: Checked) -> Plan:
    """Order the work: entities so that joined entities come first, and steps within each entity."""
    ps = checked.policy_set
    entity_deps = {e: [j.entity for p in ps.of_entity(e) for j in p.joins] for e in ps.entities}
    entity_locs = {e: ps.of_entity(e)[0].loc for e in ps.entities}
    for p in ps.policies:
        for j in p.joins:
            entity_locs.setdefault(p.entity, j.loc)
    entity_order = _toposort(entity_deps, entity_locs, "entities joined")

    problems: list[Problem] = []
    plans = []
    for entity in entity_order:
        ns = checked.namespaces[entity]
        items: dict[str, Step] = {}
        graph: dict[str, list[str]] = {}
        locs: dict[str, Location] = {}

        def producer(name: str, ns: Any = ns) -> str | None:
            sym = ns.symbols.get(name)
            if sym is None:
                return None
            if sym.kind == "derive":
                return name
            if sym.kind == "decision":
                return sym.owner
            return None

        for p in ps.of_entity(entity):
            for dv in p.derives:
                items[dv.name] = DeriveStep(dv)
                graph[dv.name] = [x for x in map(producer, names(dv.expr.node) if dv.expr.node else []) if x]
                locs[dv.name] = dv.loc
            for d in p.decisions:
                items[d.name] = DecisionStep(d)
                graph[d.name] = [x for x in map(producer, decision_reads(d)) if x]
                locs[d.name] = d.loc
        try:
            order = _toposort(graph, locs, "features and decisions")
        except PolicyError as exc:
            problems.extend(exc.problems)
            continue
        key = ps.key(entity)
        joins = tuple(j for p in ps.of_entity(entity) for j in p.joins)
        params = tuple(prm for p in ps.of_entity(entity) for prm in p.params)
        inline = _inliner(params)
        steps = tuple(inline(items[n]) for n in order)
        invariants = tuple(inline(i) for i in ps.invariants(entity))
        past: dict[tuple[str, int], PastRead] = {}
        from_past: list[str] = []
        direct: list[str] = []
        for item in steps + invariants:
            reads = [r for node in step_nodes(item) for r in past_reads(node)]
            for name, back in reads:
                past.setdefault((name, back), PastRead(name, back, ns.symbols[name].type.kind))
            if isinstance(item, Invariant):
                continue
            if reads or any(dep in direct and isinstance(items[dep], DeriveStep) for dep in graph[item.name]):
                direct.append(item.name)
            if reads or any(dep in from_past for dep in graph[item.name]):
                from_past.append(item.name)
        measures = tuple(inline(m) for p in ps.of_entity(entity) for m in p.measures)
        plans.append(EntityPlan(entity, key.name if key else "", joins, steps, params, invariants,
                                tuple(past.values()), tuple(from_past), tuple(direct), measures,
                                _waves(order, graph)))
    if problems:
        raise PolicyError(problems)
    return Plan(checked, tuple(plans))


def _waves(order: list[str], graph: dict[str, list[str]]) -> tuple[tuple[int, ...], ...]:
    """Steps (in topological `order`) grouped by depth: a step's wave is one past the deepest step it
    reads."""
    depth: dict[str, int] = {}
    for name in order:
        depth[name] = 1 + max((depth[d] for d in graph[name] if d != name), default=-1)
    waves: dict[int, list[int]] = {}
    for i, name in enumerate(order):
        waves.setdefault(depth[name], []).append(i)
    return tuple(tuple(waves[k]) for k in sorted(waves))


def past_readers(pl: Plan, direct: bool = True) -> list[str]:
    """`entity/decision` of every decision that calls previous() (itself or through features), or with
    `direct=False` of every one that depends on the past in any way (also through other decisions)."""
    out = []
    for ep in pl.entities:
        decisions = {d.name for d in ep.decisions}
        out += [f"{ep.entity}/{n}" for n in (ep.past_direct if direct else ep.from_past) if n in decisions]
    return out


def past_note(pl: Plan) -> str:
    """Which decisions read the past, in words."""
    direct = past_readers(pl)
    follow = [n for n in past_readers(pl, direct=False) if n not in direct]
    text = f"{', '.join(direct)} read{'s' if len(direct) == 1 else ''} earlier periods with previous()"
    if not follow:
        return text
    return text + f"; {', '.join(follow)} follow{'s' if len(follow) == 1 else ''} from " \
                  f"{'it' if len(direct) == 1 else 'them'}"
