"""What one entity's facts decide: the plan compiled into Python closures over plain values.

`kam stream` decides one entity per event. The vector engine (`engine.batch.evaluate`) pays for
numpy arrays, Arrow texts and its bookkeeping on every call, which for one row is most of the time.
Here every feature, condition, output and `because` text of an entity is compiled once into a
closure over plain Python values (a number is a float, a text a str, a yes/no a bool, a collected
list a tuple; None is missing), and an event runs the closures in the plan's order.

The semantics are the vector engine's, value for value: three-valued logic (a comparison with a
missing side is unknown; `and`/`or` are Kleene's; `not` of unknown is unknown), the hit policies
and their defaults, rounding halves away from zero, population functions placed among a
calibration's values (the same arithmetic as `engine.batch.population.evaluate_against`), and the
texts the column kernels render. The differential tests (`tests/test_row.py`) hold the two to the
same values, rule ids and texts on random policies.

What this path does not do itself raises `Fallback`, and the caller decides that event with the
vector engine instead, which gives the answer or the located error: a number too large to hold
(the vector engine names the step and the entity), and a population function without a
calibration. Policies with a quota (a ranking of a whole batch) are refused at compile time
(`Unsupported`), and their events all take the vector path.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..batch.evaluate import CONFLICT, NO_RULE, fixed_value
from ..batch.explain import CompiledTemplate
from ..batch.number_columns import _round_exact
from ..batch.population import GroupPopulation
from ..language.functions import POPULATION_FUNCTIONS
from ..language.model import Decision, Expr, Output, Rule
from ..language.nodes import COMPARE, Arith, Bool, Call, Compare, In, Logic, MapLit, Member, Name, Neg, Node, Not, \
    Num, Str, STREAK, expand_streak, past_key, to_text
from ..language.numbers import MISSING_TEXT, WHOLE_LIMIT, list_text, plain_number, python_spec
from ..language.plan import DecisionStep, EntityPlan

Env = dict[str, Any]
Fn = Callable[[Env], Any]

_EXACT_INT = 2.0 ** 52  # as engine.batch.number_columns: below this, float steps on whole numbers are exact


class Fallback(Exception):
    """This event needs the vector engine: it gives the answer (or the located error) the row path
    would otherwise have to restate."""


class Unsupported(Exception):
    """The entity's policies use what the row path never does (a quota)."""


# -- numbers --------------------------------------------------------------------------------------

def round_half_away(x: float, digits: int = 0) -> float:
    """`engine.batch.number_columns.round_half_away` for one finite number, step for step (so the
    bits are the same): the float arithmetic where it is safe, Python's exact rounding elsewhere."""
    f = 10.0 ** abs(digits)
    y = abs(x) * f if digits >= 0 else abs(x) / f
    if math.isfinite(y) and y < _EXACT_INT:
        floor = float(math.floor(y))
        if abs((y - floor) - 0.5) > 1e-9 * max(y, 1.0):
            r = float(math.floor(y + 0.5))
            return math.copysign(r / f if digits >= 0 else r * f, x)
    return _round_exact(x, digits)


def _number(value: float) -> float:
    """An arithmetic result: an infinity from finite numbers is an overflow, which the vector engine
    reports with the step and the entity."""
    if value - value != 0.0:  # inf or nan
        if value != value:
            return None  # type: ignore[return-value]
        raise Fallback("overflow")
    return value


def number_cell(x: float, spec: str, pyspec: str) -> str:
    """One number in a `because` placeholder: `engine.batch.number_columns.format_number`."""
    if not spec:
        return repr(plain_number(x)) if abs(x) < WHOLE_LIMIT else repr(x)
    if spec == ",":
        return format(plain_number(x), ",")
    return format(x, pyspec)


def cell(value: Any, spec: str, pyspec: str) -> str:
    """Any value in a `because` placeholder, as `engine.batch.explain.cell_text` shows it."""
    if value is None:
        return MISSING_TEXT
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return list_text(value)
    return number_cell(float(value), spec, pyspec)


