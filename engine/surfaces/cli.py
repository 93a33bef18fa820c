"""The `kam` command line: a thin shell over `engine.api`. Errors are printed here, once.

Exit codes: 0 ok, 1 policy errors or failed checks, 2 usage or input errors. Results go to stdout;
diagnostics (warnings, progress, the `wrote ...` line) go to stderr, never wrapped when piped.
The data libraries are imported by the commands that need them, so `kam check` starts quickly.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from ..language.version import __version__
from . import problems as report
from ..language.compile import compile_policies
from ..language.errors import InputError, KamError, Location, Problem, did_you_mean

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from ..run import outputs as run_outputs
    from ..batch.result import RunResult
    from ..history.store import History, Recorder
    from ..language.plan import Plan
    from ..batch.facts import FactsOptions
    from ..batch.write import OutputTarget

DEFAULT_POLICIES = Path("policies")
DEFAULT_DATA = Path("examples")
DEFAULT_OUT = Path("out")
BACKENDS = ("pandas", "durable")
FACTS_FORMATS = ("csv", "parquet", "jsonl", "xlsx")
OUTPUT_FORMATS = ("csv", "parquet", "jsonl", "xlsx")


def _stderr() -> "Console":
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(exc: KamError, fmt: str = "text") -> None:
    if fmt == "json":
        click.echo(json.dumps({"ok": False, "problems": [p.to_dict() for p in exc.problems]}, indent=2,
                              ensure_ascii=False))
    else:
        for p in exc.problems:
            click.echo(p.render(), err=True)
        n = len([p for p in exc.problems if p.severity == "error"])
        click.echo(f"{n} error{'s' if n != 1 else ''}", err=True)
    sys.exit(exc.exit_code)


def _usage(message: str, hint: str = "") -> InputError:
    return InputError(Problem("usage", message, Location("command line"), hint))


def _policy_dir(path: Path | None, how: str = "--policies DIR") -> Path:
    path = path or DEFAULT_POLICIES
    if not path.is_dir():
        raise _usage(f"policy folder {path} does not exist",
                     f"run inside the folder that holds policies/, or name the folder: {how}")
    return path


def _check_entity(pl: "Plan", entity: str) -> None:
    names = [e.entity for e in pl.entities]
    if entity not in names:
        raise _usage(f"--entity {entity} is not an entity of the policies", did_you_mean(entity, names))


def _data_folder(data: Path | None, inputs: tuple[str, ...]) -> Path | None:
    """Where the facts files not given by --input are: --data, else examples/ (where it exists, once
    some entity is given by --input)."""
    if data is not None:
        return data
    return DEFAULT_DATA if not inputs or DEFAULT_DATA.is_dir() else None


def _parse_inputs(values: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for v in values:
        if "=" not in v:
            raise _usage(f"--input {v!r} must look like ENTITY=FILE", "e.g. --input customer=data/customers.csv")
        entity, _, file = v.partition("=")
        out[entity.strip()] = Path(file.strip())
    return out


_DELIMITERS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def _facts_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--facts-format, --encoding and --delimiter: how the facts files are read (run, explain, diff)."""
    f = click.option("--delimiter", default=",", show_default=True, metavar="CHAR",
                     help="Field separator of CSV facts: ',', ';', 'tab' or '|'.")(f)
    f = click.option("--encoding", default="utf-8", show_default=True,
                     help="Text encoding of CSV and JSON Lines facts, e.g. gb18030, utf-16, cp1252.")(f)
    f = click.option("--facts-format", type=click.Choice(FACTS_FORMATS),
                     help="Format of the facts files (default: by extension).")(f)
    return f


def _read_options(facts_format: str | None, encoding: str, delimiter: str) -> "FactsOptions":
    from ..batch.facts import FactsOptions

    delimiter = _DELIMITERS.get(delimiter, delimiter)
    if len(delimiter) != 1:
        raise _usage(f"--delimiter {delimiter!r} must be one character", "e.g. --delimiter ';' or --delimiter tab")
    try:
        "".encode(encoding)
    except LookupError:
        raise _usage(f"unknown encoding {encoding!r}", "e.g. --encoding utf-8, gb18030, utf-16, cp1252") from None
    return FactsOptions(facts_format, encoding, delimiter)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kam")
def main() -> None:
    """kam: key-account management policies, checked like code and run over customer tables.

    \b
    Quick start (inside the project):
      kam check policies/        validate the shipped policy set
      kam run                    decide every example customer, prospect and quote
      kam explain 000123         the full trace behind one customer's decisions
    """


