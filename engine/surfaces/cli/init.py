"""`kam init`: a new policy repository."""

from __future__ import annotations

from pathlib import Path

import click

from ...language.errors import KamError
from .common import fail


@click.command("init")
@click.argument("folder", required=False, type=click.Path(path_type=Path), default=Path("."))
@click.option("--starter", type=click.Choice(["shipped", "minimal"]), default="shipped", show_default=True,
              help="shipped: kam's own policy set (segmentation, retention, pricing, ...); minimal: one small "
              "policy to grow from.")
@click.option("--kam", "requirement", metavar="REQUIREMENT",
              help="How CI installs kam, as pip reads it, e.g. 'kam @ git+https://example.com/org/kam@<sha>' "
              "[default: where this kam comes from].")
def init(folder: Path, starter: str, requirement: str | None) -> None:
    """Make a policy repository in FOLDER (default: here): a starter policy set with its test cases,
    the schemas for editors, pre-commit hooks, a CI workflow (GitHub Actions) and a README for the
    people who edit the policies. `kam check` and `kam test` pass on it at once.

    \b
    Example:
      kam init customer-policies && cd customer-policies && kam check policies/ && kam test policies/
    """
    from ..scaffold import init as scaffold

    try:
        made = scaffold(folder, starter, requirement)
    except KamError as exc:
        fail(exc)
        return
    click.echo(f"wrote {len(made.files)} files into {folder}" + (" and made it a git repository" if made.git
                                                                   else ""), err=True)
    click.echo(f"CI installs {made.requirement} (requirements.txt)", err=True)
    click.echo(f"next: cd {folder} && kam check policies/ && kam test policies/", err=True)
