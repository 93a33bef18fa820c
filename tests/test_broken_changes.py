"""The mistakes a policy editor makes, each caught by the matching command on the shipped policies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import ROOT, kam_here, shipped_at


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    return folder


def edit(folder: Path, old: str, new: str) -> None:
    path = folder / "segmentation.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_shipped_policies_pass_every_check():
    assert kam_here("check", "--strict", "policies/").returncode == 0
    assert kam_here("test", "policies/", "--min-coverage", "100").returncode == 0


def test_a_typo_is_caught_by_check(policies: Path):
    edit(policies, "credit_score >= key_min_credit", "credit_scor >= key_min_credit")
    r = kam_here("check", str(policies))
    assert r.returncode == 1
    assert f"segmentation.yaml:{shipped_at('segmentation.yaml', 'credit_score >= key_min_credit')}: error[unknown-name]" in r.stderr
    assert "`credit_scor` is not a fact, feature or decision of customer" in r.stderr
    assert "did you mean `credit_score`?" in r.stderr


def test_a_shadowed_rule_is_caught_by_strict_check(policies: Path):
    edit(policies, "important_from: 50%", "important_from: 10%")
    r = kam_here("check", "--strict", str(policies))
    assert r.returncode == 1
    assert "rule `general` of `tier` can never fire: every entity it matches is taken first by" in r.stderr
    assert kam_here("check", str(policies)).returncode == 0  # without --strict it is a warning


def test_a_moved_cutoff_is_caught_by_the_test_cases(policies: Path):
    edit(policies, "key_share: 80%", "key_share: 70%")
    assert kam_here("check", "--strict", str(policies)).returncode == 0
    r = kam_here("test", str(policies))
    assert r.returncode == 1
    assert "FAIL" in r.stdout and "customer 002 tier: expected 'A', got 'B'" in r.stdout