@main.command()
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
    from ..analysis.rules import analyse
    from ..language.load import policy_files
    from ..analysis.invariants import invariant_problems, prove

    folder = policy_dir or DEFAULT_POLICIES
    exit_code = 0
    pl = None
    proved = 0
    try:
        pl = compile_policies(_policy_dir(policy_dir, "kam check POLICY_DIR"))
        problems = analyse(pl)
        if pl.checked.policy_set.invariants():
            results = prove(pl)
            proved = sum(r.status == "proved" for r in results)
            problems += invariant_problems(results)
    except KamError as exc:
        problems, exit_code = exc.problems, exc.exit_code
    problems = report.promote(problems, strict)
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
        click.echo(report.render(problems, fmt, files), nl=False)
    sys.exit(exit_code)


@main.command("test")
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
    from . import policy_tests as testing

    try:
        folder = _policy_dir(policy_dir, "kam test POLICY_DIR")
        pl = compile_policies(folder)
        paths = list(files) or testing.find_test_files(folder)
        if not paths:
            raise _usage(f"no test files in {folder / testing.TEST_DIR}",
                         "write cases in policies/tests/*.yaml (see README), or pass --file")
        suite = testing.run_tests(pl, paths)
    except KamError as exc:
        _fail(exc, "json" if fmt == "json" else "text")
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
        click.echo(report.junit_xml("kam test", [(Path(r.file).stem, r.name, r.failures) for r in suite.results]),
                   nl=False)
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


@main.command("diff")
@click.argument("policy_dir", required=False, type=click.Path(path_type=Path))
@click.option("--base", required=True, help="The policies to compare with: a git revision (HEAD~1, main) "
              "or another policy folder.")
@click.option("--data", type=click.Path(path_type=Path), help="Facts folder [default: examples/].")
@click.option("--input", "inputs", multiple=True, metavar="ENTITY=FILE", help="Facts file of one entity.")
@_facts_options
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text",
              show_default=True, help="markdown is ready to post as a pull-request comment.")
@click.option("--fail-on", multiple=True, metavar="CONDITION",
              help="Exit 1 when e.g. 'changed > 5%', 'changed >= 100' or 'tier: changed > 2%' holds.")
def diff_command(policy_dir: Path | None, base: str, data: Path | None, inputs: tuple[str, ...],
                 facts_format: str | None, encoding: str, delimiter: str, fmt: str,
                 fail_on: tuple[str, ...]) -> None:
    """Compare two versions of the policies on the same facts: who changes, and how much money moves.

    \b
    Example:
      kam diff policies/ --base HEAD~1
      kam diff policies/ --base main --format markdown --fail-on 'changed > 5%'
      kam diff policies/ --base ../policies-2025 --data /data/2026-11
    """
    from ..run import inputs as run_inputs
    from . import diff

    data = _data_folder(data, inputs)
    try:
        for rule in fail_on:
            diff.parse_fail_on(rule)
        options = _read_options(facts_format, encoding, delimiter)
        folder = _policy_dir(policy_dir, "kam diff POLICY_DIR")
        new = compile_policies(folder)
        old = diff.base_plan(base, folder)
        files = run_inputs.find_inputs(new, data, _parse_inputs(inputs))
        missing = [e.entity for e in old.entities if e.entity not in files]
        if missing:
            files.update(run_inputs.find_inputs(old, data, _parse_inputs(inputs)))
        comparison = diff.compare(old, new, files, options)
    except KamError as exc:
        _fail(exc)
        return
    fails = diff.failures(comparison, list(fail_on))
    if fmt == "json":
        click.echo(diff.render_json(comparison, base, fails), nl=False)
    else:
        click.echo(diff.render_text(comparison, markdown=fmt == "markdown"), nl=False)
    for f in fails:
        click.echo(f"fail: {f}", err=True)
    sys.exit(1 if fails else 0)


@main.command("stream")
@click.argument("events", required=False, type=click.Path(path_type=Path))
@click.option("--entity", default="customer", show_default=True, help="Which entity the events update.")
@click.option("--policies", type=click.Path(path_type=Path), help="Policy folder [default: policies/].")
@click.option("--calibration", type=click.Path(path_type=Path),
              help="Population statistics from `kam run --save-calibration` (needed for ranks and shares).")
@click.option("--state", type=click.Path(path_type=Path), help="Keep facts and decisions in this SQLite file, "
              "so a restart resumes where it stopped.")
@click.option("--initial", type=click.Path(path_type=Path),
              help="Start from these facts (e.g. the batch's customers.csv); nothing is printed for them.")
@click.option("--backend", type=click.Choice(BACKENDS), default="durable", show_default=True)
@click.option("--history", "history_path", type=click.Path(path_type=Path), metavar="FILE",
              help="previous() reads the last recorded periods from this history (nothing is recorded).")
@click.option("--period", metavar="LABEL", help="The period the events belong to: previous() reads the ones "
              "before it [default: after the last recorded one].")
