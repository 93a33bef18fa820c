"""Stage 4b of type-checking: the type of every expression, from the names of its entity's namespace.

Function calls are typed by `engine.language.calls` (their signatures, `previous`, `streak`,
`lookup`); everything else (names, arithmetic, comparisons, conditions, membership, the `because`
texts) here.
"""

from __future__ import annotations

import re
import string

from .calls import CallTyper
from .errors import Location, Problem, did_you_mean
from .model import Expr, Scalar, Template
from .nodes import Arith, Bool, Call, Compare, In, ListLit, Logic, MapLit, Member, Name, Neg, Node, Not, Num, Str, \
    to_text
from .types import BOOLEAN, LIST_HINT, NUMBER, STRING, Namespace, Type, format_spec_problem, literal_node, \
    literal_type


class ExpressionTyper:
    """Infers the types of expressions, collecting problems into `problems`."""

    def __init__(self, params: dict[tuple[str, str], Scalar], problems: list[Problem]):
        self.params = params
        self.problems = problems
        self.calls = CallTyper(self)

    def error(self, code: str, message: str, loc: Location, hint: str = "") -> None:
        self.problems.append(Problem(code, message, loc, hint))


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
            return self.calls.infer_call(node, ns, base, extra)
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
        it = literal_type(item)
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
        values = frozenset().union(*(t.values or () for t in known)) if all(t.values for t in known) else None
        return Type(first.kind, values)

    def check_expr(self, expr: Expr, ns: Namespace, extra: dict[str, Type] | None = None) -> Type | None:
        if expr.node is None:
            return None
        return self.infer(expr.node, ns, expr.loc, extra)

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
