"""`kam init`: a policy repository that works at once, and that refuses to overwrite anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, kam_here


@pytest.mark.parametrize("starter", ["shipped", "minimal"])
def test_a_new_repository_checks_and_tests_at_once(tmp_path, starter):
    folder = tmp_path / "repo"
    r = kam_here("init", str(folder), "--starter", starter)
    assert r.returncode == 0, r.stderr
    for name in ("schemas/policy.schema.json", "schemas/tests.schema.json", ".pre-commit-config.yaml",
                 ".github/workflows/policies.yml", "requirements.txt", "README.md"):
        assert (folder / name).is_file(), name
    assert (folder / "schemas" / "policy.schema.json").read_bytes() == (ROOT / "schemas" / "policy.schema.json"
                                                                       ).read_bytes()
    policies = sorted((folder / "policies").glob("*.yaml"))
    tests = sorted((folder / "policies" / "tests").glob("*.yaml"))
    assert policies and tests
    for f in policies:
        assert f.read_text(encoding="utf-8").startswith("# yaml-language-server: $schema=../schemas/policy.schema.json")
    for f in tests:
        assert f.read_text(encoding="utf-8").startswith(
            "# yaml-language-server: $schema=../../schemas/tests.schema.json")
    if starter == "shipped":
        assert [f.name for f in policies] == sorted(f.name for f in (ROOT / "policies").glob("*.yaml"))
    r = kam_here("check", str(folder / "policies"), "--strict")
    assert r.returncode == 0, r.stderr
    r = kam_here("test", str(folder / "policies"), "--min-coverage", "100")
    assert r.returncode == 0, r.stdout
    workflow = yaml.safe_load((folder / ".github" / "workflows" / "policies.yml").read_text(encoding="utf-8"))
    assert workflow["permissions"] == {"contents": "read"}
    setup = next(s for s in workflow["jobs"]["kam"]["steps"] if "setup-python" in s.get("uses", ""))
    assert setup["with"]["cache"] == "pip"


def test_nothing_is_overwritten(tmp_path):
    folder = tmp_path / "repo"
    (folder / "policies").mkdir(parents=True)
    (folder / "policies" / "tiers.yaml").write_text("mine\n", encoding="utf-8")
    r = kam_here("init", str(folder), "--starter", "minimal")
    assert r.returncode == 2 and "already holds policies/tiers.yaml" in r.stderr, r.stderr
    assert (folder / "policies" / "tiers.yaml").read_text(encoding="utf-8") == "mine\n"
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == [Path("policies"), Path("policies/tiers.yaml")]
    (tmp_path / "file").write_text("x", encoding="utf-8")
    r = kam_here("init", str(tmp_path / "file"))
    assert r.returncode == 2 and "is a file" in r.stderr


def test_the_requirement_can_be_given(tmp_path):
    r = kam_here("init", str(tmp_path / "repo"), "--starter", "minimal", "--kam", "kam @ git+https://example.org/kam@abc")
    assert r.returncode == 0
    assert (tmp_path / "repo" / "requirements.txt").read_text(encoding="utf-8").splitlines()[-1] == \
        "kam @ git+https://example.org/kam@abc"


@pytest.mark.slow
@pytest.mark.parametrize("starter", ["shipped", "minimal"])
def test_its_hooks_and_workflow_pass(tmp_path, starter):
    """pre-commit runs the repository's own hooks on every file; actionlint finds nothing in its workflow."""
    from .lsp import actionlint

    folder = tmp_path / "repo"
    assert kam_here("init", str(folder), "--starter", starter).returncode == 0
    assert (folder / ".git").is_dir()  # kam init made it a git repository
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "add", "-A"], check=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    r = subprocess.run([str(Path(sys.executable).parent / "pre-commit"), "run", "--all-files"], cwd=folder,
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kam check (policy files)" in r.stdout and "Passed" in r.stdout
    assert actionlint(folder / ".github" / "workflows" / "policies.yml") == []
    broken = folder / ".github" / "workflows" / "broken.yml"
    broken.write_text("on: pull_requets\njobs: {}\n", encoding="utf-8")
    assert actionlint(broken), "actionlint must find a misspelt event"
    shutil.rmtree(folder)
