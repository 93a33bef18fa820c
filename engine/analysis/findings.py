"""What `kam check` finds in a policy folder, as one call for every surface (the command line, the
Python API, the page): the policies compiled, their rules analysed and their invariants proved."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..language.compile import compile_docs, compile_policies
from ..language.load import LocatedDoc
from ..language.errors import KamError, Problem
from ..language.plan import Plan
from .invariants import InvariantResult, invariant_problems, prove
from .rules import analyse


@dataclass
class Findings:
    """The plan (None when the policies do not compile), every problem found, how many invariants
    were proved, and the exit code of the error that stopped the compiling (0 when none did)."""

    plan: Plan | None
    problems: list[Problem] = field(default_factory=list)
    proved: int = 0
    exit_code: int = 0
    proofs: list[InvariantResult] = field(default_factory=list)  # the prover's answer per invariant


def check_policies(folder: Path) -> Findings:
    """Compile, analyse and prove: errors, warnings and notes, unsorted and unpromoted."""
    try:
        pl = compile_policies(folder)
    except KamError as exc:
        return Findings(None, list(exc.problems), 0, exc.exit_code)
    return _analysed(pl)


def check_docs(docs: list[LocatedDoc], directory: str,
               proofs: dict[str, list[InvariantResult]] | None = None) -> Findings:
    """`check_policies` for policy texts held in memory (a page's edits before they are saved);
    `proofs` keeps the invariants' proofs of entities whose rules did not change (see `prove`)."""
    try:
        pl = compile_docs(docs, directory)
    except KamError as exc:
        return Findings(None, list(exc.problems), 0, exc.exit_code)
    return _analysed(pl, proofs)


def _analysed(pl: Plan, cache: dict[str, list[InvariantResult]] | None = None) -> Findings:
    problems = analyse(pl)
    proved = 0
    results: list[InvariantResult] = []
    if pl.checked.policy_set.invariants():
        results = prove(pl, cache)
        proved = sum(r.status == "proved" for r in results)
        problems += invariant_problems(results)
    return Findings(pl, problems, proved, 0, results)
