"""The types of the policy language, and the names an entity's expressions can see.

A `Type` is what the type checker infers for an expression; a `Namespace` holds every `Symbol` of
one entity (facts, parameters, joined names, derived features, decision outputs); `Checked` is a
policy set with its namespaces, what the plan is made from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Location
from .model import Decision, Fact, PolicySet, Scalar
from .nodes import Bool, Num, Str
from .numbers import SPEC


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


def fact_type(f: Fact) -> Type:
    kind = "number" if f.type in ("number", "integer") else f.type
    return Type(kind, frozenset(f.values) if f.values and kind == "string" else None)


def output_type(kind: str, values: tuple | None) -> Type:
    return Type(kind, frozenset(values) if values and kind == "string" else None)


def decision_type(d: Decision, kind: str, values: tuple | None) -> Type:
    """What expressions see of a decision's output: a list for `collect` and `output-order`, a number
    for the aggregates of `collect`."""
    if d.gives_list:
        return Type("list", frozenset(values) if values else None, kind)
    if d.hit == "collect":
        return NUMBER
    return output_type(kind, values)


def param_type(value: Scalar) -> Type:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, (int, float)):
        return NUMBER
    return Type("string", frozenset({value}))



def literal_node(value: Scalar, pos: int = 0) -> Num | Str | Bool:
    """The expression node of a fixed value (a parameter written into an expression)."""
    if isinstance(value, bool):
        return Bool(value, pos)
    if isinstance(value, (int, float)):
        return Num(float(value), pos)
    return Str(str(value), pos)


def _literal_type(node: Num | Str | Bool) -> Type:
    return NUMBER if isinstance(node, Num) else STRING if isinstance(node, Str) else BOOLEAN



def literal_type(node: Num | Str | Bool) -> Type:
    """The type of a fixed value."""
    return NUMBER if isinstance(node, Num) else STRING if isinstance(node, Str) else BOOLEAN
