"""The pre-commit hooks, run as pre-commit runs them, in repositories that hold only policies."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, kam, shipped_at

HOOKS = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))}


def run_hook(hook_id: str, repo: Path, args: list[str] | None = None):
    hook = HOOKS[hook_id]
    entry = shlex.split(hook["entry"])
    assert entry[0] == "kam"
    return kam(*entry[1:], *(hook["args"] if args is None else args), cwd=repo)


@pytest.mark.slow  # the default suite keeps to 2 minutes; CI runs it with the slow ones
@pytest.mark.parametrize("layout", ["policies-folder", "top-level"])
def test_hooks_pass_and_fail_in_a_policy_repository(tmp_path: Path, layout: str):
    repo = tmp_path / "repo"
    folder = repo / "policies" if layout == "policies-folder" else repo
    shutil.copytree(ROOT / "policies", folder)
    (repo / ".pre-commit-config.yaml").write_text("repos: []\n", encoding="utf-8")
    args = None if layout == "policies-folder" else ["."]
    for hook in ("kam-check", "kam-test"):
        r = run_hook(hook, repo, args)
        assert r.returncode == 0, r.stdout + r.stderr
    seg = folder / "segmentation.yaml"
    seg.write_text(seg.read_text(encoding="utf-8").replace("credit_score >= key_min_credit",
                                                           "credit_scor >= key_min_credit"), encoding="utf-8")
    r = run_hook("kam-check", repo, args)
    assert r.returncode == 1 and f"segmentation.yaml:{shipped_at('segmentation.yaml', 'credit_score >= key_min_credit')}: error[unknown-name]" in r.stderr
    r = run_hook("kam-test", repo, args)
    assert r.returncode == 1 and "error[unknown-name]" in r.stderr and "Traceback" not in r.stderr


def test_a_misplaced_folder_gets_a_hint_that_works(tmp_path: Path):
    for hook, command in (("kam-check", "kam check POLICY_DIR"), ("kam-test", "kam test POLICY_DIR")):
        r = run_hook(hook, tmp_path)
        assert r.returncode == 2 and command in r.stderr and "Traceback" not in r.stderr
