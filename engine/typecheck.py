"""Stage 4, type-check: names, types, functions and decision values, before any data is read.

Builds one namespace per entity (facts, joined names, derived features, decision outputs) and
infers a type for every expression. Every problem is collected and reported at `file:line:col`.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

from .errors import Location, PolicyError, Problem, did_you_mean
from .functions import FUNCTIONS
from .model import Decision, Expr, Fact, Policy, PolicySet, Rule, Scalar, Template
from .nodes import Arith, Bool, Call, Compare, In, ListLit, Logic, MapLit, Name, Neg, Node, Not, Num, Str, walk

QUOTA_VARIABLES = ("quota_rank", "quota_size", "quota_limit")
FORMAT_SPEC = re.compile(r"^(?P<comma>,)?(?:\.(?P<prec>\d{1,2}))?(?P<kind>[f%d])?$")


@dataclass(frozen=True)
class Type:
    """`kind` is number, string, boolean, list or map; `values` is the closed set of a text column, if any."""

    kind: str
    values: frozenset | None = None

    def __str__(self) -> str:
        return {"number": "a number", "string": "text", "boolean": "a yes/no value"}.get(self.kind, self.kind)


NUMBER, STRING, BOOLEAN = Type("number"), Type("string"), Type("boolean")


@dataclass(frozen=True)
class Symbol:
    """A name visible to expressions of one entity: where it comes from and its type."""

    name: str
    kind: str  # fact | join | derive | decision
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


class _Checker:
    def __init__(self, policy_set: PolicySet):
        self.ps = policy_set
        self.problems: list[Problem] = []
        self.namespaces: dict[str, Namespace] = {}

    def error(self, code: str, message: str, loc: Location, hint: str = "") -> None:
        self.problems.append(Problem(code, message, loc, hint))

    # -- namespaces ----------------------------------------------------------------------------
    def declare(self, ns: Namespace, sym: Symbol) -> None:
        prev = ns.symbols.get(sym.name)
        if prev is None:
            ns.symbols[sym.name] = sym
            return
        if prev.kind == "fact" and sym.kind == "fact":
            if prev.type.kind != sym.type.kind:
                self.error("fact-type-conflict",
                           f"fact `{sym.name}` is declared as {sym.type} here but as {prev.type} at {prev.loc}",
                           sym.loc, "declare the fact with the same type in every policy")
            return
        self.error("duplicate-name", f"`{sym.name}` is already declared as a {prev.kind} at {prev.loc}",
                   sym.loc, "every fact, feature and decision output of an entity needs its own name")

    def build_namespaces(self) -> None:
        for entity in self.ps.entities:
            ns = Namespace(entity)
            self.namespaces[entity] = ns
            keys = []
            for p in self.ps.of_entity(entity):
                for f in p.facts:
                    self.declare(ns, Symbol(f.name, "fact", _fact_type(f), f.loc))
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
                for d in p.decisions:
                    for o in d.outputs:
                        self.declare(ns, Symbol(o.name, "decision", _output_type(o.type, o.values), d.loc, d.name))
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
                names = list(ns.symbols) + list(extra or {})
                hint = did_you_mean(node.name, names) or (
                    f"declare it under `facts:` or `derive:` of a {ns.entity} policy")
                self.error("unknown-name", f"`{node.name}` is not a fact, feature or decision of {ns.entity}", at, hint)
                return None
            if sym.type.kind == "pending":
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
        if isinstance(node, In):
            t = self.infer(node.operand, ns, base, extra)
            for item in node.items:
                if not isinstance(item, (Num, Str, Bool)):
                    self.error("type", "the list after `in` may hold only fixed values", base.shifted(item.pos))
                    continue
                self.check_compare("==", node.operand, t, item, self.infer(item, ns, base, extra), base)
            return BOOLEAN
        if isinstance(node, (ListLit, MapLit)):
            self.error("type", "a list or table can only be used with `in` or `lookup`", at)
            return None
        if isinstance(node, Call):
            return self.infer_call(node, ns, base, extra)
        raise TypeError(node)

    def need_number(self, t: Type | None, node: Node, base: Location, what: str) -> Type | None:
        if t is None:
            return None
        if t.kind != "number":
            hint = "a yes/no value cannot be used as a number; use if(cond, 1, 0)" if t.kind == "boolean" else ""
            self.error("type", f"{what} needs a number, but this is {t}", base.shifted(node.pos), hint)
            return None
        return NUMBER

    def need_boolean(self, t: Type | None, node: Node, base: Location, what: str) -> None:
        if t is not None and t.kind != "boolean":
            self.error("type", f"{what} needs a condition (yes/no), but this is {t}", base.shifted(node.pos),
                       "compare it, e.g. `x > 0`")

    def check_compare(self, op: str, ln: Node, lt: Type | None, rn: Node, rt: Type | None, base: Location) -> None:
        if lt is None or rt is None:
            return
        at = base.shifted(ln.pos)
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
        for key, value in node.kwargs:
            if key not in spec.kwargs:
                allowed = f"it accepts {', '.join(k + '=' for k in spec.kwargs)}" if spec.kwargs else "it takes none"
                self.error("arity", f"`{node.func}` has no named argument `{key}`", base.shifted(value.pos), allowed)
            elif key == "by":
                if not isinstance(value, Name):
                    self.error("type", "`by=` needs the name of a column to group by", base.shifted(value.pos))
                else:
                    self.infer(value, ns, base, extra)
        if node.func == "lookup":
            return self.infer_lookup(node, ns, base, extra)
        types = [self.infer(a, ns, base, extra) for a in node.args]
        if node.func == "is_missing":
            return BOOLEAN
        if node.func == "if":
            self.need_boolean(types[0], node.args[0], base, "the first argument of `if`")
            return self.same_type(types[1:], node.args[1:], base, "`if`")
        if node.func == "coalesce":
            return self.same_type(types, node.args, base, "`coalesce`")
        if node.func == "quantile":
            q = node.args[1]
            if not isinstance(q, Num) or not 0 <= q.value <= 1:
                self.error("type", "the second argument of `quantile` must be a fixed number between 0 and 1",
                           base.shifted(q.pos), "e.g. quantile(revenue, 0.8)")
        if node.func == "count":
            return NUMBER  # counts entities where its argument is present, whatever its type
        ok = all([self.need_number(t, a, base, f"`{node.func}`") for t, a in zip(types, node.args)])
        if node.func == "round" and len(node.args) == 2 and not isinstance(node.args[1], Num):
            self.error("type", "the digits of `round` must be a fixed whole number", base.shifted(node.args[1].pos))
        return NUMBER if ok else None

    def same_type(self, types: list[Type | None], args: tuple[Node, ...], base: Location, what: str) -> Type | None:
        known = [t for t in types if t is not None]
        if len(known) < len(types):
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
        for v in value_nodes:
            if not isinstance(v, (Num, Str, Bool)):
                self.error("type", "table values and the default of `lookup` must be fixed values",
                           base.shifted(v.pos))
                return None
        if key_t is not None and key_t.kind == "boolean":
            self.error("type", "the key of `lookup` must be text or a number", base.shifted(node.args[0].pos))
        types = [self.infer(v, ns, base, extra) for v in value_nodes]
        return self.same_type(types, tuple(value_nodes), base, "the lookup table")

    # -- policies ------------------------------------------------------------------------------
    def check_expr(self, expr: Expr, ns: Namespace, extra: dict[str, Type] | None = None) -> Type | None:
        if expr.node is None:
            return None
        return self.infer(expr.node, ns, expr.loc, extra)

    def check_derives(self) -> None:
        # features may read each other in any order; resolve types in rounds (cycles are reported by plan)
        pending = [(p, d) for p in self.ps.policies for d in p.derives]
        for _ in range(len(pending) + 1):
            progress = False
            still = []
            for p, d in pending:
                ns = self.namespaces[p.entity]
                reads = [ns.symbols.get(n.name) for n in _names(d.expr.node)]
                if any(s is not None and s.kind == "derive" and s.type.kind == "pending" and s.name != d.name
                       for s in reads):
                    still.append((p, d))
                    continue
                t = self.check_expr(d.expr, ns)
                sym = ns.symbols[d.name]
                if sym.kind == "derive" and sym.loc == d.loc:
                    ns.symbols[d.name] = Symbol(d.name, "derive", t or Type("unknown"), d.loc)
                progress = True
            pending = still
            if not pending or not progress:
                break
        for p, d in pending:  # part of a cycle: still check the names it reads
            ns = self.namespaces[p.entity]
            ns.symbols[d.name] = Symbol(d.name, "derive", Type("unknown"), d.loc)

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
            if conversion or not re.fullmatch(r"[a-z][a-z0-9_]*", name or ""):
                self.error("template", f"`{{{name}}}` in the `because` text must be a plain name", tpl.loc,
                           "write {profit} or {profit_share:.0%}")
                continue
            t = extra.get(name) or (ns.symbols[name].type if name in ns.symbols else None)
            if t is None:
                self.error("unknown-name", f"`{{{name}}}` in the `because` text is not a known name", tpl.loc,
                           did_you_mean(name, list(ns.symbols) + list(extra)))
                continue
            if spec:
                if not FORMAT_SPEC.match(spec):
                    self.error("template", f"format `{spec}` is not supported", tpl.loc,
                               "use `.2f` (decimals), `,.0f` (thousands), `.0%` (percent) or `d`")
                elif t.kind != "number":
                    self.error("template", f"format `{spec}` needs a number, but `{name}` is {t}", tpl.loc)

    def check_then(self, d: Decision, rule: Rule) -> None:
        outputs = {o.name: o for o in d.outputs}
        given = dict(rule.then)
        for (name, value), loc in zip(rule.then, rule.then_locs or [rule.loc] * len(rule.then)):
            out = outputs.get(name)
            if out is None:
                self.error("unknown-output", f"decision `{d.name}` has no output `{name}`", loc,
                           did_you_mean(name, outputs) or f"its outputs: {', '.join(outputs)}")
                continue
            self.check_value(d, out.name, out.type, out.values, value, loc)
        if not d.single:
            missing = [o for o in outputs if o not in given]
            if missing:
                self.error("missing-output", f"rule `{rule.id}` does not set {', '.join(missing)}", rule.loc,
                           "every rule of a decision with several outputs sets all of them")

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
        if d.hit == "priority" and not d.main.values:
            self.error("priority-values", f"hit policy priority needs `values:` on decision `{d.name}`", d.loc,
                       "list the values from highest to lowest priority")
        if d.hit == "collect" and d.aggregate in ("sum", "min", "max") and d.main.type != "number":
            self.error("type", f"`aggregate: {d.aggregate}` needs a number output", d.loc)
        if d.hit in ("collect", "priority") and not d.single:
            self.error("hit", f"hit policy {d.hit} needs a decision with a single output", d.loc)
        if d.aggregate != "list" and d.hit != "collect":
            self.error("hit", "`aggregate` only applies to hit policy collect", d.loc)
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
                extra = {v: NUMBER for v in QUOTA_VARIABLES}
                self.check_template(q.else_rule.because, ns, extra)
            self.check_template(rule.because, ns, extra)

    def run(self) -> Checked:
        self.build_namespaces()
        self.add_joins()
        self.check_derives()
        for p in self.ps.policies:
            for d in p.decisions:
                self.check_decision(p, d)
        if self.problems:
            raise PolicyError(self.problems)
        return Checked(self.ps, self.namespaces)


def _names(node: Node | None) -> list[Name]:
    return [n for n in walk(node) if isinstance(n, Name)] if node is not None else []


def typecheck(policy_set: PolicySet) -> Checked:
    """Check every name, type, function call and decision value; raise PolicyError with all problems."""
    return _Checker(policy_set).run()
