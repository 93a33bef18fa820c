"""Stage 4, type-check: names, types, functions and decision values, before any data is read.

Builds one namespace per entity (facts, joined names, derived features, decision outputs) and
infers a type for every expression. Every problem is collected and reported at `file:line:col`.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

from .errors import Location, PolicyError, Problem, did_you_mean
from .functions import FUNCTIONS, MAX_BACK, POPULATION_FUNCTIONS
from .model import Decision, Derive, Expr, Fact, Invariant, Measure, Output, Policy, PolicySet, Rule, Scalar, \
    Template
from .numbers import SPEC
from .nodes import Arith, Bool, Call, Compare, In, ListLit, Logic, MapLit, Member, Name, Neg, Node, Not, Num, Str, \
    PREVIOUS, STREAK, children, names, past_reads, to_text, walk


@dataclass(frozen=True)
class Type:
    """`kind` is number, string, boolean or list; `values` is the closed set of a text column (or of a
    list's items), if any; `item` is the kind of a list's items.

    A list is what a `collect` decision gathers: every value of the rules that matched, in rule order.
    Expressions can only ask whether it holds a value (`'loyal' in protected_by`); texts show it whole.
    Two more kinds never reach users: `pending` (a feature whose type is not known yet) and `unknown`
    (a name whose own declaration is wrong, already reported: nothing that reads it is reported again).
    """

    kind: str
    values: frozenset | None = None
    item: str = ""

    def __str__(self) -> str:
        if self.kind == "list":
            return "a list of values (from hit policy collect)"
        return {"number": "a number", "string": "text", "boolean": "a yes/no value"}.get(self.kind, self.kind)


NUMBER, STRING, BOOLEAN, UNKNOWN = Type("number"), Type("string"), Type("boolean"), Type("unknown")
LIST_HINT = ("a collected list can only be searched: write e.g. `'loyal' in protected_by` or "
             "`'none' not in protected_by`")

# what a quota's texts can show besides the entity's names: its rank, the size of its group, how many
# the quota keeps, and (text) whether a tie was broken by key
QUOTA_VARIABLES = {"quota_rank": Type("number"), "quota_size": Type("number"), "quota_limit": Type("number"),
                   "quota_tie": Type("string")}
FORMAT_SPEC = SPEC  # the formatter's own: what the checker accepts, the formatter formats
TIES = ("key", "together")
LIST_SEPARATOR = ", "  # between the items of a collected list wherever it is written as one text
ROUND_DIGITS = 15


def format_spec_problem(spec: str) -> tuple[str, str] | None:
    """Why a number format is not accepted (message, hint), or None: `[,][.N](f|%|d)` as in Python."""
    m = FORMAT_SPEC.match(spec)
    hint = "use `.2f` (2 decimals), `,.0f` (thousands separators), `.1%` (percent) or `d` (whole number)"
    if m is None:
        return f"format `{spec}` is not supported", hint
    if m.group("prec") is not None and m.group("kind") is None:
        return (f"format `{spec}` has no letter: in Python it means {m.group('prec')} significant digits",
                f"write `{spec}f` for {m.group('prec')} decimals")
    if m.group("prec") is not None and m.group("kind") == "d":
        return f"format `{spec}`: a whole number (`d`) has no decimals", "write `d`, or `.0f`"
    return None


@dataclass(frozen=True)
class Symbol:
    """A name visible to expressions of one entity: where it comes from and its type."""

    name: str
    kind: str  # fact | param | join | derive | decision
    type: Type
    loc: Location
    owner: str = ""  # the decision name for outputs; the other entity for joins


@dataclass
class Namespace:
    entity: str
    symbols: dict[str, Symbol] = field(default_factory=dict)


@dataclass(frozen=True)
class Checked:
    """A type-checked policy set: the model plus one namespace per entity."""

    policy_set: PolicySet
    namespaces: dict[str, Namespace]


def _fact_type(f: Fact) -> Type:
    kind = "number" if f.type in ("number", "integer") else f.type
    return Type(kind, frozenset(f.values) if f.values and kind == "string" else None)


def _output_type(kind: str, values: tuple | None) -> Type:
    return Type(kind, frozenset(values) if values and kind == "string" else None)


def decision_type(d: Decision, kind: str, values: tuple | None) -> Type:
    """What expressions see of a decision's output: a list for `collect` and `output-order`, a number
    for the aggregates of `collect`."""
    if d.gives_list:
        return Type("list", frozenset(values) if values else None, kind)
    if d.hit == "collect":
        return NUMBER
    return _output_type(kind, values)


def param_type(value: Scalar) -> Type:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, (int, float)):
        return NUMBER
    return Type("string", frozenset({value}))


class _Checker:
    def __init__(self, policy_set: PolicySet):
        self.ps = policy_set
        self.problems: list[Problem] = []
        self.namespaces: dict[str, Namespace] = {}
        self.params = {(p.entity, prm.name): prm.value for p in policy_set.policies for prm in p.params}

    def error(self, code: str, message: str, loc: Location, hint: str = "") -> None:
        self.problems.append(Problem(code, message, loc, hint))

    # -- namespaces ----------------------------------------------------------------------------
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
            for p in self.ps.of_entity(entity):
                for f in p.facts:
                    self.declare(ns, Symbol(f.name, "fact", _fact_type(f), f.loc))
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

    # -- expressions ---------------------------------------------------------------------------
    def infer(self, node: Node, ns: Namespace, base: Location, extra: dict[str, Type] | None = None) -> Type | None:
        """The type of `node`, or None after reporting a problem."""
        at = base.shifted(node.pos)
        if isinstance(node, Num):
            return NUMBER
        if isinstance(node, Str):
            return STRING
        if isinstance(node, Bool):
            return BOOLEAN
        if isinstance(node, Name):
            if extra and node.name in extra:
                return extra[node.name]
            sym = ns.symbols.get(node.name)
            if sym is None:
                known = list(ns.symbols) + list(extra or {})
                hint = did_you_mean(node.name, known) or (
                    f"declare it under `facts:` or `derive:` of a {ns.entity} policy")
                self.error("unknown-name", f"`{node.name}` is not a fact, feature or decision of {ns.entity}", at, hint)
                return None
            if sym.type.kind in ("pending", "unknown"):
                return None  # its own problem is reported where it is declared
            return sym.type
        if isinstance(node, Neg):
            t = self.infer(node.operand, ns, base, extra)
            return self.need_number(t, node.operand, base, "`-`")
        if isinstance(node, Arith):
            lt = self.infer(node.left, ns, base, extra)
            rt = self.infer(node.right, ns, base, extra)
            ok_l = self.need_number(lt, node.left, base, f"`{node.op}`")
            ok_r = self.need_number(rt, node.right, base, f"`{node.op}`")
            return NUMBER if ok_l and ok_r else None
        if isinstance(node, Compare):
            types = [self.infer(o, ns, base, extra) for o in node.operands]
            for i, op in enumerate(node.ops):
                self.check_compare(op, node.operands[i], types[i], node.operands[i + 1], types[i + 1], base)
            return BOOLEAN
        if isinstance(node, Logic):
            for item in node.items:
                self.need_boolean(self.infer(item, ns, base, extra), item, base, f"`{node.op}`")
            return BOOLEAN
        if isinstance(node, Not):
            self.need_boolean(self.infer(node.operand, ns, base, extra), node.operand, base, "`not`")
            return BOOLEAN
        if isinstance(node, Member):
            return self.infer_member(node, ns, base, extra)
        if isinstance(node, In):
            t = self.infer(node.operand, ns, base, extra)
            if t is not None and t.kind == "list":
                self.error("type", f"`{to_text(node.operand)}` is {t}; `in [...]` needs one value on its left",
                           base.shifted(node.operand.pos), LIST_HINT)
                return BOOLEAN
            for item in node.items:
                fixed = self.fixed(item, ns)
                if fixed is None:
                    self.error("type", "the list after `in` may hold only fixed values", base.shifted(item.pos),
                               "values in quotes, numbers, true/false or parameters")
                    continue
                self.check_compare("==", node.operand, t, fixed, self.infer(fixed, ns, base, extra), base)
            return BOOLEAN
        if isinstance(node, (ListLit, MapLit)):
            self.error("type", "a list or table can only be used with `in` or `lookup`", at)
            return None
        if isinstance(node, Call):
            return self.infer_call(node, ns, base, extra)
        raise TypeError(node)

    def infer_member(self, node: Member, ns: Namespace, base: Location, extra: dict[str, Type] | None) -> Type:
        """`'loyal' in protected_by`: a fixed value looked for in a collected list."""
        lt = self.infer(node.collection, ns, base, extra)
        item = self.fixed(node.item, ns)
        if item is None:
            self.infer(node.item, ns, base, extra)
            self.error("type", "the value looked for in a list must be a fixed value, like 'loyal' or 3",
                       base.shifted(node.item.pos),
                       "to test a value against several fixed ones, write `x in ['a', 'b']`")
            return BOOLEAN
        if lt is None:
            return BOOLEAN
        if lt.kind != "list":
            self.error("type", f"`in` needs a list after it, but `{to_text(node.collection)}` is {lt}",
                       base.shifted(node.collection.pos),
                       "write the fixed values in brackets, as in `region in ['north', 'east']`")
            return BOOLEAN
        it = _literal_type(item)
        if it.kind != lt.item:
            self.error("type", f"cannot look for {it} in a list of {Type(lt.item)} values", base.shifted(node.item.pos),
                       "quote text values and leave numbers unquoted" if "string" in (it.kind, lt.item) else "")
        elif lt.values is not None and isinstance(item.value, str) and item.value not in lt.values:
            allowed = ", ".join(sorted(map(str, lt.values)))
            self.error("unknown-value", f"{item.value!r} is not a possible value here (possible: {allowed})",
                       base.shifted(node.item.pos), did_you_mean(item.value, map(str, lt.values)))
        return BOOLEAN

    def fixed(self, node: Node, ns: Namespace) -> Num | Str | Bool | None:
        """The literal a node stands for: a literal itself, a negated number or a named parameter."""
        if isinstance(node, (Num, Str, Bool)):
            return node
        if isinstance(node, Neg):
            inner = self.fixed(node.operand, ns)
            return Num(-inner.value, node.pos) if isinstance(inner, Num) else None
        if isinstance(node, Name):
            sym = ns.symbols.get(node.name)
            if sym is not None and sym.kind == "param":
                return literal_node(self.params[(ns.entity, node.name)], node.pos)
        return None

    def need_number(self, t: Type | None, node: Node, base: Location, what: str) -> Type | None:
        if t is None:
            return None
        if t.kind != "number":
            hint = {"boolean": "a yes/no value cannot be used as a number; use if(cond, 1, 0)",
                    "list": LIST_HINT}.get(t.kind, "")
            self.error("type", f"{what} needs a number, but this is {t}", base.shifted(node.pos), hint)
            return None
        return NUMBER

    def need_boolean(self, t: Type | None, node: Node, base: Location, what: str) -> None:
        if t is not None and t.kind != "boolean":
            self.error("type", f"{what} needs a condition (yes/no), but this is {t}", base.shifted(node.pos),
                       LIST_HINT if t.kind == "list" else "compare it, e.g. `x > 0`")

    def check_compare(self, op: str, ln: Node, lt: Type | None, rn: Node, rt: Type | None, base: Location) -> None:
        if lt is None or rt is None:
            return
        at = base.shifted(ln.pos)
        if "list" in (lt.kind, rt.kind):
            name = to_text(ln if lt.kind == "list" else rn)
            self.error("type", f"`{name}` is {lt if lt.kind == 'list' else rt}, so `{op}` cannot compare it "
                       "with one value", at, LIST_HINT)
            return
        if lt.kind != rt.kind:
            self.error("type", f"cannot compare {lt} with {rt}", at,
                       "quote text values and leave numbers unquoted" if "string" in (lt.kind, rt.kind) else "")
            return
        if op not in ("==", "!=") and lt.kind == "boolean":
            self.error("type", f"`{op}` cannot order yes/no values", at, "use `==` or `!=`")
            return
        for typ, other in ((lt, rn), (rt, ln)):
            if typ.values is not None and isinstance(other, Str) and other.value not in typ.values:
                allowed = ", ".join(sorted(map(str, typ.values)))
                self.error("unknown-value", f"{other.value!r} is not a possible value here (possible: {allowed})",
                           base.shifted(other.pos), did_you_mean(other.value, map(str, typ.values)))

    def infer_call(self, node: Call, ns: Namespace, base: Location, extra: dict[str, Type] | None) -> Type | None:
        at = base.shifted(node.pos)
        spec = FUNCTIONS.get(node.func)
        if spec is None:
            self.error("unknown-function", f"there is no function `{node.func}`", at,
                       did_you_mean(node.func, FUNCTIONS) or f"functions: {', '.join(sorted(FUNCTIONS))}")
            return None
        n = len(node.args)
        if n < spec.min_args or (spec.max_args is not None and n > spec.max_args):
            self.error("arity", f"`{node.func}` takes {spec.arity_text()}, got {n}", at, spec.summary)
            return None
        seen_kwargs: set[str] = set()
        for key, value in node.kwargs:
            if key in seen_kwargs:
                self.error("arity", f"`{key}=` is given twice", base.shifted(value.pos))
            seen_kwargs.add(key)
            if key not in spec.kwargs:
                allowed = f"it accepts {', '.join(k + '=' for k in spec.kwargs)}" if spec.kwargs else "it takes none"
                self.error("arity", f"`{node.func}` has no named argument `{key}`", base.shifted(value.pos), allowed)
            elif key == "by":
                if not isinstance(value, Name):
                    self.error("type", "`by=` needs the name of a column to group by", base.shifted(value.pos))
                else:
                    t = self.infer(value, ns, base, extra)
                    if t is not None and t.kind == "list":
                        self.error("type", f"cannot group by `{value.name}`: it is {t}", base.shifted(value.pos))
            elif key == "ties":
                fixed = self.fixed(value, ns)
                if not isinstance(fixed, Str) or fixed.value not in TIES:
                    self.error("type", "`ties=` must be 'key' (ties go to the smaller key) or 'together' (tied "
                               "entities share the best rank)", base.shifted(value.pos),
                               "e.g. rank(revenue, ties='together')")
        if node.func == "lookup":
            return self.infer_lookup(node, ns, base, extra)
        if node.func == "previous":
            return self.infer_previous(node, ns, base, extra)
        if node.func == STREAK:
            return self.infer_streak(node, ns, base, extra)
        types = [self.infer(a, ns, base, extra) for a in node.args]
        if node.func == "is_missing":
            return BOOLEAN
        if node.func == "if":
            self.need_boolean(types[0], node.args[0], base, "the first argument of `if`")
            return self.same_type(types[1:], node.args[1:], base, "`if`")
        if node.func == "coalesce":
            return self.same_type(types, node.args, base, "`coalesce`")
        if node.func == "quantile":
            q = self.fixed(node.args[1], ns)
            if not isinstance(q, Num) or not 0 <= q.value <= 1:
                self.error("type", "the second argument of `quantile` must be a fixed number between 0 and 1",
                           base.shifted(node.args[1].pos), "e.g. quantile(revenue, 0.8)")
        if node.func == "count":
            return NUMBER  # counts entities where its argument is present, whatever its type
        ok = all([self.need_number(t, a, base, f"`{node.func}`") for t, a in zip(types, node.args)])
        if node.func == "round" and len(node.args) == 2:
            digits = self.fixed(node.args[1], ns)
            if not isinstance(digits, Num) or not float(digits.value).is_integer() \
                    or not -ROUND_DIGITS <= digits.value <= ROUND_DIGITS:
                self.error("type", f"the digits of `round` must be a fixed whole number from -{ROUND_DIGITS} to "
                           f"{ROUND_DIGITS}", base.shifted(node.args[1].pos),
                           "e.g. round(x, 2) for cents, round(x, -3) for thousands")
        return NUMBER if ok else None

    def infer_previous(self, node: Call, ns: Namespace, base: Location, extra: dict[str, Type] | None
                       ) -> Type | None:
        """`previous(tier)`, `previous(tier, 2)`: the value of a fact, feature or decision of this entity
        one (or k) recorded periods back; of the same type."""
        arg = node.args[0]
        if len(node.args) > 1:
            back = self.fixed(node.args[1], ns)
            if not isinstance(back, Num) or not float(back.value).is_integer() or not 1 <= back.value <= MAX_BACK:
                self.error("type", f"how many periods back `previous` looks must be a fixed whole number from 1 "
                           f"to {MAX_BACK}", base.shifted(node.args[1].pos),
                           "previous(tier) is the last period, previous(tier, 2) the one before")
        if not isinstance(arg, Name) or (extra and arg.name in extra):
            self.error("type", "`previous` reads the earlier value of one name: a fact, feature or decision of "
                       f"{ns.entity}", base.shifted(arg.pos), "e.g. previous(tier) or previous(profit); to look back "
                       "at a calculation, make it a feature under `derive:` and read previous() of the feature")
            return None
        sym = ns.symbols.get(arg.name)
        if sym is not None and sym.kind == "param":
            self.error("type", f"`{arg.name}` is a parameter: it has no earlier values, only the one written "
                       "in the policy", base.shifted(arg.pos), f"use `{arg.name}` itself")
            return None
        if sym is not None and sym.type.kind == "pending":
            self.error("cycle", f"the type of `{arg.name}` depends on its own previous value", base.shifted(arg.pos),
                       "a feature cannot read previous() of itself; read previous() of the facts it is computed "
                       "from, or of a decision (whose values are declared)")
            return None
        t = self.infer(arg, ns, base, extra)
        if t is not None and t.kind == "list":
            self.error("type", f"`{arg.name}` is {t}; the history keeps it, but `previous` reads single values",
                       base.shifted(arg.pos), "make a yes/no feature of it (e.g. `was_loyal: 'loyal' in "
                       "protected_by`) and read previous() of the feature")
            return None
        return t

    def infer_streak(self, node: Call, ns: Namespace, base: Location, extra: dict[str, Type] | None
                     ) -> Type | None:
        """`streak(below_line, 3)`: in how many periods in a row, this one included, a yes/no fact, feature
        or decision held (a number from 0 to 3), read like previous() from the recorded periods."""
        arg, most = node.args
        fixed = self.fixed(most, ns)
        if not isinstance(fixed, Num) or not float(fixed.value).is_integer() or not 1 <= fixed.value <= MAX_BACK:
            self.error("type", f"the most periods `streak` counts must be a fixed whole number from 1 to {MAX_BACK}",
                       base.shifted(most.pos), "streak(below_line, 3) counts this period and up to two before it")
            return None
        if not isinstance(arg, Name) or (extra and arg.name in extra):
            self.error("type", "`streak` counts the periods in a row in which one yes/no name held: a fact, "
                       f"feature or decision of {ns.entity}", base.shifted(arg.pos),
                       "make the condition a feature under `derive:` (e.g. `below_line: not in_pareto_top`) and "
                       "count streak(below_line, 3)")
            return None
        t = self.infer_previous(Call(PREVIOUS, (arg,), (), node.pos), ns, base, extra)
        if t is not None and t.kind != "boolean":
            self.error("type", f"`streak` counts periods in which a yes/no value held; `{arg.name}` is {t}",
                       base.shifted(arg.pos), "make a yes/no feature of it (e.g. `is_key: tier == 'A'`) and count "
                       "streak(is_key, 6)")
            return None
        return NUMBER if t is not None else None

    def same_type(self, types: list[Type | None], args: tuple[Node, ...], base: Location, what: str) -> Type | None:
        known = [t for t in types if t is not None]
        if len(known) < len(types):
            return None
        for t, a in zip(known, args):
            if t.kind == "list":
                self.error("type", f"{what} cannot choose between lists", base.shifted(a.pos), LIST_HINT)
                return None
        first = known[0]
        for t, a in zip(known[1:], args[1:]):
            if t.kind != first.kind:
                self.error("type", f"the values of {what} must all be of one type: {first} and {t}",
                           base.shifted(a.pos))
                return None
        values = frozenset().union(*(t.values for t in known)) if all(t.values for t in known) else None
        return Type(first.kind, values)

    def infer_lookup(self, node: Call, ns: Namespace, base: Location, extra: dict[str, Type] | None) -> Type | None:
        key_t = self.infer(node.args[0], ns, base, extra)
        table = node.args[1]
        if not isinstance(table, MapLit):
            self.error("type", "the second argument of `lookup` must be a table like {A: 0.2, B: 0.1}",
                       base.shifted(table.pos))
            return None
        if key_t is not None and key_t.values is not None:
            for key, value in table.items:
                if key not in key_t.values:
                    self.error("unknown-value", f"table key {key!r} is not a possible value of the lookup key",
                               base.shifted(value.pos), did_you_mean(key, map(str, key_t.values)))
        value_nodes = [v for _, v in table.items] + list(node.args[2:])
        if not value_nodes:
            self.error("type", "the table of `lookup` is empty", base.shifted(table.pos),
                       "write entries like {A: 0.2, B: 0.1}, or give a default as third argument")
            return None
        fixed_nodes = []
        for v in value_nodes:
            fixed = self.fixed(v, ns)
            if fixed is None:
                self.error("type", "table values and the default of `lookup` must be fixed values",
                           base.shifted(v.pos), "values in quotes, numbers, true/false or parameters")
                return None
            fixed_nodes.append(fixed)
        value_nodes = fixed_nodes
        if key_t is not None and key_t.kind in ("boolean", "list"):
            self.error("type", "the key of `lookup` must be text or a number", base.shifted(node.args[0].pos),
                       LIST_HINT if key_t.kind == "list" else "")
        types = [self.infer(v, ns, base, extra) for v in value_nodes]
        return self.same_type(types, tuple(value_nodes), base, "the lookup table")

    # -- policies ------------------------------------------------------------------------------
    def check_expr(self, expr: Expr, ns: Namespace, extra: dict[str, Type] | None = None) -> Type | None:
        if expr.node is None:
            return None
        return self.infer(expr.node, ns, expr.loc, extra)

    def check_derives(self) -> None:
        # features may read each other in any order; resolve types in rounds
        pending = [(p, d) for p in self.ps.policies for d in p.derives]
        while pending:
            progress = False
            still = []
            for p, d in pending:
                ns = self.namespaces[p.entity]
                if self.waits_for(d, ns):
                    still.append((p, d))
                    continue
                self.settle(d, ns, self.check_expr(d.expr, ns))
                progress = True
            pending = still
            if not progress:
                break
        if not pending:
            return
        # what is left reads itself, directly or through others: report each cycle once, then check the
        # rest of those expressions with the features of the cycle as unknown (so nothing follows from it)
        self.report_cycles(pending)
        for p, d in pending:
            self.settle(d, self.namespaces[p.entity], None)
        for p, d in pending:
            self.check_expr(d.expr, self.namespaces[p.entity])

    def waits_for(self, d: Derive, ns: Namespace) -> bool:
        """Whether a feature reads a feature whose type is not known yet (itself included)."""
        node = d.expr.node
        # previous(d) is the value of another period, read from the history: it waits for nothing
        # but the type of d, which infer_previous reports when it is d's own
        read = names(node) + [n for n, _ in past_reads(node) if n != d.name] if node is not None else []
        reads = [ns.symbols.get(n) for n in read]
        return any(s is not None and s.kind == "derive" and s.type.kind == "pending" for s in reads)

    def settle(self, d: Derive, ns: Namespace, t: Type | None) -> None:
        sym = ns.symbols[d.name]
        if sym.kind == "derive" and sym.loc == d.loc:
            ns.symbols[d.name] = Symbol(d.name, "derive", t or UNKNOWN, d.loc)

    def report_cycles(self, pending: list[tuple[Policy, Derive]]) -> None:
        graph = {(p.entity, d.name): [(p.entity, n.name) for n in _names(d.expr.node)] for p, d in pending}
        locs = {(p.entity, d.name): d.loc for p, d in pending}
        reported: set[frozenset] = set()
        for start in graph:
            cycle = _cycle_from(start, graph)
            if cycle and frozenset(cycle) not in reported:
                reported.add(frozenset(cycle))
                chain = [n for _, n in cycle] + [cycle[0][1]]
                self.error("cycle", f"features depend on each other in a cycle: {' -> '.join(chain)}",
                           locs[cycle[0]], "break the cycle: one of them must not read the other")

    def check_template(self, tpl: Template | None, ns: Namespace, extra: dict[str, Type]) -> None:
        if tpl is None:
            return
        try:
            fields = list(string.Formatter().parse(tpl.text))
        except ValueError as exc:
            self.error("template", f"the `because` text is not well formed: {exc}", tpl.loc,
                       "write a literal brace as {{ or }}")
            return
        for _, name, spec, conversion in fields:
            if name is None:
                continue
            written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            if conversion:
                self.error("template", f"`{written}` in the `because` text: `!{conversion}` is not supported",
                           tpl.loc, f"write {{{name}}}" + (f" or {{{name}:{spec}}}" if spec else ""))
                continue
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name or ""):
                self.error("template", f"`{written}` in the `because` text must be a plain name", tpl.loc,
                           "write {profit} or {profit_share:.0%}")
                continue
            t = extra.get(name) or (ns.symbols[name].type if name in ns.symbols else None)
            if t is None:
                self.error("unknown-name", f"`{{{name}}}` in the `because` text is not a known name", tpl.loc,
                           did_you_mean(name, list(ns.symbols) + list(extra)))
                continue
            if spec:
                problem = format_spec_problem(spec)
                if problem:
                    self.error("template", f"`{written}`: {problem[0]}", tpl.loc, problem[1])
                elif t.kind not in ("number", "unknown"):
                    self.error("template", f"format `{spec}` needs a number, but `{name}` is {t}", tpl.loc)

    def check_then(self, d: Decision, rule: Rule) -> None:
        outputs = {o.name: o for o in d.outputs}
        given = dict(rule.then)
        ns = self.namespaces[d.entity]
        for (name, value), loc in zip(rule.then, rule.then_locs or [rule.loc] * len(rule.then)):
            out = outputs.get(name)
            if out is None:
                self.error("unknown-output", f"decision `{d.name}` has no output `{name}`", loc,
                           did_you_mean(name, outputs) or f"its outputs: {', '.join(outputs)}")
                continue
            if isinstance(value, Expr):
                self.check_computed(d, out, value, ns)
                continue
            self.check_value(d, out.name, out.type, out.values, value, loc)
        if not d.single:
            missing = [o for o in outputs if o not in given]
            if missing:
                self.error("missing-output", f"rule `{rule.id}` does not set {', '.join(missing)}", rule.loc,
                           "every rule of a decision with several outputs sets all of them")

    def check_computed(self, d: Decision, out: Output, value: Expr, ns: Namespace) -> None:
        """An output computed by an expression: of the output's type, in a decision that can hold it."""
        t = self.check_expr(value, ns)
        if t is not None and t.kind != out.type:
            self.error("type", f"`{out.name}` is {Type(out.type)}, but this rule computes {t}", value.loc)
        if out.values is not None:
            self.error("computed-values", f"`{out.name}` is computed by a rule, so it cannot declare `values`",
                       value.loc, "declare `type: number` (with `min`/`max` if it has bounds) instead of values")
        if d.hit in ("any", "priority") or d.gives_list:
            how = "a collected list holds fixed values" if d.gives_list else \
                f"hit policy {d.hit} compares the rules' fixed values"
            self.error("hit", f"`{out.name}` is computed, but {how}", value.loc,
                       "give fixed values, or use hit policy first or unique (collect: aggregate sum, min or max)")

    def check_value(self, d: Decision, out: str, kind: str, values: tuple | None, value: Scalar, loc: Location) -> None:
        actual = "boolean" if isinstance(value, bool) else ("number" if isinstance(value, (int, float)) else "string")
        if values is not None and value not in values:
            allowed = ", ".join(map(str, values))
            self.error("unknown-value", f"{value!r} is not a declared value of `{out}` (declared: {allowed})", loc,
                       did_you_mean(str(value), map(str, values)))
        elif actual != kind:
            self.error("type", f"`{out}` is {Type(kind)}, but this rule gives {Type(actual)}", loc)

    def check_decision(self, p: Policy, d: Decision) -> None:
        ns = self.namespaces[p.entity]
        # as in DMN, the outputs that list their values order the rules (the first such output first);
        # an output without `values:` plays no part in the order
        if d.hit in ("priority", "output-order") and not any(o.values for o in d.outputs):
            where = f"decision `{d.name}`" if d.single else f"one of the outputs of `{d.name}`"
            self.error("priority-values", f"hit policy {d.hit} needs `values:` on {where}", d.outputs[0].loc or d.loc,
                       "list the values from highest to lowest priority")
        if d.hit == "collect" and d.aggregate in ("sum", "min", "max") and d.main.type != "number":
            self.error("type", f"`aggregate: {d.aggregate}` needs a number output", d.loc)
        if d.hit == "collect" and d.aggregate != "list" and not d.single:
            self.error("hit", f"`aggregate: {d.aggregate}` totals one output; this decision has several", d.loc,
                       "collect the rows as lists (no aggregate), or make one decision per total")
        if d.aggregate != "list" and d.hit != "collect":
            self.error("hit", "`aggregate` only applies to hit policy collect", d.loc)
        if d.gives_list:
            for v in [v for o in d.outputs for v in list(o.values or ())] + \
                    [v for r in d.all_rules for _, v in r.then]:
                if isinstance(v, str) and LIST_SEPARATOR in v:
                    self.error("unknown-value", f"{v!r} contains `{LIST_SEPARATOR}`, which separates the values "
                               f"of a collected list in texts and CSV files", d.loc,
                               "write it without the comma, e.g. with a hyphen")
                    break
        ids: dict[str, Location] = {}
        defaults = 0
        for rule in d.rules:
            rules = [rule] + ([rule.quota.else_rule] if rule.quota else [])
            for r in rules:
                if r.id in ids:
                    self.error("duplicate-rule", f"rule id `{r.id}` is used twice in decision `{d.name}`", r.loc,
                               f"first use at line {ids[r.id].line}")
                ids.setdefault(r.id, r.loc)
                self.check_then(d, r)
            extra: dict[str, Type] = {}
            if rule.when is not None:
                t = self.check_expr(rule.when, ns)
                if t is not None and t.kind != "boolean":
                    self.error("type", f"`when` must be a condition (yes/no), but this is {t}", rule.when.loc,
                               "compare it, e.g. `profit > 0`")
            if rule.is_default:
                defaults += 1
                if defaults > 1:
                    self.error("default", f"decision `{d.name}` has more than one default rule (no `when`)", rule.loc)
            if rule.quota is not None:
                q = rule.quota
                if d.hit != "first":
                    self.error("quota", "a quota can only be used with hit policy first", q.loc)
                for key in q.rank_by:
                    t = self.check_expr(key.expr, ns)
                    if t is not None and t.kind != "number":
                        self.error("type", f"`rank_by` needs numbers, but this is {t}", key.expr.loc)
                if q.per is not None and q.per not in ns.symbols:
                    self.error("unknown-name", f"`per: {q.per}` is not a fact, feature or decision of {p.entity}",
                               q.per_loc or q.loc, did_you_mean(q.per, ns.symbols))
                if q.per is not None and q.per in ns.symbols and ns.symbols[q.per].type.kind == "list":
                    self.error("type", f"`per: {q.per}` cannot group by a list", q.per_loc or q.loc)
                extra = dict(QUOTA_VARIABLES)
                self.check_template(q.else_rule.because, ns, extra)
            self.check_template(rule.because, ns, extra)

    def check_invariant(self, p: Policy, inv: Invariant) -> None:
        t = self.check_expr(inv.expr, self.namespaces[p.entity])
        if t is not None and t.kind != "boolean":
            self.error("type", f"`{inv.kind}` of invariant `{inv.id}` must be a condition (yes/no), but this is {t}",
                       inv.expr.loc, "compare it, e.g. `retention == 'exit' and tier == 'A'`")

    def check_measure(self, p: Policy, m: Measure) -> None:
        """A measure is one figure of the population: every value of an entity it reads is read inside
        sum(), mean(), count() or quantile() (over everyone: no `by=`), and it reads no earlier period."""
        ns = self.namespaces[p.entity]
        if m.name in ns.symbols or m.name in self.measure_names.setdefault(p.entity, {}):
            first = ns.symbols[m.name].loc if m.name in ns.symbols else self.measure_names[p.entity][m.name]
            self.error("duplicate-name", f"`{m.name}` is already a name of {p.entity} (at {first})", m.loc,
                       "give the measure a name of its own")
            return
        self.measure_names[p.entity][m.name] = m.loc
        node = m.expr.node
        if node is None:
            return
        t = self.check_expr(m.expr, ns)
        if t is not None and t.kind not in ("number", "boolean"):
            self.error("type", f"measure `{m.name}` must be a number (or yes/no), but this is {t}", m.expr.loc,
                       "e.g. sum(if(in_pareto_top, profit, 0)) / sum(profit)")
        for where, reason in _row_reads(node):
            self.error("type", f"measure `{m.name}` {reason}", m.expr.loc.shifted(where.pos),
                       "a measure is one figure for the whole population: read each entity's values inside "
                       "sum(), mean(), count() or quantile(), e.g. sum(profit), mean(revenue)")
            break

    def run(self) -> Checked:
        self.build_namespaces()
        self.add_joins()
        self.check_derives()
        self.measure_names: dict[str, dict[str, Location]] = {}
        for p in self.ps.policies:
            for d in p.decisions:
                self.check_decision(p, d)
            for inv in p.invariants:
                self.check_invariant(p, inv)
            for m in p.measures:
                self.check_measure(p, m)
        if self.problems:
            raise PolicyError(self.problems)
        return Checked(self.ps, self.namespaces)


AGGREGATES = ("sum", "mean", "count", "quantile")  # one value for everyone (without `by=`)


def _row_reads(node: Node, inside: bool = False) -> list[tuple[Node, str]]:
    """Where an expression depends on the row it is evaluated for: a name outside an aggregate, an
    aggregate per group (`by=`), an earlier period's value (the parts of a measure that cannot be)."""
    if isinstance(node, Call) and node.func in (PREVIOUS, STREAK):
        return [(node, f"reads earlier periods with {node.func}(); measures are of this run's population")]
    if isinstance(node, Call) and node.func in AGGREGATES:
        if node.kwarg("by") is not None:
            return [(node, f"computes {node.func}() per group (`by=`), not one figure for everyone")]
        return [r for a in node.args for r in _row_reads(a, True)]
    if isinstance(node, Name) and not inside:
        return [(node, f"reads `{node.name}`, which differs from one entity to the next")]
    if isinstance(node, Call) and node.func in POPULATION_FUNCTIONS and not inside:
        return [(node, f"uses {node.func}(), which gives each entity a value of its own")]
    return [r for child in children(node) for r in _row_reads(child, inside)]


def _cycle_from(start: tuple[str, str], graph: dict[tuple[str, str], list[tuple[str, str]]]
                ) -> list[tuple[str, str]] | None:
    """The cycle `start` lies on (in reading order from `start`), or None when it only leads into one."""
    path = [start]
    seen = {start}

    def walk_from(node: tuple[str, str]) -> list[tuple[str, str]] | None:
        for nxt in graph.get(node, []):
            if nxt == start:
                return list(path)
            if nxt in graph and nxt not in seen:
                seen.add(nxt)
                path.append(nxt)
                found = walk_from(nxt)
                if found:
                    return found
                path.pop()
        return None

    return walk_from(start)


def literal_node(value: Scalar, pos: int = 0) -> Num | Str | Bool:
    """The expression node of a fixed value (a parameter written into an expression)."""
    if isinstance(value, bool):
        return Bool(value, pos)
    if isinstance(value, (int, float)):
        return Num(float(value), pos)
    return Str(str(value), pos)


def _literal_type(node: Num | Str | Bool) -> Type:
    return NUMBER if isinstance(node, Num) else STRING if isinstance(node, Str) else BOOLEAN


def _names(node: Node | None) -> list[Name]:
    return [n for n in walk(node) if isinstance(n, Name)] if node is not None else []


def typecheck(policy_set: PolicySet) -> Checked:
    """Check every name, type, function call and decision value; raise PolicyError with all problems."""
    return _Checker(policy_set).run()
