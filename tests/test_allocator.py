"""The `kam` process's allocator settings (engine/surfaces/cli/allocator.py): set by the command line
only, each one unless the user set it, and only where glibc is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typing import Any

import pytest

from engine.surfaces.cli.allocator import SETTINGS


def _has_glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


glibc = pytest.mark.skipif(not _has_glibc(), reason="the settings are glibc's")


def _in_fresh_process(code: str, **env: str) -> Any:
    # without the settings this test process has (importing the command line set Arrow's)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**clean, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])  # after what the command printed


# the `kam` command's entry point run in a fresh process, then what the process was given
COMMAND = ("import json, sys; from engine.surfaces.cli import entry, allocator\n"
           "sys.argv = ['kam', 'check', 'policies']\n"
           "try:\n    entry()\nexcept SystemExit:\n    pass\n"
           "print(json.dumps(allocator.APPLIED))")


@glibc
def test_the_command_line_sets_every_setting() -> None:
    applied = _in_fresh_process(COMMAND)
    assert applied == {"MALLOC_ARENA_MAX": 1, "MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 1 << 30}
    assert set(applied) == {env for env, _, _ in SETTINGS}


@glibc
def test_a_setting_the_user_gave_wins() -> None:
    applied = _in_fresh_process(COMMAND, MALLOC_ARENA_MAX="4")
    assert applied == {"MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 1 << 30}


def test_the_library_leaves_its_host_process_alone() -> None:
    """A notebook or a service that imports kam keeps its own allocators, the C library's and Arrow's:
    only the command line sets them (the Python API does not even load it)."""
    found = _in_fresh_process(
        "import json, os, sys, engine, pandas as pd\n"
        "engine.load_policies('policies').run({'prospect': pd.read_csv('examples/prospects.csv', "
        "dtype={'prospect_id': str})})\n"
        "print(json.dumps([m for m in sys.modules if m.startswith('engine.surfaces.cli')] + "
        "[os.environ.get('ARROW_DEFAULT_MEMORY_POOL')]))")
    assert found == [None]
