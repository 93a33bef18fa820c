"""`kam history` and `kam changes`: the questions asked of a decision history."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ...language.errors import KamError
from ..locales import figures_reader
from .common import csv_text, emit, fail, formula_warnings, locale_option, open_history, usage


@click.command("history")
@click.argument("entity_id")
@click.option("--history", "history_path", required=True, type=click.Path(path_type=Path), metavar="FILE",
              help="The history written by `kam run --history`.")
@click.option("--entity", help="Which entity the id belongs to (default: search all).")
@click.option("--full", is_flag=True, help="Show every decision in every period, not only what changed.")
@click.option("--format", "out_fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@locale_option
def history_command(entity_id: str, history_path: Path, entity: str | None, full: bool, out_fmt: str,
                    locale: str | None) -> None:
    """One entity's path through the recorded periods: each decision with its rule and reason, and what
    changed from one period to the next (decisions and the facts marked `measure`).

    The reasons are rendered from the recorded values with the policies of each period, exactly as
    that run wrote them; no input file is needed.

    \b
    Example:
      kam history 000123 --history history.duckdb
      kam history 000123 --history history.duckdb --format json
      kam history 000123 --history history.duckdb --locale zh_CN
    """
    from ...history import questions as timeline
    from ...language.units import units_of

    try:
        with open_history(history_path) as h:
            path = timeline.entity_path(h, entity_id, entity)
            text = ""
            if out_fmt != "json":  # the figures as the latest period's policies define them
                ps = timeline.policy_set_of(h, path.steps[-1].period)
                text = path.render_text(full, figures_reader(locale, ps), units_of(ps, path.entity))
    except KamError as exc:
        fail(exc)
        return
    emit(path.to_dict(), text, out_fmt)


@click.command("changes")
@click.option("--history", "history_path", required=True, type=click.Path(path_type=Path), metavar="FILE",
              help="The history written by `kam run --history`.")
@click.option("--from", "before", metavar="PERIOD", help="The earlier period [default: the one before --to].")
@click.option("--to", "after", metavar="PERIOD", help="The later period [default: the last recorded].")
@click.option("--entity", help="Only this entity.")
@click.option("--decision", help="Only this decision.")
@click.option("--top", type=click.IntRange(0), default=10, show_default=True,
              help="How many movers text and markdown list per decision (biggest first).")
@click.option("--format", "out_fmt", type=click.Choice(["text", "markdown", "json", "csv"]), default="text",
              show_default=True, help="json and csv list every mover.")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
@click.option("--csv-bom", is_flag=True, help="With --format csv: start with a UTF-8 byte order mark and write "
              "text that starts like a formula with a leading ' (for Excel), as `kam run --csv-bom` does.")
@locale_option
def changes_command(history_path: Path, before: str | None, after: str | None, entity: str | None,
                    decision: str | None, top: int, out_fmt: str, output: Path | None, csv_bom: bool,
                    locale: str | None) -> None:
    """Who moved between two periods: per decision the transition matrix, the moves with the money that
    moved with them (the facts marked `measure`), and the entities that moved with their reasons.

    \b
    Examples:
      kam changes --history history.duckdb
      kam changes --history history.duckdb --from 2026-09 --to 2026-11 --decision tier --format markdown
      kam changes --history history.duckdb --format csv -o movers.csv
      kam changes --history history.duckdb --locale de_DE   (text and markdown; json and csv stay exact)
    """
    from ...history import questions as timeline

    written = None
    try:
        if csv_bom and out_fmt != "csv":
            raise usage("--csv-bom is for --format csv")
        with open_history(history_path) as h:
            transitions = timeline.changes(h, before, after, entity, decision)
            if out_fmt == "json":
                text = json.dumps([{**t.to_dict(), "movers": timeline._records(timeline.with_reasons(h, t))}
                                   for t in transitions], indent=2, ensure_ascii=False, default=str) + "\n"
            elif out_fmt == "csv":
                text, written = csv_text(timeline.movers_csv(h, transitions), csv_bom)
            else:  # the figures in the locale of the later period's policies, unless --locale
                later = timeline.periods_to_compare(h, before, after)[1].period
                figures = figures_reader(locale, timeline.policy_set_of(h, later))
                text = timeline.render_changes(h, transitions, top, markdown=out_fmt == "markdown", reader=figures)
    except KamError as exc:
        fail(exc)
        return
    if written is not None:
        for line in formula_warnings({"outputs": [{**written.record(), "path": str(output or "the movers")}]}):
            click.echo(line, err=True)
    if output is not None:
        from ...batch.write import write_text_atomic

        write_text_atomic(output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)
