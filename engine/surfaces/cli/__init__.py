"""The `kam` command line: a thin shell over the run service (`engine.run.service`) and the other
layers, a module per command or command group. Errors are printed here, once.

Exit codes: 0 ok, 1 policy errors or failed checks, 2 usage or input errors. Results go to stdout;
diagnostics (warnings, progress, the `wrote ...` line) go to stderr, never wrapped when piped.
The data libraries are imported by the commands that need them, so `kam check` starts quickly.
"""

from __future__ import annotations

import os

import click

# Arrow's buffers from the C library's allocator, not Arrow's own (mimalloc): freed buffers of a big
# run (decoded files, a slice's texts) then go back to the system instead of being kept for reuse.
# At 1M customers `kam run` took 4.9 s and 0.92 GiB instead of 5.4 s and 1.0 GiB. Before pyarrow is
# imported; a user's own ARROW_DEFAULT_MEMORY_POOL wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from ...language.version import __version__
from .allocator import tune_allocator
from .check import check
from .diff import diff_command
from .explain import explain
from .history import changes_command, history_command
from .init import init
from .report import report_command
from .run import run
from .schema import schema
from .stream import stream_command
from .studio import studio
from .tables import export_command, import_command
from .test import test_command


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


for _command in (check, test_command, diff_command, stream_command, run, explain, report_command, history_command,
                 changes_command, studio, export_command, import_command, schema, init):
    main.add_command(_command)


def entry() -> None:
    """The `kam` command's own process: the C library's allocator set for a batch process before a
    command imports the data libraries and they start their threads, then the command line. (A
    process that calls `main` itself, a test runner or a notebook, keeps its allocator.)"""
    tune_allocator()
    main()


if __name__ == "__main__":  # pragma: no cover
    entry()
