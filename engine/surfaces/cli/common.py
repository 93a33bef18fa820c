"""What the commands share: the defaults, how problems are printed and the process exits, how the
options that several commands take are read (facts files, formats, policy folders)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from ...language.errors import InputError, KamError, Location, Problem
from ..locales import unknown_locale

if TYPE_CHECKING:
    from rich.console import Console

    from ...batch.facts import FactsOptions
    from ...history.store import History
    from ...language.figures import Reader
    from ...language.plan import Plan
    from ...language.units import Unit

DEFAULT_POLICIES = Path("policies")
DEFAULT_DATA = Path("examples")
DEFAULT_OUT = Path("out")
BACKENDS = ("pandas", "durable")
FACTS_FORMATS = ("csv", "parquet", "jsonl", "xlsx")
OUTPUT_FORMATS = ("csv", "parquet", "jsonl", "xlsx")


def stderr() -> "Console":
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(exc: KamError, fmt: str = "text") -> None:
    if fmt == "json":
        click.echo(json.dumps({"ok": False, "problems": [p.to_dict() for p in exc.problems]}, indent=2,
                              ensure_ascii=False))
    else:
        for p in exc.problems:
            click.echo(p.render(), err=True)
        n = len([p for p in exc.problems if p.severity == "error"])
        click.echo(f"{n} error{'s' if n != 1 else ''}", err=True)
    sys.exit(exc.exit_code)


def usage(message: str, hint: str = "") -> InputError:
    return InputError(Problem("usage", message, Location("command line"), hint))


def policy_folder(path: Path | None, how: str = "--policies DIR") -> Path:
    path = path or DEFAULT_POLICIES
    if not path.is_dir():
        raise usage(f"policy folder {path} does not exist",
                     f"run inside the folder that holds policies/, or name the folder: {how}")
    return path


def check_entity(pl: "Plan", entity: str) -> None:
    """--entity names an entity of the policies (exit 2 with a suggestion otherwise)."""
    from ...run.service import check_entity as check

    check(pl, entity)

def data_folder(data: Path | None, inputs: tuple[str, ...]) -> Path | None:
    """Where the facts files not given by --input are: --data, else examples/ (where it exists, once
    some entity is given by --input)."""
    if data is not None:
        return data
    return DEFAULT_DATA if not inputs or DEFAULT_DATA.is_dir() else None


def parse_inputs(values: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for v in values:
        if "=" not in v:
            raise usage(f"--input {v!r} must look like ENTITY=FILE", "e.g. --input customer=data/customers.csv")
        entity, _, file = v.partition("=")
        out[entity.strip()] = Path(file.strip())
    return out


_DELIMITERS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def facts_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--facts-format, --encoding and --delimiter: how the facts files are read (run, explain, diff)."""
    f = click.option("--delimiter", default=",", show_default=True, metavar="CHAR",
                     help="Field separator of CSV facts: ',', ';', 'tab' or '|'.")(f)
    f = click.option("--encoding", default="utf-8", show_default=True,
                     help="Text encoding of CSV and JSON Lines facts, e.g. gb18030, utf-16, cp1252.")(f)
    f = click.option("--facts-format", type=click.Choice(FACTS_FORMATS),
                     help="Format of the facts files (default: by extension).")(f)
    return f


def read_options(facts_format: str | None, encoding: str, delimiter: str) -> "FactsOptions":
    from ...batch.facts import FactsOptions

    delimiter = _DELIMITERS.get(delimiter, delimiter)
    if len(delimiter) != 1:
        raise usage(f"--delimiter {delimiter!r} must be one character", "e.g. --delimiter ';' or --delimiter tab")
    try:
        "".encode(encoding)
    except LookupError:
        raise usage(f"unknown encoding {encoding!r}", "e.g. --encoding utf-8, gb18030, utf-16, cp1252") from None
    return FactsOptions(facts_format, encoding, delimiter)


def locale_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--locale: the locale the figures a command shows people are written in (checked at once, before
    any work: a typo must not wait for the end of a long run)."""
    return click.option("--locale", metavar="LOCALE", callback=_checked_locale,
                        help="Write the figures for readers of this locale, e.g. zh_CN (1,234,567.89, ¥1234.6万), "
                        "de_DE (1.234.567,89) [default: the policies' `locale:`, else en_US].")(f)


def _checked_locale(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from ...language.figures import known_locale

    if value is not None and not known_locale(value):
        fail(unknown_locale(value))
    return value


def summary_tables(counts: dict[str, dict[str, dict[str, int]]], rows: dict[str, int],
                   measures: dict[str, dict[str, Any]] | None = None, reader: "Reader | None" = None,
                   units: "dict[str, dict[str, Unit]] | None" = None) -> None:
    """The table `kam run` prints: per entity its measures (each by its unit, money with the currency
    in its label) and per decision the count and share of each value, in the reader's locale."""
    from rich.console import Console
    from rich.table import Table

    from ...language.figures import reader as locale_reader
    from ...language.units import COUNT, MONEY, PERCENT, PLAIN, Unit

    figures = reader or locale_reader(None)
    count, percent = Unit(COUNT), Unit(PERCENT)
    console = Console(highlight=False)
    for entity, values_ in (measures or {}).items():
        known = (units or {}).get(entity, {})
        table = Table(title=f"{entity}: measures", title_justify="left", show_lines=False)
        table.add_column("measure")
        table.add_column("value", justify="right")
        for name, value in values_.items():
            unit = known.get(name, PLAIN)
            shown = ("true" if value else "false") if isinstance(value, bool) else figures.number(value, unit)
            # the currency goes in the label; a share shows its % itself
            table.add_row(figures.label(name, unit) if unit.kind == MONEY else name, shown)
        console.print(table)
    for entity, decisions in counts.items():
        n = rows[entity]
        table = Table(title=f"{entity}: {figures.number(n, count)} decided", title_justify="left", show_lines=False)
        table.add_column("decision")
        table.add_column("value")
        table.add_column("count", justify="right")
        table.add_column("share", justify="right")
        for name, values in decisions.items():
            first = True
            for value, k in values.items():
                table.add_row(name if first else "", value, figures.number(k, count),
                              figures.number(k / n, percent) if n else "-")
                first = False
        console.print(table)


def formula_warnings(manifest: dict[str, Any]) -> list[str]:
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


def csv_text(frame: Any, excel: bool) -> "tuple[str, Any]":
    """A table as kam writes CSV files (quoting, numbers, formula cells), as text."""
    import io

    from ...batch.write import write_csv

    buffer = io.BytesIO()
    written = write_csv([frame], buffer, excel)
    return ("\ufeff" if excel else "") + buffer.getvalue().decode("utf-8"), written


def open_history(path: Path) -> "History":
    """A history opened for reading; what opening it settled (a period a stopped run left) is said."""
    from ...history.store import History

    h = History.open(path)
    for note in h.notes:
        click.echo(f"note: {note}", err=True)
    return h


def emit(doc: dict[str, Any], text: str, out_fmt: str) -> None:
    """What `kam explain` and `kam history` print: the JSON document or the text."""
    if out_fmt == "json":
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(text, nl=False)


