"""`kam schema`: the JSON Schemas of policy files and test-case files, for editors."""

from __future__ import annotations

from pathlib import Path

import click

from ...language.errors import KamError
from .common import fail, usage


@click.command("schema")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
@click.option("--tests", "tests_schema", is_flag=True, help="The schema of test-case files (kam test) instead.")
@click.option("--write", "folder", type=click.Path(path_type=Path), metavar="DIR",
              help="Write both schemas into DIR (policy.schema.json, tests.schema.json), where modelines find them.")
def schema(output: Path | None, tests_schema: bool, folder: Path | None) -> None:
    """Print the JSON Schema of policy files (for editors with a YAML language server).

    \b
    Examples:
      kam schema -o policy.schema.json
      kam schema --write schemas/
    and at the top of a policy file (policies/*.yaml) and of a test file (policies/tests/*.yaml):
      # yaml-language-server: $schema=../schemas/policy.schema.json
      # yaml-language-server: $schema=../../schemas/tests.schema.json
    """
    from ...batch.write import write_text_atomic
    from ...language.validate import SCHEMA_NAME, TESTS_SCHEMA_NAME, schema_path

    name = TESTS_SCHEMA_NAME if tests_schema else SCHEMA_NAME
    try:
        if folder is not None:
            if output is not None or tests_schema:
                raise usage("--write writes both schemas; it takes no -o or --tests")
            if folder.exists() and not folder.is_dir():
                raise usage(f"--write {folder} is a file", "give a folder, e.g. --write schemas/")
            folder.mkdir(parents=True, exist_ok=True)
            for each in (SCHEMA_NAME, TESTS_SCHEMA_NAME):
                write_text_atomic(folder / each, schema_path(each).read_text(encoding="utf-8"))
                click.echo(f"wrote {folder / each}", err=True)
            return
        text = schema_path(name).read_text(encoding="utf-8")
        if output:
            write_text_atomic(output, text)
        else:
            click.echo(text, nl=False)
    except OSError as exc:
        fail(usage(f"cannot write the schema: {exc.strerror or exc}"))
    except KamError as exc:
        fail(exc)