def jsonable(value: Any) -> Any:
    """A decided value as `kam stream` writes it (`engine.engines.stream._jsonable`): whole numbers
    without `.0`, lists as lists."""
    if isinstance(value, float):
        return plain_number(value)
    if isinstance(value, tuple):
        return [plain_number(v) if isinstance(v, float) else v for v in value]
    return value


# -- expressions ----------------------------------------------------------------------------------

def _kleene_and(values: list[Any]) -> Any:
    if False in values:  # `in` compares with ==: only False (not 0.0) can be here, conditions are bools
        return False
    return None if None in values else True


def _kleene_or(values: list[Any]) -> Any:
    if True in values:
        return True
    return None if None in values else False


def _same_item(x: Any, want: Any) -> bool:
    """As `engine.batch.evaluate._same_item`: numbers by value, anything else by type and value."""
    if isinstance(want, float):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and float(x) == want
    return type(x) is type(want) and x == want


@dataclass
class _Compiler:
    """Compiles expression trees of one entity; holds what population functions read."""

    key: str
    calibration: Mapping[str, Mapping[Any, GroupPopulation]] | None

    def expr(self, node: Node) -> Fn:
        """A closure computing `node` from an environment of plain values."""
        if isinstance(node, (Num, Str, Bool)):
            value: Any = float(node.value) if isinstance(node, Num) else node.value
            return lambda env: value
        if isinstance(node, Name):
            name = node.name
            return lambda env: env[name]
        if isinstance(node, Neg):
            operand = self.expr(node.operand)

            def neg(env: Env) -> Any:
                v = operand(env)
                return None if v is None else -v
            return neg
        if isinstance(node, Arith):
            return self.arith(node)
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, Logic):
            items = [self.expr(i) for i in node.items]
            combine = _kleene_and if node.op == "and" else _kleene_or
            # every item is evaluated, as the vector engine does: an overflow in any of them is reported
            return lambda env: combine([f(env) for f in items])
        if isinstance(node, Not):
            inner = self.expr(node.operand)

            def not_(env: Env) -> Any:
                v = inner(env)
                return None if v is None else not v
            return not_
        if isinstance(node, Member):
            return self.member(node)
        if isinstance(node, In):
            return self.in_(node)
        if isinstance(node, Call):
            return self.call(node)
        raise Unsupported(f"{type(node).__name__} has no row implementation")

    def arith(self, node: Arith) -> Fn:
        left, right, op = self.expr(node.left), self.expr(node.right), node.op

        def arith(env: Env) -> Any:
            a, b = left(env), right(env)
            if a is None or b is None:
                return None
            if op == "+":
                return _number(a + b)
            if op == "-":
                return _number(a - b)
            if op == "*":
                return _number(a * b)
            return _number(a / b) if b != 0 else None
        return arith

    def compare(self, node: Compare) -> Fn:
        operands = [self.expr(o) for o in node.operands]
        ops = [COMPARE[op] for op in node.ops]
        if len(ops) == 1:
            left, right, cmp = operands[0], operands[1], ops[0]

            def compare(env: Env) -> Any:
                a, b = left(env), right(env)
                return None if a is None or b is None else bool(cmp(a, b))
            return compare

        def chain(env: Env) -> Any:
            values = [f(env) for f in operands]
            return _kleene_and([None if values[i] is None or values[i + 1] is None else bool(cmp(values[i],
                                values[i + 1])) for i, cmp in enumerate(ops)])
        return chain

    def member(self, node: Member) -> Fn:
        collection = self.expr(node.collection)
        item = fixed_value(node.item)
        want = float(item) if isinstance(item, (int, float)) and not isinstance(item, bool) else item
        negate = node.negate

        def member(env: Env) -> Any:
            lst = collection(env)
            if lst is None:
                return None
            return any(_same_item(x, want) for x in lst) != negate
        return member

    def in_(self, node: In) -> Fn:
        operand = self.expr(node.operand)
        items = [self.expr(i) for i in node.items]
        negate = node.negate

        def in_(env: Env) -> Any:
            x = operand(env)
            values = [f(env) for f in items]
            if x is None:
                return None
            found = _kleene_or([None if v is None else x == v for v in values]) if values else False
            return None if found is None else found != negate
        return in_

    def call(self, node: Call) -> Fn:
        f = node.func
        if f == STREAK:
            return self.expr(expand_streak(node))
        if f == "previous":
            name = past_key(node.args[0].name, int(fixed_value(node.args[1])) if len(node.args) > 1 else 1)  # type: ignore[union-attr]
            return lambda env: env.get(name)
        if f == "lookup":
            return self.lookup(node)
        if f in POPULATION_FUNCTIONS:
            return self.population(node)
        args = [self.expr(a) for a in node.args]
        if f == "if":
            cond, then, other = args

            def if_(env: Env) -> Any:
                c, a, b = cond(env), then(env), other(env)  # both sides, as the vector engine computes them
                return a if c is True else b
            return if_
        if f == "is_missing":
            arg = args[0]
            return lambda env: arg(env) is None
        if f == "coalesce":
            def coalesce(env: Env) -> Any:
                out = None
                for v in [a(env) for a in args]:
                    if out is None:
                        out = v
                return out
            return coalesce
        if f in ("min", "max"):
            smaller = f == "min"

            def extreme(env: Env) -> Any:
                values = [a(env) for a in args]
                if None in values:
                    return None
                out = values[0]
                for v in values[1:]:
                    # numpy's minimum/maximum: the second of two equal values (0.0 and -0.0)
                    out = out if (out < v if smaller else out > v) else v
                return out
            return extreme
        if f == "abs":
            arg = args[0]

            def abs_(env: Env) -> Any:
                v = arg(env)
                return None if v is None else abs(v)
            return abs_
        if f == "round":
            arg = args[0]
            digits = int(fixed_value(node.args[1])) if len(node.args) > 1 else 0

            def round_(env: Env) -> Any:
                v = arg(env)
                return None if v is None else round_half_away(v, digits)
            return round_
        if f == "log":
            arg = args[0]

            def log(env: Env) -> Any:
                v = arg(env)
                # numpy's log, not math.log: the two may differ in the last bit
                return float(np.log(v)) if v is not None and v > 0 else None
            return log
        raise Unsupported(f"function {f} has no row implementation")

    def lookup(self, node: Call) -> Fn:
        key_fn = self.expr(node.args[0])
        table = node.args[1]
        assert isinstance(table, MapLit)
        default = fixed_value(node.args[2]) if len(node.args) > 2 else None
        entries = [(k, fixed_value(v)) for k, v in table.items]
        sample = entries[0][1] if entries else default
        by_text: dict[Any, Any] = dict(entries)
        by_number: dict[Any, Any] = {}
        for k, v in entries:
            try:
                by_number[float(k)] = v
            except ValueError:
                pass
        if isinstance(sample, bool):
            def convert(v: Any) -> Any:
                return None if v is None else bool(v)
        elif isinstance(sample, str):
            def convert(v: Any) -> Any:
                return None if v is None else str(v)
        else:
            def convert(v: Any) -> Any:
                return None if v is None else float(v)

        def lookup(env: Env) -> Any:
            k = key_fn(env)
            if k is None:
                return convert(default)
            return convert((by_text if isinstance(k, str) else by_number).get(k, default))
        return lookup

    def population(self, node: Call) -> Fn:
        f = node.func
        call = to_text(node)
        by_node = node.kwarg("by")
        by = by_node.name if isinstance(by_node, Name) else None
        ties_node = node.kwarg("ties")
        ties = str(fixed_value(ties_node)) if ties_node is not None else "key"
        q = float(fixed_value(node.args[1])) if f == "quantile" else 0.5
        arg = self.expr(node.args[0]) if node.args else None
        if self.calibration is None:
            # no saved population: the vector engine computes it over the one row, as it always did
            def over_one_row(env: Env) -> Any:
                raise Fallback("a population function without a calibration")
            return over_one_row
        groups = self.calibration.get(call, {})
        key = self.key
        prepared: dict[int, _Placed] = {}

        def population(env: Env) -> Any:
            x = arg(env) if arg is not None else None
            if f == "count":
                x = None if arg is not None and x is None else 0.0
            label = env[by] if by is not None else ""
            if label is None:
                return None
            st = groups.get(label)
            if st is None or (st.n == 0 and f not in ("sum", "count")):
                return None
            placed = prepared.get(id(st))
            if placed is None:
                placed = prepared[id(st)] = _Placed.of(st)
            return placed.value(f, x, env[key], q, ties)
        return population


