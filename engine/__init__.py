"""kam: a policy engine for key-account management.

Policies in YAML decide tiers, prospects, retention, pricing and treatment over customer tables,
with explanations. The pipeline stages are modules named after them: load, validate, parse,
typecheck, plan, evaluate, explain, write; `api` wires them together, `cli` is the command line and
`notebook` the Python API (`engine.load_policies`, `engine.check`).
"""

from typing import Any

from .language.version import __version__

__all__ = ["__version__", "load_policies", "check", "Policies", "Decisions", "Explanation", "InvariantError",
           "KamError", "PolicyError", "InputError", "Problem"]

# The Python API (engine/notebook.py), loaded on first use: `kam --help` does not need pandas.
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
