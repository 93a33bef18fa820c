"""`kam test`: run the policy test cases."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from ...language.compile import compile_policies
from ...language.errors import KamError, Problem
from .. import problems as report
from .common import fail, policy_folder, usage


@click.command("test")
@click.argument("policy_dir", required=False, type=click.Path(path_type=Path))
@click.option("--file", "files", multiple=True, type=click.Path(path_type=Path),
              help="A test file to run (default: every POLICY_DIR/tests/*.yaml).")
@click.option("--format", "fmt", type=click.Choice(report.FORMATS), default="text", show_default=True)
@click.option("--coverage", is_flag=True, help="List per policy file the rules no case made decide.")
@click.option("--min-coverage", type=click.FloatRange(0, 100), metavar="PERCENT",
              help="Fail when fewer than this share of rules were exercised.")
def test_command(policy_dir: Path | None, files: tuple[Path, ...], fmt: str, coverage: bool,
                 min_coverage: float | None) -> None:
    """Run the policy test cases: small populations with the decisions they must get.

    \b
    Example:
      kam test policies/
      kam test policies/ --coverage --min-coverage 100
      kam test --format junit > kam-tests.xml
    """
    from .. import policy_tests as testing

    try:
        folder = policy_folder(policy_dir, "kam test POLICY_DIR")
        pl = compile_policies(folder)
        paths = list(files) or testing.find_test_files(folder)
        if not paths:
            raise usage(f"no test files in {folder / testing.TEST_DIR}",
                         "write cases in policies/tests/*.yaml (see README), or pass --file")
        started = datetime.now(timezone.utc)
        suite = testing.run_tests(pl, paths)
    except KamError as exc:
        fail(exc, "json" if fmt == "json" else "text")
        return
    cov = suite.coverage
    low = min_coverage is not None and cov.percent + 1e-9 < min_coverage
    if fmt == "json":
        click.echo(json.dumps({
            "passed": suite.passed, "failed": suite.failed,
            "cases": [{"file": r.file, "line": r.loc.line, "name": r.name, "passed": r.passed,
                       "failures": r.failures} for r in suite.results],
            "coverage": {"percent": round(cov.percent, 2), "covered": cov.covered, "total": cov.total,
                         "never_fired": {f: cov.never_fired(f) for f in cov.rules}},
        }, indent=2, ensure_ascii=False))
    elif fmt == "junit":
        cases = [report.Case(Path(r.file).stem, r.name, r.failures, r.file, r.loc.line, r.seconds, r.kind)
                 for r in suite.results]
        click.echo(report.junit_xml("kam test", cases, started), nl=False)
    elif fmt == "github":
        problems = [Problem("test-failed", f"{r.name}: {f}", r.loc) for r in suite.results for f in r.failures]
        click.echo(report.github(problems), nl=False)
        click.echo(f"{suite.passed} passed, {suite.failed} failed")
    else:
        for r in suite.results:
            click.echo(f"{'PASS' if r.passed else 'FAIL'}  {r.loc.file}:{r.loc.line}  {r.name}")
            for f in r.failures:
                click.echo(f"      {f}")
        if coverage or min_coverage is not None:
            click.echo("\ncoverage (rules that decided at least one entity):")
            for file, rules in cov.rules.items():
                missing = cov.never_fired(file)
                done = len(rules) - len(missing)
                pct = 100.0 * done / len(rules) if rules else 100.0
                line = f"  {file}: {done}/{len(rules)} rules ({pct:.0f}%)"
                click.echo(line + (f", never fired: {', '.join(missing)}" if missing else ""))
            click.echo(f"  total: {cov.covered}/{cov.total} rules ({cov.percent:.1f}%)")
        click.echo(f"{suite.passed} passed, {suite.failed} failed")
    if low:
        click.echo(f"coverage {cov.percent:.1f}% is below the required {min_coverage:g}%", err=True)
    sys.exit(1 if suite.failed or low else 0)
