import pytest

from engine.language.nodes import Arith, Call, Compare, In, Logic, MapLit, Name, Not, Num, to_text
from engine.language.parse import MAX_DEPTH, MAX_LENGTH, ExprSyntaxError, parse_expression


def test_precedence_and_chained_comparison():
    node = parse_expression("0 < x + 1 * 2 <= 10 and not y or z")
    assert isinstance(node, Logic) and node.op == "or"
    left = node.items[0]
    assert isinstance(left, Logic) and left.op == "and"
    cmp = left.items[0]
    assert isinstance(cmp, Compare) and cmp.ops == ("<", "<=")
    assert isinstance(cmp.operands[1], Arith) and cmp.operands[1].op == "+"
    assert isinstance(left.items[1], Not)


def test_percent_literals_and_underscores():
    assert parse_expression("80%") == Num(0.8, 0)
    assert parse_expression("1_000").value == 1000  # type: ignore[union-attr]


def test_in_lists_calls_and_tables():
    node = parse_expression("region not in ['north', \"east\"]")
    assert isinstance(node, In) and node.negate and [i.value for i in node.items] == ["north", "east"]
    call = parse_expression("lookup(tier, {A: 0.2, 'B': 0.1}, 0)")
    assert isinstance(call, Call) and isinstance(call.args[1], MapLit)
    assert [k for k, _ in call.args[1].items] == ["A", "B"]
    by = parse_expression("pct_rank(profit, by=region)")
    assert isinstance(by, Call) and by.kwargs == (("by", Name("region", 20)),)


def test_to_text_round_trips():
    src = "(a + b) * 2 >= 10 and tier in ['A', 'B']"
    text = to_text(parse_expression(src))
    assert text == "((a + b) * 2) >= 10 and tier in ['A', 'B']".join("()")
    assert to_text(parse_expression(text)) == text


@pytest.mark.parametrize(
    "text, pos, words",
    [
        ("__import__('os')", 0, "reserved"),
        ("profit.__class__", 6, "attribute access"),
        ("x.real", 1, "attribute access"),
        ("x = 1", 2, "`==`"),
        ("x > 1 && y", 6, "unexpected character"),
        ("(x > 1", 6, "expected `)`"),
        ("", 0, "empty"),
        ("x ** 2", 2, "`**`"),
        ("x > 1 y > 2", 6, "unexpected"),
    ],
)
def test_syntax_errors_have_positions(text, pos, words):
    with pytest.raises(ExprSyntaxError) as exc:
        parse_expression(text)
    assert exc.value.pos == pos
    assert words in exc.value.message + exc.value.hint


def test_length_and_depth_are_bounded():
    with pytest.raises(ExprSyntaxError, match="too long"):
        parse_expression("x + " * (MAX_LENGTH // 4) + "x")
    with pytest.raises(ExprSyntaxError, match="nested too deeply"):
        parse_expression("(" * (MAX_DEPTH + 5) + "x" + ")" * (MAX_DEPTH + 5))
    with pytest.raises(ExprSyntaxError, match="nested too deeply"):
        parse_expression("not " * (MAX_DEPTH + 5) + "x")
    with pytest.raises(ExprSyntaxError, match="nested too deeply"):
        parse_expression("-" * (MAX_DEPTH + 5) + "x")


def test_names_are_plain():
    assert parse_expression("credit_score") == Name("credit_score", 0)
