"""The expression AST: small immutable nodes. `pos` is the character offset in the source text."""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Union

from .numbers import number_text

# The comparison operators, defined once: every engine (vectorized, durable_rules, the analyses)
# reads these tables, and the planted-bug check `tests/planted_bugs.py` mutates every entry.
COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt,
    ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}
# `a op b` is `b FLIPPED[op] a`
FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
# `not (a op b)` is `a NEGATED[op] b` when both are present
NEGATED = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


@dataclass(frozen=True)
class Num:
    value: float
    pos: int = 0


@dataclass(frozen=True)
class Str:
    value: str
    pos: int = 0


@dataclass(frozen=True)
class Bool:
    value: bool
    pos: int = 0


@dataclass(frozen=True)
class Name:
    name: str
    pos: int = 0


@dataclass(frozen=True)
class Neg:
    operand: "Node"
    pos: int = 0


@dataclass(frozen=True)
class Arith:
    """Binary arithmetic: + - * /."""

    op: str
    left: "Node"
    right: "Node"
    pos: int = 0


@dataclass(frozen=True)
class Compare:
    """A comparison, possibly chained: `0 < x <= 10` has ops ('<', '<=') and three operands."""

    ops: tuple[str, ...]
    operands: tuple["Node", ...]
    pos: int = 0


@dataclass(frozen=True)
class Logic:
    """`and` / `or` over two or more items."""

    op: str
    items: tuple["Node", ...]
    pos: int = 0


@dataclass(frozen=True)
class Not:
    operand: "Node"
    pos: int = 0


@dataclass(frozen=True)
class In:
    """`x in [a, b]` or `x not in [a, b]`; the list holds literals only."""

    operand: "Node"
    items: tuple["Node", ...]
    negate: bool = False
    pos: int = 0


@dataclass(frozen=True)
class Member:
    """`'loyal' in protected_by`: whether a list (the values a `collect` decision gathered) holds a fixed value."""

    item: "Node"
    collection: "Node"
    negate: bool = False
    pos: int = 0


@dataclass(frozen=True)
class ListLit:
    items: tuple["Node", ...]
    pos: int = 0


@dataclass(frozen=True)
class MapLit:
    """`{A: 0.2, B: 0.15}`: only as the table of `lookup`."""

    items: tuple[tuple[str, "Node"], ...]
    pos: int = 0


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple["Node", ...]
    kwargs: tuple[tuple[str, "Node"], ...] = ()
    pos: int = 0

    def kwarg(self, name: str) -> "Node | None":
        for key, value in self.kwargs:
            if key == name:
                return value
        return None


Node = Union[Num, Str, Bool, Name, Neg, Arith, Compare, Logic, Not, In, Member, ListLit, MapLit, Call]


def children(node: Node) -> Iterator[Node]:
    """Direct sub-expressions of a node, in source order."""
    if isinstance(node, (Neg, Not)):
        yield node.operand
    elif isinstance(node, Arith):
        yield node.left
        yield node.right
    elif isinstance(node, Compare):
        yield from node.operands
    elif isinstance(node, Logic):
        yield from node.items
    elif isinstance(node, In):
        yield node.operand
        yield from node.items
    elif isinstance(node, Member):
        yield node.item
        yield node.collection
    elif isinstance(node, ListLit):
        yield from node.items
    elif isinstance(node, MapLit):
        for _, value in node.items:
            yield value
    elif isinstance(node, Call):
        yield from node.args
        for _, value in node.kwargs:
            yield value


def map_children(node: Node, fn: "Callable[[Node], Node]") -> Node:
    """The same node with `fn` applied to each direct sub-expression (a `by=` column name excepted)."""
    if isinstance(node, (Neg, Not)):
        return replace(node, operand=fn(node.operand))
    if isinstance(node, Arith):
        return replace(node, left=fn(node.left), right=fn(node.right))
    if isinstance(node, Compare):
        return replace(node, operands=tuple(map(fn, node.operands)))
    if isinstance(node, Logic):
        return replace(node, items=tuple(map(fn, node.items)))
    if isinstance(node, In):
        return replace(node, operand=fn(node.operand), items=tuple(map(fn, node.items)))
    if isinstance(node, Member):
        return replace(node, item=fn(node.item), collection=fn(node.collection))
    if isinstance(node, ListLit):
        return replace(node, items=tuple(map(fn, node.items)))
    if isinstance(node, MapLit):
        return replace(node, items=tuple((k, fn(v)) for k, v in node.items))
    if isinstance(node, Call):
        # `by=` names a column to group by, never a value
        return replace(node, args=tuple(map(fn, node.args)),
                       kwargs=tuple((k, v if k == "by" else fn(v)) for k, v in node.kwargs))
    return node


def substitute(node: Node, values: "dict[str, Node]") -> Node:
    """The same tree with the names in `values` replaced by their nodes (used to inline parameters)."""
    if isinstance(node, Name):
        found = values.get(node.name)
        return replace(found, pos=node.pos) if found is not None else node
    out = map_children(node, lambda n: substitute(n, values))
    if isinstance(out, Neg) and isinstance(out.operand, Num):
        return Num(-out.operand.value, node.pos)  # `-low` with low = 1 is the number -1, as `-1` written out is
    return out


