"""kam: a policy engine for key-account management.

Policies in YAML decide tiers, prospects, retention, pricing and treatment over customer tables,
with explanations. The pipeline stages are modules named after them: load, validate, parse,
typecheck, plan, evaluate, explain, write; `api` wires them together and `cli` is the command line.
"""

__version__ = "0.1.0"
