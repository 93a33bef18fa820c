"""Prototype: compile part of kam's plan to polars lazy expressions, and time it against kam's own
vectorized evaluator, in one process, on the same customers.

    python benchmarks/polars_prototype.py [DATA_DIR]     # after benchmarks/bench.py made benchmarks/data

What is compiled: the customer entity's derived features (arithmetic, comparisons, and/or/not,
`coalesce`, `if`, `min`, `is_missing`, and the population functions `pct_rank`, `cumshare` and
`quantile` with kam's exact definitions, from benchmarks/handwritten_polars.py) and its decisions
with `hit: first` or `unique` whose values are fixed (every output of a multi-output decision). Not
compiled: `collect` decisions (protected_by), quotas, joins, `previous()` (read as missing, as a
run without a history does), invariants, measures, because texts. So the polars side does less
than kam's `evaluate_entity`; the figures bound what switching engines could win on evaluation.
Both sides start from the facts already read and checked (kam's pandas frame; polars gets the same
columns converted once, outside the timing) and the decisions are checked equal.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from handwritten_polars import cumshare, full, pct_rank, quantile  # noqa: E402

from engine.batch.evaluate import evaluate_entity  # noqa: E402
from engine.batch.facts import identifier_facts, read_facts  # noqa: E402
from engine.language import nodes as N  # noqa: E402
from engine.language.compile import compile_policies  # noqa: E402
from engine.language.plan import DeriveStep  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CMP = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}


class Unsupported(Exception):
    pass


def lit(value: object) -> pl.Expr:
    return pl.lit(value)


def compile_node(node: N.Node) -> pl.Expr:
    """A kam expression as a polars expression (missing is null: three-valued logic as polars'
    Kleene and/or; a comparison with a missing side is missing)."""
    if isinstance(node, (N.Num, N.Str, N.Bool)):
        return lit(float(node.value) if isinstance(node, N.Num) else node.value)
    if isinstance(node, N.Name):
        return pl.col(node.name)
    if isinstance(node, N.Neg):
        return -compile_node(node.operand)
    if isinstance(node, N.Arith):
        a, b = compile_node(node.left), compile_node(node.right)
        if node.op == "/":
            # polars divides by a scalar with its reciprocal (not correctly rounded): a column
            return a / (full(b) if isinstance(node.right, N.Num) else b)
        return {"+": a + b, "-": a - b, "*": a * b}[node.op]
    if isinstance(node, N.Compare):
        items = [compile_node(o) for o in node.operands]
        parts = [getattr(items[i], CMP[op])(items[i + 1]) for i, op in enumerate(node.ops)]
        return pl.all_horizontal(parts) if len(parts) > 1 else parts[0]
    if isinstance(node, N.Logic):
        out = compile_node(node.items[0])
        for item in node.items[1:]:
            out = (out & compile_node(item)) if node.op == "and" else (out | compile_node(item))
        return out
    if isinstance(node, N.Not):
        return ~compile_node(node.operand)
    if isinstance(node, N.In):
        e = compile_node(node.operand).is_in([i.value for i in node.items])  # type: ignore[union-attr]
        return ~e if node.negate else e
    if isinstance(node, N.Call):
        if node.kwargs:
            raise Unsupported(node.func + " with by=")
        args = [compile_node(a) for a in node.args]
        f = node.func
        if f == "pct_rank":
            return pct_rank(args[0])
        if f == "cumshare":
            return cumshare(args[0])
        if f == "quantile":
            return quantile(args[0], float(node.args[1].value))  # type: ignore[union-attr]
        if f == "coalesce":
            return pl.coalesce(args)
        if f == "if":
            return pl.when(args[0]).then(args[1]).otherwise(args[2])
        if f == "is_missing":
            return args[0].is_null()
        if f == "min":
            return pl.when(pl.any_horizontal([a.is_null() for a in args])).then(None).otherwise(pl.min_horizontal(args))
        if f == "previous":
            return pl.lit(None)
    raise Unsupported(type(node).__name__ + (f" {node.func}" if isinstance(node, N.Call) else ""))


def compile_entity(ep) -> tuple[list[list[pl.Expr]], list[str], list[str]]:
    """Layers of with_columns (each step after the ones it reads), the decided outputs, what was skipped."""
    layers: list[list[pl.Expr]] = []
    decided, skipped = [], []
    for step in ep.steps:
        try:
            if isinstance(step, DeriveStep):
                layers.append([compile_node(step.derive.expr.node).alias(step.name)])
                continue
            d = step.decision
            if d.hit not in ("first", "unique") or any(r.quota is not None for r in d.rules):
                raise Unsupported(f"hit {d.hit}" if d.hit not in ("first", "unique") else "quota")
            idx = None
            for i, r in enumerate(d.rules):
                cond = lit(True) if r.when is None else compile_node(r.when.node)
                idx = (pl.when(cond) if idx is None else idx.when(cond)).then(lit(i))
            outs = [idx.alias(d.name + "/rule")]
            for o in d.outputs:
                name = d.name if d.single else o.name
                chain = None
                for r in d.rules:
                    value = dict(r.then)[o.name]
                    if not isinstance(value, (str, int, float, bool)):
                        raise Unsupported("computed output")
                    cond = lit(True) if r.when is None else compile_node(r.when.node)
                    chain = (pl.when(cond) if chain is None else chain.when(cond)).then(lit(value))
                outs.append(chain.alias(name))
                decided.append(name)
            decided.append(d.name + "/rule")
            layers.append(outs)
        except Unsupported as why:
            skipped.append(f"{step.name} ({why})")
    return layers, decided, skipped


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks" / "data"
    plan = compile_policies(ROOT / "policies")
    ps = plan.checked.policy_set
    ep = plan.entity("customer")
    t = time.perf_counter()
    frame = read_facts(data / "customers.parquet", ps.facts("customer"), None, identifier_facts(plan, "customer"),
                       "customer")
    read_s = time.perf_counter() - t
    types = {name: f.type for name, f in ps.facts("customer").items()}
    df = pl.from_pandas(frame)
    df = df.with_columns(pl.col(c).fill_nan(None) for c, dt in df.schema.items() if dt == pl.Float64)
    layers, decided, skipped = compile_entity(ep)
    print(f"customers: {len(df):,}; facts read and checked by kam in {read_s:.2f} s")
    print("compiled decisions:", ", ".join(decided), "| not compiled:", "; ".join(skipped))

    def run_polars(streaming: bool = False) -> pl.DataFrame:
        lf = df.lazy()
        for layer in layers:
            lf = lf.with_columns(layer)
        return lf.select(decided).collect(engine="streaming" if streaming else "auto")

    run_polars()  # warm up

    kam_s, pol_s = [], []
    result = out = None
    for _ in range(3):
        t = time.perf_counter()
        result = evaluate_entity(ep, frame, types, {})
        kam_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = run_polars()
        pol_s.append(time.perf_counter() - t)
    assert result is not None and out is not None
    same = []
    for name in decided:
        if name.endswith("/rule"):
            mine = out[name].fill_null(-1).to_numpy()
            same.append(bool(np.array_equal(mine, result.decisions[name[:-5]].rule_index)))
    print(f"kam evaluate_entity (everything, incl. collect, invariants, measures): "
          f"median {statistics.median(kam_s):.2f} s  runs {[round(x, 2) for x in kam_s]}")
    print(f"polars compiled (features + first/unique decisions): median {statistics.median(pol_s):.2f} s  "
          f"runs {[round(x, 2) for x in pol_s]}")
    print(f"decisions (the rule of every row) equal to kam's: {sum(same)} of {len(same)}")
    # what an end-to-end polars run still has to do that this does not time
    from engine.batch.explain import output_frame
    t = time.perf_counter()
    output_frame(result)
    print(f"kam's because texts for these customers (one thread), still needed on either engine: "
          f"{time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    pl.from_pandas(frame)
    print(f"pandas frame -> polars (the API boundary, each way): {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
