"""`kam init`: a policy repository that works at once. A starter policy set with its test cases, the
schemas where the files' modelines find them, pre-commit hooks, a CI workflow and a README for the
people who edit the policies. Everything is written, or nothing: no file is overwritten."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..language.errors import InputError, Location, Problem
from ..language.validate import SCHEMA_NAME, TESTS_SCHEMA_NAME, schema_path
from ..language.version import __version__

STARTERS = ("shipped", "minimal")

MINIMAL_POLICY = """\
# yaml-language-server: $schema=../schemas/policy.schema.json
#
# Customer tiers by their share of profit: a starting point to edit. Run `kam check policies/`
# after every change, and `kam test policies/` to see that the cases in tests/ still hold.
policy: tiers
entity: customer
description: Key accounts are the customers who bring most of the profit.

facts:
  customer_id: {type: string, key: true, description: "Customer number; text, leading zeros kept"}
  profit:      {type: number, measure: true, decimals: 2, description: "Profit of the last 12 months"}
  credit_score: {type: number, min: 0, max: 100, description: "Credit score from 0 to 100"}

params:
  key_share: 80%        # key accounts bring this share of profit ...
  key_min_credit: 60    # ... and have at least this credit score

derive:
  profit_share: cumshare(profit)

decisions:
  tier:
    description: Which tier the customer is in.
    hit: first
    values: [key, standard, loss]
    rules:
      - id: key-account
        when: profit_share <= key_share and credit_score >= key_min_credit
        then: key
        because: "among the customers who bring {key_share:.0%} of profit ({profit_share:.1%})"
      - id: loss-maker
        when: profit < 0
        then: loss
        because: "loses money: {profit:,.0f}"
      - id: standard
        then: standard
        because: "neither a key account nor a loss-maker"

invariants:
  - id: key-accounts-are-creditworthy
    never: "tier == 'key' and credit_score < key_min_credit"
    because: key accounts get credit terms
"""

MINIMAL_TESTS = """\
# yaml-language-server: $schema=../../schemas/tests.schema.json
#
# Test cases for tiers.yaml: run with `kam test policies/`.
cases:
  - name: the customers who bring 80% of profit are key accounts, loss-makers are loss
    customer:
      - {customer_id: "001", profit: 70000, credit_score: 70}
      - {customer_id: "002", profit: 20000, credit_score: 70}
      - {customer_id: "003", profit: 10000, credit_score: 70}
      - {customer_id: "004", profit: -5000, credit_score: 70}
    expect:
      customer:
        "001": {tier: {value: key, rule: key-account}}
        "002": {tier: standard}
        "003": {tier: standard}
        "004": {tier: {value: loss, rule: loss-maker, because: "loses money: -5,000"}}
"""

PRE_COMMIT = """\
# kam's checks before every commit: `pip install pre-commit && pre-commit install` once, then
# they run on each `git commit` (and `pre-commit run --all-files` runs them now). They use the kam
# installed where pre-commit runs; to have pre-commit install kam itself, use kam's own hooks
# instead (see its README, "Checking policies in another repository").
repos:
  - repo: local
    hooks:
      - id: kam-check
        name: kam check (policy files)
        entry: kam check --strict policies/
        language: system
        files: \\.ya?ml$
        pass_filenames: false
      - id: kam-test
        name: kam test (policy test cases)
        entry: kam test policies/ --min-coverage 100
        language: system
        files: \\.ya?ml$
        pass_filenames: false
"""

WORKFLOW = """\
# Every pull request: the policies checked and their test cases run, with the problems as
# annotations on the changed lines.
name: policies
on:
  pull_request:
  push:
    branches: [main]
permissions:
  contents: read
jobs:
  kam:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
          cache: pip
          cache-dependency-path: requirements.txt
      - run: pip install -r requirements.txt
      - run: kam check policies/ --strict --format github
      - run: kam test policies/ --min-coverage 100 --format github
"""

GITIGNORE = """\
out/
.venv/
__pycache__/
"""

README = """\
# Policies

