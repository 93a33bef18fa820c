"""The `kam` process's allocator settings (engine/surfaces/cli/allocator.py): set by the command line
only, each one unless the user set it, and only where glibc is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from engine.surfaces.cli.allocator import SETTINGS

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                           reason="the settings are glibc's")


def _in_fresh_process(code: str, **env: str) -> object:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**clean, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])  # after what the command printed


# a command run in process, then what the process was given
COMMAND = ("import json; from engine.surfaces.cli import main, allocator\n"
           "try:\n    main(['check', 'policies'])\nexcept SystemExit:\n    pass\n"
           "print(json.dumps(allocator.APPLIED))")


@glibc
def test_the_command_line_sets_every_setting() -> None:
    applied = _in_fresh_process(COMMAND)
    assert applied == {"MALLOC_ARENA_MAX": 1, "MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 1 << 30}
    assert set(applied) == {env for env, _, _ in SETTINGS}  # type: ignore[arg-type]


@glibc
def test_a_setting_the_user_gave_wins() -> None:
    applied = _in_fresh_process(COMMAND, MALLOC_ARENA_MAX="4")
    assert applied == {"MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 1 << 30}


def test_the_library_leaves_its_host_process_alone() -> None:
    """A notebook or a service that imports kam keeps its own allocator: only the command line tunes it."""
    applied = _in_fresh_process("import json, engine, pandas as pd; from engine.surfaces.cli import allocator; "
                                "engine.load_policies('policies').run({'prospect': pd.read_csv('examples/prospects.csv', "
                                "dtype={'prospect_id': str})}); print(json.dumps(allocator.APPLIED))")
    assert applied == {}
