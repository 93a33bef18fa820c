"""`kam studio`: the policy editor page, served on this machine."""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path

import click

from ...language.errors import KamError
from ..locales import figures_reader
from .common import data_folder, facts_options, fail, locale_option, parse_inputs, read_options, usage

LOCAL = ("127.0.0.1", "localhost", "::1")


def _port(host: str, port: int) -> int:
    """The port to listen on (a free one for 0), refused before anything is printed when it cannot be."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
            return int(s.getsockname()[1])
    except (OSError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise usage(f"cannot listen on {host}:{port}: {reason}",
                    "leave out --port to take a free one; --host is an address of this machine") from None


@click.command("studio")
@click.argument("policy_dir", required=False, type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), help="Facts folder [default: examples/].")
@click.option("--input", "inputs", multiple=True, metavar="ENTITY=FILE", help="Facts file of one entity.")
@click.option("--history", "history_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Read the earlier periods previous() looks at from this history (nothing is recorded).")
@click.option("--period", metavar="LABEL", help="The period the facts are of: previous() reads the recorded ones "
              "before it [default: after the last recorded one].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; another than this machine's own still needs the token.")
@click.option("--port", type=int, default=0, help="Port [default: a free one].")
@click.option("--no-browser", is_flag=True, help="Print the address only; do not open a browser.")
@locale_option
@facts_options
def studio(policy_dir: Path | None, data: Path | None, inputs: tuple[str, ...], history_path: Path | None,
           period: str | None, host: str, port: int, no_browser: bool, locale: str | None, facts_format: str | None,
           encoding: str, delimiter: str) -> None:
    """Edit the policies in a browser and see their impact on the portfolio before saving.

    Starts a local web server and prints its address (with a random token that every request must
    carry); opens it in a browser where there is one. The page shows every policy in its own words,
    its cutoffs as controls and its decisions as tables; every change is checked as `kam check`
    checks it, and the transition matrix with the money, the movers, the measures, the shares against
    the target, the invariants and the test cases follow it live. Saving writes only the edited
    values (every comment and blank line stays) and can commit the change on a new git branch.
    Ctrl-C stops it.

    \b
    Examples:
      kam studio
      kam studio policies --data examples/periods/2026-11 --history history.duckdb --period 2026-11
      kam studio policies --input customer=crm.xlsx --no-browser
      kam studio --locale zh_CN             the page's figures as a reader in China writes them
    """
    from ...batch.extras import need
    from ...run.workspace import Workspace

    try:
        need("starlette")
        uvicorn = need("uvicorn")
        folder = policy_dir or Path("policies")
        if not folder.is_dir():
            raise usage(f"policy folder {folder} does not exist", "name the folder: kam studio POLICY_DIR")
        if period is not None and history_path is None:
            raise usage("--period needs --history FILE: the history the earlier periods come from")
        if history_path is not None:
            need("duckdb")
            if not history_path.exists():
                raise usage(f"history {history_path} does not exist", "record one with kam run --history FILE")
        port = _port(host, port)
        click.echo("loading the policies and the portfolio…", err=True)
        ws = Workspace(folder, data_folder(data, inputs), parse_inputs(inputs),
                       read_options(facts_format, encoding, delimiter), history_path, period)
        ws.warm_up()
        figures = figures_reader(locale, ws.plan.checked.policy_set)
    except KamError as exc:
        fail(exc)
        return
    from ..studio.app import make_app

    token = secrets.token_urlsafe(24)
    shown = f"[{host}]" if ":" in host else host
    hosts = tuple(f"{h}:{port}" for h in (LOCAL + ("[::1]",))) if host in LOCAL else ()
    url = f"http://{shown}:{port}/?token={token}"
    click.echo(f"kam studio: {folder} on {', '.join(f'{n} {e}s' for e, n in ws.summary(figures).items())}", err=True)
    click.echo(f"open {url}", err=False)
    click.echo("(Ctrl-C stops the server; nothing is saved unless you press Save in the page)", err=True)
    sys.stdout.flush()
    # a terminal without a display would get a text browser in its place: only open a real one
    if not no_browser and (sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY")
                           or os.environ.get("WAYLAND_DISPLAY")):
        import webbrowser

        try:
            webbrowser.open(url)
        except webbrowser.Error:
            pass
    uvicorn.run(make_app(ws, token, hosts, figures), host=host, port=port, log_level="warning")
