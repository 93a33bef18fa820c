"""What each number of a policy set is (money, a percentage, a count, a plain number), so every
place that shows it (the report, the workbook, `kam diff`, `kam changes`, the notebook display)
formats it from one definition.

Facts and number outputs say it where they are declared (`unit: money`, `currency: CNY`); a
parameter written as `80%` is a percentage. A derived feature or a measure takes the unit of its
expression: `cumshare()` and `pct_rank()` are shares, `count()` a count, a sum of money is money,
money divided by money a share, money times a rate money; a policy's `units:` section overrides
what kam reads where it reads otherwise than meant. Percentages are fractions (0.25 is 25%), as
the policies write them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from .nodes import Arith, Call, MapLit, Name, Neg, Node, Num
from .model import Fact, Output, PolicySet

MONEY, PERCENT, COUNT, NUMBER = "money", "percent", "count", "number"
UNITS = (MONEY, PERCENT, COUNT, NUMBER)


@dataclass(frozen=True)
class Unit:
    """How a number is shown: its kind, the currency of money, and the decimals (None: the kind's own)."""

    kind: str = NUMBER
    currency: str | None = None
    decimals: int | None = None

    @property
    def shown_decimals(self) -> int | None:
        """Decimals shown: as declared, else 2 for money, 1 for a percentage, 0 for a count; a plain
        number shows up to 3 (None)."""
        if self.decimals is not None:
            return self.decimals
        return {MONEY: 2, PERCENT: 1, COUNT: 0}.get(self.kind)


PLAIN = Unit()
_SHARES = {"cumshare", "pct_rank"}
_SAME_AS_ARGUMENT = {"sum", "mean", "quantile", "min", "max", "abs", "round", "coalesce", "previous"}


def _merge(a: Unit | None, b: Unit | None) -> Unit | None:
    """The unit of a sum or a choice of two values: a bare number adopts the other's unit."""
    if a is None or b is None or a == b:
        return a or b
    if a.kind == b.kind:
        return Unit(a.kind, a.currency if a.currency == b.currency else None)
    return PLAIN


def _whole(unit: Unit | None, other: Node) -> Unit | None:
    """A count stays a count next to a whole number; next to a fraction (`0.35 * referrals`) it is
    a plain number, whose decimals show."""
    if unit is not None and unit.kind == COUNT and not (isinstance(other, Num) and float(other.value).is_integer()):
        return PLAIN if isinstance(other, Num) else unit
    return unit


def _ones(node: Node) -> bool:
    """Whether an expression is only ever a whole number written out: `1`, `if(x, 1, 0)`."""
    if isinstance(node, Num):
        return float(node.value).is_integer()
    if isinstance(node, Call) and node.func == "if" and len(node.args) == 3:
        return _ones(node.args[1]) and _ones(node.args[2])
    return False


def infer(node: Node | None, known: Mapping[str, Unit]) -> Unit | None:
    """The unit of an expression, from the units of the names it reads; None for a bare number
    (which takes the unit of what it is combined with) and for anything that is not a number."""
    if node is None or isinstance(node, Num):
        return None
    if isinstance(node, Name):
        return known.get(node.name)
    if isinstance(node, Neg):
        return infer(node.operand, known)
    if isinstance(node, Arith):
        left, right = infer(node.left, known), infer(node.right, known)
        if node.op in "+-":
            return _merge(_whole(left, node.right), _whole(right, node.left))
        if node.op == "*":
            if left is None or right is None:
                return _whole(left, node.right) if right is None else _whole(right, node.left)
            money = [u for u in (left, right) if u.kind == MONEY]
            return money[0] if len(money) == 1 else left if left == right and left.kind == PERCENT else PLAIN
        if right is None:  # money / 12 is still money; a count / 12 is not a count
            return _whole(left, Num(0.5))
        if left is not None and left.kind == right.kind and left.kind in (MONEY, COUNT):
            return Unit(PERCENT)  # a part of a whole of the same kind
        if left is not None and left.kind == MONEY and right.kind == COUNT:
            return left  # money per customer
        return PLAIN
    if isinstance(node, Call):
        if node.func in _SHARES:
            return Unit(PERCENT)
        if node.func in ("count", "rank", "streak"):
            return Unit(COUNT)
        if node.func == "if":
            return _merge(infer(node.args[1], known), infer(node.args[2], known)) if len(node.args) == 3 else None
        if node.func == "lookup":
            table = node.args[1] if len(node.args) > 1 else None
            units = [infer(v, known) for _, v in table.items] if isinstance(table, MapLit) else []
            units += [infer(a, known) for a in node.args[2:]]
            out: Unit | None = None
            for u in units:
                out = _merge(out, u)
            return out
        if node.func == "sum" and node.args and infer(node.args[0], known) is None and _ones(node.args[0]):
            return Unit(COUNT)  # sum(if(tier == 'A', 1, 0)) counts
        if node.func in _SAME_AS_ARGUMENT:
            out = None
            for a in node.args if node.func in ("coalesce", "min", "max") else node.args[:1]:
                out = _merge(out, infer(a, known))
            return out
        return PLAIN
    return None


def declared(spec: Fact | Output, policy_currency: str | None = None) -> Unit | None:
    """The unit a fact or an output declares: `unit:` (a whole-number fact is a count unless it says
    otherwise), with its currency or the policy's."""
    if spec.unit is None:
        return Unit(COUNT) if spec.type == "integer" else None
    return Unit(spec.unit, (spec.currency or policy_currency) if spec.unit == MONEY else None,
                spec.decimals if spec.unit == MONEY else None)


def units_of(policy_set: PolicySet, entity: str) -> dict[str, Unit]:
    """Every number of an entity a policy names (facts, parameters, joined values, derived features,
    outputs and measures), with its unit. Names kam cannot tell are plain numbers."""
    known: dict[str, Unit] = {}
    overrides: dict[str, Unit] = {}
    policies = policy_set.of_entity(entity)
    for p in policies:
        for f in p.facts:
            u = declared(f, p.currency)
            if u is not None:
                known.setdefault(f.name, u)
        for prm in p.params:
            if prm.percent:
                known.setdefault(prm.name, Unit(PERCENT))
        for d in p.decisions:
            for o in d.outputs:
                u = declared(o, p.currency)
                if u is not None:
                    known.setdefault(o.name, u)
        for name, kind, currency, decimals in p.units:
            overrides[name] = Unit(kind or NUMBER, (currency or p.currency) if kind == MONEY else None, decimals)
    for p in policies:
        for j in p.joins:
            other = units_of(policy_set, j.entity) if j.entity != entity else {}
            for name in j.take:
                if name in other:
                    known.setdefault(name, other[name])
    known.update(overrides)
    steps = [s for p in policies for s in (*p.derives, *p.measures)]
    # derived features may read each other in any order: settle them in a few passes
    for _ in range(len(steps) + 1):
        changed = False
        for s in steps:
            if s.name in overrides:
                continue
            u = infer(s.expr.node, known)
            if u is not None and known.get(s.name) != u:
                known[s.name] = u
                changed = True
        if not changed:
            break
    return known


def unit_of(units: Mapping[str, Unit], name: str) -> Unit:
    """The unit of a name, a plain number where none is known."""
    return units.get(name, PLAIN)


def money_names(units: Mapping[str, Unit], names: Iterable[str]) -> list[str]:
    """The names that are money, in the order given."""
    return [n for n in names if units.get(n, PLAIN).kind == MONEY]