@_facts_options
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
    from ..engines import calibration as calibrate
    from ..history import store as hist
    from ..engines import stream
    from ..language.plan import past_note
    from ..batch.facts import read_facts

    try:
        options = _read_options(facts_format, encoding, delimiter)
        pl = compile_policies(_policy_dir(policies))
        _check_entity(pl, entity)
        cal = calibrate.load(calibration) if calibration else None
        if events is not None and not events.exists():
            raise _usage(f"events file {events} does not exist")
        if period is not None and history_path is None:
            raise _usage("--period needs --history FILE: the history the earlier periods come from")
        past = None
        if pl.entity(entity).past:
            if history_path is None:
                click.echo(f"note: no --history: previous() is missing for everyone ({past_note(pl.only([entity]))})",
                           err=True)
            else:
                with _open_history(history_path) as h:
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
        _fail(exc)
        return
    click.echo(f"{applied} events applied, {rejected} rejected", err=True)
    if rejected and not applied:
        click.echo("no event could be applied", err=True)
        sys.exit(2)


def _summary(counts: dict[str, dict[str, dict[str, int]]], rows: dict[str, int],
             measures: dict[str, dict[str, Any]] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..language.numbers import number_text

    console = Console(highlight=False)
    for entity, values_ in (measures or {}).items():
        table = Table(title=f"{entity}: measures", title_justify="left", show_lines=False)
        table.add_column("measure")
        table.add_column("value", justify="right")
        for name, value in values_.items():
            table.add_row(name, "missing" if value is None else ("true" if value else "false")
                          if isinstance(value, bool) else number_text(float(value)))
        console.print(table)
    for entity, decisions in counts.items():
        table = Table(title=f"{entity}: {rows[entity]:,} decided", title_justify="left", show_lines=False)
        table.add_column("decision")
        table.add_column("value")
        table.add_column("count", justify="right")
        table.add_column("share", justify="right")
        for name, values in decisions.items():
            first = True
            for value, n in values.items():
                share = f"{n / rows[entity]:.1%}" if rows[entity] else "-"
                table.add_row(name if first else "", value, f"{n:,}", share)
                first = False
        console.print(table)


@dataclass
class EngineOptions:
    """What `run` and `explain` share: which entities, which backend, which population, how to read."""

    entities: tuple[str, ...] = ()
    backend: str = "pandas"
    calibration: Path | None = None
    save_calibration: Path | None = None
    facts: "FactsOptions | None" = None
    history: "History | None" = None  # where previous() reads the past
    period: str | None = None  # the period being decided: previous() reads the ones before it
    recorder: "Recorder | None" = None  # records the run into the history as it goes
    writer: "run_outputs.EntityWriter | None" = None  # writes each entity's file as soon as it is decided


def _engine_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--entity", "entities", multiple=True,
                     help="Only this entity (and those it joins with); repeatable.")(f)
    f = click.option("--backend", type=click.Choice(BACKENDS), default="pandas", show_default=True,
                     help="Which engine matches rule conditions (durable: durable_rules).")(f)
    f = click.option("--calibration", type=click.Path(path_type=Path),
                     help="Take population statistics (ranks, shares, means) from this saved calibration.")(f)
    return _facts_options(f)


class _Steps:
    """The progress bar of a run (on a terminal only): reading, deciding, explaining and writing."""

    def __init__(self, progress: "Progress | None", total: int):
        self.progress = progress
        self.task = progress.add_task("reading facts", total=total) if progress is not None else None

    def tick(self, what: str) -> Callable[[str], None]:
        def _tick(entity: str) -> None:
            if self.progress is not None and self.task is not None:
                self.progress.update(self.task, advance=1, description=f"{what} {entity}".strip())
        return _tick


def _compile_for_run(policies: Path | None, options: EngineOptions) -> "Plan":
    pl = compile_policies(_policy_dir(policies))
    if options.entities:
        for entity in options.entities:
            _check_entity(pl, entity)
        pl = pl.only(list(options.entities))
    return pl


def _compute(pl: "Plan", data: Path | None, inputs: tuple[str, ...], timings: dict[str, float],
             steps: _Steps | None = None, options: EngineOptions | None = None
             ) -> tuple["RunResult", dict[str, Path]]:
    from ..run import service as api
    from ..run import inputs as run_inputs
    from ..engines import calibration as calibrate

    options = options if options is not None else EngineOptions()  # its own: a run records its history in it
    t0 = time.perf_counter()
    calibration = calibrate.load(options.calibration) if options.calibration else None
    given = _parse_inputs(inputs)
    if data is not None and not data.is_dir():
        raise _usage(f"data folder {data} does not exist", "pass --data DIR or --input ENTITY=FILE")
    files = run_inputs.find_inputs(pl, data, given)
    timings["compile"] = round(timings.get("compile", 0.0) + time.perf_counter() - t0, 4)
    t0 = time.perf_counter()
    frames = run_inputs.read_inputs(pl, files, options.facts, steps.tick("read") if steps else None)
    timings["read"] = round(time.perf_counter() - t0, 4)
    t0 = time.perf_counter()
    past = api.load_past(pl, frames, options.history, options.period)
    if options.history is not None and past.frames:
        timings["previous"] = round(time.perf_counter() - t0, 4)
    t0 = time.perf_counter()
    result = api.run(pl, frames, steps.tick("decided") if steps else None, backend=options.backend,
                     calibration=calibration, record_calibration=options.save_calibration is not None,
                     past={e: f for e, f in past.frames.items()},
                     on_result=lambda r: _decided(pl, r, options))
    result.past = past
    timings["evaluate"] = round(time.perf_counter() - t0, 4)
    return result, files