@dataclass(frozen=True)
class _Placed:
    """One group of a calibration as plain Python values: `evaluate_against` for one row."""

    pop: GroupPopulation
    values: list[float]
    folds: list[float]
    figures: dict[tuple[str, float], float]  # the group's mean, sum, count and quantiles, once asked for

    @staticmethod
    def of(pop: GroupPopulation) -> "_Placed":
        return _Placed(pop, pop.values.tolist(), pop.folds().tolist() if pop.n else [0.0], {})

    def value(self, func: str, x: float | None, key: Any, q: float, ties: str) -> float | None:
        pop = self.pop
        if func in ("mean", "sum", "count", "quantile"):
            # the group's figure, whatever this row holds (as the vector engine gives it)
            out = self.figures.get((func, q))
            if out is None:
                out = self.figures[(func, q)] = {"mean": pop.mean, "sum": pop.total, "count": lambda: float(pop.n),
                                                 "quantile": lambda: pop.quantile(q)}[func]()
        elif x is None or pop.n == 0:
            return None
        elif func == "pct_rank":
            out = bisect.bisect_right(self.values, x) / pop.n
        elif func == "cumshare":
            total = self.folds[-1]
            if total == 0:
                return None
            out = (total - self.folds[bisect.bisect_left(self.values, x)]) / total
        elif func == "rank":
            lo, hi = bisect.bisect_left(self.values, x), bisect.bisect_right(self.values, x)
            tie_before = 0
            if ties == "key" and pop.keys is not None and hi > lo:
                tie_before = sum(1 for k in pop.keys[lo:hi].tolist() if k < key)
            out = float(1 + (pop.n - hi) + tie_before)
        elif func == "zscore":
            std = pop.std()
            if not std > 0:
                return None
            out = (x - pop.mean()) / std
        else:
            raise Unsupported(f"population function {func}")
        out = float(out)
        if out != out:
            return None
        if math.isinf(out):
            raise Fallback("overflow in a population figure")
        return out


