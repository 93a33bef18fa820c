"""The policy model: immutable dataclasses built by `validate`, filled with ASTs by `parse`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .errors import Location
from .nodes import Node

Scalar = Union[str, float, int, bool]


@dataclass(frozen=True)
class Expr:
    """An expression as written (`source`), where it was written, and its AST once parsed."""

    source: str
    loc: Location
    node: Node | None = None


@dataclass(frozen=True)
class Fact:
    name: str
    type: str  # string | number | integer | boolean
    loc: Location
    key: bool = False
    required: bool = False
    min: float | None = None
    max: float | None = None
    values: tuple[Scalar, ...] | None = None
    measure: bool = False
    policy: str = ""
    decimals: int | None = None  # numbers are rounded to this many decimals when read
    unit: str | None = None  # money | percent | count | number: how it is shown (engine.language.units)
    currency: str | None = None


@dataclass(frozen=True)
class Param:
    """A named fixed value (`params:`): a cutoff or a rate that rules and texts refer to by name."""

    name: str
    value: Scalar
    loc: Location
    percent: bool = False  # written as a percentage (`80%`), so shown as one


@dataclass(frozen=True)
class Join:
    """`take` names of entity `entity`, matched by this entity's fact `on` against its key."""

    name: str
    entity: str
    on: str
    take: tuple[str, ...]
    loc: Location
    take_locs: tuple[Location, ...] = ()


@dataclass(frozen=True)
class Derive:
    name: str
    expr: Expr
    loc: Location
    policy: str = ""


@dataclass(frozen=True)
class Measure(Derive):
    """A figure of the whole population (`measures:`), one value per run: named and computed like a
    feature, from aggregates only."""


@dataclass(frozen=True)
class Output:
    name: str
    type: str  # string | number | boolean
    values: tuple[Scalar, ...] | None = None
    min: float | None = None  # for computed numbers: checked on every entity, like a fact's
    max: float | None = None
    decimals: int | None = None  # numbers are rounded to this many decimals once decided
    loc: Location | None = None
    unit: str | None = None
    currency: str | None = None


@dataclass(frozen=True)
class Template:
    """A `because` text with `{name}` / `{name:spec}` placeholders."""

    text: str
    loc: Location


@dataclass(frozen=True)
class RankKey:
    expr: Expr
    descending: bool = True


@dataclass(frozen=True)
class Quota:
    rank_by: tuple[RankKey, ...]
    loc: Location
    else_rule: "Rule"
    top_n: int | None = None
    top_share: float | None = None
    per: str | None = None
    per_loc: Location | None = None
    ties: str = "key"  # key: ties go to the smaller key; together: a tie group is kept or left out whole

    def describe_top(self) -> str:
        return f"{self.top_n}" if self.top_n is not None else f"{(self.top_share or 0) * 100:g}%"


@dataclass(frozen=True)
class Rule:
    """A rule. Each `then` value is fixed, or (for a number or yes/no output) an expression computed
    for every entity the rule decides."""

    id: str
    then: tuple[tuple[str, "Scalar | Expr"], ...]
    loc: Location
    when: Expr | None = None
    because: Template | None = None
    quota: Quota | None = None
    then_locs: tuple[Location, ...] = ()

    @property
    def is_default(self) -> bool:
        return self.when is None and self.quota is None

    def output(self, name: str) -> "Scalar | Expr":
        return dict(self.then)[name]

    @property
    def computed(self) -> bool:
        return any(isinstance(v, Expr) for _, v in self.then)


@dataclass(frozen=True)
class Decision:
    name: str
    hit: str
    outputs: tuple[Output, ...]
    rules: tuple[Rule, ...]
    loc: Location
    policy: str
    entity: str
    aggregate: str = "list"
    single: bool = True  # one unnamed output, stored under the decision's own name
    target: tuple[tuple[str, float], ...] = ()  # the share each value should get (for the report)

    @property
    def main(self) -> Output:
        return self.outputs[0]

    @property
    def gives_list(self) -> bool:
        """Whether the decision is a list of every matching rule's values (`collect`, `output-order`)."""
        return self.hit == "output-order" or (self.hit == "collect" and self.aggregate == "list")

    def priority(self, rule: Rule) -> tuple[int, ...]:
        """A rule's rank by its values, as declared from highest to lowest: the first output first,
        then the next (for hit policies `priority` and `output-order`)."""
        given = dict(rule.then)
        return tuple(list(o.values or ()).index(given[o.name]) if o.values and given.get(o.name) in o.values
                     else len(o.values or ()) for o in self.outputs)

    @property
    def all_rules(self) -> list[Rule]:
        """Every rule that can decide an entity: the written rules, then the `else` rules of their quotas."""
        return list(self.rules) + [r.quota.else_rule for r in self.rules if r.quota is not None]

    @property
    def columns(self) -> list[str]:
        """The output columns this decision adds, in order."""
        return [o.name for o in self.outputs] + [f"{self.name}_rule", f"{self.name}_because"]


@dataclass(frozen=True)
class Invariant:
    """A business guarantee: `never` a condition, or `always` one (violated where it is definitely false)."""

    id: str
    kind: str  # never | always
    expr: Expr
    loc: Location
    because: str = ""
    policy: str = ""
    entity: str = ""
    declared: bool = True  # False for the range of a computed output (`min`/`max`), which kam adds itself

    @property
    def text(self) -> str:
        return f"{self.kind}: {self.expr.source}"


@dataclass(frozen=True)
class Policy:
    name: str
    entity: str
    file: str
    loc: Location
    facts: tuple[Fact, ...] = ()
    params: tuple[Param, ...] = ()
    joins: tuple[Join, ...] = ()
    derives: tuple[Derive, ...] = ()
    decisions: tuple[Decision, ...] = ()
    invariants: tuple[Invariant, ...] = ()
    measures: tuple[Measure, ...] = ()
    locale: str | None = None  # the readers' locale (`locale:`), for every figure shown
    currency: str | None = None  # the currency of the policy's money
    units: tuple[tuple[str, str | None, str | None, int | None], ...] = ()  # `units:` (name, unit, currency, decimals)


@dataclass(frozen=True)
class PolicySet:
    policies: tuple[Policy, ...]
    hash: str
    directory: str = ""
    entities: tuple[str, ...] = field(default=())
    sources: tuple[tuple[str, str], ...] = ()  # (file, text) of every policy file, as compiled

    @property
    def locale(self) -> str | None:
        """The readers' locale the policies name (validation makes every file that names one agree)."""
        return next((p.locale for p in self.policies if p.locale), None)

    def of_entity(self, entity: str) -> list[Policy]:
        return [p for p in self.policies if p.entity == entity]

    def facts(self, entity: str) -> dict[str, Fact]:
        """Facts of an entity merged over its policies (first declaration wins; typecheck ensures they agree)."""
        out: dict[str, Fact] = {}
        for p in self.of_entity(entity):
            for f in p.facts:
                out.setdefault(f.name, f)
        return out

    def key(self, entity: str) -> Fact | None:
        for f in self.facts(entity).values():
            if f.key:
                return f
        return None

    def decisions(self, entity: str) -> list[Decision]:
        return [d for p in self.of_entity(entity) for d in p.decisions]

    def invariants(self, entity: str | None = None) -> list[Invariant]:
        return [i for p in self.policies if entity is None or p.entity == entity for i in p.invariants]
