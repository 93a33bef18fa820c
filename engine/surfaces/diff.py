"""`kam diff`: what a policy change does to the customer base.

Runs two versions of the policy set (the base: a git revision or another folder) on the same facts
and reports, per decision, a transition matrix, how many entities changed, the money at stake
(sums of the `measure: true` facts over the entities that changed) and which rules gained or lost
entities.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..run import service
from ..run import inputs as run_inputs
from ..run.impact import Comparison, compare_runs
from ..language.compile import compile_docs, compile_policies
from ..language.errors import InputError, Location, PolicyError, Problem
from ..language.figures import Reader, reader as locale_reader
from ..language.load import LocatedDoc, load_text
from ..language.plan import Plan
from ..language.units import COUNT, MONEY, PERCENT, PLAIN, Unit
from ..batch.facts import FactsOptions


def _git(args: list[str], cwd: Path) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    except FileNotFoundError:
        raise InputError(Problem("usage", "git is not installed", Location("command line"))) from None
    except subprocess.CalledProcessError as exc:
        raise InputError(Problem("usage", f"git {' '.join(args)} failed: {exc.stderr.strip()}",
                                 Location("command line"), "pass a revision such as HEAD~1 or main, or a folder")) \
            from None
    return out.stdout


def base_plan(base: str, policy_dir: Path) -> Plan:
    """The base policy set: a folder, or the policy folder as it was at a git revision.

    The revision is read with `git show`, so the work tree is never touched.
    """
    if Path(base).is_dir():
        return compile_policies(Path(base))
    folder = policy_dir.resolve()
    top = Path(_git(["rev-parse", "--show-toplevel"], folder).strip())
    rel = folder.relative_to(top).as_posix()
    listing = _git(["ls-tree", "--name-only", f"{base}:{rel}" if rel != "." else f"{base}:"], top)
    names = sorted(n for n in listing.splitlines() if n.endswith((".yaml", ".yml")))
    if not names:
        raise InputError(Problem("usage", f"no policy files in {rel} at {base}", Location("command line")))
    docs: list[LocatedDoc] = []
    problems: list[Problem] = []
    for name in names:
        path = f"{rel}/{name}" if rel != "." else name
        text = _git(["show", f"{base}:{path}"], top)
        try:
            docs.append(load_text(text, f"{base}:{path}"))
        except PolicyError as exc:
            problems.extend(exc.problems)
    if problems:
        raise PolicyError(problems)
    return compile_docs(docs, f"{base}:{rel}")


def compare(base: Plan, new: Plan, inputs: dict[str, Path], options: FactsOptions | str | None = None
            ) -> Comparison:
    """Run both policy sets on the same facts and compare every decision and every invariant."""
    base_run = service.run(base, run_inputs.read_inputs(base, {e.entity: inputs[e.entity] for e in base.entities},
                                                        options))
    new_run = service.run(new, run_inputs.read_inputs(new, {e.entity: inputs[e.entity] for e in new.entities},
                                                      options))
    return compare_runs(base, new, base_run, new_run)


_FAIL_ON = re.compile(r"^\s*(?:(?P<decision>[a-z][a-z0-9_]*)\s*:\s*)?changed\s*(?P<op>>=|>|<=|<)\s*"
                      r"(?P<num>\d+(?:\.\d+)?)(?P<pct>%)?\s*$")


def parse_fail_on(text: str) -> tuple[str | None, str, float, bool]:
    """`changed > 5%` or `tier: changed >= 100`: (decision or None, operator, number, is percent)."""
    m = _FAIL_ON.match(text)
    if not m:
        raise InputError(Problem("usage", f"--fail-on {text!r} is not understood", Location("command line"),
                                 "write e.g. 'changed > 5%', 'changed >= 100' or 'tier: changed > 2%'"))
    return m.group("decision"), m.group("op"), float(m.group("num")), bool(m.group("pct"))


def failures(comparison: Comparison, rules: list[str], reader: Reader | None = None) -> list[str]:
    """The --fail-on conditions that hold, in words: for people with a reader (its locale's figures),
    else as the JSON output has always given them (plain numbers)."""
    out = []
    ops = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}
    f = _Figures(reader, comparison.units) if reader is not None else None
    for text in rules:
        decision, op, number, pct = parse_fail_on(text)
        for d in comparison.decisions:
            if decision and d.decision != decision:
                continue
            value = d.share * 100 if pct else d.changed
            if ops[op](value, number):
                figures = f"{d.changed} of {d.total} changed ({d.share:.1%})" if f is None else \
                    f"{f.count(d.changed)} of {f.count(d.total)} changed ({f.share(d.share)})"
                out.append(f"{d.entity} {d.decision}: {figures}, which meets --fail-on '{text}'")
    return out


@dataclass(frozen=True)
class _Figures:
    """How `kam diff` writes its figures: through the reader, each by its unit."""

    reader: Reader
    units: Mapping[str, Mapping[str, Unit]]

    def count(self, n: float) -> str:
        return self.reader.number(n, Unit(COUNT))

    def share(self, x: float) -> str:
        return self.reader.number(x, Unit(PERCENT))

    def delta(self, n: int) -> str:
        return ("+" if n > 0 else "") + self.count(n)

    def currency(self, entity: str, names: Iterable[str]) -> str | None:
        """The one currency all these amounts are in (its symbol), or None: then each names its own."""
        units = [self.units.get(entity, {}).get(n, PLAIN) for n in names]
        kinds = {(u.kind, u.currency) for u in units}
        if len(kinds) != 1:
            return None
        kind, currency = next(iter(kinds))
        return self.reader.currency_symbol(currency) if kind == MONEY and currency else None

    def money(self, entity: str, money: Mapping[str, float], currency: str | None) -> str:
        """`revenue 35,830,983.47, profit 7,391,064.10`: under one currency named in the heading, or
        each amount labelled with its own unit."""
        units = self.units.get(entity, {})
        return ", ".join(f"{k if currency else self.reader.label(k, units.get(k, PLAIN))} "
                         f"{self.reader.number(v, units.get(k, PLAIN))}" for k, v in money.items()) or "-"


def render_text(comparison: Comparison, markdown: bool = False, reader: Reader | None = None) -> str:
    """Text (terminal) or Markdown (a pull-request comment), the figures in the reader's locale (en_US
    unless given): counts grouped, shares as %, money by its unit with the currency in the heading."""
    f = _Figures(reader or locale_reader(None), comparison.units)
    diffs = comparison.decisions
    lines: list[str] = []
    head = "### " if markdown else ""
    invariants: list[str] = []
    if comparison.invariants:
        invariants = [f"{head}Invariants" if markdown else "invariants:"] + ([""] if markdown else [])
        invariants += [f"{'- ' if markdown else '  '}{inv.text(f.reader)}" for inv in comparison.invariants] + [""]
    if not markdown:
        lines += invariants
    if markdown:
        # one currency for the whole table goes in its heading; else each amount says its own
        moved = [d for d in diffs if d.changed and d.status not in ("added", "removed") and d.money]
        symbols = {f.currency(d.entity, d.money) for d in moved}
        table_currency = symbols.pop() if len(symbols) == 1 else None
        in_heading = f"{table_currency}, " if table_currency else ""
        lines += ["## kam diff: impact of the policy change", "",
                  f"| entity | decision | changed | share | money at stake ({in_heading}changed entities) |",
                  "| --- | --- | ---: | ---: | --- |"]
        for d in diffs:
            money = d.status if d.status in ("added", "removed") else \
                (f.money(d.entity, d.money, table_currency) if d.changed else "-")
            lines.append(f"| {d.entity} | {d.decision} | {f.count(d.changed)} of {f.count(d.total)} | "
                         f"{f.share(d.share)} | {money} |")
        lines.append("")
        lines += invariants
    for d in diffs:
        if d.status in ("added", "removed"):
            lines += [f"{head}{d.entity} {d.decision}: decision {d.status}", ""]
            continue
        if not d.changed:
            lines += [f"{head}{d.entity} {d.decision}: no change ({f.count(d.total)} entities)", ""]
            continue
        currency = f.currency(d.entity, d.money)
        lines.append(f"{head}{d.entity} {d.decision}: {f.count(d.changed)} of {f.count(d.total)} changed "
                     f"({f.share(d.share)}); money at stake{f' ({currency})' if currency else ''}: "
                     f"{f.money(d.entity, d.money, currency)}")
        lines.append("")
        cols = [str(c) for c in d.matrix.columns]
        rows = [(str(i), [f.count(int(v)) for v in r]) for i, r in zip(d.matrix.index, d.matrix.to_numpy())]
        if markdown:
            lines.append("| base \\ new | " + " | ".join(cols) + " |")
            lines.append("| --- |" + " ---: |" * len(cols))
            for label, values in rows:
                cells = [f"**{v}**" if c == label else v for c, v in zip(cols, values)]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        else:
            width = max([len("base \\ new")] + [len(r[0]) for r in rows])
            cw = [max(len(c), *(len(r[1][i]) for r in rows)) for i, c in enumerate(cols)]
            lines.append("  " + "base \\ new".ljust(width) + "  " + "  ".join(c.rjust(w) for c, w in zip(cols, cw)))
            for label, values in rows:
                figures = "  ".join(v.rjust(w) for v, w in zip(values, cw))
                lines.append("  " + label.ljust(width) + "  " + figures)
        if d.rules:
            lines.append("")
            lines.append("Rules that gained or lost entities:" if markdown else "rules that gained or lost entities:")
            for r, b, n in d.rules:
                lines.append(f"{'- ' if markdown else '  '}`{r}`: {f.count(b)} -> {f.count(n)} ({f.delta(n - b)})")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_json(comparison: Comparison, base: str, fails: list[str]) -> str:
    """The comparison for machines: exact numbers, whatever the locale."""
    return json.dumps({"base": base, "decisions": [d.to_dict() for d in comparison.decisions],
                       "invariants": [i.to_dict() for i in comparison.invariants], "fail_on": fails},
                      indent=2, ensure_ascii=False) + "\n"
