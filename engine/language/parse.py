"""Stage 3, parse: expression text to AST.

A hand-written tokenizer and recursive-descent parser. The grammar has no attribute access, no
indexing and no way to name Python objects, so user text can never reach Python internals.

    expr     := or
    or       := and ('or' and)*
    and      := not ('and' not)*
    not      := 'not' not | compare
    compare  := sum (CMP sum)*  |  sum ['not'] 'in' (list | sum)
    sum      := product (('+'|'-') product)*
    product  := unary (('*'|'/') unary)*
    unary    := '-' unary | atom
    atom     := NUMBER ['%'] | STRING | true | false | NAME | NAME '(' args ')' | '(' expr ')'
              | '[' items ']' | '{' key ':' expr, ... '}'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from .errors import PolicyError, Problem
from .model import Expr, PolicySet, Rule

from .numbers import number_text
from .nodes import COMPARE, Arith, Bool, Call, Compare, In, ListLit, Logic, MapLit, Member, Name, Neg, Node, Not, Num, \
    Str

MAX_LENGTH = 2000
MAX_DEPTH = 40
MAX_NODES = 500

KEYWORDS = {"and", "or", "not", "in", "true", "false"}
COMPARE_OPS = frozenset(COMPARE)


def _fixed_within_range(node: Arith) -> Arith:
    """An operation of two written numbers, refused where its result is beyond the largest number kam
    holds (`1e308 * 10`): every run would fail on it, so `kam check` says so where it is written."""
    a, b = node.left, node.right
    if isinstance(a, Num) and isinstance(b, Num):
        try:
            value = {"+": a.value + b.value, "-": a.value - b.value, "*": a.value * b.value}.get(node.op, 0.0) \
                if node.op != "/" else (a.value / b.value if b.value else 0.0)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ExprSyntaxError(f"`{number_text(a.value)} {node.op} {number_text(b.value)}` is beyond the largest "
                                  "number kam holds (about 1.8e308)", node.pos, "write a finite number")
    return node


class ExprSyntaxError(Exception):
    """A syntax problem at character offset `pos` of the expression."""

    def __init__(self, message: str, pos: int, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.hint = hint


@dataclass(frozen=True)
class Token:
    kind: str  # num, str, name, op, end
    text: str
    pos: int
    value: object = None


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d[\d_]*(?:\.\d[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?%?)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[^\W\d]\w*)
  | (?P<op><=|>=|==|!=|\*\*|[-+*/()<>\[\]{},:=.%])
    """,
    re.VERBOSE,
)


