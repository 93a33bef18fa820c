"""Champion and challenger over the recorded periods (`engine.run.replay`): replaying the policies
that were recorded decides every period as it was decided, with the moves from period to period
that `kam changes` counts; an edited policy's first period is what `kam diff` says on that period's
facts; and the studio page's history answer says the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.language.compile import compile_policies
from engine.run.replay import replay, replay_summary

from .conftest import KEY_SHARE, ROOT, kam_here
from .test_history import EXAMPLES, PERIODS, recorded  # noqa: F401 (the fixture)

pytestmark = pytest.mark.xdist_group("history")


def _moved_between_kept(history: Path, before: str, after: str, decision: str) -> int:
    """`kam changes`' count of entities that moved, leaving out those new or gone."""
    out = kam_here("changes", "--history", str(history), "--from", before, "--to", after, "--decision", decision,
                   "--format", "json")
    assert out.returncode == 0, out.stderr
    matrix = json.loads(out.stdout)[0]["matrix"]
    return sum(v for b, row in matrix.items() for n, v in row.items()
               if b != n and "(new)" not in (b, n) and "(gone)" not in (b, n))


def test_replaying_the_recorded_policies_decides_every_period_as_it_was(recorded):  # noqa: F811
    history = recorded / "history.duckdb"
    periods = replay(history, compile_policies(ROOT / "policies"))
    assert [p.period for p in periods] == PERIODS
    for p in periods:
        assert not p.note
        assert all(d.changed == 0 for d in p.decisions), p.period
        for key, (then, mine, _) in p.bounced.items():
            assert then == mine, (p.period, key)
    tier = {p.period: p.bounced[("customer", "tier")] for p in periods}
    assert tier["2026-09"] == (0, 0, 0)
    for before, after in zip(PERIODS, PERIODS[1:]):
        assert tier[after][0] == _moved_between_kept(history, before, after, "tier") > 0


def test_an_edited_policy_over_the_periods(recorded, tmp_path: Path):  # noqa: F811
    edited = tmp_path / "edited"
    shutil.copytree(ROOT / "policies", edited)
    path = edited / "segmentation.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("key_share: 80%", "key_share: 70%"), encoding="utf-8")
    periods = replay(recorded / "history.duckdb", compile_policies(edited))
    first = next(d for d in periods[0].decisions if d.decision == "tier")
    # the first recorded period has no past: what `kam diff` says on its facts
    diff = kam_here("diff", str(edited), "--base", str(ROOT / "policies"), "--data", str(EXAMPLES / PERIODS[0]),
                    "--format", "json")
    want = next(d for d in json.loads(diff.stdout)["decisions"] if d["decision"] == "tier")
    assert first.to_dict() == want
    summary = replay_summary(periods)
    assert all(any(d["changed"] for d in p["decisions"]) for p in summary)


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_the_page_replays_over_the_history(recorded, tmp_path: Path):  # noqa: F811
    from engine.run.workspace import Workspace
    from .test_studio import Server

    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    srv = Server(Workspace(folder, EXAMPLES / "2026-11", {}, history=recorded / "history.duckdb", period="2026-11"))
    try:
        status, body = srv.call("/api/history", {"edits": KEY_SHARE})
        assert status == 200
        tier = next(d for d in body["decisions"] if d["decision"] == "tier")
        assert [r["period"] for r in tier["rows"]] == PERIODS
        assert tier["rows"][0]["bounced_then"] == "-"
        status, body = srv.call("/api/history", {"edits": []})
        assert status == 200 and body["decisions"] == []  # nothing decided otherwise, nothing moves otherwise
    finally:
        srv.stop()