The customer policies of this team, as [kam](https://pypi.org/project/kam/) policy files: which
tier each customer is in, and why. They are plain text (YAML), reviewed like any other change.

## Editing a policy

- The files are in `policies/`, one per policy; their test cases are in `policies/tests/`.
- Open the folder in an editor with YAML support (VS Code with the YAML extension): a misspelt key
  is underlined as you type and every key explains itself when you point at it (the first line of
  each file tells the editor where the schemas are: `schemas/`).
- To move a cutoff, change its number under `params:`. The rules and the reasons they give both
  read it from there.

## Checking a change

```sh
pip install -r requirements.txt
kam check policies/          # spelling, types, rules that can never fire; proves the guarantees
kam test policies/           # the test cases: what must stay true
```

`pip install pre-commit && pre-commit install` runs both before every commit. The workflow in
`.github/workflows/policies.yml` runs them on every pull request.
"""


@dataclass(frozen=True)
class Written:
    """What `kam init` made: the folder, its files, and whether it made the git repository too."""

    folder: Path
    files: list[Path]
    git: bool
    requirement: str


def kam_requirement() -> str:
    """How the new repository installs this kam: from the git repository and commit it runs from,
    where that repository has a remote to fetch from; else by its version."""
    source = str(Path(__file__).resolve().parents[2])

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", "-C", source, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    remote, commit = git("remote", "get-url", "origin"), git("rev-parse", "HEAD")
    if remote and "://" not in remote and not remote.startswith("git@"):
        remote = Path(remote).resolve().as_uri()  # a clone of a folder: pip reads it as file:// only
    return f"kam @ git+{remote}@{commit}" if remote and commit else f"kam=={__version__}"


def _starter(starter: str) -> dict[str, str]:
    """The policy files and test files of a starter, as relative path: text."""
    if starter == "minimal":
        return {"policies/tiers.yaml": MINIMAL_POLICY, "policies/tests/tiers.yaml": MINIMAL_TESTS}
    shipped = schema_path(SCHEMA_NAME).parents[1] / "policies"
    if not shipped.is_dir():
        raise InputError(Problem("init", f"the shipped policies are not installed (looked in {shipped})",
                                 Location("command line"), "use --starter minimal"))
    files = sorted(shipped.glob("*.yaml")) + sorted((shipped / "tests").glob("*.yaml"))
    return {str(f.relative_to(shipped.parent)): f.read_text(encoding="utf-8") for f in files}


def init(folder: Path, starter: str = "shipped", requirement: str | None = None) -> Written:
    """Write a policy repository into `folder` (created if needed); refuse if any of its files exist."""
    requirement = requirement or kam_requirement()
    files = {**_starter(starter),
             f"schemas/{SCHEMA_NAME}": schema_path(SCHEMA_NAME).read_text(encoding="utf-8"),
             f"schemas/{TESTS_SCHEMA_NAME}": schema_path(TESTS_SCHEMA_NAME).read_text(encoding="utf-8"),
             ".pre-commit-config.yaml": PRE_COMMIT,
             ".github/workflows/policies.yml": WORKFLOW,
             "requirements.txt": f"# kam, as the CI workflow installs it\n{requirement}\n",
             ".gitignore": GITIGNORE,
             "README.md": README}
    if folder.exists() and not folder.is_dir():
        raise InputError(Problem("init", f"{folder} is a file", Location("command line"), "give a folder"))
    there = [name for name in files if (folder / name).exists()]
    if there:
        raise InputError(Problem("init", f"{folder} already holds {', '.join(there[:5])}"
                                 + (f" and {len(there) - 5} more" if len(there) > 5 else ""),
                                 Location("command line"), "run kam init in a new or empty folder"))
    written = []
    try:
        for name, text in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as exc:
        for path in written:  # all or nothing
            path.unlink(missing_ok=True)
        raise InputError(Problem("init", f"cannot write into {folder}: {exc.strerror or exc}",
                                 Location("command line"))) from None
    made_git = False
    if shutil.which("git") and subprocess.run(["git", "-C", str(folder), "rev-parse", "--is-inside-work-tree"],
                                              capture_output=True, timeout=10).returncode != 0:
        made_git = subprocess.run(["git", "init", "-q", str(folder)], capture_output=True,
                                  timeout=30).returncode == 0
    return Written(folder, written, made_git, requirement)

