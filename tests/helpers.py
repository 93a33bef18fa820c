"""Build and run small policy sets in-process (the stages, not the CLI)."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from engine.run import service as api
from engine.run import inputs as run_inputs
from engine.language.compile import compile_policies
from engine.batch.explain import output_frame


def compile_text(tmp: Path, *texts: str):
    folder = tmp / "p"
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (folder / f"p{i}.yaml").write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return compile_policies(folder)


def decide(tmp: Path, policy: str, frame: pd.DataFrame, entity: str = "customer", *more: str) -> pd.DataFrame:
    """Compile the policy, run it on the frame (typed by the declared facts) and return the output."""
    pl = compile_text(tmp, policy, *more)
    path = tmp / f"{entity}.csv"
    frame.to_csv(path, index=False)
    frames = run_inputs.read_inputs(pl, {entity: path})
    result = api.run(pl, frames)
    return output_frame(result.results[entity])


def at_once(ask: Callable[[], Any], threads: int) -> list[Any]:
    """`ask()` in several threads released together (a race, on purpose); what each got."""
    start = threading.Barrier(threads)
    got: list[Any] = []

    def run() -> None:
        start.wait()
        got.append(ask())

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return got
