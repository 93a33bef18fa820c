"""`kam schema`: the JSON Schema of policy files, for editors."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("schema")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema of policy files (for editors with a YAML language server).

    \b
    Example:
      kam schema -o policy.schema.json
    and at the top of a policy file:
      # yaml-language-server: $schema=../schemas/policy.schema.json
    """
    from ...language.validate import load_schema

    text = json.dumps(load_schema(), indent=2) + "\n"
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)
