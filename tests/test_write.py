"""Stage write: the output folder holds one complete set at every moment, whatever stops the writer."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine import write
from engine.errors import InputError

from .conftest import ROOT, kam, kam_here


def frames(tag: str, entities: tuple[str, ...] = ("customer", "quote", "prospect")) -> dict[str, pd.DataFrame]:
    rows = 2000
    return {e: pd.DataFrame({f"{e}_id": [f"{i:06d}" for i in range(rows)], "d": [f"{tag}-{e}"] * rows,
                             "d_because": ["关键客户"] * rows}) for e in entities}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checked_manifest(out: Path) -> dict:
    """The manifest in `out`, after checking that it describes exactly the files beside it."""
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    listed = {o["path"]: o["sha256"] for o in manifest["outputs"]}
    assert {p.name for p in out.iterdir()} == {"manifest.json"} | set(listed), sorted(p.name for p in out.iterdir())
    for name, digest in listed.items():
        assert sha(out / name) == digest, name
    return manifest


def complete_set(out: Path) -> str:
    """The run tag of the complete set in `out`."""
    return checked_manifest(out)["run"]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.kam-"))


def write_in_child(out: Path, tag: str, kill_at: str, no_exchange: bool = False) -> bool:
    """Write a set in a forked process that kills itself with SIGKILL at `kill_at`; True if it was killed."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.environ[write.KILL_ENV] = kill_at
            if no_exchange:
                write._exchange = lambda a, b: False  # a system without an atomic exchange
            write.write_outputs(out, frames(tag), "csv", {"run": tag})
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9


def test_writes_every_file_and_manifest(tmp_path):
    out = tmp_path / "out"
    paths = write.write_outputs(out, frames("a"), "jsonl", {"run": "a"})
    assert complete_set(out) == "a"
    assert paths["customer"].read_text(encoding="utf-8").splitlines()[0] == \
        '{"customer_id":"000000","d":"a-customer","d_because":"关键客户"}'
    assert leftovers(out) == []


