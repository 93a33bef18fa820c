"""`kam run`: decide every entity and write the output set. Only options and printing live here; the
run itself is `engine.run.service.run_and_write` (or `run_on_dask`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from ...language.errors import KamError
from ..locales import figures_reader
from .common import (BACKENDS, DEFAULT_DATA, DEFAULT_OUT, FACTS_FORMATS, OUTPUT_FORMATS, data_folder, facts_options,
                     fail, formula_warnings, locale_option, parse_inputs, policy_folder, read_options,
                     stderr, summary_tables, usage)

if TYPE_CHECKING:
    from rich.progress import Progress

    from ...language.plan import Plan
    from ...run.service import InvariantsBroken, RunDone


def engine_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--entity, --backend and --calibration, and how facts are read: what `run` and `explain` share."""
    f = click.option("--entity", "entities", multiple=True,
                     help="Only this entity (and those it joins with); repeatable.")(f)
    f = click.option("--backend", type=click.Choice(BACKENDS), default="pandas", show_default=True,
                     help="Which engine matches rule conditions (durable: durable_rules).")(f)
    f = click.option("--calibration", type=click.Path(path_type=Path),
                     help="Take population statistics (ranks, shares, means) from this saved calibration.")(f)
    return facts_options(f)


class _Bar:
    """The run's progress as a bar (on a terminal only): reading, deciding, explaining and writing."""

    def __init__(self, bar: "Progress"):
        self.bar = bar
        self.task: Any = None

    def start(self, total: int) -> None:
        self.task = self.bar.add_task("reading facts", total=total)

    def step(self, what: str) -> None:
        self.bar.update(self.task, advance=1, description=what)


def refuse_broken(exc: "InvariantsBroken") -> None:
    """Broken invariants without --allow-violations: say which; nothing was written; exit 1."""
    err = stderr()
    for report_ in exc.reports:
        err.print(f"error: {report_.text()}", markup=False)
    err.print(exc.summary, markup=False)
    sys.exit(1)


@click.command("run")
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
              "e.g. tcp://10.0.0.5:8786 (the data and --out must be on storage every worker sees) [default: "
              "Dask's configuration, e.g. DASK_SCHEDULER_ADDRESS; else a local cluster].")
@click.option("--scheduler-file", type=click.Path(path_type=Path), metavar="FILE",
              help="With --engine dask: the file a scheduler wrote its address into (dask-jobqueue, dask-mpi).")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True,
              help="With --engine dask and no scheduler given: worker processes of the local cluster.")
@click.option("--worker-memory", default="2GiB", show_default=True,
              help="With --engine dask and no scheduler given: the memory limit of each local worker.")
@click.option("--threads-per-worker", type=click.IntRange(1), default=1, show_default=True,
              help="With --engine dask and no scheduler given: threads of each local worker.")
@locale_option
@engine_options
def run(policies: Path | None, data: Path | None, inputs: tuple[str, ...], old_format: str | None, out: Path,
        output_format: str | None, csv_bom: bool, quiet: bool, save_calibration: Path | None, allow_violations: bool,
        history_path: Path | None, period: str | None, replace: bool, report_path: Path | None,
        engine: str, scheduler: str | None, scheduler_file: Path | None, workers: int, worker_memory: str,
        threads_per_worker: int, locale: str | None, entities: tuple[str, ...], backend: str,
        calibration: Path | None, facts_format: str | None, encoding: str, delimiter: str) -> None:
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
      kam run --locale zh_CN                    the summary's figures as a reader in China writes them
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ...run import service
    from .. import report

    err = stderr()
    if engine == "dask":
        refused = [flag for flag, given in (("--history", history_path), ("--report", report_path),
                                            ("--save-calibration", save_calibration), ("--calibration", calibration),
                                            ("--backend durable", backend == "durable"), ("--csv-bom", csv_bom))
                   if given]
        if output_format not in (None, "parquet"):
            refused.append(f"--output-format {output_format}")
        if refused:
            fail(usage(f"--engine dask does not take {', '.join(refused)}",
                       "it writes partitioned Parquet; run those with the pandas engine"))
            return
        cluster = {"scheduler": scheduler, "scheduler_file": scheduler_file, "workers": workers,
                   "worker_memory": worker_memory, "threads_per_worker": threads_per_worker}
        _run_on_dask(policies, data or (None if inputs else DEFAULT_DATA), inputs, out, quiet, allow_violations,
                     cluster, entities, read_options_or_fail(facts_format, encoding, delimiter), locale)
        return
    for flag, given in (("--scheduler", scheduler), ("--scheduler-file", scheduler_file)):
        if given is not None:
            fail(usage(f"{flag} is for --engine dask"))
            return
    output_format = output_format or "csv"
    if old_format is not None:
        err.print("note: `kam run --format` is now `--facts-format` (the old spelling still works)", markup=False)
        facts_format = facts_format or old_format
    try:
        if history_path is not None and period is None:
            raise usage("--history needs --period: the label of the period this run decides",
                        "e.g. --period 2026-11 (labels must sort in time order)")
        if period is not None and history_path is None:
            raise usage("--period needs --history FILE: the history the period is recorded in")
        if replace and history_path is None:
            raise usage("--replace needs --history FILE and --period LABEL")
        if csv_bom and output_format != "csv":
            raise usage("--csv-bom is for --output-format csv", "Excel reads xlsx, Parquet and JSON Lines as UTF-8")
        facts = read_options(facts_format, encoding, delimiter)
        request = service.RunRequest(
            policy_folder(policies), data_folder(data, inputs), parse_inputs(inputs), out, output_format, csv_bom,
            entities, backend, facts, calibration, save_calibration, allow_violations, history_path, period, replace,
            report_path, render_report=lambda result: report.render(result, locale=locale,
                                                                        period=period))
        bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                       console=err, transient=True, disable=not err.is_terminal or quiet)
        with bar:
            done = service.run_and_write(request, _Bar(bar))
    except service.InvariantsBroken as exc:
        refuse_broken(exc)
        return
    except KamError as exc:
        fail(exc)
        return
    _tell(done, quiet, out, history_path, period, locale, report_path)


