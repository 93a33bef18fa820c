"""Shared helpers: policy folders in tmp_path, facts files, and the real `kam` command."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
KAM = Path(sys.executable).parent / "kam"


def kam(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `kam` entry point, as a user would."""
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([str(KAM), *args], cwd=cwd or ROOT, capture_output=True, text=True, env=env,
                          timeout=120, input=stdin)


def write_policy(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    return tmp_path / "policies"