KILL_POINTS = ["staged-file:1", "staged-file:2", "staged-file:3", "staged-manifest", "swapped",
               "removing-previous:1", "removing-previous:3"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_killed_writer_leaves_the_old_or_the_new_set_and_the_next_run_cleans_up(tmp_path, point):
    out = tmp_path / "out"
    write.write_outputs(out, frames("old"), "csv", {"run": "old"})
    assert write_in_child(out, "new", point), "the writer was not killed"
    assert complete_set(out) in ("old", "new")
    assert complete_set(out) == ("new" if point.startswith(("swapped", "removing")) else "old")
    write.write_outputs(out, frames("next"), "csv", {"run": "next"})
    assert complete_set(out) == "next"
    assert leftovers(out) == []


def test_without_an_atomic_exchange_the_next_run_restores_the_previous_set(tmp_path):
    out = tmp_path / "out"
    write.write_outputs(out, frames("old"), "csv", {"run": "old"})
    assert write_in_child(out, "new", "moved-aside", no_exchange=True)
    assert not out.exists()  # the one moment this fallback cannot cover
    target = write.OutputTarget(out).prepare()
    assert complete_set(out) == "old"
    target.abandon()
    assert leftovers(out) == []


def test_a_failure_leaves_the_previous_set(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write.write_outputs(out, frames("old"), "csv", {"run": "old"})
    original = write.write_frame

    def failing(frame, path, fmt, bom=False):
        if "quote" in path.name:
            raise OSError("disk full")
        original(frame, path, fmt, bom)

    monkeypatch.setattr(write, "write_frame", failing)
    with pytest.raises(OSError):
        write.write_outputs(out, frames("new"), "csv", {"run": "new"})
    assert complete_set(out) == "old"
    assert leftovers(out) == []


def test_files_of_an_earlier_run_never_sit_beside_a_new_manifest(tmp_path):
    out = tmp_path / "out"
    write.write_outputs(out, frames("old"), "csv", {"run": "old"})
    write.write_outputs(out, frames("new", ("customer",)), "parquet", {"run": "new"})
    assert complete_set(out) == "new"
    assert sorted(p.name for p in out.iterdir()) == ["customer_decisions.parquet", "manifest.json"]


def test_files_follow_the_umask_and_the_folder_keeps_its_mode(tmp_path):
    out = tmp_path / "out"
    old = os.umask(0o002)
    try:
        write.write_outputs(out, frames("a"), "csv", {"run": "a"})
    finally:
        os.umask(old)
    assert stat.S_IMODE((out / "customer_decisions.csv").stat().st_mode) == 0o664
    assert stat.S_IMODE(out.stat().st_mode) == 0o775
    os.chmod(out, 0o750)
    write.write_outputs(out, frames("b"), "csv", {"run": "b"})
    assert stat.S_IMODE(out.stat().st_mode) == 0o750


def test_a_folder_with_other_files_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        write.OutputTarget(out).prepare()
    assert "notes.txt" in exc.value.problems[0].message
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_formats_carry_the_same_values(tmp_path):
    frame = pd.DataFrame({
        "id": ["001", "002", "003"],
        "x": [0.000000000012, 150.0, np.nan],
        "n": pd.array([1, None, 3], dtype="Int64"),
        "tags": np.array([["loyal", "big-profitable"], [], ["none"]], dtype=object),
        "t": pd.Categorical(["a \"quoted\"\ttab", None, "中"]),
        "f": pd.array([True, None, False], dtype="boolean"),
    })
    for fmt in ("csv", "parquet", "jsonl"):
        write.write_outputs(tmp_path / fmt, {"e": frame}, fmt, {})
    csv_text = (tmp_path / "csv" / "e_decisions.csv").read_text(encoding="utf-8").splitlines()
    assert csv_text[1] == '001,1.2e-11,1,"loyal, big-profitable","a ""quoted""\ttab",true'
    assert csv_text[2] == "002,150,,,,"
    rows = [json.loads(line) for line in (tmp_path / "jsonl" / "e_decisions.jsonl").read_text("utf-8").splitlines()]
    assert rows[0] == {"id": "001", "x": 1.2e-11, "n": 1, "tags": ["loyal", "big-profitable"],
                       "t": "a \"quoted\"\ttab", "f": True}
    assert rows[2]["x"] is None and rows[1]["tags"] == [] and rows[1]["f"] is None
    parquet = pd.read_parquet(tmp_path / "parquet" / "e_decisions.parquet")
    assert parquet["x"][0] == 0.000000000012 and list(parquet["tags"][0]) == ["loyal", "big-profitable"]


def test_kam_run_killed_while_writing_keeps_the_previous_set(tmp_path):
    out = tmp_path / "out"
    args = ("run", "--policies", str(ROOT / "policies"), "--data", str(ROOT / "examples"), "--out", str(out), "-q")
    assert kam(*args).returncode == 0
    before = checked_manifest(out)
    r = kam(*args, "--output-format", "parquet", env={write.KILL_ENV: "staged-manifest"})
    assert r.returncode == -9
    assert checked_manifest(out) == before
    assert kam(*args, "--entity", "customer").returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["customer_decisions.csv", "manifest.json"]
    assert leftovers(out) == []


def test_a_bad_out_is_refused_before_the_facts_are_read(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    missing_data = tmp_path / "nowhere"
    missing_data.mkdir()
    for out, words in ((a_file, "is a file"), (Path("/proc/kam-out/x"), "cannot write the output folder")):
        r = kam("run", "--data", str(missing_data), "--out", str(out))
        assert r.returncode == 2, r.stderr
        assert words in r.stderr and "Traceback" not in r.stderr
        assert "no facts file" not in r.stderr  # the output folder was checked first


def test_json_lines_from_columns_in_many_pieces(tmp_path):
    import pyarrow as pa

    # text columns as kam builds them: Arrow arrays in several chunks, as for a million rows
    chunked = pa.chunked_array([pa.array(["a", "b"]), pa.array(["c\\d", None])])
    frame = pd.DataFrame({"id": ["1", "2", "3", "4"], "t": pd.arrays.ArrowStringArray(chunked)})
    write.write_outputs(tmp_path / "out", {"e": frame}, "jsonl", {})
    rows = [json.loads(line) for line in (tmp_path / "out" / "e_decisions.jsonl").read_text("utf-8").splitlines()]
    assert [r["t"] for r in rows] == ["a", "b", "c\\d", None]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_texts_written_a_slice_at_a_time_make_the_same_file(tmp_path, monkeypatch, fmt):
    """`kam run` renders and writes 200,000 rows at a time; with slices of 333 rows the files hold the
    same rows and texts (CSV and JSON Lines byte for byte, Parquet value for value)."""
    import pyarrow.parquet as pq

    import engine.explain as ex

    whole = tmp_path / "whole"
    r = kam_here("run", "--out", str(whole), "--output-format", fmt, "-q")
    assert r.returncode == 0, r.stderr
    monkeypatch.setattr(ex, "CHUNK_ROWS", 333)
    sliced = tmp_path / "sliced"
    r = kam_here("run", "--out", str(sliced), "--output-format", fmt, "-q")
    assert r.returncode == 0, r.stderr
    for entity in ("customer", "quote", "prospect"):
        name = f"{entity}_decisions.{fmt}"
        if fmt == "parquet":
            assert pq.read_table(whole / name).equals(pq.read_table(sliced / name))
            assert pq.ParquetFile(sliced / name).num_row_groups > 1
        else:
            assert (whole / name).read_bytes() == (sliced / name).read_bytes()
