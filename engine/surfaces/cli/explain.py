"""`kam explain`: the full trace behind one entity's decisions."""

from __future__ import annotations

from pathlib import Path

import click

from ...language.errors import KamError
from .common import BACKENDS, data_folder, emit, facts_options, fail, parse_inputs, policy_folder, read_options, usage


def say_notes(notes: list[str]) -> None:
    """What opening a history settled (a period a stopped run left)."""
    for note in notes:
        click.echo(f"note: {note}", err=True)


@click.command("explain")
@click.argument("entity_id")
@click.option("--entity", help="Which entity the id belongs to (default: search all).")
@click.option("--policies", type=click.Path(path_type=Path), help="Policy folder [default: policies/].")
@click.option("--data", type=click.Path(path_type=Path), help="Facts folder [default: examples/].")
@click.option("--input", "inputs", multiple=True, metavar="ENTITY=FILE", help="Facts file of one entity.")
@click.option("--format", "out_fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--backend", type=click.Choice(BACKENDS), default="pandas", show_default=True,
              help="Which engine matches rule conditions.")
@click.option("--calibration", type=click.Path(path_type=Path),
              help="Take population statistics from this saved calibration.")
@click.option("--history", "history_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Read the earlier periods previous() looks at from this history (nothing is recorded).")
@click.option("--period", metavar="LABEL", help="The period being explained: previous() reads the ones before it "
              "[default: after the last recorded one].")
@facts_options
def explain(entity_id: str, entity: str | None, policies: Path | None, data: Path | None,
            inputs: tuple[str, ...], out_fmt: str, backend: str, calibration: Path | None,
            history_path: Path | None, period: str | None,
            facts_format: str | None, encoding: str, delimiter: str) -> None:
    """Print the full trace for one entity: facts, features, every rule and why the winner won.

    Population functions (ranks, Pareto shares, quotas) need the whole batch, so the whole batch is
    evaluated and then the one entity is traced.

    \b
    Examples:
      kam explain 000123
      kam explain Q-00042 --entity quote --format json
      kam explain 000123 --data examples/periods/2026-11 --history history.duckdb --period 2026-11
    """
    from ...run import service

    try:
        facts = read_options(facts_format, encoding, delimiter)
        if period is not None and history_path is None:
            raise usage("--period needs --history FILE: the history the earlier periods come from")
        result, notes = service.decide_with_history(
            policy_folder(policies), data_folder(data, inputs), parse_inputs(inputs),
            entities=(entity,) if entity else (), backend=backend, facts=facts, calibration=calibration,
            history=history_path, period=period)
        say_notes(notes)
        trace = service.explain(result, entity_id, entity)
    except KamError as exc:
        fail(exc)
        return
    emit(trace.to_dict(), trace.render_text(), out_fmt)
