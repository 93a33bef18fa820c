"""Stage 4c of type-checking: function calls, against the signatures of the function catalogue
(`engine.language.functions`): arity, named arguments, argument types, and the functions with rules
of their own (`if`, `coalesce`, `quantile`, `round`, `lookup`, `previous`, `streak`)."""

from __future__ import annotations

from typing import Protocol

from .errors import Location, did_you_mean
from .functions import FUNCTIONS, MAX_BACK
from .nodes import PREVIOUS, STREAK, Bool, Call, MapLit, Name, Node, Num, Str
from .types import BOOLEAN, LIST_HINT, NUMBER, ROUND_DIGITS, TIES, Namespace, Type


class Typer(Protocol):
    """What typing a call needs of the expression typer (`engine.language.expressions`)."""

    def error(self, code: str, message: str, loc: Location, hint: str = "") -> None: ...

    def infer(self, node: Node, ns: Namespace, base: Location, extra: dict[str, Type] | None = None
              ) -> Type | None: ...

    def fixed(self, node: Node, ns: Namespace) -> Num | Str | Bool | None: ...

    def need_number(self, t: Type | None, node: Node, base: Location, what: str) -> Type | None: ...

    def need_boolean(self, t: Type | None, node: Node, base: Location, what: str) -> None: ...

    def same_type(self, types: list[Type | None], args: tuple[Node, ...], base: Location, what: str
                  ) -> Type | None: ...


