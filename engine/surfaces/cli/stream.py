"""`kam stream`: decide again whenever an entity's facts change."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ...language.compile import compile_policies
from ...language.errors import KamError
from .common import BACKENDS, check_entity, facts_options, fail, open_history, policy_folder, read_options, usage


@click.command("stream")
@click.argument("events", required=False, type=click.Path(path_type=Path))
@click.option("--entity", default="customer", show_default=True, help="Which entity the events update.")
@click.option("--policies", type=click.Path(path_type=Path), help="Policy folder [default: policies/].")
@click.option("--calibration", type=click.Path(path_type=Path),
              help="Population statistics from `kam run --save-calibration` (needed for ranks and shares).")
@click.option("--state", type=click.Path(path_type=Path), help="Keep facts and decisions in this SQLite file, "
              "so a restart resumes where it stopped.")
@click.option("--initial", type=click.Path(path_type=Path),
              help="Start from these facts (e.g. the batch's customers.csv); nothing is printed for them.")
@click.option("--backend", type=click.Choice(("row",) + BACKENDS), default="row", show_default=True,
              help="How an event is decided: `row` compiles the policies into Python for one entity at a time "
              "(the fastest); `pandas` and `durable` use the batch engine with its own or durable_rules' rule "
              "matching. All give the same decisions and texts.")
@click.option("--history", "history_path", type=click.Path(path_type=Path), metavar="FILE",
              help="previous() reads the last recorded periods from this history (nothing is recorded).")
@click.option("--period", metavar="LABEL", help="The period the events belong to: previous() reads the ones "
              "before it [default: after the last recorded one].")
@facts_options
def stream_command(events: Path | None, entity: str, policies: Path | None, calibration: Path | None,
                   state: Path | None, initial: Path | None, backend: str, history_path: Path | None,
                   period: str | None, facts_format: str | None, encoding: str, delimiter: str) -> None:
    """Decide again whenever an entity's facts change; print one JSON line per changed decision.

    EVENTS is a JSON Lines file (default: standard input); each line holds the entity's id and the
    facts that changed, optionally with `event_time`. A bad line is reported on stderr with its
    number and skipped. Exit code 2 when there were events and none of them could be applied.
    The --facts-format, --encoding and --delimiter options are for the --initial file.

    \b
    Example:
      kam run --entity customer --save-calibration out/calibration.json
      kam stream updates.jsonl --calibration out/calibration.json --initial examples/customers.csv
      kam stream updates.jsonl --calibration out/calibration.json --state stream.sqlite
      echo '{"customer_id": "000123", "profit": -5000}' | kam stream --calibration out/calibration.json
    """
    from ...engines import calibration as calibrate
    from ...history import store as hist
    from ...engines import stream
    from ...language.plan import past_note
    from ...batch.facts import read_facts

    try:
        options = read_options(facts_format, encoding, delimiter)
        pl = compile_policies(policy_folder(policies))
        check_entity(pl, entity)
        cal = calibrate.load(calibration) if calibration else None
        if events is not None and not events.exists():
            raise usage(f"events file {events} does not exist")
        if period is not None and history_path is None:
            raise usage("--period needs --history FILE: the history the earlier periods come from")
        past = None
        if pl.entity(entity).past:
            if history_path is None:
                click.echo(f"note: no --history: previous() is missing for everyone ({past_note(pl.only([entity]))})",
                           err=True)
            else:
                with open_history(history_path) as h:
                    found, past = h.past_by_key(pl, entity, hist.check_period(period) if period else None)
                for note in found.notes[:1]:
                    click.echo(f"note: {note}", err=True)
                if found.periods:
                    click.echo(f"note: previous() reads {', '.join(found.periods)} from {history_path}", err=True)
        with stream.Store(state) as store:
            runner = stream.StreamRunner(pl, entity, cal, backend, store, past)
            if initial is not None:
                ep = pl.entity(entity)
                runner.seed(read_facts(initial, pl.checked.policy_set.facts(entity), options,
                                       {ep.key} | {j.on for j in ep.joins}))
            source = str(events) if events is not None else "stdin"
            with (events.open(encoding="utf-8") if events is not None else sys.stdin) as lines:
                applied, rejected = runner.run(lines, source, sys.stdout, sys.stderr)
    except KamError as exc:
        fail(exc)
        return
    click.echo(f"{applied} events applied, {rejected} rejected", err=True)
    if rejected and not applied:
        click.echo("no event could be applied", err=True)
        sys.exit(2)