def walk(node: Node) -> Iterator[Node]:
    """All nodes of a tree, parents before children."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(list(children(current))))


PREVIOUS = "previous"
STREAK = "streak"


def expand_streak(node: Call) -> Node:
    """`streak(x, n)` written out as the values it counts, which is how the backends evaluate it (so
    that it means the same everywhere `previous`, `if` and `coalesce` do): for n = 3,
    if(coalesce(x, false), 1 + if(coalesce(previous(x, 1), false), 1 + if(coalesce(previous(x, 2), false),
    1, 0), 0), 0). A missing value (an entity that was not there, an unknown yes/no) ends the row."""
    x, pos = node.args[0], node.pos
    n = int(node.args[1].value)  # type: ignore[union-attr]

    def held(back: int) -> Node:
        value = x if back == 0 else Call(PREVIOUS, (x, Num(back, pos)), (), pos)
        return Call("coalesce", (value, Bool(False, pos)), (), pos)

    out: Node = Call("if", (held(n - 1), Num(1, pos), Num(0, pos)), (), pos)
    for back in range(n - 2, -1, -1):
        out = Call("if", (held(back), Arith("+", Num(1, pos), out, pos), Num(0, pos)), (), pos)
    return out


def _walk_present(node: Node) -> Iterator[Node]:
    """Like `walk`, without going into `previous(...)`: what an expression reads of this period."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if not (isinstance(current, Call) and current.func == PREVIOUS):
            stack.extend(reversed(list(children(current))))


def names(node: Node, past: bool = False) -> list[str]:
    """The names an expression reads, in order of first appearance. The name inside `previous(x)` is
    a value of an earlier period, not of this one: it is left out unless `past` is true."""
    nodes = walk(node) if past else _walk_present(node)
    return list(dict.fromkeys(n.name for n in nodes if isinstance(n, Name)))


def past_reads(node: Node) -> list[tuple[str, int]]:
    """Every `previous(x)` / `previous(x, k)` of an expression, as (name, periods back)."""
    out = []
    for n in walk(node):
        if isinstance(n, Call) and n.func == PREVIOUS and n.args and isinstance(n.args[0], Name):
            back = n.args[1].value if len(n.args) > 1 and isinstance(n.args[1], Num) else 1
            out.append((n.args[0].name, int(back)))
        elif isinstance(n, Call) and n.func == STREAK and len(n.args) == 2 and isinstance(n.args[0], Name) \
                and isinstance(n.args[1], Num):
            out += [(n.args[0].name, back) for back in range(1, int(n.args[1].value))]
    return list(dict.fromkeys(out))


def past_key(name: str, back: int) -> str:
    """The column holding `previous(name, back)` (not a valid policy name, so it never collides)."""
    return f"previous({name}, {back})"


def _key_text(key: str) -> str:
    """A lookup-table key as written: bare when it reads as a word, quoted otherwise."""
    plain = key.isidentifier() and key not in ("and", "or", "not", "in", "true", "false")
    return key if plain else repr(key)


def _operand_text(node: Node) -> str:
    """An operand of a comparison, in parentheses where it is a condition itself."""
    text = to_text(node)
    return f"({text})" if isinstance(node, (Compare, In, Member, Not)) else text


def to_text(node: Node) -> str:
    """A canonical source text for a node (used in traces)."""
    if isinstance(node, Num):
        return number_text(node.value)
    if isinstance(node, Str):
        return repr(node.value)
    if isinstance(node, Bool):
        return "true" if node.value else "false"
    if isinstance(node, Name):
        return node.name
    if isinstance(node, Neg):
        return f"-{to_text(node.operand)}"
    if isinstance(node, Arith):
        return f"({to_text(node.left)} {node.op} {to_text(node.right)})"
    if isinstance(node, Compare):
        parts = [_operand_text(node.operands[0])]
        for op, operand in zip(node.ops, node.operands[1:]):
            parts += [op, _operand_text(operand)]
        return " ".join(parts)
    if isinstance(node, Logic):
        return "(" + f" {node.op} ".join(to_text(i) for i in node.items) + ")"
    if isinstance(node, Not):
        return f"not {to_text(node.operand)}"
    if isinstance(node, In):
        items = ", ".join(to_text(i) for i in node.items)
        return f"{_operand_text(node.operand)} {'not in' if node.negate else 'in'} [{items}]"
    if isinstance(node, Member):
        return f"{_operand_text(node.item)} {'not in' if node.negate else 'in'} {_operand_text(node.collection)}"
    if isinstance(node, ListLit):
        return "[" + ", ".join(to_text(i) for i in node.items) + "]"
    if isinstance(node, MapLit):
        return "{" + ", ".join(f"{_key_text(k)}: {to_text(v)}" for k, v in node.items) + "}"
    if isinstance(node, Call):
        args = [to_text(a) for a in node.args] + [f"{k}={to_text(v)}" for k, v in node.kwargs]
        return f"{node.func}({', '.join(args)})"
    raise TypeError(f"not an expression node: {node!r}")