class CallTyper:
    """The type of a function call; the arguments are typed by the expression typer `t`."""

    def __init__(self, typer: Typer):
        self.t = typer

    def infer_call(self, node: Call, ns: Namespace, base: Location, extra: dict[str, Type] | None) -> Type | None:
        at = base.shifted(node.pos)
        spec = FUNCTIONS.get(node.func)
        if spec is None:
            self.t.error("unknown-function", f"there is no function `{node.func}`", at,
                         did_you_mean(node.func, FUNCTIONS) or f"functions: {', '.join(sorted(FUNCTIONS))}")
            return None
        n = len(node.args)
        if n < spec.min_args or (spec.max_args is not None and n > spec.max_args):
            self.t.error("arity", f"`{node.func}` takes {spec.arity_text()}, got {n}", at, spec.summary)
            return None
        seen_kwargs: set[str] = set()
        for key, value in node.kwargs:
            if key in seen_kwargs:
                self.t.error("arity", f"`{key}=` is given twice", base.shifted(value.pos))
            seen_kwargs.add(key)
            if key not in spec.kwargs:
                allowed = f"it accepts {', '.join(k + '=' for k in spec.kwargs)}" if spec.kwargs else "it takes none"
                self.t.error("arity", f"`{node.func}` has no named argument `{key}`", base.shifted(value.pos), allowed)
            elif key == "by":
                if not isinstance(value, Name):
                    self.t.error("type", "`by=` needs the name of a column to group by", base.shifted(value.pos))
                else:
                    t = self.t.infer(value, ns, base, extra)
                    if t is not None and t.kind == "list":
                        self.t.error("type", f"cannot group by `{value.name}`: it is {t}", base.shifted(value.pos))
            elif key == "ties":
                fixed = self.t.fixed(value, ns)
                if not isinstance(fixed, Str) or fixed.value not in TIES:
                    self.t.error("type", "`ties=` must be 'key' (ties go to the smaller key) or 'together' (tied "
                                 "entities share the best rank)", base.shifted(value.pos),
                                 "e.g. rank(revenue, ties='together')")
        if node.func == "lookup":
            return self.infer_lookup(node, ns, base, extra)
        if node.func == "previous":
            return self.infer_previous(node, ns, base, extra)
        if node.func == STREAK:
            return self.infer_streak(node, ns, base, extra)
        types = [self.t.infer(a, ns, base, extra) for a in node.args]
        if node.func == "is_missing":
            return BOOLEAN
        if node.func == "if":
            self.t.need_boolean(types[0], node.args[0], base, "the first argument of `if`")
            return self.t.same_type(types[1:], node.args[1:], base, "`if`")
        if node.func == "coalesce":
            return self.t.same_type(types, node.args, base, "`coalesce`")
        if node.func == "quantile":
            q = self.t.fixed(node.args[1], ns)
            if not isinstance(q, Num) or not 0 <= q.value <= 1:
                self.t.error("type", "the second argument of `quantile` must be a fixed number between 0 and 1",
                             base.shifted(node.args[1].pos), "e.g. quantile(revenue, 0.8)")
        if node.func == "count":
            return NUMBER  # counts entities where its argument is present, whatever its type
        ok = all([self.t.need_number(t, a, base, f"`{node.func}`") for t, a in zip(types, node.args)])
        if node.func == "round" and len(node.args) == 2:
            digits = self.t.fixed(node.args[1], ns)
            if not isinstance(digits, Num) or not float(digits.value).is_integer() \
                    or not -ROUND_DIGITS <= digits.value <= ROUND_DIGITS:
                self.t.error("type", f"the digits of `round` must be a fixed whole number from -{ROUND_DIGITS} to "
                             f"{ROUND_DIGITS}", base.shifted(node.args[1].pos),
                             "e.g. round(x, 2) for cents, round(x, -3) for thousands")
        return NUMBER if ok else None

    def infer_previous(self, node: Call, ns: Namespace, base: Location, extra: dict[str, Type] | None
                       ) -> Type | None:
        """`previous(tier)`, `previous(tier, 2)`: the value of a fact, feature or decision of this entity
        one (or k) recorded periods back; of the same type."""
        arg = node.args[0]
        if len(node.args) > 1:
            back = self.t.fixed(node.args[1], ns)
            if not isinstance(back, Num) or not float(back.value).is_integer() or not 1 <= back.value <= MAX_BACK:
                self.t.error("type", f"how many periods back `previous` looks must be a fixed whole number from 1 "
                             f"to {MAX_BACK}", base.shifted(node.args[1].pos),
                             "previous(tier) is the last period, previous(tier, 2) the one before")
        if not isinstance(arg, Name) or (extra and arg.name in extra):
            self.t.error("type", "`previous` reads the earlier value of one name: a fact, feature or decision of "
                         f"{ns.entity}", base.shifted(arg.pos), "e.g. previous(tier) or previous(profit); to look back "
                         "at a calculation, make it a feature under `derive:` and read previous() of the feature")
            return None
        sym = ns.symbols.get(arg.name)
        if sym is not None and sym.kind == "param":
            self.t.error("type", f"`{arg.name}` is a parameter: it has no earlier values, only the one written "
                         "in the policy", base.shifted(arg.pos), f"use `{arg.name}` itself")
            return None
        if sym is not None and sym.type.kind == "pending":
            self.t.error("cycle", f"the type of `{arg.name}` depends on its own previous value", base.shifted(arg.pos),
                         "a feature cannot read previous() of itself; read previous() of the facts it is computed "
                         "from, or of a decision (whose values are declared)")
            return None
        t = self.t.infer(arg, ns, base, extra)
        if t is not None and t.kind == "list":
            self.t.error("type", f"`{arg.name}` is {t}; the history keeps it, but `previous` reads single values",
                         base.shifted(arg.pos), "make a yes/no feature of it (e.g. `was_loyal: 'loyal' in "
                         "protected_by`) and read previous() of the feature")
            return None
        return t

    def infer_streak(self, node: Call, ns: Namespace, base: Location, extra: dict[str, Type] | None
                     ) -> Type | None:
        """`streak(below_line, 3)`: in how many periods in a row, this one included, a yes/no fact, feature
        or decision held (a number from 0 to 3), read like previous() from the recorded periods."""
        arg, most = node.args
        fixed = self.t.fixed(most, ns)
        if not isinstance(fixed, Num) or not float(fixed.value).is_integer() or not 1 <= fixed.value <= MAX_BACK:
            self.t.error("type", f"the most periods `streak` counts must be a fixed whole number from 1 to {MAX_BACK}",
                         base.shifted(most.pos), "streak(below_line, 3) counts this period and up to two before it")
            return None
        if not isinstance(arg, Name) or (extra and arg.name in extra):
            self.t.error("type", "`streak` counts the periods in a row in which one yes/no name held: a fact, "
                         f"feature or decision of {ns.entity}", base.shifted(arg.pos),
                         "make the condition a feature under `derive:` (e.g. `below_line: not in_pareto_top`) and "
                         "count streak(below_line, 3)")
            return None
        t = self.infer_previous(Call(PREVIOUS, (arg,), (), node.pos), ns, base, extra)
        if t is not None and t.kind != "boolean":
            self.t.error("type", f"`streak` counts periods in which a yes/no value held; `{arg.name}` is {t}",
                         base.shifted(arg.pos), "make a yes/no feature of it (e.g. `is_key: tier == 'A'`) and count "
                         "streak(is_key, 6)")
            return None
        return NUMBER if t is not None else None

    def infer_lookup(self, node: Call, ns: Namespace, base: Location, extra: dict[str, Type] | None) -> Type | None:
        key_t = self.t.infer(node.args[0], ns, base, extra)
        table = node.args[1]
        if not isinstance(table, MapLit):
            self.t.error("type", "the second argument of `lookup` must be a table like {A: 0.2, B: 0.1}",
                         base.shifted(table.pos))
            return None
        if key_t is not None and key_t.values is not None:
            for key, value in table.items:
                if key not in key_t.values:
                    self.t.error("unknown-value", f"table key {key!r} is not a possible value of the lookup key",
                                 base.shifted(value.pos), did_you_mean(key, map(str, key_t.values)))
        value_nodes = [v for _, v in table.items] + list(node.args[2:])
        if not value_nodes:
            self.t.error("type", "the table of `lookup` is empty", base.shifted(table.pos),
                         "write entries like {A: 0.2, B: 0.1}, or give a default as third argument")
            return None
        fixed_nodes = []
        for v in value_nodes:
            fixed = self.t.fixed(v, ns)
            if fixed is None:
                self.t.error("type", "table values and the default of `lookup` must be fixed values",
                             base.shifted(v.pos), "values in quotes, numbers, true/false or parameters")
                return None
            fixed_nodes.append(fixed)
        if key_t is not None and key_t.kind in ("boolean", "list"):
            self.t.error("type", "the key of `lookup` must be text or a number", base.shifted(node.args[0].pos),
                           LIST_HINT if key_t.kind == "list" else "")
        types = [self.t.infer(v, ns, base, extra) for v in fixed_nodes]
        return self.t.same_type(types, tuple(fixed_nodes), base, "the lookup table")
