"""Problems and test results as text, JSON, GitHub annotations or JUnit XML (for CI)."""

from __future__ import annotations

import json
import socket
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable
from xml.sax.saxutils import escape, quoteattr

from ..language.errors import Problem, sort_problems

FORMATS = ("text", "json", "github", "junit")
_GITHUB_LEVEL = {"error": "error", "warning": "warning", "note": "notice"}


def promote(problems: Iterable[Problem], strict: bool) -> list[Problem]:
    """With --strict, warnings count as errors (notes stay notes)."""
    out = []
    for p in problems:
        if strict and p.severity == "warning":
            p = Problem(p.code, p.message, p.loc, p.hint, "error")
        out.append(p)
    return sort_problems(out)


def summary(problems: list[Problem]) -> str:
    counts = {s: sum(1 for p in problems if p.severity == s) for s in ("error", "warning", "note")}
    return ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items())


def _github_escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def github(problems: list[Problem]) -> str:
    """Workflow commands: `::error file=f,line=l,col=c,title=code::message`."""
    lines = []
    for p in problems:
        props = [f"file={_github_escape(p.loc.file, True)}"]
        if p.loc.line:
            props += [f"line={p.loc.line}", f"col={p.loc.col}"]
        props.append(f"title={_github_escape('kam ' + p.code, True)}")
        message = p.message + (f" ({p.hint})" if p.hint else "")
        lines.append(f"::{_GITHUB_LEVEL[p.severity]} {','.join(props)}::{_github_escape(message)}")
    return "\n".join(lines) + ("\n" if lines else "")


@dataclass(frozen=True)
class Case:
    """One JUnit test case: where it is written, how long it took, and its failure (none: passed)."""

    classname: str
    name: str
    failures: list[str] = field(default_factory=list)
    file: str = ""
    line: int = 0
    seconds: float = 0.0
    kind: str = ""  # the failure's `type`


def junit_xml(suite: str, cases: list[Case], started: datetime | None = None, seconds: float | None = None) -> str:
    """JUnit XML as Jenkins, GitLab and GitHub's test reporters read it: counts, time and timestamp on the
    suite; classname, name, time, file and line on each case; a failure with its message and type."""
    failures = sum(1 for c in cases if c.failures)
    total = f"{seconds if seconds is not None else sum(c.seconds for c in cases):.3f}"
    when = (started or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S")
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuites name={quoteattr(suite)} tests="{len(cases)}" failures="{failures}" errors="0" '
           f'time="{total}">',
           f'  <testsuite name={quoteattr(suite)} tests="{len(cases)}" failures="{failures}" errors="0" '
           f'skipped="0" time="{total}" timestamp="{when}" hostname={quoteattr(socket.gethostname())}>']
    for c in cases:
        where = (f" file={quoteattr(c.file)}" if c.file else "") + (f' line="{c.line}"' if c.line else "")
        out.append(f"    <testcase classname={quoteattr(c.classname)} name={quoteattr(c.name)} "
                   f'time="{c.seconds:.3f}"{where}>')
        if c.failures:
            out.append(f"      <failure message={quoteattr(c.failures[0])} type={quoteattr(c.kind or 'failure')}>"
                       f"{escape(chr(10).join(c.failures))}</failure>")
        out.append("    </testcase>")
    out += ["  </testsuite>", "</testsuites>"]
    return "\n".join(out) + "\n"


def problems_junit(problems: list[Problem], files: list[str], seconds: float | None = None) -> str:
    """One test case per policy file; its errors are the failure (typed by the first error's code, at
    its line)."""
    by_file: dict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        if p.severity == "error":
            by_file[p.loc.file].append(p)
    names = sorted(set(files) | set(by_file))
    cases = [Case("kam.check", f, [p.render() for p in by_file.get(f, [])], f,
                  by_file[f][0].loc.line if by_file.get(f) else 0, 0.0, by_file[f][0].code if by_file.get(f) else "")
             for f in names]
    return junit_xml("kam check", cases, seconds=seconds)


def render(problems: list[Problem], fmt: str, files: list[str] | None = None, seconds: float | None = None) -> str:
    """All problems in one of FORMATS."""
    if fmt == "json":
        return json.dumps({"ok": not any(p.severity == "error" for p in problems),
                           "problems": [p.to_dict() for p in problems]}, indent=2, ensure_ascii=False) + "\n"
    if fmt == "github":
        return github(problems)
    if fmt == "junit":
        return problems_junit(problems, files or [], seconds)
    return "".join(p.render() + "\n" for p in problems)
