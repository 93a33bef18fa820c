"""The studio's workspace (`engine.run.workspace`): edits evaluated against a loaded portfolio give
exactly what `kam diff` gives on the edited folder, re-evaluating only what an edit reaches gives
exactly what a whole run gives, and saving writes the edited values only, atomically, never over a
file changed on disk and never with a check error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.language.errors import InputError, PolicyError
from engine.language.compile import compile_policies
from engine.run import service
from engine.run.workspace import Conflict, Workspace
from engine.surfaces.studio import views

from .conftest import KEY_SHARE, ROOT, kam_here



@pytest.fixture
def ws(folder: Path) -> Workspace:
    return Workspace(folder, ROOT / "examples", {})


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """One workspace for the tests that only evaluate (none of them saves)."""
    target = tmp_path_factory.mktemp("loaded") / "policies"
    shutil.copytree(ROOT / "policies", target)
    return Workspace(target, ROOT / "examples", {})


def _edited_copy(ws: Workspace, edits: list[dict], where: Path) -> Path:
    ev = ws.evaluate(edits)
    where.mkdir()
    for name, text in ev.texts.items():
        (where / name).write_text(text, encoding="utf-8")
    return where


@pytest.mark.parametrize("edits", [
    KEY_SHARE,
    # the values stay, the rules move: a comparison must still count the rules that gained or lost
    pytest.param([{"op": "set", "file": "retention.yaml", "path": ["derive", "loyal_long_standing"],
                   "value": "tenure_years >= 7 and profit_prev_year > 0"}], marks=pytest.mark.slow),
    pytest.param([{"op": "move", "file": "segmentation.yaml", "path": ["decisions", "tier", "rules", 2], "to": 0}],
                 marks=pytest.mark.slow),
], ids=["key_share", "retention-rules-only", "rule-moved"])
def test_the_impact_is_kam_diffs(loaded: Workspace, tmp_path: Path, edits: list[dict]):
    edited = _edited_copy(loaded, edits, tmp_path / "edited")
    ev = loaded.evaluate(edits)
    assert ev.ok and ev.comparison is not None
    got = [d.to_dict() for d in ev.comparison.decisions]
    cli = kam_here("diff", str(edited), "--base", str(loaded.folder), "--format", "json", "--data", str(ROOT / "examples"))
    assert cli.returncode == 0, cli.stderr
    want = json.loads(cli.stdout)
    assert got == want["decisions"]
    assert [i.to_dict() for i in ev.comparison.invariants] == want["invariants"]
    assert any(d["changed"] for d in got) or any(d["rules"] for d in got)
    # the money per cell adds up to the money at stake, cell by cell of the moved ones
    for d in ev.comparison.decisions:
        if d.cells is None or not d.changed:
            continue
        moved = d.cells[[b != n for b, n in d.cells.index]]
        for m, total in d.money.items():
            assert moved[m].sum() == pytest.approx(total, abs=0.01)
        assert int(moved["entities"].sum()) == d.changed


@pytest.mark.parametrize("value", ["boundary", pytest.param("100%", marks=pytest.mark.slow), "80%"])
def test_re_evaluating_what_an_edit_reaches_equals_a_whole_run(loaded: Workspace, tmp_path: Path, value: Any):
    """`boundary` is a cutoff equal to a customer's own cumulative share (`<=` holds with equality);
    80% is the loaded value (nothing moves, everything is taken over)."""
    if value == "boundary":
        shares = np.sort(np.asarray(loaded.run.results["customer"].ctx.env["profit_share"], dtype=float))
        value = float(shares[300])
    edits = [{**KEY_SHARE[0], "value": value}]
    edited = _edited_copy(loaded, edits, tmp_path / "edited")
    ev = loaded.evaluate(edits)
    assert ev.run is not None
    whole = service.decide_files(compile_policies(edited), ROOT / "examples", {})[0]
    for entity, frame in whole.outputs().items():
        assert ev.run.outputs()[entity].equals(frame), entity
    assert ev.run.measures() == whole.measures()
    reused = [n for n, r in ev.run.results["customer"].decisions.items()
              if r is loaded.run.results["customer"].decisions[n]]
    if value == "80%":
        assert set(reused) == set(ev.run.results["customer"].decisions)
    else:
        assert "tier" not in reused and "protected_by" in reused  # the trait list reads no cutoff


def test_a_changed_fact_declaration_reads_the_facts_again(loaded: Workspace, tmp_path: Path):
    """A narrower range for a fact is checked on the loaded facts as `kam run` checks them: the page
    shows the refusal instead of deciding with facts read under the old declaration."""
    edits = [{"op": "set", "file": "segmentation.yaml", "path": ["facts", "credit_score", "max"], "value": 90}]
    ev = loaded.evaluate(edits)
    edited = _edited_copy(loaded, edits, tmp_path / "edited")
    cli = kam_here("run", "--policies", str(edited), "--data", str(ROOT / "examples"), "--out", str(tmp_path / "o"))
    assert cli.returncode == 2 and "credit_score" in cli.stderr
    assert not ev.ok and ev.run is None
    assert any("credit_score" in p.message for p, _, _ in ev.problem_paths)
    # a wider one decides the same as before, read again
    wider = [{**edits[0], "value": 1000}]
    ev = loaded.evaluate(wider)
    assert ev.ok and ev.run is not None and ev.run.frames_in["customer"] is not loaded.frames["customer"]
    assert all(not d.changed for d in ev.comparison.decisions)  # type: ignore[union-attr]


def test_save_writes_one_line_and_keeps_every_comment(ws: Workspace, folder: Path):
    before = (folder / "segmentation.yaml").read_text(encoding="utf-8")
    loaded = {n: s.sha for n, s in ws.sources.items()}
    assert ws.save(KEY_SHARE, loaded) == ["segmentation.yaml"]
    after = (folder / "segmentation.yaml").read_text(encoding="utf-8")
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [("  key_share: 80%", "  key_share: 70%")]
    assert len(before.splitlines()) == len(after.splitlines())
    assert not list(folder.glob(".*.tmp"))
    # the saved folder is the loaded one now: nothing is pending
    assert ws.evaluate([]).comparison is not None
    assert all(not d.changed for d in ws.evaluate([]).comparison.decisions)  # type: ignore[union-attr]
    assert kam_here("check", str(folder)).returncode == 0


def test_a_file_changed_on_disk_is_a_conflict_and_both_versions_stay(ws: Workspace, folder: Path):
    path = folder / "segmentation.yaml"
    theirs = path.read_text(encoding="utf-8").replace("key_min_credit: 60", "key_min_credit: 65")
    path.write_text(theirs, encoding="utf-8")
    with pytest.raises(Conflict) as caught:
        ws.save(KEY_SHARE, {n: s.sha for n, s in ws.sources.items()})
    assert "changed on disk" in caught.value.problems[0].message
    assert path.read_text(encoding="utf-8") == theirs  # theirs kept
    assert "70%" in ws.evaluate(KEY_SHARE).texts["segmentation.yaml"]  # ours still there to copy


def test_a_page_that_loaded_an_older_version_is_a_conflict(ws: Workspace):
    with pytest.raises(Conflict):
        ws.save(KEY_SHARE, {"segmentation.yaml": "0" * 64})


def test_a_check_error_is_located_at_its_cell_and_nothing_is_saved(ws: Workspace, folder: Path):
    edits = [{"op": "set", "file": "segmentation.yaml", "path": ["decisions", "tier", "rules", 0, "when"],
              "value": "in_pareto_top and credit_scor >= key_min_credit"}]
    ev = ws.evaluate(edits)
    assert not ev.ok
    errors = [(p, f, path) for p, f, path in ev.problem_paths if p.severity == "error"]
    assert errors and errors[0][1] == "segmentation.yaml"
    assert errors[0][2] == ("decisions", "tier", "rules", 0, "when")
    assert "credit_score" in errors[0][0].hint  # did you mean
    before = (folder / "segmentation.yaml").read_bytes()
    with pytest.raises(PolicyError):
        ws.save(edits, {n: s.sha for n, s in ws.sources.items()})
    assert (folder / "segmentation.yaml").read_bytes() == before


def test_an_edit_that_breaks_an_invariant_shows_it_violated_with_an_example(loaded: Workspace):
    edits = [{"op": "set", "file": "segmentation.yaml", "path": ["decisions", "tier", "rules", 0, "when"],
              "value": "in_pareto_top"}]
    ev = loaded.evaluate(edits)
    assert not ev.ok  # a broken invariant is a check error: it cannot be saved
    assert ev.comparison is None
    broken = [p for p, _, _ in ev.problem_paths if p.code == "invariant-violated"]
    assert broken and "key-accounts-are-creditworthy" in broken[0].message
    assert "credit_score" in broken[0].message  # the example customer


def test_edits_name_loaded_files_only(ws: Workspace, folder: Path):
    for name in ["../segmentation.yaml", str(folder / "segmentation.yaml"), "tests/segmentation.yaml", "x.yaml"]:
        with pytest.raises(InputError) as caught:
            ws.evaluate([{"op": "set", "file": name, "path": ["params", "key_share"], "value": "70%"}])
        assert caught.value.problems[0].code == "unknown-file"


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_a_link_to_a_file_outside_the_folder_is_not_written(tmp_path: Path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(ROOT / "policies", outside)
    folder = tmp_path / "linked"
    shutil.copytree(ROOT / "policies", folder)
    (folder / "segmentation.yaml").unlink()
    os.symlink(outside / "segmentation.yaml", folder / "segmentation.yaml")
    ws = Workspace(folder, ROOT / "examples", {})
    before = (outside / "segmentation.yaml").read_bytes()
    with pytest.raises(InputError) as caught:
        ws.save(KEY_SHARE, {n: s.sha for n, s in ws.sources.items()})
    assert caught.value.problems[0].code == "outside-folder"
    assert (outside / "segmentation.yaml").read_bytes() == before
    assert (folder / "segmentation.yaml").is_symlink()


def test_the_page_views_say_units_readers_and_hit_policies(loaded: Workspace):
    seg = next(p for p in (views.policy_view(n, t, loaded.folder, loaded.plan) for n, t in loaded.texts().items())
               if p["policy"] == "segmentation")
    params = {p["name"]: p for p in seg["params"]}
    assert params["key_share"]["unit"] == "percent"
    assert "feature in_pareto_top" in params["key_share"]["readers"]
    assert "rule key-account (condition)" in params["key_min_credit"]["readers"]
    assert params["key_share"]["comment"].startswith("Key accounts:")
    tier = seg["decisions"][0]
    assert tier["hit_words"] == "the first rule that matches decides"
    assert [r["id"] for r in tier["rules"]][:2] == ["key-account", "key-account-held"]
    assert tier["rules"][1]["comment"].startswith("Hysteresis")
    curve = views.pareto(loaded)
    assert [(c["param"], c["fact"]) for c in curve] == [("key_share", "profit")]
    assert curve[0]["y"][-1] == pytest.approx(1.0)


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_commit_on_a_new_branch_leaves_the_checkout_alone(tmp_path: Path):
    from engine.surfaces.studio.git import commit_on_branch

    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "policies", repo / "policies")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True, env=env).stdout

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-qm", "start")
    ws = Workspace(repo / "policies", ROOT / "examples", {})
    ws.save(KEY_SHARE, {n: s.sha for n, s in ws.sources.items()})
    out = commit_on_branch(repo / "policies", ["segmentation.yaml"], "policy/key-share-70", "Key share 70%\n\nimpact")
    assert out["branch"] == "policy/key-share-70"
    assert git("rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    shown = git("show", "policy/key-share-70", "--format=%s", "--unified=0")
    assert shown.startswith("Key share 70%")
    assert "-  key_share: 80%\n+  key_share: 70%" in shown
    assert git("status", "--porcelain").strip() == "M policies/segmentation.yaml"  # saved, not committed on main
    with pytest.raises(InputError):
        commit_on_branch(repo / "policies", ["segmentation.yaml"], "policy/key-share-70", "again")


def test_a_file_changed_on_disk_that_was_not_edited_is_a_conflict_too(ws: Workspace, folder: Path):
    """The check ran against every file as loaded: saving over a folder another file of which changed
    could leave it failing `kam check`."""
    path = folder / "retention.yaml"
    theirs = path.read_text(encoding="utf-8") + "\n# changed by someone else\n"
    path.write_text(theirs, encoding="utf-8")
    with pytest.raises(Conflict) as caught:
        ws.save(KEY_SHARE, {n: s.sha for n, s in ws.sources.items()})
    assert [p.loc.file for p in caught.value.problems] == [str(folder / "retention.yaml")]
    assert "70%" not in (folder / "segmentation.yaml").read_text(encoding="utf-8")
    assert ws.refresh() and ws.sources["retention.yaml"].text == theirs  # what a reloaded page sees
    assert not ws.refresh()
    assert ws.save(KEY_SHARE, {n: s.sha for n, s in ws.sources.items()}) == ["segmentation.yaml"]


def test_edits_that_are_not_well_formed_are_refused_with_a_message(loaded: Workspace):
    bad = [{"op": "move", "file": "segmentation.yaml", "path": ["decisions", "tier", "rules", 1], "to": "x"},
           {"op": "move", "file": "segmentation.yaml", "path": ["decisions", "tier", "rules", 1], "to": None},
           {"op": "insert", "file": "segmentation.yaml", "path": ["decisions", "tier", "rules"], "index": True,
            "item": {"id": "x"}},
           {"op": "set", "file": "segmentation.yaml", "path": 5, "value": 1},
           {"op": "set", "file": "segmentation.yaml", "path": ["params", "key_min_credit"], "value": float("nan")},
           {"op": "set", "file": "segmentation.yaml", "path": ["params", "key_min_credit"], "value": float("inf")},
           {"op": "set", "file": "segmentation.yaml", "path": ["params", "key_min_credit"], "value": [1]},
           {"op": "explode", "file": "segmentation.yaml", "path": []}]
    for edit in bad:
        with pytest.raises(InputError) as caught:
            loaded.evaluate([edit])
        assert caught.value.problems[0].code in ("bad-edit", "edit-refused"), edit


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_a_link_to_a_file_in_the_folder_stays_a_link(tmp_path: Path):
    folder = tmp_path / "p"
    shutil.copytree(ROOT / "policies", folder)
    (folder / "segmentation.yaml").rename(folder / ".segmentation-real.yaml")
    os.symlink(".segmentation-real.yaml", folder / "segmentation.yaml")
    ws = Workspace(folder, ROOT / "examples", {})
    ws.save(KEY_SHARE, {n: s.sha for n, s in ws.sources.items()})
    assert (folder / "segmentation.yaml").is_symlink()
    assert "key_share: 70%" in (folder / ".segmentation-real.yaml").read_text(encoding="utf-8")


def test_a_folder_without_policies_is_refused(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError) as caught:
        Workspace(tmp_path / "empty", ROOT / "examples", {})
    assert caught.value.problems[0].code == "no-policies"
    (tmp_path / "f.yaml").write_text("x: 1\n", encoding="utf-8")
    with pytest.raises(PolicyError):
        Workspace(tmp_path / "f.yaml", ROOT / "examples", {})
