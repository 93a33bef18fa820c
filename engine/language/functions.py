"""The function catalogue shared by the type checker and the backends.

One table names every function, its argument counts and whether it looks at the whole population,
so the type checker and each backend cannot disagree about what exists.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    min_args: int
    max_args: int | None  # None: any number
    population: bool = False
    kwargs: tuple[str, ...] = ()
    summary: str = ""

    def arity_text(self) -> str:
        if self.max_args is None:
            return f"at least {self.min_args} arguments"
        if self.min_args == self.max_args:
            return f"{self.min_args} argument{'s' if self.min_args != 1 else ''}"
        return f"{self.min_args} to {self.max_args} arguments"


_SPECS = [
    FunctionSpec("is_missing", 1, 1, summary="true when the value is missing"),
    FunctionSpec("coalesce", 2, None, summary="the first argument that is not missing"),
    FunctionSpec("min", 2, None, summary="the smallest of the arguments"),
    FunctionSpec("max", 2, None, summary="the largest of the arguments"),
    FunctionSpec("abs", 1, 1, summary="absolute value"),
    FunctionSpec("round", 1, 2, summary="round(x) or round(x, digits), halves away from zero"),
    FunctionSpec("log", 1, 1, summary="natural logarithm; missing for values <= 0"),
    FunctionSpec("lookup", 2, 3, summary="lookup(key, {A: 1, B: 2}) or lookup(key, table, default)"),
    FunctionSpec("if", 3, 3, summary="if(condition, value_when_true, value_otherwise)"),
    FunctionSpec("previous", 1, 2, summary="previous(tier): the value in the previous recorded period; "
                 "previous(tier, 2): two periods back; missing for an entity that was not there"),
    FunctionSpec("streak", 2, 2, summary="streak(below_line, 3): in how many periods in a row, ending with this "
                 "one, the yes/no `below_line` held (at most 3; a missing value ends the row)"),
    FunctionSpec("rank", 1, 1, True, ("by", "ties"),
                 "1 for the largest value; ties go to the smaller key, or share the best rank with ties='together'"),
    FunctionSpec("pct_rank", 1, 1, True, ("by",), "share of the population with a value at or below this one"),
    FunctionSpec("cumshare", 1, 1, True, ("by",),
                 "Pareto position: share of the total held by this entity and all with a larger value"),
    FunctionSpec("quantile", 2, 2, True, ("by",), "quantile(x, 0.8): the value below which 80% of the population lies"),
    FunctionSpec("mean", 1, 1, True, ("by",), "population mean"),
    FunctionSpec("sum", 1, 1, True, ("by",), "population total"),
    FunctionSpec("count", 0, 1, True, ("by",), "count() entities, or count(x) entities where x is not missing"),
    FunctionSpec("zscore", 1, 1, True, ("by",), "(x - mean) / standard deviation over the population"),
]

FUNCTIONS: dict[str, FunctionSpec] = {s.name: s for s in _SPECS}
POPULATION_FUNCTIONS = frozenset(s.name for s in _SPECS if s.population)
MAX_BACK = 24  # previous(x, k): at most two years of monthly periods back
