"""Shared helpers: policy folders in tmp_path, facts files, and the real `kam` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

# The tests run in parallel, a worker per core (pytest-xdist): thread pools inside each worker and
# each `kam` it starts (OpenBLAS, Arrow) only fight the other worker for the same cores. Set before
# numpy is loaded, and inherited by the workers and their `kam` processes (measured: the suite took
# 110 s of wall and 205 s of CPU with them, 80 s and 150 s without).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pandas as pd  # noqa: E402
import pytest

ROOT = Path(__file__).resolve().parent.parent
KAM = Path(sys.executable).parent / "kam"


def kam(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `kam` entry point, as a user would."""
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([str(KAM), *args], cwd=cwd or ROOT, capture_output=True, text=True, env=env,
                          timeout=120, input=stdin)


def kam_here(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, stdin: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    """The same command inside this test process: for refusals and output details, where starting a
    process (a second of imports) would be most of the test. Each command still has an end-to-end
    test through `kam`."""
    from click.testing import CliRunner

    from engine.surfaces.cli import main

    here = os.getcwd()
    os.chdir(cwd or ROOT)
    try:
        result = CliRunner().invoke(main, list(args), env={"COLUMNS": "120", "NO_COLOR": "1", **(env or {})},
                                    catch_exceptions=False, input=stdin)
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["kam", *args], result.exit_code, result.stdout, result.stderr)


def shipped_at(file: str, fragment: str) -> str:
    """`line:column` of the first `fragment` in a shipped policy file, as problems locate it."""
    text = (ROOT / "policies" / file).read_text(encoding="utf-8")
    at = text.index(fragment)
    return f"{text.count(chr(10), 0, at) + 1}:{at - text.rfind(chr(10), 0, at)}"


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


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the shipped policies, for a test that edits or saves them."""
    target = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", target)
    return target


# the studio's edit of the README's walk-through: the key-account cutoff moved from 80% to 70%
KEY_SHARE = [{"op": "set", "file": "segmentation.yaml", "path": ["params", "key_share"], "value": "70%"}]