def _decided(pl: "Plan", r: Any, options: EngineOptions) -> None:
    """An entity is decided: record it (history) and start writing its file."""
    if options.recorder is not None:
        options.recorder.decided(pl, r)
    if options.writer is not None:
        options.writer.submit(r)


def _calibration_in(target: "OutputTarget", path: Path | None) -> bool:
    """Whether a file (a calibration, the report) is to be saved inside the output folder (it is then
    part of the set)."""
    import os

    return path is not None and Path(os.path.abspath(path)).parent in (target.real, Path(os.path.abspath(target.out)))


@main.command()
@click.option("--policies", type=click.Path(path_type=Path), help="Policy folder [default: policies/].")
@click.option("--data", type=click.Path(path_type=Path),
              help="Folder with one facts file per entity (customers.csv, quotes.parquet, ...) [default: examples/].")
@click.option("--input", "inputs", multiple=True, metavar="ENTITY=FILE", help="Facts file of one entity.")
@click.option("--format", "old_format", type=click.Choice(FACTS_FORMATS), hidden=True,
              help="Deprecated spelling of --facts-format.")
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Output folder, replaced as a whole: <entity>_decisions.<ext> and manifest.json.")
@click.option("--output-format", type=click.Choice(OUTPUT_FORMATS), default=None,
              show_default="csv; parquet with --engine dask",
              help="xlsx: one workbook, decisions.xlsx, with a sheet per entity and a summary sheet.")
@click.option("--csv-bom", is_flag=True, help="Start CSV outputs with a UTF-8 byte order mark, so that Excel "
              "opens Chinese text correctly.")
@click.option("--quiet", "-q", is_flag=True, help="No summary table, no progress and no warnings (errors still "
              "show, and so does a join where most rows find no partner).")
@click.option("--save-calibration", type=click.Path(path_type=Path),
              help="Save this batch's population statistics, for `kam stream` and later runs.")
@click.option("--allow-violations", is_flag=True,
              help="Write the decisions even where an invariant is broken (the manifest lists the breaches); "
              "without it such a run writes nothing and exits 1.")
@click.option("--history", "history_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Record this run in a history file (DuckDB, created if needed); previous() reads the "
              "periods before this one from it. Needs --period.")
@click.option("--period", metavar="LABEL", help="The period this run decides, e.g. 2026-11 (labels must sort in "
              "time order).")
@click.option("--replace", is_flag=True, help="Record the period again if the history has it already.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Also write the portfolio report (HTML, as `kam report` makes it); inside --out it is part "
              "of the output set.")
@click.option("--engine", type=click.Choice(["pandas", "dask"]), default="pandas", show_default=True,
              help="dask: partitioned Parquet in and out, evaluated on a Dask cluster (a local one unless "
              "--scheduler), with the same results as pandas.")
@click.option("--scheduler", metavar="ADDRESS", help="With --engine dask: an existing Dask scheduler, "
              "e.g. tcp://10.0.0.5:8786 (the data and --out must be on storage every worker sees).")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True,
              help="With --engine dask and no --scheduler: worker processes of the local cluster.")
@click.option("--worker-memory", default="2GiB", show_default=True,
              help="With --engine dask and no --scheduler: the memory limit of each local worker.")