def _summary(plan: "Plan", counts: dict[str, Any], rows: dict[str, int], measures: dict[str, dict[str, Any]],
             locale: str | None) -> None:
    """The summary table, its figures by their units in the reader's locale (--locale, else the policies')."""
    from ...language.units import units_of

    ps = plan.checked.policy_set
    summary_tables(counts, rows, measures, figures_reader(locale, ps), {e: units_of(ps, e) for e in measures})


def _tell(done: "RunDone", quiet: bool, out: Path, history_path: Path | None, period: str | None,
          locale: str | None = None, report_path: Path | None = None) -> None:
    """What a run says: the summary (standard output), warnings, notes and the files written (standard
    error); exit 1 where rows matched several rules of a unique decision (written anyway, listed)."""
    err = stderr()
    result = done.result
    if not quiet:
        _summary(result.plan, result.counts(), {e: len(f) for e, f in result.frames_in.items()}, result.measures(),
                 locale)
    for join in result.joins():
        if join.mostly_unmatched:
            err.print(f"\nwarning: {join.alarm()}\n", markup=False, style="bold")
        elif not quiet:
            err.print(f"warning: {join.text()}", markup=False)
    if not quiet:
        for line in formula_warnings(done.manifest):
            err.print(line, markup=False)
    conflicts = result.conflicts()
    for c in conflicts:
        err.print(f"error: {c}", markup=False)
    for report_ in result.violations():  # written anyway: --allow-violations
        err.print(f"warning: {report_.text()} (written because of --allow-violations)", markup=False)
    if not quiet:
        for note in done.notes:
            err.print(f"note: {note}", markup=False)
        written = ", ".join(dict.fromkeys(str(p) for p in done.paths.values()))
        recorded = f"; recorded period {period} in {history_path}" if history_path is not None else ""
        reported = f"; the report {report_path}" if report_path is not None else ""
        err.print(f"wrote {written} and {out / 'manifest.json'}{reported}{recorded} in {done.seconds:.2f}s",
                  markup=False)
    if conflicts:
        sys.exit(1)


def read_options_or_fail(facts_format: str | None, encoding: str, delimiter: str) -> Any:
    """How facts are read, or the usage error said and exit 2."""
    try:
        return read_options(facts_format, encoding, delimiter)
    except KamError as exc:
        fail(exc)


def _run_on_dask(policies: Path | None, data: Path | None, inputs: tuple[str, ...], out: Path, quiet: bool,
                 allow_violations: bool, cluster: dict[str, Any], entities: tuple[str, ...], facts: Any,
                 locale: str | None = None) -> None:
    """`kam run --engine dask`: partitions evaluated on a cluster, one output set swapped in as usual, with
    the passes and partitions done on a progress bar and the cluster's dashboard address."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ...run import service

    err = stderr()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True, disable=not err.is_terminal or quiet)
    task = bar.add_task("starting the cluster", total=None)

    def ready(dashboard: str | None) -> None:
        if dashboard and not quiet:
            bar.console.print(f"dashboard: {dashboard}", markup=False, highlight=False)

    def part(what: str, done: int, total: int) -> None:
        bar.update(task, description=f"{what}: partitions", completed=done, total=total)

    try:
        request = service.DaskRequest(policy_folder(policies), data, parse_inputs(inputs), out, entities, facts,
                                      allow_violations, **cluster)
        with bar:
            done = service.run_on_dask(request, ready, part)
    except service.InvariantsBroken as exc:
        refuse_broken(exc)
        return
    except KamError as exc:
        fail(exc)
        return
    if not quiet:
        merged = done.merged
        _summary(done.plan, merged["counts"], merged["rows"], merged["measures"], locale)
        for w in merged["warnings"]:
            err.print(f"warning: {w}", markup=False)
        for note in done.notes:
            err.print(f"note: {note}", markup=False)
        err.print(f"wrote {', '.join(str(out / o['path']) for o in merged['outputs'])} and {out / 'manifest.json'} "
                  f"in {done.seconds:.2f}s", markup=False)
