"""Stage write: all outputs or none, never a half-written file."""

import json

import pandas as pd
import pytest

from engine import write


def frames():
    return {"customer": pd.DataFrame({"customer_id": ["001"], "tier": ["A"], "tier_because": ["关键客户"]}),
            "quote": pd.DataFrame({"quote_id": ["q1"], "approval": ["approve"]})}


def test_writes_every_file_and_manifest(tmp_path):
    paths = write.write_outputs(tmp_path, frames(), "jsonl", {"kam_version": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["customer_decisions.jsonl", "manifest.json",
                                                           "quote_decisions.jsonl"]
    assert paths["customer"].read_text(encoding="utf-8") == \
        '{"customer_id":"001","tier":"A","tier_because":"关键客户"}\n'
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert [o["rows"] for o in manifest["outputs"]] == [1, 1]


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    (tmp_path / "customer_decisions.csv").write_text("old\n", encoding="utf-8")
    original = write._write_frame

    def failing(frame, path, fmt):
        if "quote" in path.name:
            raise OSError("disk full")
        original(frame, path, fmt)

    monkeypatch.setattr(write, "_write_frame", failing)
    with pytest.raises(OSError):
        write.write_outputs(tmp_path, frames(), "csv", {})
    assert [p.name for p in tmp_path.iterdir()] == ["customer_decisions.csv"]
    assert (tmp_path / "customer_decisions.csv").read_text(encoding="utf-8") == "old\n"
