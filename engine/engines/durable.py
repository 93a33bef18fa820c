"""The durable_rules backend: the same plan, with rule conditions matched by durable_rules.

Each decision becomes one durable_rules ruleset (named after the conditions it matches, so that
two policy versions can live in one process and the same conditions are registered once); each
rule becomes a `when_all` condition whose action records that the rule matched. Only comparisons
of a field with a constant or another field, and `&`/`|`, are given to durable_rules; `not` is
pushed down to the comparisons (De Morgan, with the same three-valued logic as the pandas
backend, since a missing field never matches a comparison). Everything else in a condition —
functions, arithmetic, population functions, text ordering — is computed before the fact is
posted by the shared evaluator (`engine.batch.evaluate`), and posted as an extra field. Derived
features, hit policies and `because` texts are the shared code too, so the two backends can only
differ in how durable_rules matches conditions; the differential tests check that they do not.

What this backend cannot do is refused at plan time: quotas rank a whole batch.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from ..language.errors import PolicyError, Problem
from ..batch.evaluate import Context, DecisionResult, Tri, Vec, decide, evaluate_node, fixed_value, scalar_at
from ..language.model import Decision
from ..language.numbers import plain_number
from ..language.nodes import COMPARE, FLIPPED, NEGATED, Bool, Call, Compare, In, Logic, MapLit, Member, Name, Node, \
    Not, Num, Str
from ..language.plan import EntityPlan, Plan

_LOCK = threading.Lock()
# A ruleset is named after what it matches (the decision's conditions, as durable_rules defines them)
# and registered once per process: durable_rules cannot release one (and dispatches every one it holds
# on its own timer threads), so a notebook or a server that decides with many backends, or with many
# edits of the same policies, adds a ruleset only for a condition it has not seen.
_REGISTERED: set[str] = set()
_MATCHED: dict[str, dict[str, set[int]]] = {}  # ruleset -> fact id -> the rules that matched it


# Message fields: `f_<name>` for the entity's names (the prefix keeps them clear of durable_rules'
# own fields such as id and sid), `n_<name>` for the length of a list, and `p_<i>` for values
# computed before posting. Policy names start with a letter, so `p_0` can never be `f_` of one.
PRE_PREFIX = "kam.pre."


def _field(name: str) -> str:
    if name.startswith(PRE_PREFIX):
        return f"p_{name[len(PRE_PREFIX):]}"
    return f"f_{name}"


def _length_field(name: str) -> str:
    return f"n_{name}"


@dataclass
class CompiledRule:
    index: int
    condition: Any  # a durable_rules expression, or None for "always"


@dataclass
class CompiledDecision:
    decision: Decision
    ruleset: str
    precomputed: dict[str, Node]  # extra field -> expression computed before posting
    fields: list[str]  # every field the conditions read
    rules: list[CompiledRule]
    matched: dict[str, set[int]] = field(default_factory=dict)


class _Compiler:
    """Condition AST -> durable_rules expression for the TRUE region (and the FALSE region, for `not`)."""

    def __init__(self, m: Any, types: dict[str, str]):
        self.m = m
        self.types = types  # name -> number | string | boolean
        self.precomputed: dict[str, Node] = {}
        self.fields: set[str] = set()

    def ref(self, name: str) -> Any:
        self.fields.add(name)
        return getattr(self.m, _field(name))

    def length(self, name: str) -> Any:
        """The posted length of a list field (present whenever the list is)."""
        self.fields.add(name)
        return getattr(self.m, _length_field(name))

    def pre(self, node: Node) -> str:
        """Name of a field holding `node`, computed before posting."""
        for name, existing in self.precomputed.items():
            if existing == node:
                return name
        name = f"{PRE_PREFIX}{len(self.precomputed)}"
        self.precomputed[name] = node
        self.types[name] = "boolean" if _is_condition(node) else "value"
        return name

    def operand(self, node: Node) -> tuple[str, Any]:
        """("field", name) or ("const", value)."""
        if isinstance(node, Name):
            return "field", node.name
        if isinstance(node, (Num, Str, Bool)):
            return "const", node.value
        return "field", self.pre(node)

    def atom(self, op: str, left: Node, right: Node) -> Any:
        lk, lv = self.operand(left)
        rk, rv = self.operand(right)
        if lk == "const" and rk == "const":
            return self.constant(_py_compare(op, lv, rv))
        if op not in ("==", "!=") and (self.is_text(left) or self.is_text(right)):
            # text ordering is computed before posting, as written, so the collation cannot differ
            return self.boolean_field(self.pre(Compare((op,), (left, right))), True)
        if lk == "const":  # durable_rules wants the field on the left: `5 < x` is `x > 5`
            lk, lv, rk, rv = rk, rv, lk, lv
            op = FLIPPED[op]
        field_ = self.ref(lv)
        # a comparison never holds when a field is missing: durable_rules agrees for constants,
        # but compares a present field with an absent one, so presence is required explicitly
        expr = COMPARE[op](field_, rv if rk == "const" else self.ref(rv))
        if rk == "field":
            expr = expr & +self.ref(lv) & +self.ref(rv)
        return expr

    def is_text(self, node: Node) -> bool:
        """Whether an operand is text (its ordering is then never left to durable_rules)."""
        if isinstance(node, Str):
            return True
        if isinstance(node, Name):
            return self.types.get(node.name) == "string"
        if isinstance(node, Call) and node.func == "lookup" and isinstance(node.args[1], MapLit):
            return any(isinstance(v, Str) for _, v in node.args[1].items) or \
                any(isinstance(a, Str) for a in node.args[2:])
        if isinstance(node, Call) and node.func == "previous":
            return self.is_text(node.args[0])
        if isinstance(node, Call) and node.func in ("if", "coalesce"):
            return any(self.is_text(a) for a in node.args[1 if node.func == "if" else 0:])
        return False

    def boolean_field(self, name: str, value: bool) -> Any:
        return self.ref(name) == value

    def constant(self, value: bool | None) -> Any:
        return +self.m.kam_id if value else (self.m.kam_id == "\0never")

    def true(self, node: Node) -> Any:
        return self.region(node, True)

    def region(self, node: Node, want: bool) -> Any:
        if isinstance(node, Bool):
            return self.constant(node.value == want)
        if isinstance(node, Not):
            return self.region(node.operand, not want)
        if isinstance(node, Logic):
            parts = [self.region(i, want) for i in node.items]
            conj = (node.op == "and") == want
            out = parts[0]
            for p in parts[1:]:
                out = (out & p) if conj else (out | p)
            return out
        if isinstance(node, Compare):
            atoms = []
            for i, op in enumerate(node.ops):
                atoms.append(self.atom(op if want else NEGATED[op], node.operands[i], node.operands[i + 1]))
            out = atoms[0]
            for a in atoms[1:]:
                out = (out & a) if want else (out | a)
            return out
        if isinstance(node, In) and all(isinstance(i, (Num, Str, Bool)) for i in node.items):
            positive = want != node.negate
            if not node.items:
                return self.boolean_field(self.pre(node), want)
            atoms = [self.atom("==" if positive else "!=", node.operand, item) for item in node.items]
            out = atoms[0]
            for a in atoms[1:]:
                out = (out | a) if positive else (out & a)
            return out
        if isinstance(node, Member) and isinstance(node.collection, Name):
            # a list holds the value: some item equals it; it does not: the list is there (its length
            # is posted, since durable_rules finds no item of an empty list "all different") and
            # every item differs
            from durable.lang import item

            value = _posted(fixed_value(node.item))
            name = node.collection.name
            if want != node.negate:
                return self.ref(name).anyItem(item == value)
            return (self.length(name) == 0) | self.ref(name).allItems(item != value)
        if isinstance(node, Name) and self.types.get(node.name) == "boolean":
            return self.boolean_field(node.name, want)
        # anything else that yields yes/no: computed before posting
        return self.boolean_field(self.pre(node), want)


def _py_compare(op: str, a: Any, b: Any) -> bool:
    return bool(COMPARE[op](a, b))


def _is_condition(node: Node) -> bool:
    return isinstance(node, (Compare, Logic, Not, In, Member, Bool)) or \
        (isinstance(node, Call) and node.func == "is_missing")


def refuse_unsupported(plan: Plan, entities: list[str] | None = None) -> None:
    """What durable_rules cannot do is refused here, naming the policy line."""
    problems = []
    for ep in plan.entities:
        if entities is not None and ep.entity not in entities:
            continue
        for d in ep.decisions:
            for r in d.rules:
                if r.quota is not None:
                    problems.append(Problem(
                        "backend", f"the durable backend cannot run the quota of rule `{r.id}` in `{d.name}`: "
                        "a quota ranks a whole batch, and durable_rules decides one entity at a time",
                        r.quota.loc, "use --backend pandas, or leave this entity out with --entity"))
    if problems:
        raise PolicyError(problems)


def _float_json(x: float) -> str:
    """A float as JSON that durable_rules' parser reads: Python writes 0.00001 as `1e-05`, which the
    parser refuses (error 204) unless a point comes before the exponent (`1.0e-05`)."""
    if x != x or x in (math.inf, -math.inf):
        raise ValueError(f"{x!r} is no number durable_rules can be given")  # refused before it gets here
    text = float.__repr__(x)
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text


class _PointedFloats(json.JSONEncoder):
    """`json.dumps` with every float as `_float_json` writes it (the standard library's own encoder
    loop, given another way to write floats)."""

    def iterencode(self, o: Any, _one_shot: bool = False) -> Iterator[str]:
        text = json.encoder.encode_basestring_ascii if self.ensure_ascii else json.encoder.encode_basestring
        return json.encoder._make_iterencode(  # type: ignore[attr-defined]
            {} if self.check_circular else None, self.default, text, self.indent, _float_json,
            self.key_separator, self.item_separator, self.sort_keys, self.skipkeys, _one_shot)(o, 0)


class _DurableJson:
    """The `json` durable_rules' engine module sees: its facts and rulesets written by `_PointedFloats`."""

    loads = staticmethod(json.loads)

    @staticmethod
    def dumps(obj: Any, ensure_ascii: bool = True, **_: Any) -> str:
        return _PointedFloats(ensure_ascii=ensure_ascii).encode(obj)


