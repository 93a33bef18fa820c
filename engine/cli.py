"""The `kam` command line: a thin shell over `engine.api`. Errors are printed here, once.

Exit codes: 0 ok, 1 policy errors or failed checks, 2 usage or input errors.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__, api, calibrate, diff, report, stream, testing
from .analyze import analyse
from .errors import InputError, KamError, Location, Problem, did_you_mean
from .load import policy_files
from .read import read_facts
from .validate import load_schema
from .write import OUTPUT_FORMATS

DEFAULT_POLICIES = Path("policies")
DEFAULT_DATA = Path("examples")
DEFAULT_OUT = Path("out")


def _fail(exc: KamError, fmt: str = "text") -> None:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if fmt == "json":
        click.echo(json.dumps({"ok": False, "problems": [p.to_dict() for p in exc.problems]}, indent=2,
                              ensure_ascii=False))
    else:
        for p in exc.problems:
            err.print(p.render(), markup=False)
        n = len([p for p in exc.problems if p.severity == "error"])
        err.print(f"{n} error{'s' if n != 1 else ''}", markup=False)
    sys.exit(exc.exit_code)


def _usage(message: str, hint: str = "") -> InputError:
    return InputError(Problem("usage", message, Location("command line"), hint))


def _policy_dir(path: Path | None) -> Path:
    path = path or DEFAULT_POLICIES
    if not path.is_dir():
        raise _usage(f"policy folder {path} does not exist",
                     "run inside the kam project, or pass the folder: --policies DIR")
    return path


def _check_entity(pl: api.Plan, entity: str) -> None:
    names = [e.entity for e in pl.entities]
    if entity not in names:
        raise _usage(f"--entity {entity} is not an entity of the policies", did_you_mean(entity, names))


def _parse_inputs(values: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for v in values:
        if "=" not in v:
            raise _usage(f"--input {v!r} must look like ENTITY=FILE", "e.g. --input customer=data/customers.csv")
        entity, _, file = v.partition("=")
        out[entity.strip()] = Path(file.strip())
    return out


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
    """Validate a policy folder: YAML, schema, names, types, values, cycles, then analyse the rules.

    Errors make the policies unusable (exit 1). Warnings point at rules that can never fire,
    rules that overlap under hit policy unique/any, decisions with gaps, and unused facts,
    features and values; each comes with an example entity where one helps. Notes say what the
    analysis could not decide.

    \b
    Example:
      kam check policies/
      kam check policies/ --strict --format github
    """
    folder = policy_dir or DEFAULT_POLICIES
    exit_code = 0
    pl = None
    try:
        pl = api.compile_policies(_policy_dir(policy_dir))
        problems = analyse(pl)
    except KamError as exc:
        problems, exit_code = exc.problems, exc.exit_code
    problems = report.promote(problems, strict)
    if any(p.severity == "error" for p in problems):
        exit_code = exit_code or 1
    files = [str(f) for f in policy_files(folder)] if folder.is_dir() else []
    if fmt == "text":
        err = click.get_text_stream("stderr")
        err.write(report.render(problems, "text"))
        if pl is not None and not exit_code:
            ps = pl.checked.policy_set
            rules = sum(len(d.rules) for p in ps.policies for d in p.decisions)
            decisions = sum(len(p.decisions) for p in ps.policies)
            click.echo(f"ok: {len(ps.policies)} policies, {decisions} decisions, {rules} rules "
                       f"for {', '.join(e.entity for e in pl.entities)} ({ps.directory})"
                       + (f"; {report.summary(problems)}" if problems else ""))
        else:
            err.write(report.summary(problems) + "\n")
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
    folder = _policy_dir(policy_dir) if policy_dir or not files else (policy_dir or DEFAULT_POLICIES)
    try:
        pl = api.compile_policies(folder)
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
@click.option("--facts-format", type=click.Choice(["csv", "parquet", "jsonl"]),
              help="Format of the facts files (default: by extension).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text",
              show_default=True, help="markdown is ready to post as a pull-request comment.")
@click.option("--fail-on", multiple=True, metavar="CONDITION",
              help="Exit 1 when e.g. 'changed > 5%', 'changed >= 100' or 'tier: changed > 2%' holds.")
def diff_command(policy_dir: Path | None, base: str, data: Path | None, inputs: tuple[str, ...],
                 facts_format: str | None, fmt: str, fail_on: tuple[str, ...]) -> None:
    """Compare two versions of the policies on the same facts: who changes, and how much money moves.

    \b
    Example:
      kam diff policies/ --base HEAD~1
      kam diff policies/ --base main --format markdown --fail-on 'changed > 5%'
      kam diff policies/ --base ../policies-2025 --data /data/2026-11
    """
    if data is None and not inputs:
        data = DEFAULT_DATA
    try:
        for rule in fail_on:
            diff.parse_fail_on(rule)
        folder = _policy_dir(policy_dir)
        new = api.compile_policies(folder)
        old = diff.base_plan(base, folder)
        files = api.find_inputs(new, data, _parse_inputs(inputs))
        missing = [e.entity for e in old.entities if e.entity not in files]
        if missing:
            files.update(api.find_inputs(old, data, _parse_inputs(inputs)))
        diffs = diff.compare(old, new, files, facts_format)
    except KamError as exc:
        _fail(exc)
        return
    fails = diff.failures(diffs, list(fail_on))
    if fmt == "json":
        click.echo(diff.render_json(diffs, base, fails), nl=False)
    else:
        click.echo(diff.render_text(diffs, markdown=fmt == "markdown"), nl=False)
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
@click.option("--backend", type=click.Choice(api.BACKENDS), default="durable", show_default=True)
def stream_command(events: Path | None, entity: str, policies: Path | None, calibration: Path | None,
                   state: Path | None, initial: Path | None, backend: str) -> None:
    """Decide again whenever an entity's facts change; print one JSON line per changed decision.

    EVENTS is a JSON Lines file (default: standard input); each line holds the entity's id and the
    facts that changed, optionally with `event_time`. A bad line is reported on stderr with its
    number and skipped.

    \b
    Example:
      kam run --entity customer --save-calibration out/calibration.json
      kam stream updates.jsonl --calibration out/calibration.json --initial examples/customers.csv
      kam stream updates.jsonl --calibration out/calibration.json --state out/stream.sqlite
      echo '{"customer_id": "000123", "profit": -5000}' | kam stream --calibration out/calibration.json
    """
    try:
        pl = api.compile_policies(_policy_dir(policies))
        _check_entity(pl, entity)
        cal = calibrate.load(calibration) if calibration else None
        runner = stream.StreamRunner(pl, entity, cal, backend, stream.Store(state))
        if initial is not None:
            runner.seed(read_facts(initial, pl.checked.policy_set.facts(entity)))
        if events is not None and not events.exists():
            raise _usage(f"events file {events} does not exist")
        source = str(events) if events is not None else "stdin"
        with (events.open(encoding="utf-8") if events is not None else sys.stdin) as lines:
            applied, rejected = runner.run(lines, source, sys.stdout, sys.stderr)
    except KamError as exc:
        _fail(exc)
        return
    click.echo(f"{applied} events applied, {rejected} rejected", err=True)


def _summary(console: Console, counts: dict[str, dict[str, dict[str, int]]], rows: dict[str, int]) -> None:
    for entity, decisions in counts.items():
        table = Table(title=f"{entity}: {rows[entity]} decided", title_justify="left", show_lines=False)
        table.add_column("decision")
        table.add_column("value")
        table.add_column("count", justify="right")
        table.add_column("share", justify="right")
        for name, values in decisions.items():
            first = True
            for value, n in values.items():
                share = f"{n / rows[entity]:.1%}" if rows[entity] else "-"
                table.add_row(name if first else "", value, str(n), share)
                first = False
        console.print(table)


@dataclass
class EngineOptions:
    """What `run` and `explain` share: which entities, which backend, which population."""

    entities: tuple[str, ...] = ()
    backend: str = "pandas"
    calibration: Path | None = None
    save_calibration: Path | None = None


def _engine_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--entity", "entities", multiple=True,
                     help="Only this entity (and those it joins with); repeatable.")(f)
    f = click.option("--backend", type=click.Choice(api.BACKENDS), default="pandas", show_default=True,
                     help="Which engine matches rule conditions (durable: durable_rules).")(f)
    f = click.option("--calibration", type=click.Path(path_type=Path),
                     help="Take population statistics (ranks, shares, means) from this saved calibration.")(f)
    return f


def _compute(policies: Path | None, data: Path | None, inputs: tuple[str, ...], fmt: str | None,
             progress: Progress | None = None, options: EngineOptions = EngineOptions()
             ) -> tuple[api.RunResult, dict[str, Path], dict[str, float]]:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    pl = api.compile_policies(_policy_dir(policies))
    if options.entities:
        for entity in options.entities:
            _check_entity(pl, entity)
        pl = pl.only(list(options.entities))
    calibration = calibrate.load(options.calibration) if options.calibration else None
    timings["compile"] = round(time.perf_counter() - t0, 4)
    given = _parse_inputs(inputs)
    if data is not None and not data.is_dir():
        raise _usage(f"data folder {data} does not exist", "pass --data DIR or --input ENTITY=FILE")
    files = api.find_inputs(pl, data, given)
    steps = 2 * len(pl.entities)
    task = progress.add_task("reading facts", total=steps) if progress else None

    def tick(what: str) -> Any:
        def _tick(entity: str) -> None:
            if progress is not None and task is not None:
                progress.update(task, advance=1, description=f"{what} {entity}")
        return _tick

    t0 = time.perf_counter()
    frames = api.read_inputs(pl, files, fmt, tick("read"))
    timings["read"] = round(time.perf_counter() - t0, 4)
    t0 = time.perf_counter()
    result = api.run(pl, frames, tick("decided"), backend=options.backend, calibration=calibration,
                     record_calibration=options.save_calibration is not None)
    timings["evaluate"] = round(time.perf_counter() - t0, 4)
    return result, files, timings


@main.command()
@click.option("--policies", type=click.Path(path_type=Path), help="Policy folder [default: policies/].")
@click.option("--data", type=click.Path(path_type=Path),
              help="Folder with one facts file per entity (customers.csv, quotes.parquet, ...) [default: examples/].")
@click.option("--input", "inputs", multiple=True, metavar="ENTITY=FILE", help="Facts file of one entity.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "jsonl"]),
              help="Format of the facts files (default: by extension).")
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Output folder: <entity>_decisions.<ext> and manifest.json.")
@click.option("--output-format", type=click.Choice(list(OUTPUT_FORMATS)), default="csv", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No summary table.")
@click.option("--save-calibration", type=click.Path(path_type=Path),
              help="Save this batch's population statistics, for `kam stream` and later runs.")
@_engine_options
def run(policies: Path | None, data: Path | None, inputs: tuple[str, ...], fmt: str | None, out: Path,
        output_format: str, quiet: bool, save_calibration: Path | None, entities: tuple[str, ...],
        backend: str, calibration: Path | None) -> None:
    """Decide every entity in the facts files and write decisions with explanations.

    \b
    Examples:
      kam run                                   shipped policies on the bundled examples
      kam run --data /data/2026-11 --out out/2026-11 --output-format parquet
      kam run --input customer=crm.parquet --input quote=quotes.jsonl --input prospect=leads.csv
      kam run --entity customer --backend durable --save-calibration out/calibration.json
    """
    console = Console(highlight=False)
    if data is None and not inputs:
        data = DEFAULT_DATA
    t_start = time.perf_counter()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True,
                        disable=not Console(stderr=True).is_terminal or quiet)
    try:
        with progress:
            options = EngineOptions(entities, backend, calibration, save_calibration)
            result, files, timings = _compute(policies, data, inputs, fmt, progress, options)
            t0 = time.perf_counter()
            paths = api.write_run(result, files, out, output_format, timings)
            timings["write"] = round(time.perf_counter() - t0, 4)
            if save_calibration is not None and result.calibration is not None:
                calibrate.save(result.calibration, save_calibration)
    except KamError as exc:
        _fail(exc)
        return
    rows = {e: len(f) for e, f in result.frames_in.items()}
    if not quiet:
        _summary(console, result.counts(), rows)
    for w in result.warnings():
        console.print(f"warning: {w}", markup=False)
    conflicts = result.conflicts()
    for c in conflicts:
        console.print(f"error: {c}", markup=False)
    written = ", ".join(str(p) for p in paths.values())
    console.print(f"wrote {written} and {out / 'manifest.json'} in {time.perf_counter() - t_start:.2f}s",
                  markup=False)
    if conflicts:
        sys.exit(1)


@main.command()
@click.argument("entity_id")
@click.option("--entity", help="Which entity the id belongs to (default: search all).")
@click.option("--policies", type=click.Path(path_type=Path), help="Policy folder [default: policies/].")
@click.option("--data", type=click.Path(path_type=Path), help="Facts folder [default: examples/].")
@click.option("--input", "inputs", multiple=True, metavar="ENTITY=FILE", help="Facts file of one entity.")
@click.option("--format", "out_fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--backend", type=click.Choice(api.BACKENDS), default="pandas", show_default=True,
              help="Which engine matches rule conditions.")
@click.option("--calibration", type=click.Path(path_type=Path),
              help="Take population statistics from this saved calibration.")
def explain(entity_id: str, entity: str | None, policies: Path | None, data: Path | None,
            inputs: tuple[str, ...], out_fmt: str, backend: str, calibration: Path | None) -> None:
    """Print the full trace for one entity: facts, features, every rule and why the winner won.

    Population functions (ranks, Pareto shares, quotas) need the whole batch, so the whole batch is
    evaluated and then the one entity is traced.

    \b
    Examples:
      kam explain 000123
      kam explain Q-00042 --entity quote --format json
    """
    if data is None and not inputs:
        data = DEFAULT_DATA
    try:
        options = EngineOptions((entity,) if entity else (), backend, calibration)
        result, _, _ = _compute(policies, data, inputs, None, options=options)
        trace = api.explain(result, entity_id, entity)
    except KamError as exc:
        _fail(exc)
        return
    if out_fmt == "json":
        click.echo(json.dumps(trace.to_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(trace.render_text(), nl=False)


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
    text = json.dumps(load_schema(), indent=2) + "\n"
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
