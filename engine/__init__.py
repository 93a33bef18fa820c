"""kam: a policy engine for key-account management.

Policies in YAML decide tiers, prospects, retention, pricing and treatment over customer tables,
with explanations. The packages are the layers, each importing only those below it (a test holds
them to it):

    language   policy text -> checked plan (no data libraries)
    batch      the plan over a table: read facts, evaluate, explain, write
    analysis   what holds for any portfolio: rule analysis, invariant proofs
    history    the decision history and the questions asked of it
    engines    durable_rules, `kam stream`, calibrations, Dask
    run        the run service every surface calls
    surfaces   the CLI, the Python API, the HTML report, `kam test`, `kam diff`

This module is the documented Python API (`engine.load_policies`, `engine.check`), loaded on first use.
"""

from typing import Any

from .language.version import __version__

__all__ = ["__version__", "load_policies", "check", "Policies", "Decisions", "Explanation", "InvariantError",
           "KamError", "PolicyError", "InputError", "Problem"]

# The Python API (engine/surfaces/python_api.py), loaded on first use: `kam --help` does not need pandas.
_API = {"load_policies", "check", "Policies", "Decisions", "Explanation", "InvariantError"}
_ERRORS = {"KamError", "PolicyError", "InputError", "Problem"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from .surfaces import python_api as notebook

        return getattr(notebook, name)
    if name in _ERRORS:
        from .language import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
