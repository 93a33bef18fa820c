"""Errors as data: every problem kam reports carries a stable code, a location and a hint.

Stages raise or collect `Problem`s; the CLI is the only place that prints them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True, order=True)
class Location:
    """A place in a source file: 1-based line and column."""

    file: str
    line: int = 0
    col: int = 0

    def shifted(self, offset: int) -> "Location":
        """The location `offset` characters further on the same line (for spots inside an expression)."""
        return Location(self.file, self.line, self.col + offset)

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


@dataclass(frozen=True)
class Problem:
    """One finding: `severity` is "error" or "warning"."""

    code: str
    message: str
    loc: Location
    hint: str = ""
    severity: str = "error"

    def render(self) -> str:
        """`file:line:col: severity[code]: message` plus an indented hint line."""
        text = f"{self.loc}: {self.severity}[{self.code}]: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, object]:
        """The JSON form used by `--format json`."""
        return {
            "file": self.loc.file,
            "line": self.loc.line,
            "col": self.loc.col,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        }


class KamError(Exception):
    """Base of all errors kam reports to a user. Carries one or more problems."""

    exit_code = 1

    def __init__(self, problems: Iterable[Problem] | Problem):
        if isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = sort_problems(problems)
        super().__init__("\n".join(p.render() for p in self.problems))

    def __reduce__(self) -> tuple:
        # pickled with its problems (a Dask worker sends it to the driver), not with its text
        return (self.__class__, (self.problems,))


class PolicyError(KamError):
    """The policy set is wrong (schema, syntax, names, types, cycles). Exit code 1."""

    exit_code = 1


class InputError(KamError):
    """The facts or the command line are wrong. Exit code 2."""

    exit_code = 2


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Sorted by file, line, column, then code: a stable order for golden files."""
    unique = dict.fromkeys(problems)
    return sorted(unique, key=lambda p: (p.loc.file, p.loc.line, p.loc.col, p.code, p.message))


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A hint naming the closest candidate, or an empty string when nothing is close."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""