# -- decisions ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What a decision's rules did for one entity: the deciding rule (an index into the decision's
    rules, NO_RULE or CONFLICT), every matching rule for list decisions, the conflicting pair."""

    rule_index: int
    collected: tuple[int, ...] | None = None  # in the order the list is gathered
    conflict: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Piece:
    literal: str
    name: str | None
    spec: str
    pyspec: str


@dataclass(frozen=True)
class RowDecision:
    """One decision compiled: its conditions, hit policy, outputs and texts."""

    decision: Decision
    conditions: tuple[Fn | None, ...]  # per written rule; None: a default rule, which always matches
    outputs: tuple[tuple[Output, tuple[Any, ...], bool], ...]  # per output: per rule a value or a Fn; computed?
    texts: tuple[tuple[_Piece, ...], ...]  # per rule, the pieces of its `because`
    order: tuple[int, ...]  # list decisions: the order rules are gathered in
    priority_key: tuple[tuple[tuple[int, ...], int], ...]  # per rule, its rank for `priority`

    def outcome(self, env: Env) -> Outcome:
        """Which rule decides (under the decision's hit policy)."""
        d = self.decision
        matched = [c is None or c(env) is True for c in self.conditions]
        if d.hit == "first":
            for i, m in enumerate(matched):
                if m:
                    return Outcome(i)
            return Outcome(NO_RULE)
        rules = d.rules
        conditional = [i for i, r in enumerate(rules) if not r.is_default and matched[i]]
        default = next((i for i, r in enumerate(rules) if r.is_default), None)
        if d.hit in ("collect", "output-order"):
            gathered = set(conditional) if conditional else ({default} if default is not None else set())
            first = conditional[0] if conditional else (default if default is not None else NO_RULE)
            return Outcome(first, tuple(i for i in self.order if i in gathered))
        if not conditional:
            return Outcome(default if default is not None else NO_RULE)
        if d.hit in ("unique", "any"):
            if len(conditional) >= 2 and (d.hit == "unique" or len({rules[i].then for i in conditional}) > 1):
                return Outcome(CONFLICT, None, (conditional[0], conditional[1]))
            return Outcome(conditional[0])
        if d.hit == "priority":
            return Outcome(min(conditional, key=lambda i: self.priority_key[i]))
        raise Unsupported(f"hit policy {d.hit}")

    def values(self, env: Env, out: Outcome) -> dict[str, Any]:
        """The decided value of each output, as the vector engine's `_decided_values` gives it."""
        d = self.decision
        result: dict[str, Any] = {}
        k = out.rule_index
        for o, per_rule, computed in self.outputs:
            # every rule's computed value is evaluated, as the vector engine does (an overflow anywhere counts)
            given: Sequence[Any] = [v(env) if callable(v) else v for v in per_rule] if computed else per_rule
            value: Any
            if d.gives_list:
                assert out.collected is not None
                result[o.name] = tuple(given[i] for i in out.collected)
                continue
            if d.hit == "collect":
                assert out.collected is not None
                if d.aggregate == "count":
                    result[o.name] = float(len(out.collected))
                    continue
                value = _aggregate(d.aggregate, [i in out.collected for i in range(len(given))], given)
            else:
                v = given[k] if k >= 0 else None
                if v is None:
                    value = None
                elif o.type == "boolean":
                    value = bool(v)
                elif o.type == "number":
                    value = float(v)
                else:
                    value = str(v)
            if value is not None and o.type == "number" and o.decimals is not None:
                value = round_half_away(value, o.decimals)
            result[o.name] = value
        return result

    def rule(self, out: Outcome) -> Any:
        """The deciding rule's id (every gathered rule's, for `collect` and `output-order`)."""
        rules = self.decision.rules
        if out.collected is not None:
            return [rules[i].id for i in out.collected]
        return rules[out.rule_index].id if out.rule_index >= 0 else None

    def because(self, env: Env, out: Outcome) -> str:
        """The rendered `because`, as `engine.batch.explain.row_because` gives it."""
        if out.collected is not None:
            return "; ".join(self._text(i, env) for i in out.collected) if out.collected else "no rule matched"
        if out.rule_index >= 0:
            return self._text(out.rule_index, env)
        if out.rule_index == NO_RULE:
            return "no rule matched"
        assert out.conflict is not None
        a, b = out.conflict
        rules = self.decision.rules
        return (f"error: rules `{rules[a].id}` and `{rules[b].id}` both match "
                f"(hit policy {self.decision.hit} allows only one)")

    def _text(self, i: int, env: Env) -> str:
        return "".join(p.literal + (cell(env[p.name], p.spec, p.pyspec) if p.name is not None else "")
                       for p in self.texts[i])


def _aggregate(kind: str, matched: list[bool], given: Sequence[Any]) -> float | None:
    """`collect` with `sum`, `min` or `max`, with numpy's arithmetic (the vector engine's exactly)."""
    if not any(matched):
        return None
    grid = np.array([np.nan if v is None else float(v) for v in given], dtype=float)
    m = np.array(matched, dtype=bool)
    if kind == "sum":
        value = float(np.where(m, np.nan_to_num(grid), 0.0).sum())
    elif kind == "min":
        value = float(np.where(m, grid, np.inf).min())
    else:
        value = float(np.where(m, grid, -np.inf).max())
    if math.isinf(value):
        raise Fallback("overflow in a total")
    return None if value != value else value


def _pieces(rule: Rule) -> tuple[_Piece, ...]:
    tpl = CompiledTemplate.of(rule.because.text if rule.because else f"rule {rule.id}")
    return tuple(_Piece(lit, name, spec, python_spec(spec) if spec not in ("", ",") else spec)
                 for lit, name, spec in tpl.pieces)


def _compile_decision(c: _Compiler, d: Decision) -> RowDecision:
    for r in d.rules:
        if r.quota is not None:
            raise Unsupported(f"the quota of rule `{r.id}` in `{d.name}` ranks a whole batch")
    conditions = tuple(None if r.when is None else c.expr(r.when.node)  # type: ignore[arg-type]
                       for r in d.rules)
    outputs = []
    for o in d.outputs:
        per_rule: list[Any] = []
        computed = False
        for r in d.rules:
            v = dict(r.then).get(o.name)
            if isinstance(v, Expr):
                computed = True
                per_rule.append(c.expr(v.node) if v.node is not None else None)
            else:
                per_rule.append(v)
        outputs.append((o, tuple(per_rule), computed))
    order = list(range(len(d.rules)))
    if d.hit == "output-order":
        order.sort(key=lambda i: (d.priority(d.rules[i]), i))
    return RowDecision(d, conditions, tuple(outputs), tuple(_pieces(r) for r in d.rules), tuple(order),
                       tuple((d.priority(r), i) for i, r in enumerate(d.rules)))


# -- an entity ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowEvaluator:
    """Every feature and decision of one entity, compiled for one entity's facts at a time."""

    plan: EntityPlan
    types: Mapping[str, str]  # fact name -> number | integer | boolean | string
    steps: tuple[tuple[str, Fn | RowDecision], ...]  # in the plan's order
    base: Mapping[str, Any]  # parameters (for the texts) and every earlier value, missing

    @staticmethod
    def compile(ep: EntityPlan, types: Mapping[str, str],
                calibration: Mapping[str, Mapping[Any, GroupPopulation]] | None) -> "RowEvaluator":
        """Compile an entity's plan; `calibration` holds its population per call and group. Raises
        `Unsupported` for what only the vector engine does (a quota)."""
        c = _Compiler(ep.key, calibration)
        steps: list[tuple[str, Fn | RowDecision]] = []
        for step in ep.steps:
            if isinstance(step, DecisionStep):
                steps.append((step.name, _compile_decision(c, step.decision)))
            else:
                node = step.derive.expr.node
                assert node is not None
                steps.append((step.name, c.expr(node)))
        base: dict[str, Any] = {r.key: None for r in ep.past}
        for p in ep.params:
            v = p.value
            base[p.name] = v if isinstance(v, (bool, str)) else float(v)  # type: ignore[arg-type]
        return RowEvaluator(ep, dict(types), tuple(steps), base)

    def environment(self, facts: Mapping[str, Any], past: Mapping[str, Any] | None = None) -> Env:
        """The plain values the expressions read: the facts (numbers as floats), the parameters, and
        the earlier values `previous()` reads (missing unless `past` has them)."""
        env = dict(self.base)
        for name, kind in self.types.items():
            v = facts.get(name)
            if v is None:
                env[name] = None
            elif kind in ("number", "integer"):
                env[name] = float(v)
            elif kind == "boolean":
                env[name] = bool(v)
            else:
                env[name] = str(v)
        if past:
            env.update(past)
        return env

    def evaluate(self, env: Env) -> dict[str, tuple[RowDecision, Outcome]]:
        """Every step in order, into `env`; each decision's compiled form and outcome."""
        decided: dict[str, tuple[RowDecision, Outcome]] = {}
        for name, step in self.steps:
            if isinstance(step, RowDecision):
                out = step.outcome(env)
                env.update(step.values(env, out))
                decided[name] = (step, out)
            else:
                env[name] = step(env)
        return decided

    def describe(self, env: Env, decided: dict[str, tuple[RowDecision, Outcome]]) -> dict[str, Any]:
        """{decision: {value, rule, because}} as `kam stream` keeps and prints them."""
        out: dict[str, Any] = {}
        for name, (step, outcome) in decided.items():
            d = step.decision
            if d.single:
                value = jsonable(env[d.outputs[0].name])
            else:
                value = {o.name: jsonable(env[o.name]) for o in d.outputs}
            out[name] = {"value": value, "rule": step.rule(outcome), "because": step.because(env, outcome)}
        return out

    def decide(self, facts: Mapping[str, Any], past: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every decision for one entity's facts: {decision: {value, rule, because}}. Raises
        `Fallback` when the vector engine must decide this one (see the module's docstring)."""
        env = self.environment(facts, past)
        return self.describe(env, self.evaluate(env))
