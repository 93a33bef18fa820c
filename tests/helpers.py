"""Build and run small policy sets in-process (the stages, not the CLI)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from engine import api
from engine.explain import output_frame


def compile_text(tmp: Path, *texts: str):
    folder = tmp / "p"
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (folder / f"p{i}.yaml").write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return api.compile_policies(folder)


def decide(tmp: Path, policy: str, frame: pd.DataFrame, entity: str = "customer", *more: str) -> pd.DataFrame:
    """Compile the policy, run it on the frame (typed by the declared facts) and return the output."""
    pl = compile_text(tmp, policy, *more)
    path = tmp / f"{entity}.csv"
    frame.to_csv(path, index=False)
    frames = api.read_inputs(pl, {entity: path})
    result = api.run(pl, frames)
    return output_frame(result.results[entity])