@_engine_options
def run(policies: Path | None, data: Path | None, inputs: tuple[str, ...], old_format: str | None, out: Path,
        output_format: str | None, csv_bom: bool, quiet: bool, save_calibration: Path | None, allow_violations: bool,
        history_path: Path | None, period: str | None, replace: bool, report_path: Path | None,
        engine: str, scheduler: str | None, workers: int, worker_memory: str,
        entities: tuple[str, ...], backend: str, calibration: Path | None, facts_format: str | None,
        encoding: str, delimiter: str) -> None:
    """Decide every entity in the facts files and write decisions with explanations.

    The output folder always holds one complete set: the new files are written next to it and
    swapped in at the end, so a failed or killed run leaves the previous set as it was.

    \b
    Examples:
      kam run                                   shipped policies on the bundled examples
      kam run --data /data/2026-11 --out out/2026-11 --output-format parquet
      kam run --input customer=crm.parquet --input quote=quotes.jsonl --input prospect=leads.csv
      kam run --data exports/ --delimiter ';' --encoding gb18030
      kam run --entity customer --backend durable --save-calibration out/calibration.json
      kam run --data examples/periods/2026-11 --history history.duckdb --period 2026-11
      kam run --engine dask --data /data/2026-11 --out out/2026-11   (folders of Parquet partitions)
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..run import outputs as run_outputs
    from ..engines import calibration as calibrate
    from ..history import store as hist
    from ..batch.write import OutputTarget

    err = _stderr()
    if engine == "dask":
        refused = [flag for flag, given in (("--history", history_path), ("--report", report_path),
                                            ("--save-calibration", save_calibration), ("--calibration", calibration),
                                            ("--backend durable", backend == "durable"), ("--csv-bom", csv_bom))
                   if given]
        if output_format not in (None, "parquet"):
            refused.append(f"--output-format {output_format}")
        if refused:
            _fail(_usage(f"--engine dask does not take {', '.join(refused)}",
                         "it writes partitioned Parquet; run those with the pandas engine"))
            return
        _run_dask(policies, data or (None if inputs else DEFAULT_DATA), inputs, out, quiet, allow_violations,
                  scheduler, workers, worker_memory, EngineOptions(entities, backend, None, None,
                                                                   _read_options(facts_format, encoding, delimiter)))
        return
    if scheduler is not None:
        _fail(_usage("--scheduler is for --engine dask"))
        return
    output_format = output_format or "csv"
    if old_format is not None:
        err.print("note: `kam run --format` is now `--facts-format` (the old spelling still works)", markup=False)
        facts_format = facts_format or old_format
    data = _data_folder(data, inputs)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    target = None
    history = None
    new_history = False  # this run made the history file: a run that fails leaves none behind
    options: EngineOptions | None = None
    notes: list[str] = []
    try:
        if history_path is not None and period is None:
            raise _usage("--history needs --period: the label of the period this run decides",
                         "e.g. --period 2026-11 (labels must sort in time order)")
        if period is not None and history_path is None:
            raise _usage("--period needs --history FILE: the history the period is recorded in")
        if replace and history_path is None:
            raise _usage("--replace needs --history FILE and --period LABEL")
        if csv_bom and output_format != "csv":
            raise _usage("--csv-bom is for --output-format csv", "Excel reads xlsx, Parquet and JSON Lines as UTF-8")
        options = EngineOptions(entities, backend, calibration, save_calibration,
                                _read_options(facts_format, encoding, delimiter))
        pl = _compile_for_run(policies, options)
        # before any fact is read: a bad --out fails at once (and a killed run's history is settled)
        target = OutputTarget(out, hist.settle).prepare()
        if history_path is not None and period is not None:
            # also before any fact is read: a period recorded already, or a history in use, fails at once
            label = hist.check_period(period)  # before the history is opened: a bad label creates no file
            new_history = not history_path.exists()
            history = hist.History.open(history_path, write=True)
            history.check_new(label, replace)
            notes += history.notes + _history_notes(history, period, pl.checked.policy_set.hash)
            recorded = {"backend": backend, "entities": list(entities), "calibration": calibration,
                        "output": str(out), "output_format": output_format}
            options.history, options.period = history, period
            options.recorder = hist.Recorder(history, period, recorded, replace)
        # a workbook is written whole, at the end; the report reads the whole tables, rendered once
        if output_format != "xlsx" and report_path is None:
            assert target.staging is not None
            options.writer = run_outputs.EntityWriter(target.staging, output_format, csv_bom)
        timings["compile"] = round(time.perf_counter() - t_start, 4)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                            console=err, transient=True, disable=not err.is_terminal or quiet)
        with progress:
            # read and decide each entity, render the texts, write each file
            steps = _Steps(progress, 3 * len(pl.entities) + 1)
            result, files = _compute(pl, data, inputs, timings, steps, options)
            broken = result.violations()
            if broken and not allow_violations:
                progress.stop()
                if options.writer is not None:
                    options.writer.close()
                _refuse_broken(broken, target, "see `kam explain ID`; ")
            extra = {}
            inside = _calibration_in(target, save_calibration)
            if inside and result.calibration is not None and save_calibration is not None:
                extra[save_calibration.name] = calibrate.dumps(result.calibration)
            page = None
            if report_path is not None:
                from . import report as portfolio

                page = portfolio.render(result)
                if _calibration_in(target, report_path):
                    extra[report_path.name] = page.encode("utf-8")
                    page = None
            paths = run_outputs.write_run(result, files, target, output_format, timings, extra, steps.tick(""),
                                  options.recorder, bom=csv_bom, writer=options.writer)
            new_history = False  # the period is recorded with the output set: the history stays, whatever follows
            if save_calibration is not None and not inside and result.calibration is not None:
                calibrate.save(result.calibration, save_calibration)
            if page is not None and report_path is not None:
                from ..batch.write import write_text_atomic

                write_text_atomic(report_path, page)
    except BaseException as exc:
        if options is not None and options.writer is not None:
            options.writer.close()  # before its folder goes
        if target is not None:
            target.abandon()
        if options is not None and options.recorder is not None:
            options.recorder.abandon()
        if history is not None:
            history.close()
            if new_history and history_path is not None:
                for leftover in (history_path, history_path.with_name(history_path.name + ".wal")):
                    leftover.unlink(missing_ok=True)
        if isinstance(exc, KamError):
            _fail(exc)
            return
        raise
    if history is not None:
        history.close()
    rows = {e: len(f) for e, f in result.frames_in.items()}
    if not quiet:
        _summary(result.counts(), rows, result.measures())
    for join in result.joins():
        if join.mostly_unmatched:
            err.print(f"\nwarning: {join.alarm()}\n", markup=False, style="bold")
        elif not quiet:
            err.print(f"warning: {join.text()}", markup=False)
    if not quiet:
        for line in _formula_warnings(target.manifest or {}):
            err.print(line, markup=False)
    conflicts = result.conflicts()
    for c in conflicts:
        err.print(f"error: {c}", markup=False)
    for report_ in result.violations():  # written anyway: --allow-violations
        err.print(f"warning: {report_.text()} (written because of --allow-violations)", markup=False)
    if not quiet:
        if result.past.periods:
            notes.append(f"previous() read {', '.join(result.past.periods)} from {history_path}")
        for note in notes + result.past.notes:
            err.print(f"note: {note}", markup=False)
        written = ", ".join(dict.fromkeys(str(p) for p in paths.values()))
        recorded = f"; recorded period {period} in {history_path}" if history is not None else ""
        err.print(f"wrote {written} and {out / 'manifest.json'}{recorded} in {time.perf_counter() - t_start:.2f}s",
                  markup=False)
    if conflicts:
        sys.exit(1)


def _formula_warnings(manifest: dict[str, Any]) -> list[str]:
    """Per CSV file, the text cells a spreadsheet would take for a formula: escaped (--csv-bom) or not."""
    out = []
    for o in manifest.get("outputs", []):
        n = o.get("formula_cells")
        if not n:
            continue
        cells = f"{n:,} text cell{'s' if n != 1 else ''} of {o['path']} begin{'s' if n == 1 else ''}"
        if o.get("formula_cells_escaped"):
            out.append(f"note: {cells} with =, +, -, @, a tab or a carriage return (e.g. {o['formula_example']}): "
                       "written with a leading ' so that a spreadsheet shows them as text (--csv-bom)")
        else:
            out.append(f"warning: {cells} with =, +, -, @, a tab or a carriage return (e.g. {o['formula_example']}): "
                       "a spreadsheet would run them as formulas; open the file in Excel only as written with "
                       "--csv-bom, which keeps them text")
    return out


def _csv_text(frame: Any, excel: bool) -> "tuple[str, Any]":
    """A table as kam writes CSV files (quoting, numbers, formula cells), as text."""
    import io

    from ..batch.write import write_csv

    buffer = io.BytesIO()
    written = write_csv([frame], buffer, excel)
    return ("\ufeff" if excel else "") + buffer.getvalue().decode("utf-8"), written


def _refuse_broken(broken: list[Any], target: "OutputTarget", hint: str) -> None:
    """Broken invariants without --allow-violations: say which, write nothing, exit 1."""
    err = _stderr()
    for report_ in broken:
        err.print(f"error: {report_.text()}", markup=False)
    err.print(f"{len(broken)} invariant{'s' if len(broken) > 1 else ''} broken: nothing was written "
              f"({hint}--allow-violations writes the decisions anyway)", markup=False)
    target.abandon()
    sys.exit(1)


def _run_dask(policies: Path | None, data: Path | None, inputs: tuple[str, ...], out: Path, quiet: bool,
              allow_violations: bool, scheduler: str | None, workers: int, worker_memory: str,
              options: EngineOptions) -> None:
    """`kam run --engine dask`: partitions evaluated on a cluster, one output set swapped in as usual."""
    import logging

    from ..run import service as api
    from ..run import outputs as run_outputs
    from ..engines import dask as distributed
    from ..batch.facts import file_sha256
    from ..batch.write import OutputTarget

    err = _stderr()
    t_start = time.perf_counter()
    target = None
    cluster = client = None
    try:
        pl = _compile_for_run(policies, options)
        given = {e: str(p) for e, p in _parse_inputs(inputs).items()}
        files = distributed.partition_files(pl, data, given)
        target = OutputTarget(out).prepare()
        from dask.distributed import Client, LocalCluster

        if scheduler is None:
            # the workers' own logs stay quiet: kam reports what matters on standard error
            logging.getLogger("distributed").setLevel(logging.ERROR)
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   memory_limit=worker_memory, dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
        else:
            client = Client(scheduler)
        assert target.staging is not None
        done = distributed.run(pl, files, client, target.staging, options.facts)
        merged = distributed.merge(pl, done)
        broken = [r for r in merged["invariants"] if r.count]
        if broken and not allow_violations:
            _refuse_broken(broken, target, "")
        inputs_ = [{"entity": e, "path": str(p), "sha256": file_sha256(p), "rows": r} for e, ps_ in files.items()
                   for p, r in zip(ps_, done.entities[e]["rows"])]
        manifest = run_outputs.run_manifest(
            pl, inputs_, merged["counts"], merged["measures"], [r.to_dict() for r in merged["invariants"]],
            merged["warnings"], {**done.timings, "total": round(time.perf_counter() - t_start, 4)},
            engine={"name": "dask", "scheduler": scheduler or f"local ({workers} workers, {worker_memory} each)"})
        target.commit({}, "parquet", manifest, staged_outputs=merged["outputs"])
    except BaseException as exc:
        if target is not None:
            target.abandon()
        if isinstance(exc, KamError):
            _fail(exc)
            return
        raise
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    if not quiet:
        _summary(merged["counts"], merged["rows"], merged["measures"])
        for w in merged["warnings"]:
            err.print(f"warning: {w}", markup=False)
        for note in api.load_past(pl, {}, None, None).notes:  # no history on this engine (yet)
            err.print(f"note: {note}", markup=False)
        err.print(f"wrote {', '.join(str(out / o['path']) for o in merged['outputs'])} and {out / 'manifest.json'} "
                  f"in {time.perf_counter() - t_start:.2f}s", markup=False)


def _open_history(path: Path) -> "History":
    """A history opened for reading; what opening it settled (a period a stopped run left) is said."""
    from ..history.store import History

    h = History.open(path)
    for note in h.notes:
        click.echo(f"note: {note}", err=True)
    return h


def _history_notes(history: "History", period: str, policy_hash: str) -> list[str]:
    """What a run should know about the periods around it: a policy change, a period recorded out of order."""
    notes = []
    before = history.before(period, 1)
    if before:
        last = history.need_period(before[0])
        if last.policy_hash != policy_hash:
            notes.append(f"the policies changed since {last.period} (recorded with {last.policy_hash[:12]}, now "
                         f"{policy_hash[:12]}): some decisions may move because of the change, not the customers")
    later = [p for p in history.periods() if p > period]
    if later:
        notes.append(f"period {period} comes before {', '.join(later[:3])} (periods are ordered as text): "
                     "what those periods read with previous() stays as it was recorded")
    return notes


def _emit(doc: dict[str, Any], text: str, out_fmt: str) -> None:
    """What `kam explain` and `kam history` print: the JSON document or the text."""
    if out_fmt == "json":
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(text, nl=False)


def _decide_reading_history(policies: Path | None, data: Path | None, inputs: tuple[str, ...],
                            options: EngineOptions, history_path: Path | None, period: str | None) -> "RunResult":
    """Decide every entity, previous() reading the periods of a history before `period` (nothing is
    recorded): what `kam explain` and `kam report` show."""
    from ..history import store as hist

    if period is not None and history_path is None:
        raise _usage("--period needs --history FILE: the history the earlier periods come from")
    data = _data_folder(data, inputs)
    pl = _compile_for_run(policies, options)
    history = _open_history(history_path) if history_path is not None else None
    try:
        if history is not None:
            options.history, options.period = history, hist.check_period(period) if period else None
        return _compute(pl, data, inputs, {}, None, options)[0]
    finally:
        if history is not None:
            history.close()


@main.command()
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
@_facts_options
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
    from ..run import service as api

    try:
        options = EngineOptions((entity,) if entity else (), backend, calibration, None,
                                _read_options(facts_format, encoding, delimiter))
        result = _decide_reading_history(policies, data, inputs, options, history_path, period)
        trace = api.explain(result, entity_id, entity)
    except KamError as exc:
        _fail(exc)
        return
    _emit(trace.to_dict(), trace.render_text(), out_fmt)


@main.command("report")
@click.option("--policies", type=click.Path(path_type=Path), help="Policy folder [default: policies/].")
@click.option("--data", type=click.Path(path_type=Path), help="Facts folder [default: examples/].")
@click.option("--input", "inputs", multiple=True, metavar="ENTITY=FILE", help="Facts file of one entity.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("report.html"), show_default=True,
              help="The HTML file to write (replaced atomically).")
@click.option("--history", "history_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Read the earlier periods from this history: previous() and the section \"since the previous "
              "period\" (nothing is recorded).")
@click.option("--period", metavar="LABEL", help="The period the facts are of [default: after the last recorded one].")
@_facts_options
def report_command(policies: Path | None, data: Path | None, inputs: tuple[str, ...], output: Path,
                   history_path: Path | None, period: str | None, facts_format: str | None, encoding: str,
                   delimiter: str) -> None:
    """Decide every entity and write the portfolio as one self-contained HTML page: the Pareto curve
    with its headline figures, the tiers against their target shape, the profitability map,
    retention, prospects per region, pricing, the measures the policies state, and, with a history,
    who moved since the previous period. It opens offline and prints; `kam run --report FILE` writes
    the same page beside the decision files.

    \b
    Example:
      kam report -o portfolio.html
      kam report --data examples/periods/2026-11 --history history.duckdb --period 2026-11
    """
    from . import report as portfolio
    from ..batch.write import write_text_atomic

    try:
        if output.is_dir():
            raise _usage(f"-o {output} is a folder", "give the path of the HTML file, e.g. -o report.html")
        options = EngineOptions((), "pandas", None, None, _read_options(facts_format, encoding, delimiter))
        page = portfolio.render(_decide_reading_history(policies, data, inputs, options, history_path, period))
    except KamError as exc:
        _fail(exc)
        return
    try:
        write_text_atomic(output, page)
    except OSError as exc:
        _fail(_usage(f"cannot write {output}: {exc.strerror or exc}"))
    click.echo(f"wrote {output}", err=True)


@main.command("history")
@click.argument("entity_id")
@click.option("--history", "history_path", required=True, type=click.Path(path_type=Path), metavar="FILE",
              help="The history written by `kam run --history`.")
@click.option("--entity", help="Which entity the id belongs to (default: search all).")
@click.option("--full", is_flag=True, help="Show every decision in every period, not only what changed.")
@click.option("--format", "out_fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def history_command(entity_id: str, history_path: Path, entity: str | None, full: bool, out_fmt: str) -> None:
    """One entity's path through the recorded periods: each decision with its rule and reason, and what
    changed from one period to the next (decisions and the facts marked `measure`).

    The reasons are rendered from the recorded values with the policies of each period, exactly as
    that run wrote them; no input file is needed.

    \b
    Example:
      kam history 000123 --history history.duckdb
      kam history 000123 --history history.duckdb --format json
    """
    from ..history import questions as timeline

    try:
        with _open_history(history_path) as h:
            path = timeline.entity_path(h, entity_id, entity)
    except KamError as exc:
        _fail(exc)
        return
    _emit(path.to_dict(), path.render_text(full), out_fmt)


@main.command("changes")
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
def changes_command(history_path: Path, before: str | None, after: str | None, entity: str | None,
                    decision: str | None, top: int, out_fmt: str, output: Path | None, csv_bom: bool) -> None:
    """Who moved between two periods: per decision the transition matrix, the moves with the money that
    moved with them (the facts marked `measure`), and the entities that moved with their reasons.

    \b
    Examples:
      kam changes --history history.duckdb
      kam changes --history history.duckdb --from 2026-09 --to 2026-11 --decision tier --format markdown
      kam changes --history history.duckdb --format csv -o movers.csv
    """
    from ..history import questions as timeline

    written = None
    try:
        if csv_bom and out_fmt != "csv":
            raise _usage("--csv-bom is for --format csv")
        with _open_history(history_path) as h:
            transitions = timeline.changes(h, before, after, entity, decision)
            if out_fmt == "json":
                text = json.dumps([{**t.to_dict(), "movers": timeline._records(timeline.with_reasons(h, t))}
                                   for t in transitions], indent=2, ensure_ascii=False, default=str) + "\n"
            elif out_fmt == "csv":
                text, written = _csv_text(timeline.movers_csv(h, transitions), csv_bom)
            else:
                text = timeline.render_changes(h, transitions, top, markdown=out_fmt == "markdown")
    except KamError as exc:
        _fail(exc)
        return
    if written is not None:
        for line in _formula_warnings({"outputs": [{**written.record(), "path": str(output or "the movers")}]}):
            click.echo(line, err=True)
    if output is not None:
        from ..batch.write import write_text_atomic

        write_text_atomic(output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@main.command()
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema of policy files (for editors with a YAML language server).

    \b
    Example:
      kam schema -o policy.schema.json
    and at the top of a policy file:
      # yaml-language-server: $schema=../schemas/policy.schema.json
    """
    from ..language.validate import load_schema

    text = json.dumps(load_schema(), indent=2) + "\n"
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
