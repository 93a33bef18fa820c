"""Stage 4a of type-checking: the namespace of every entity, its facts, parameters, decision outputs,
derived features (typed later) and joined names, with every name declared twice reported."""

from __future__ import annotations

from .errors import Location, Problem, did_you_mean
from .model import Fact, PolicySet
from .types import UNKNOWN, Namespace, Symbol, Type, decision_type, fact_type, param_type
from .units import Unit, declared as declared_unit


def _unit_words(unit: Unit) -> str:
    return f"{unit.kind} in {unit.currency}" if unit.currency else unit.kind


class NamespaceBuilder:
    """Builds the namespaces of a policy set, collecting problems into `problems`."""

    def __init__(self, policy_set: PolicySet, problems: list[Problem]):
        self.ps = policy_set
        self.problems = problems
        self.namespaces: dict[str, Namespace] = {}

    def error(self, code: str, message: str, loc: Location, hint: str = "") -> None:
        self.problems.append(Problem(code, message, loc, hint))


    def declare(self, ns: Namespace, sym: Symbol) -> None:
        prev = ns.symbols.get(sym.name)
        if prev is None:
            ns.symbols[sym.name] = sym
            return
        if prev.kind == "fact" and sym.kind == "fact":
            if prev.type.kind not in (sym.type.kind, "unknown"):
                self.error("fact-type-conflict",
                           f"fact `{sym.name}` is declared as {sym.type} here but as {prev.type} at {prev.loc}",
                           sym.loc, "declare the fact with the same type in every policy")
                # which of the two is meant is unknown: nothing that reads the fact is reported again
                ns.symbols[sym.name] = Symbol(prev.name, "fact", UNKNOWN, prev.loc)
            return
        self.error("duplicate-name", f"`{sym.name}` is already declared as a {prev.kind} at {prev.loc}",
                   sym.loc, "every fact, feature and decision output of an entity needs its own name")

    def build_namespaces(self) -> None:
        for entity in self.ps.entities:
            ns = Namespace(entity)
            self.namespaces[entity] = ns
            keys = []
            declared: dict[str, Fact] = {}
            shown: dict[str, tuple[Unit, Fact]] = {}
            for p in self.ps.of_entity(entity):
                for f in p.facts:
                    unit = declared_unit(f, p.currency) if f.unit is not None else None
                    if unit is not None:
                        was, where = shown.setdefault(f.name, (unit, f))
                        if was != unit:  # the report would label one figure with two currencies
                            self.error("fact-unit-conflict", f"fact `{f.name}` is {_unit_words(unit)} here but "
                                       f"{_unit_words(was)} at {where.loc}", f.loc,
                                       "declare its `unit:` and currency the same way in every policy that reads it")
                    self.declare(ns, Symbol(f.name, "fact", fact_type(f), f.loc))
                    seen = declared.setdefault(f.name, f)
                    if seen.decimals != f.decimals and seen.type == f.type:
                        self.error("fact-type-conflict", f"fact `{f.name}` is rounded to {f.decimals} decimals here "
                                   f"but to {seen.decimals} at {seen.loc}", f.loc,
                                   "declare `decimals` the same way in every policy that reads the fact")
                    if f.key and f.name not in keys:
                        keys.append(f.name)
            if not keys:
                first = self.ps.of_entity(entity)[0]
                self.error("no-key", f"entity `{entity}` has no key fact", first.loc,
                           "mark its identifier fact with `key: true`, e.g. `customer_id: {type: string, key: true}`")
            elif len(keys) > 1:
                self.error("several-keys", f"entity `{entity}` has more than one key fact: {', '.join(keys)}",
                           self.ps.of_entity(entity)[0].loc, "keep `key: true` on one fact only")
            for p in self.ps.of_entity(entity):
                for prm in p.params:
                    self.declare(ns, Symbol(prm.name, "param", param_type(prm.value), prm.loc))
                for d in p.decisions:
                    for o in d.outputs:
                        self.declare(ns, Symbol(o.name, "decision", decision_type(d, o.type, o.values), d.loc, d.name))
                for dv in p.derives:
                    # the type is filled in once its expression is checked
                    self.declare(ns, Symbol(dv.name, "derive", Type("pending"), dv.loc))

    def add_joins(self) -> None:
        for p in self.ps.policies:
            ns = self.namespaces[p.entity]
            for j in p.joins:
                other = self.namespaces.get(j.entity)
                if other is None:
                    self.error("unknown-entity", f"join `{j.name}` names entity `{j.entity}`, which no policy decides",
                               j.loc, did_you_mean(j.entity, self.namespaces))
                    continue
                if j.entity == p.entity:
                    self.error("self-join", f"join `{j.name}` joins entity `{p.entity}` with itself", j.loc)
                    continue
                on = ns.symbols.get(j.on)
                if on is None or on.kind != "fact":
                    self.error("unknown-name", f"join `{j.name}` is `on` `{j.on}`, which is not a fact of {p.entity}",
                               j.loc, did_you_mean(j.on, [s for s, v in ns.symbols.items() if v.kind == "fact"]))
                for name, loc in zip(j.take, j.take_locs):
                    sym = other.symbols.get(name)
                    if sym is None:
                        self.error("unknown-name", f"`{name}` is not a fact, feature or decision of {j.entity}",
                                   loc, did_you_mean(name, other.symbols))
                        continue
                    self.declare(ns, Symbol(name, "join", sym.type, loc, j.entity))


def build_namespaces(policy_set: PolicySet, problems: list[Problem]) -> dict[str, Namespace]:
    """One namespace per entity, joins included; problems are appended to `problems`."""
    builder = NamespaceBuilder(policy_set, problems)
    builder.build_namespaces()
    builder.add_joins()
    return builder.namespaces