def _pointed_floats_for_durable() -> None:
    import durable.engine

    durable.engine.json = _DurableJson  # type: ignore[assignment]


class DurableBackend:
    """Compiles the decisions of a plan into durable_rules rulesets, each registered once per process."""

    def __init__(self, plan: Plan, entities: list[str] | None = None):
        refuse_unsupported(plan, entities)
        _pointed_floats_for_durable()
        self.plan = plan
        self.compiled: dict[tuple[str, str], CompiledDecision] = {}
        for ep in plan.entities:
            if entities is None or ep.entity in entities:
                for d in ep.decisions:
                    self.compiled[(ep.entity, d.name)] = self._compile(ep, d)

    def _compile(self, ep: EntityPlan, d: Decision) -> CompiledDecision:
        from durable.lang import m, ruleset, when_all

        ns = self.plan.checked.namespaces[ep.entity]
        types = {name: sym.type.kind for name, sym in ns.symbols.items()}
        compiler = _Compiler(m, types)
        rules = []
        for i, r in enumerate(d.rules):
            cond = compiler.true(r.when.node) if r.when is not None and r.when.node is not None else None
            rules.append(CompiledRule(i, cond))
        definition = json.dumps([r.condition.define() if r.condition is not None else None for r in rules],
                                sort_keys=True, default=str)
        name = f"kam_{ep.entity}_{d.name}_{hashlib.sha256(definition.encode()).hexdigest()[:20]}"
        with _LOCK:
            matched = _MATCHED.setdefault(name, {})
            compiled = CompiledDecision(d, name, compiler.precomputed, sorted(compiler.fields), rules, matched)
            if name not in _REGISTERED:
                with ruleset(name):
                    for rule in rules:
                        if rule.condition is None:
                            continue
                        when_all(rule.condition)(_recorder(matched, rule.index))
                    # matches every fact, so that durable_rules never reports an unhandled message
                    when_all(+m.kam_id)(_recorder(matched, -1))
                _REGISTERED.add(name)
        return compiled

    def decider(self, entity: str) -> Callable[[Decision, Context], DecisionResult]:
        """A decider for `evaluate_entity`: durable_rules matches, the shared hit policy decides."""

        def decide_with_durable(d: Decision, ctx: Context) -> DecisionResult:
            compiled = self.compiled[(entity, d.name)]
            return decide(d, ctx, matches=self.matches(compiled, ctx))

        return decide_with_durable

    def matches(self, compiled: CompiledDecision, ctx: Context) -> list[Tri]:
        from durable.lang import assert_fact, retract_fact

        pre = {name: evaluate_node(node, ctx) for name, node in compiled.precomputed.items()}
        columns = {name: pre[name] if name in pre else ctx.env[name] for name in compiled.fields}
        n = ctx.n
        hit = np.zeros((n, len(compiled.rules)), dtype=bool)
        for row in range(n):
            message: dict[str, Any] = {"kam_id": f"{compiled.ruleset}:{row}"}
            for name, vec in columns.items():
                value = _plain(vec, row)
                if isinstance(value, list):
                    message[_length_field(name)] = len(value)
                    if not value:
                        continue
                if value is not None:
                    message[_field(name)] = value
            with _LOCK:  # durable_rules keeps per-ruleset state; one fact at a time
                compiled.matched.pop(message["kam_id"], None)
                assert_fact(compiled.ruleset, message)
                retract_fact(compiled.ruleset, message)
                found = compiled.matched.pop(message["kam_id"], set())
            for i in found:
                if i >= 0:
                    hit[row, i] = True
        out = []
        for rule in compiled.rules:
            value = np.ones(n, bool) if rule.condition is None else hit[:, rule.index]
            out.append(Tri(value, np.ones(n, bool)))
        return out


def _recorder(matched: dict[str, set[int]], index: int) -> Callable[[Any], None]:
    def action(c: Any) -> None:
        matched.setdefault(c.m.kam_id, set()).add(index)

    action.__name__ = f"rule_{index}" if index >= 0 else "any_fact"
    return action


def _plain(vec: Vec, row: int) -> Any:
    """A posted value: None for missing (the field is then left out of the message)."""
    x = scalar_at(vec, row)
    if isinstance(x, list):
        return [_posted(v) for v in x]
    return _posted(x)


def _posted(x: Any) -> Any:
    # durable_rules then compares whole numbers as integers
    return plain_number(x) if isinstance(x, float) else x
