"""Optional dependencies: which extra of the `kam` package brings each, and the error when one is missing.

The core package (check, test, diff, run, explain, stream) needs none of them, so policy checks
install light (the pre-commit hooks install only the core). A command that needs an extra says
which one to install (exit 2) before it does any work, never with an ImportError traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..language.errors import InputError, Location, Problem

# module -> (extra, what it is for)
EXTRAS: dict[str, tuple[str, str]] = {
    "duckdb": ("history", "the decision history (--history, kam history, kam changes)"),
    "matplotlib": ("report", "the portfolio report's charts (kam report, kam run --report)"),
    "xlsxwriter": ("excel", "writing Excel workbooks (--output-format xlsx)"),
    "python_calamine": ("excel", "reading Excel workbooks (.xlsx facts)"),
    "dask.distributed": ("dask", "the Dask engine (kam run --engine dask)"),
    "starlette": ("studio", "the studio page (kam studio)"),
    "uvicorn": ("studio", "the studio page's local server (kam studio)"),
}


def need(module: str) -> ModuleType:
    """Import an optional dependency, or raise an InputError naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra, what = EXTRAS[module]
        raise InputError(Problem(
            "missing-extra", f"{what} needs the Python package `{module.split('.')[0]}`, which is not installed",
            Location("command line"),
            f"install kam with it: pip install 'kam[{extra}]' (from a clone: pip install -e '.[{extra}]'), "
            "or kam[all] for everything")) from None
