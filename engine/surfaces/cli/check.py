"""`kam check`: validate a policy folder, analyse its rules, prove its invariants."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ...language.errors import KamError
from .. import problems as report
from .common import DEFAULT_POLICIES, policy_folder


@click.command()
@click.argument("policy_dir", required=False, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(report.FORMATS), default="text", show_default=True,
              help="json: the problems as objects; github: workflow annotations; junit: JUnit XML.")
@click.option("--strict", is_flag=True, help="Treat warnings (rules that never fire, overlaps, gaps, unused "
              "names) as errors.")
def check(policy_dir: Path | None, fmt: str, strict: bool) -> None:
    """Validate a policy folder: YAML, schema, names, types, values, cycles; analyse the rules; prove
    or refute the invariants.

    Errors make the policies unusable (exit 1), and so does an invariant the rules can break (with
    an example entity). Warnings point at rules that can never fire, rules that overlap under hit
    policy unique/any, decisions with gaps, unused facts, features and values, and invariants that
    could not be analysed; each comes with an example entity where one helps. Notes say what is
    proved and what the analysis could not decide.

    \b
    Example:
      kam check policies/
      kam check policies/ --strict --format github
    """
    from ...analysis.findings import Findings, check_policies
    from ...language.load import policy_files

    folder = policy_dir or DEFAULT_POLICIES
    t0 = time.perf_counter()
    try:
        found = check_policies(policy_folder(policy_dir, "kam check POLICY_DIR"))
    except KamError as exc:
        found = Findings(None, list(exc.problems), 0, exc.exit_code)
    pl, proved, exit_code = found.plan, found.proved, found.exit_code
    problems = report.promote(found.problems, strict)
    if any(p.severity == "error" for p in problems):
        exit_code = exit_code or 1
    files = [str(f) for f in policy_files(folder)] if folder.is_dir() else []
    if fmt == "text":
        click.echo(report.render(problems, "text"), err=True, nl=False)
        if pl is not None and not exit_code:
            ps = pl.checked.policy_set
            rules = sum(len(d.all_rules) for p in ps.policies for d in p.decisions)
            decisions = sum(len(p.decisions) for p in ps.policies)
            invariants = len(ps.invariants())
            proofs = f", {proved} of {invariants} invariants proved" if invariants else ""
            click.echo(f"ok: {len(ps.policies)} policies, {decisions} decisions, {rules} rules{proofs} "
                       f"for {', '.join(e.entity for e in pl.entities)} ({ps.directory})"
                       + (f"; {report.summary(problems)}" if problems else ""))
        else:
            click.echo(report.summary(problems), err=True)
    else:
        click.echo(report.render(problems, fmt, files, time.perf_counter() - t0), nl=False)
    sys.exit(exit_code)
