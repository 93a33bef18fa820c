"""`kam diff`: two versions of the policies on the same facts."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ...language.compile import compile_policies
from ...language.errors import KamError
from ..locales import figures_reader
from .common import (data_folder, facts_options, fail, locale_option, parse_inputs, policy_folder,
                     read_options)


@click.command("diff")
@click.argument("policy_dir", required=False, type=click.Path(path_type=Path))
@click.option("--base", required=True, help="The policies to compare with: a git revision (HEAD~1, main) "
              "or another policy folder.")
@click.option("--data", type=click.Path(path_type=Path), help="Facts folder [default: examples/].")
@click.option("--input", "inputs", multiple=True, metavar="ENTITY=FILE", help="Facts file of one entity.")
@facts_options
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text",
              show_default=True, help="markdown is ready to post as a pull-request comment.")
@click.option("--fail-on", multiple=True, metavar="CONDITION",
              help="Exit 1 when e.g. 'changed > 5%', 'changed >= 100' or 'tier: changed > 2%' holds.")
@locale_option
def diff_command(policy_dir: Path | None, base: str, data: Path | None, inputs: tuple[str, ...],
                 facts_format: str | None, encoding: str, delimiter: str, fmt: str,
                 fail_on: tuple[str, ...], locale: str | None) -> None:
    """Compare two versions of the policies on the same facts: who changes, and how much money moves.

    \b
    Example:
      kam diff policies/ --base HEAD~1
      kam diff policies/ --base main --format markdown --fail-on 'changed > 5%'
      kam diff policies/ --base ../policies-2025 --data /data/2026-11
      kam diff policies/ --base main --locale de_DE   (money as 1.234.567,89; JSON stays exact)
    """
    from ...run import inputs as run_inputs
    from .. import diff

    data = data_folder(data, inputs)
    try:
        for rule in fail_on:
            diff.parse_fail_on(rule)
        options = read_options(facts_format, encoding, delimiter)
        folder = policy_folder(policy_dir, "kam diff POLICY_DIR")
        new = compile_policies(folder)
        old = diff.base_plan(base, folder)
        files = run_inputs.find_inputs(new, data, parse_inputs(inputs))
        missing = [e.entity for e in old.entities if e.entity not in files]
        if missing:
            files.update(run_inputs.find_inputs(old, data, parse_inputs(inputs)))
        figures = figures_reader(locale, new.checked.policy_set)
        comparison = diff.compare(old, new, files, options)
    except KamError as exc:
        fail(exc)
        return
    fails = diff.failures(comparison, list(fail_on))
    if fmt == "json":  # for machines: the numbers exact, whatever the locale
        click.echo(diff.render_json(comparison, base, fails), nl=False)
    else:
        click.echo(diff.render_text(comparison, markdown=fmt == "markdown", reader=figures), nl=False)
    for f in diff.failures(comparison, list(fail_on), figures):
        click.echo(f"fail: {f}", err=True)
    sys.exit(1 if fails else 0)
