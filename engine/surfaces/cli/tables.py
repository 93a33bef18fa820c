"""`kam export` and `kam import`: the decision tables edited in Excel and read back into the YAML."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ...language.errors import KamError
from .common import fail, policy_folder, usage


@click.command("export")
@click.argument("policy_dir", required=False, type=click.Path(path_type=Path))
@click.option("--to", "to", type=click.Path(path_type=Path), default=Path("policies.xlsx"), show_default=True,
              metavar="FILE", help="The workbook to write (.xlsx).")
@click.option("--force", is_flag=True, help="Replace the workbook when it exists (edits in it not imported yet "
              "are lost).")
def export_command(policy_dir: Path | None, to: Path, force: bool) -> None:
    """Write the policies as a workbook to edit in Excel: every decision as a table on its own sheet.

    A sheet per decision holds a row per rule (rule id, condition, outcome or one column per output,
    reason; a quota and the comments read-only), with the declared values offered as a list; the
    params sheet holds every parameter (a share in %), the derive sheet every feature, a lookup
    table such as the price floor per tier as a cell per key. The instructions sheet comes first.
    Bring the edits back with `kam import`.

    \b
    Example:
      kam export policies/ --to policies.xlsx
      kam import policies.xlsx policies/ --dry-run
    """
    from ...language.load import policy_files
    from ..decision_tables.tables import tables_of
    from ..decision_tables.writer import write_workbook

    try:
        folder = policy_folder(policy_dir, "kam export POLICY_DIR")
        if to.suffix.lower() != ".xlsx":
            raise usage(f"--to {to} is not an .xlsx file", "e.g. --to policies.xlsx")
        if to.exists() and not force:
            raise usage(f"{to} exists (it may hold edits not imported yet)",
                        f"import it first (kam import {to} {folder}), or replace it: --force")
        if not to.absolute().parent.is_dir():
            raise usage(f"the folder of {to} does not exist", "create it first")
        from ...batch.extras import need

        need("xlsxwriter")
        files = policy_files(folder)
        if not files:
            raise usage(f"no policy files (*.yaml) in {folder}")
        texts = {}
        for path in files:
            try:
                texts[path.name] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise usage(f"{path} is not UTF-8 text: {exc.reason}") from None
        tables = tables_of(texts, folder)
        write_workbook(tables, to)
    except KamError as exc:
        fail(exc)
        return
    click.echo(f"wrote {to}: {len(tables.decisions)} decision sheets, {len(tables.params)} params, "
               f"{len(tables.derives)} features of {len(tables.sources)} policy files", err=True)


@click.command("import")
@click.argument("workbook", type=click.Path(path_type=Path))
@click.argument("policy_dir", required=False, type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the change to the YAML files; write nothing.")
def import_command(workbook: Path, policy_dir: Path | None, dry_run: bool) -> None:
    """Read a workbook written by `kam export` back into the policy files.

    Only the edited cells change the YAML (every comment, blank line, key order and quoting stays);
    rows are matched by rule id: a new id is a new rule, a deleted row a deleted rule, another order
    moved rules. The edited policies are checked as `kam check` checks them, and written (each file
    atomically) only when there is no error. The change is printed as a unified diff.

    Exit 2, nothing written: a cell that does not read (named, e.g. tier!B5), a workbook not written
    by kam export or of another folder, a file changed since the export where the workbook changed it
    too. Exit 1, nothing written: the edited policies have a check error.

    \b
    Example:
      kam import policies.xlsx policies/ --dry-run
      kam import policies.xlsx policies/
    """
    from ..decision_tables.changes import plan_import, write
    from ..decision_tables.reader import read_book

    try:
        folder = policy_folder(policy_dir, "kam import WORKBOOK POLICY_DIR")
        outcome = plan_import(read_book(workbook), folder)
    except KamError as exc:
        fail(exc)
        return
    for note in outcome.notes:
        click.echo(f"note: {note}", err=True)
    for p in outcome.warnings:
        click.echo(p.render(), err=True)
    if not outcome.changed:
        click.echo(f"no changes: {folder} holds what {workbook} holds", err=True)
        return
    click.echo(outcome.diff(), nl=False)
    sys.stdout.flush()
    if dry_run:
        click.echo(f"dry run: nothing written ({len(outcome.changed)} file(s) would change)", err=True)
        return
    try:
        written = write(outcome)
    except KamError as exc:
        fail(exc)
        return
    for path in written:
        click.echo(f"wrote {path}", err=True)

