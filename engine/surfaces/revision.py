"""Which version of a policy folder a page shows: its git revision, where the folder is in git."""

from __future__ import annotations

import subprocess
from pathlib import Path


def folder_revision(folder: str | Path) -> str | None:
    """`git 1a2b3c4` or `git 1a2b3c4, with uncommitted changes` for a folder inside a git work tree;
    None where it is not in git, or git is not installed (a report never fails for want of it)."""
    path = Path(folder)
    if not str(folder) or not path.is_dir():
        return None

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        changed = git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"git {head}" + (", with uncommitted changes" if changed else "")
