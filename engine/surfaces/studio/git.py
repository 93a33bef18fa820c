"""Committing a saved change on a new branch, without touching the user's checkout: the commit is
built with git's plumbing from a temporary index (HEAD plus the saved files), so the current branch,
the index and the work tree stay as they were. Nothing is pushed."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from ...language.errors import InputError, Location, Problem


def _git(args: list[str], cwd: Path, env: dict[str, str] | None = None, what: str = "") -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                             env={**os.environ, **(env or {})})
    except FileNotFoundError:
        raise InputError(Problem("git", "git is not installed", Location(str(cwd)))) from None
    except subprocess.CalledProcessError as exc:
        raise InputError(Problem("git", f"{what or 'git ' + args[0]} failed: {exc.stderr.strip()}",
                                 Location(str(cwd)))) from None
    return out.stdout.strip()


def new_branch(folder: Path, branch: str) -> tuple[Path, str]:
    """The repository of `folder` and the name of a branch that can be made in it (asked before
    anything is saved, so that a name that cannot be used stops the save, not the commit after it)."""
    top = Path(_git(["rev-parse", "--show-toplevel"], folder, what="finding the git repository"))
    branch = branch.strip() or time.strftime("kam-studio/%Y%m%d-%H%M%S")
    _git(["check-ref-format", "--branch", branch], top, what=f"the branch name {branch!r}")
    exists = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=top,
                            capture_output=True).returncode == 0
    if exists:
        raise InputError(Problem("git", f"a branch {branch} exists already", Location(str(top)),
                                 "choose another name"))
    _git(["rev-parse", "--verify", "HEAD"], top, what="finding the commit to branch from (HEAD)")
    return top, branch


def commit_on_branch(folder: Path, files: list[str], branch: str, message: str) -> dict[str, str]:
    """Commit the named files of `folder` (as they are on disk) on a new branch from HEAD."""
    top, branch = new_branch(folder, branch)
    env = {}
    if not _try(["config", "user.email"], top):
        env = {"GIT_AUTHOR_NAME": "kam studio", "GIT_AUTHOR_EMAIL": "kam-studio@localhost",
               "GIT_COMMITTER_NAME": "kam studio", "GIT_COMMITTER_EMAIL": "kam-studio@localhost"}
    with tempfile.TemporaryDirectory() as tmp:
        env["GIT_INDEX_FILE"] = str(Path(tmp) / "index")
        _git(["read-tree", "HEAD"], top, env)
        for name in files:
            path = (folder / name).resolve()
            blob = _git(["hash-object", "-w", "--", str(path)], top, env)
            rel = path.relative_to(top.resolve()).as_posix()
            _git(["update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}"], top, env)
        tree = _git(["write-tree"], top, env)
        commit = _git(["commit-tree", tree, "-p", "HEAD", "-m", message or "kam studio: policy change"], top, env)
    _git(["branch", branch, commit], top)
    return {"branch": branch, "commit": commit}


def _try(args: list[str], cwd: Path) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""
