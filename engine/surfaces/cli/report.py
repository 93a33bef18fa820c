"""`kam report`: the portfolio as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from ...language.errors import KamError
from .common import data_folder, facts_options, fail, locale_option, parse_inputs, policy_folder, read_options, \
    usage
from .explain import say_notes


@click.command("report")
@click.option("--policies", type=click.Path(path_type=Path), help="Policy folder [default: policies/].")
@click.option("--data", type=click.Path(path_type=Path), help="Facts folder [default: examples/].")
@click.option("--input", "inputs", multiple=True, metavar="ENTITY=FILE", help="Facts file of one entity.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("report.html"), show_default=True,
              help="The HTML file to write (replaced atomically).")
@click.option("--history", "history_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Read the earlier periods from this history: previous() and the section \"since the previous "
              "period\" (nothing is recorded).")
@click.option("--period", metavar="LABEL", help="The period the facts are of [default: after the last recorded one].")
@locale_option
@facts_options
def report_command(policies: Path | None, data: Path | None, inputs: tuple[str, ...], output: Path,
                   history_path: Path | None, period: str | None, locale: str | None, facts_format: str | None,
                   encoding: str, delimiter: str) -> None:
    """Decide every entity and write the portfolio as one self-contained HTML page: the Pareto curve
    with its headline figures, the tiers against their target shape, the profitability map,
    retention, prospects per region, pricing, the measures the policies state, and, with a history,
    who moved since the previous period. It opens offline and prints; `kam run --report FILE` writes
    the same page beside the decision files.

    \b
    Example:
      kam report -o portfolio.html
      kam report --locale zh_CN -o portfolio-zh.html
      kam report --data examples/periods/2026-11 --history history.duckdb --period 2026-11
    """
    from ...batch.extras import need
    from ...batch.write import write_text_atomic
    from ...run import service
    from .. import report as portfolio

    try:
        need("matplotlib")  # before the work: the charts need it
        if output.is_dir():
            raise usage(f"-o {output} is a folder", "give the path of the HTML file, e.g. -o report.html")
        facts = read_options(facts_format, encoding, delimiter)
        if period is not None and history_path is None:
            raise usage("--period needs --history FILE: the history the earlier periods come from")
        result, notes = service.decide_with_history(policy_folder(policies), data_folder(data, inputs),
                                                    parse_inputs(inputs), facts=facts, history=history_path,
                                                    period=period, gone=True)
        say_notes(notes)
        page = portfolio.render(result, locale=locale, period=period)
    except KamError as exc:
        fail(exc)
        return
    try:
        write_text_atomic(output, page)
    except OSError as exc:
        fail(usage(f"cannot write {output}: {exc.strerror or exc}"))
    click.echo(f"wrote {output}", err=True)
