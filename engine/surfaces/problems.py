"""Problems and test results as text, JSON, GitHub annotations or JUnit XML (for CI)."""

from __future__ import annotations

import json
from collections import defaultdict
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


def junit_xml(suite: str, cases: list[tuple[str, str, list[str]]]) -> str:
    """JUnit XML: cases are (classname, name, failure messages); no messages means passed."""
    failures = sum(1 for _, _, f in cases if f)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuites name={quoteattr(suite)} tests="{len(cases)}" failures="{failures}">',
           f'  <testsuite name={quoteattr(suite)} tests="{len(cases)}" failures="{failures}" errors="0">']
    for classname, name, messages in cases:
        out.append(f"    <testcase classname={quoteattr(classname)} name={quoteattr(name)}>")
        if messages:
            out.append(f"      <failure message={quoteattr(messages[0])}>{escape(chr(10).join(messages))}</failure>")
        out.append("    </testcase>")
    out += ["  </testsuite>", "</testsuites>"]
    return "\n".join(out) + "\n"


def problems_junit(problems: list[Problem], files: list[str]) -> str:
    """One test case per policy file; its errors are the failure."""
    by_file: dict[str, list[str]] = defaultdict(list)
    for p in problems:
        if p.severity == "error":
            by_file[p.loc.file].append(p.render())
    names = sorted(set(files) | set(by_file))
    return junit_xml("kam check", [("kam.check", f, by_file.get(f, [])) for f in names])


def render(problems: list[Problem], fmt: str, files: list[str] | None = None) -> str:
    """All problems in one of FORMATS."""
    if fmt == "json":
        return json.dumps({"ok": not any(p.severity == "error" for p in problems),
                           "problems": [p.to_dict() for p in problems]}, indent=2, ensure_ascii=False) + "\n"
    if fmt == "github":
        return github(problems)
    if fmt == "junit":
        return problems_junit(problems, files or [])
    return "".join(p.render() + "\n" for p in problems)
