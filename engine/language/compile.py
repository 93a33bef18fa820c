"""The policy language's stages in one call: load -> validate -> parse -> type-check -> plan.

The language imports no data library, so the commands that only look at policies, like `kam check`,
start without loading them.
"""

from __future__ import annotations

from pathlib import Path

from .load import LocatedDoc, load_policy_dir
from .parse import parse_policy_set
from .plan import Plan, plan
from .typecheck import typecheck
from .validate import validate


def compile_policies(policy_dir: Path) -> Plan:
    """load -> validate -> parse -> type-check -> plan. Raises PolicyError with every problem found."""
    return compile_docs(load_policy_dir(policy_dir), str(policy_dir))


def compile_docs(docs: list[LocatedDoc], directory: str) -> Plan:
    """The stages after loading, for policy texts from anywhere (a folder, a git revision)."""
    policy_set = validate(docs, directory)
    policy_set = parse_policy_set(policy_set)
    return plan(typecheck(policy_set))