def tokenize(text: str) -> list[Token]:
    """Split an expression into tokens; unknown characters and unsafe names are errors here."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            ch = text[pos]
            hint = "use `and`, `or`, `not` for logic" if ch in "&|!" else ""
            raise ExprSyntaxError(f"unexpected character {ch!r}", pos, hint)
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "num":
            pct = raw.endswith("%")
            number = float(raw.rstrip("%").replace("_", ""))
            if not math.isfinite(number):  # `1e400` would silently be infinity, which parameters refuse
                raise ExprSyntaxError(f"`{raw}` is beyond the largest number kam holds (about 1.8e308)", pos,
                                      "write a finite number")
            tokens.append(Token("num", raw, pos, number / 100 if pct else number))
        elif kind == "str":
            body = raw[1:-1]
            tokens.append(Token("str", raw, pos, re.sub(r"\\(.)", r"\1", body)))
        elif kind == "name":
            if raw.startswith("__") or raw.endswith("__"):
                raise ExprSyntaxError(
                    f"`{raw}` is not allowed: names starting or ending with __ are reserved",
                    pos,
                    "use the names of facts, features and decisions declared in the policy",
                )
            tokens.append(Token("name", raw, pos))
        elif kind == "op":
            if raw == ".":
                raise ExprSyntaxError(
                    "attribute access (`.`) is not part of the policy language", pos,
                    "refer to facts, features and decisions by their plain names",
                )
            if raw == "**":
                raise ExprSyntaxError("`**` is not supported", pos, "multiply explicitly, e.g. `x * x`")
            if raw == "%":
                raise ExprSyntaxError("`%` must follow a number, as in `20%`", pos)
            tokens.append(Token("op", raw, pos))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0
        self.count = 0

    # -- helpers -------------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, kind: str, text: str | None = None) -> bool:
        tok = self.tok
        return tok.kind == kind and (text is None or tok.text == text)

    def at_keyword(self, word: str) -> bool:
        return self.tok.kind == "name" and self.tok.text == word

    def expect_op(self, text: str) -> Token:
        if not self.at("op", text):
            raise ExprSyntaxError(f"expected `{text}` but found {self.describe(self.tok)}", self.tok.pos)
        return self.advance()

    @staticmethod
    def describe(tok: Token) -> str:
        return "the end of the expression" if tok.kind == "end" else f"`{tok.text}`"

    def node(self, node: Node) -> Node:
        self.count += 1
        if self.count > MAX_NODES:
            raise ExprSyntaxError(
                f"expression is too large (more than {MAX_NODES} parts)", 0,
                "split it into named features under `derive:`",
            )
        return node

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprSyntaxError(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels)", pos,
                "split it into named features under `derive:`",
            )

    # -- grammar -------------------------------------------------------------------------------
    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise ExprSyntaxError("empty expression", 0)
        node = self.expr()
        if self.tok.kind != "end":
            tok = self.tok
            hint = "did you mean `==`?" if tok.text == "=" else ""
            if tok.kind == "name" and tok.text not in KEYWORDS:
                hint = "join conditions with `and` / `or`"
            raise ExprSyntaxError(f"unexpected {self.describe(tok)}", tok.pos, hint)
        return node

    def expr(self) -> Node:
        self.enter(self.tok.pos)
        try:
            return self.or_()
        finally:
            self.depth -= 1

    def or_(self) -> Node:
        pos = self.tok.pos
        items = [self.and_()]
        while self.at_keyword("or"):
            self.advance()
            items.append(self.and_())
        return items[0] if len(items) == 1 else self.node(Logic("or", tuple(items), pos))

    def and_(self) -> Node:
        pos = self.tok.pos
        items = [self.not_()]
        while self.at_keyword("and"):
            self.advance()
            items.append(self.not_())
        return items[0] if len(items) == 1 else self.node(Logic("and", tuple(items), pos))

    def not_(self) -> Node:
        if self.at_keyword("not"):
            pos = self.advance().pos
            self.enter(pos)
            try:
                return self.node(Not(self.not_(), pos))
            finally:
                self.depth -= 1
        return self.compare()

    def compare(self) -> Node:
        pos = self.tok.pos
        first = self.sum_()
        if self.at_keyword("in") or (self.at_keyword("not") and self.tokens[self.i + 1].text == "in"):
            negate = self.advance().text == "not"
            if negate:
                self.advance()
            if self.at("op", "["):
                lst = self.atom()
                assert isinstance(lst, ListLit)
                return self.node(In(first, lst.items, negate, pos))
            if self.tok.kind == "end":
                raise ExprSyntaxError("`in` needs a list, as in `region in ['north', 'east']`, or the name of a "
                                      "decision that collects values, as in `'loyal' in protected_by`", self.tok.pos)
            # membership in a collected list: `'loyal' in protected_by`
            return self.node(Member(first, self.sum_(), negate, pos))
        ops: list[str] = []
        operands = [first]
        while self.tok.kind == "op" and self.tok.text in COMPARE_OPS:
            ops.append(self.advance().text)
            operands.append(self.sum_())
        if self.at("op", "="):
            raise ExprSyntaxError("`=` is not a comparison", self.tok.pos, "use `==` to compare")
        if not ops:
            return first
        return self.node(Compare(tuple(ops), tuple(operands), pos))

    def sum_(self) -> Node:
        left = self.product()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            op = self.advance()
            left = self.node(_fixed_within_range(Arith(op.text, left, self.product(), op.pos)))
        return left

    def product(self) -> Node:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            op = self.advance()
            left = self.node(_fixed_within_range(Arith(op.text, left, self.unary(), op.pos)))
        return left

    def unary(self) -> Node:
        if self.at("op", "-"):
            pos = self.advance().pos
            self.enter(pos)
            try:
                operand = self.unary()
            finally:
                self.depth -= 1
            if isinstance(operand, Num):
                return self.node(Num(-operand.value, pos))
            return self.node(Neg(operand, pos))
        if self.at("op", "+"):
            self.advance()
            return self.unary()
        return self.atom()

    def atom(self) -> Node:
        tok = self.tok
        if tok.kind == "num":
            self.advance()
            return self.node(Num(float(tok.value), tok.pos))  # type: ignore[arg-type]
        if tok.kind == "str":
            self.advance()
            return self.node(Str(str(tok.value), tok.pos))
        if tok.kind == "name":
            if tok.text in ("true", "false"):
                self.advance()
                return self.node(Bool(tok.text == "true", tok.pos))
            if tok.text in KEYWORDS:
                raise ExprSyntaxError(f"expected a value but found `{tok.text}`", tok.pos)
            self.advance()
            if self.at("op", "("):
                return self.call(tok)
            return self.node(Name(tok.text, tok.pos))
        if tok.kind == "op" and tok.text == "(":
            self.advance()
            inner = self.expr()
            self.expect_op(")")
            return inner
        if tok.kind == "op" and tok.text == "[":
            self.advance()
            items: list[Node] = []
            while not self.at("op", "]"):
                items.append(self.expr())
                if not self.at("op", "]"):
                    self.expect_op(",")
            self.advance()
            return self.node(ListLit(tuple(items), tok.pos))
        if tok.kind == "op" and tok.text == "{":
            return self.mapping()
        raise ExprSyntaxError(f"expected a value but found {self.describe(tok)}", tok.pos)

    def call(self, name_tok: Token) -> Node:
        self.expect_op("(")
        self.enter(name_tok.pos)
        args: list[Node] = []
        kwargs: list[tuple[str, Node]] = []
        try:
            while not self.at("op", ")"):
                if self.tok.kind == "name" and self.tokens[self.i + 1].text == "=":
                    key = self.advance().text
                    self.advance()
                    kwargs.append((key, self.expr()))
                else:
                    if kwargs:
                        raise ExprSyntaxError("positional argument after a named one", self.tok.pos)
                    args.append(self.expr())
                if not self.at("op", ")"):
                    self.expect_op(",")
            self.advance()
        finally:
            self.depth -= 1
        return self.node(Call(name_tok.text, tuple(args), tuple(kwargs), name_tok.pos))

    def mapping(self) -> Node:
        start = self.advance()
        items: list[tuple[str, Node]] = []
        seen: set[str] = set()
        while not self.at("op", "}"):
            key_tok = self.advance()
            if key_tok.kind == "name" or key_tok.kind == "str":
                key = str(key_tok.value) if key_tok.kind == "str" else key_tok.text
            elif key_tok.kind == "num":
                key = key_tok.text
            else:
                raise ExprSyntaxError(f"expected a key but found {self.describe(key_tok)}", key_tok.pos)
            if key in seen:
                raise ExprSyntaxError(f"key `{key}` appears twice in the table", key_tok.pos)
            seen.add(key)
            self.expect_op(":")
            items.append((key, self.expr()))
            if not self.at("op", "}"):
                self.expect_op(",")
        self.advance()
        return self.node(MapLit(tuple(items), start.pos))


def parse_expression(text: str) -> Node:
    """Parse one expression. Raises ExprSyntaxError with the offset of the problem."""
    if len(text) > MAX_LENGTH:
        raise ExprSyntaxError(
            f"expression is too long ({len(text)} characters, at most {MAX_LENGTH})", 0,
            "split it into named features under `derive:`",
        )
    return _Parser(text).parse()


def _parse_expr(expr: "Expr", problems: list[Problem]) -> "Expr":
    try:
        return replace(expr, node=parse_expression(expr.source))
    except ExprSyntaxError as exc:
        problems.append(Problem("syntax", exc.message, expr.loc.shifted(exc.pos), exc.hint))
        return expr


def _parse_then(rule: Rule, problems: list[Problem]) -> tuple:
    return tuple((name, _parse_expr(v, problems) if isinstance(v, Expr) else v) for name, v in rule.then)


def _parse_rule(rule: Rule, problems: list[Problem]) -> Rule:
    when = _parse_expr(rule.when, problems) if rule.when else None
    quota = rule.quota
    if quota is not None:
        keys = tuple(replace(k, expr=_parse_expr(k.expr, problems)) for k in quota.rank_by)
        else_rule = replace(quota.else_rule, then=_parse_then(quota.else_rule, problems))
        quota = replace(quota, rank_by=keys, else_rule=else_rule)
    return replace(rule, when=when, quota=quota, then=_parse_then(rule, problems))


def parse_policy_set(policy_set: PolicySet) -> PolicySet:
    """Parse every expression of the policy set; all syntax errors are raised together."""
    problems: list[Problem] = []
    policies = []
    for p in policy_set.policies:
        derives = tuple(replace(d, expr=_parse_expr(d.expr, problems)) for d in p.derives)
        decisions = tuple(
            replace(d, rules=tuple(_parse_rule(r, problems) for r in d.rules)) for d in p.decisions
        )
        invariants = tuple(replace(i, expr=_parse_expr(i.expr, problems)) for i in p.invariants)
        measures = tuple(replace(m, expr=_parse_expr(m.expr, problems)) for m in p.measures)
        policies.append(replace(p, derives=derives, decisions=decisions, invariants=invariants, measures=measures))
    if problems:
        raise PolicyError(problems)
    return replace(policy_set, policies=tuple(policies))
