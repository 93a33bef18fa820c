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

from engine.batch import write
from engine.language.errors import InputError

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


@pytest.mark.slow  # the default suite keeps to 2 minutes; CI runs it with the slow ones
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
    """`kam run` renders and writes 100,000 rows at a time, the next slice rendered while the last is
    written; with slices of 333 rows the files hold the same rows and texts (CSV and JSON Lines byte
    for byte, Parquet value for value)."""
    import pyarrow.parquet as pq

    import engine.batch.explain as ex

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


def test_a_run_lets_each_entity_go_once_its_file_is_written_and_says_the_same(tmp_path, monkeypatch):
    """`kam run` lets an entity's vectors go once its file is written and no entity still to be decided
    joins it (quotes read the customers' tiers first); the files, counts, measures, invariants and
    warnings are those of a run that keeps them. With the files written one after the other, every
    entity is let go by the end; evaluated while the files are written (two cores or more), an entity
    whose file is still being written when the last one is decided is kept to the end, and the run
    says the same again."""
    from engine.run import outputs, service

    done = {}
    for name, keep, overlap in (("kept", True, False), ("let_go", False, False), ("overlapped", False, True)):
        monkeypatch.setattr(outputs, "OVERLAP", overlap)
        request = service.RunRequest(ROOT / "policies", ROOT / "examples", out=tmp_path / name,
                                     allow_violations=True, keep_vectors=keep)
        done[name] = service.run_and_write(request)
    kept, let_go = done["kept"], done["let_go"]
    assert all(len(r.ctx.env) > 10 and r.counts is None for r in kept.result.results.values())
    assert all(len(r.ctx.env) == 0 and r.counts for r in let_go.result.results.values())
    assert list(let_go.result.frames_in["quote"].columns) == ["quote_id", "customer_id"]

    def same(m: dict) -> dict:
        m = {**m, "timings_seconds": None}
        text = json.dumps(m)
        for name in done:
            text = text.replace(str(tmp_path / name), "OUT")
        return json.loads(text)

    for other in (let_go, done["overlapped"]):
        assert same(other.manifest) == same(kept.manifest)
        for name in ("counts", "measures", "warnings", "conflicts"):
            assert getattr(other.result, name)() == getattr(kept.result, name)(), name
        assert [i.to_dict() for i in other.result.invariants()] == [i.to_dict() for i in kept.result.invariants()]
        assert {e: len(f) for e, f in other.result.frames_in.items()} == \
            {e: len(f) for e, f in kept.result.frames_in.items()}
    for path in sorted((tmp_path / "kept").iterdir()):
        for name in ("let_go", "overlapped"):
            assert path.read_bytes() == (tmp_path / name / path.name).read_bytes() or path.name == "manifest.json"


def test_read_ahead_keeps_the_order_and_raises_where_the_maker_failed():
    """The next slice is made on another thread while the caller writes the last: every item comes, in
    order, and an error in making one reaches the caller at that item, not before."""
    from concurrent.futures import ThreadPoolExecutor

    from engine.run.outputs import read_ahead

    def made(n: int, fail_at: int | None = None):
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"slice {i}")
            yield i

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert list(read_ahead(made(5), pool)) == [0, 1, 2, 3, 4]
        assert list(read_ahead(made(0), pool)) == []
        got = []
        with pytest.raises(ValueError, match="slice 3"):
            for item in read_ahead(made(5, fail_at=3), pool):
                got.append(item)
        assert got == [0, 1, 2]


# -- text from outside, in CSV -------------------------------------------------------------------------

CONTROL = [chr(c) for c in range(32)] + ["\x7f"]
FORMULAS = ['=HYPERLINK("http://example.com","click me")', "+1", "-1+2", "@SUM(1)", "\tx", "=1+1"]


def hostile_customers(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A policy folder whose texts repeat a name fact, and customers whose ids and names hold every
    control character (inside: ends are trimmed as facts are read) or start like a formula."""
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "c.yaml").write_text(
        "policy: c\nentity: customer\nfacts:\n  customer_id: {type: string, key: true}\n"
        "  name: {type: string}\n  profit: {type: number}\ndecisions:\n  tier:\n    values: [A, B]\n"
        "    rules:\n      - {id: a, when: profit > 0, then: A, because: \"{name} earns {profit}\"}\n"
        "      - {id: b, then: B, because: \"{name}\"}\n", encoding="utf-8")
    ids = [f"C{ch}{i}" for i, ch in enumerate(CONTROL)] + [f"Q{i}" for i in range(len(FORMULAS))]
    names = [f"n{ch}x" for ch in CONTROL] + FORMULAS
    facts = tmp_path / "customers.jsonl"
    facts.write_text("".join(json.dumps({"customer_id": k, "name": n, "profit": i - 5}) + "\n"
                             for i, (k, n) in enumerate(zip(ids, names))) + json.dumps(
        {"customer_id": FORMULAS[0], "name": "x", "profit": -5}) + "\n", encoding="utf-8")
    return folder, facts, ids + [FORMULAS[0]]


def read_back_everywhere(path: Path) -> list[list[str]]:
    """The ids of a CSV file as pandas, pyarrow and DuckDB read it (each must read the same rows)."""
    import duckdb
    import pyarrow.csv as pv

    by_pandas = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")["customer_id"].tolist()
    by_arrow = pv.read_csv(path, parse_options=pv.ParseOptions(newlines_in_values=True)).column(
        "customer_id").to_pylist()
    con = duckdb.connect()
    by_duckdb = [r[0] for r in con.execute("SELECT customer_id FROM read_csv(?, all_varchar = true, header = true, "
                                           "quote = '\"', escape = '\"', delim = ',', new_line = '\\n')",
                                           [str(path)]).fetchall()]
    return [by_pandas, by_arrow, by_duckdb]


def test_every_control_character_in_ids_and_texts_reads_back_as_written(tmp_path):
    """A carriage return inside an id was written unquoted: the file read back with one row more than
    the manifest said (pandas), or not at all (pyarrow, DuckDB)."""
    folder, facts, ids = hostile_customers(tmp_path)
    out = tmp_path / "out"
    r = kam_here("run", "--policies", str(folder), "--input", f"customer={facts}", "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr
    manifest = checked_manifest(out)
    assert manifest["outputs"][0]["rows"] == len(ids)
    for read in read_back_everywhere(out / "customer_decisions.csv"):
        assert read == ids
    written = pd.read_csv(out / "customer_decisions.csv", dtype=str, keep_default_na=False)
    assert written["tier_because"].str.startswith(tuple(f"n{ch}x" for ch in CONTROL)).sum() == len(CONTROL)


def test_changes_csv_quotes_a_carriage_return(tmp_path):
    from engine.batch.write import write_csv
    import io

    frame = pd.DataFrame({"customer_id": ["a\rb", "c\nd", 'e"f', "g,h", "plain"], "n": [1.0, 2.5, None, 4.0, 5.0]})
    buffer = io.BytesIO()
    write_csv([frame], buffer)
    assert buffer.getvalue() == b'customer_id,n\n"a\rb",1\n"c\nd",2.5\n"e""f",\n"g,h",4\nplain,5\n'


def test_formula_cells_are_escaped_for_excel_and_counted_otherwise(tmp_path):
    """OWASP's rule for CSV injection: a text cell that starts with =, +, -, @, a tab or a carriage
    return gets a leading ' in a file meant for a spreadsheet (--csv-bom); otherwise it is written as
    it came and the run warns. Numbers (-5) are not text and stay as they are."""
    folder, facts, ids = hostile_customers(tmp_path)
    formula_ids = [k for k in ids if k[:1] in "=+-@\t\r"]
    formula_names = [n for n in FORMULAS if n.strip()[:1] in "=+-@"]  # facts are trimmed as read
    plain, excel = tmp_path / "plain", tmp_path / "excel"
    r = kam_here("run", "--policies", str(folder), "--input", f"customer={facts}", "--out", str(plain))
    assert r.returncode == 0, r.stderr
    expected = len(formula_ids) + len(formula_names)
    assert f"warning: {expected} text cells of customer_decisions.csv begin with =" in r.stderr
    assert "--csv-bom" in r.stderr
    written = pd.read_csv(plain / "customer_decisions.csv", dtype=str, keep_default_na=False)
    assert written["customer_id"].tolist()[-1] == FORMULAS[0]  # as it came
    assert checked_manifest(plain)["outputs"][0]["formula_cells"] == expected
    r = kam_here("run", "--policies", str(folder), "--input", f"customer={facts}", "--out", str(excel), "--csv-bom")
    assert r.returncode == 0, r.stderr
    assert f"note: {expected} text cells of customer_decisions.csv begin with =" in r.stderr
    written = pd.read_csv(excel / "customer_decisions.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    texts = pd.concat([written[c] for c in ("customer_id", "tier", "tier_rule", "tier_because")])
    assert not texts.str.match(r"^[=+\-@\t\r]").any()
    assert (texts.str.startswith("'") & texts.str[1:].str.match(r"^[=+\-@\t\r]")).sum() == expected
    assert "'" + FORMULAS[0] in written["customer_id"].tolist()
    assert len(written) == len(ids)


def test_a_negative_number_is_not_a_formula(tmp_path):
    from engine.batch.write import write_csv
    import io

    frame = pd.DataFrame({"id": ["a"], "x": [-5.0], "n": pd.array([-3], dtype="Int64"), "t": ["-5 below"]})
    buffer = io.BytesIO()
    written = write_csv([frame], buffer, excel=True)
    assert buffer.getvalue() == b"id,x,n,t\na,-5,-3,'-5 below\n"
    assert written.formula_cells == 1


# -- where output sets go -------------------------------------------------------------------------------

def test_an_output_set_is_never_made_inside_another(tmp_path):
    """The README's periods walkthrough once wrote `--out out/2026-09`: the next `kam run` into `out/`
    was refused as holding "files kam did not write" (kam had written them) with the hint `--out out/`."""
    write.write_outputs(tmp_path / "out", frames("a"), "csv", {"kam_version": "x"})
    with pytest.raises(InputError) as exc:
        write.OutputTarget(tmp_path / "out" / "2026-09").prepare()
    (p,) = exc.value.problems
    assert f"is inside the output set {tmp_path / 'out'}" in p.message and "--out" in p.hint
    assert not (tmp_path / "out" / "2026-09").exists()
    write.write_outputs(tmp_path / "runs" / "2026-09", frames("b"), "csv", {"kam_version": "x"})
    (tmp_path / "runs" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        write.OutputTarget(tmp_path / "runs").prepare()
    (p,) = exc.value.problems
    assert "holds the output sets of other runs (2026-09/) and files kam did not write (notes.txt)" in p.message
    suggested = Path(p.hint.rsplit("--out ", 1)[1])
    assert not suggested.exists() and suggested.resolve() != (tmp_path / "runs").resolve()


def test_the_default_out_after_the_periods_walkthrough(tmp_path):
    """The README's walkthrough and `kam run`'s default folder fit together: every command as written."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line.split("#")[0].split() for line in readme.splitlines()
                if line.startswith("kam run --data examples/periods/")]
    assert len(commands) == 3
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "policies").symlink_to(ROOT / "policies")
    for command in commands + [["kam", "run", "-q"]]:
        r = kam_here(*command[1:], cwd=tmp_path)
        assert r.returncode == 0, (command, r.stderr)


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_works(tmp_path):
    out = tmp_path / "out"
    first = write.OutputTarget(out).prepare()
    try:
        r = kam_here("run", "--out", str(out), "-q")
        assert r.returncode == 2
        assert f"another kam run (process {os.getpid()}) is writing the output folder {out} right now" in r.stderr
    finally:
        first.commit(frames("first"), "csv", {"run": "first"})
    assert complete_set(out) == "first"
    assert kam_here("run", "--out", str(out), "-q").returncode == 0  # the first is done: free again
    assert leftovers(out) == []


def test_an_empty_read_only_folder_is_replaced_and_one_with_files_is_refused_truly(tmp_path):
    from .test_history import as_another_user

    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="kam-out-"))
    try:
        os.chmod(shared, 0o777)
        out = shared / "out"
        out.mkdir()
        os.chmod(out, 0o555)
        r = as_another_user(["run", "--policies", str(ROOT / "policies"), "--data", str(ROOT / "examples"),
                             "--out", str(out), "-q"])
        assert r.returncode == 0, r.stderr  # nothing to remove: the empty folder goes
        assert (out / "manifest.json").exists() and stat.S_IMODE(out.stat().st_mode) == 0o555
        r = as_another_user(["run", "--policies", str(ROOT / "policies"), "--data", str(ROOT / "examples"),
                             "--out", str(out), "-q"])
        assert r.returncode == 2
        assert "it is read-only, so the files of its previous set cannot be removed" in r.stderr
    finally:
        os.system(f"chmod -R u+rwX {shared}")
        import shutil

        shutil.rmtree(shared, ignore_errors=True)


def test_two_runs_of_the_same_inputs_have_one_identity(tmp_path):
    """Their manifests differed in the seconds each stage took, and nothing says what to compare."""
    manifests = []
    for name in ("a", "b"):
        r = kam_here("run", "--out", str(tmp_path / name), "-q")
        assert r.returncode == 0, r.stderr
        manifests.append(json.loads((tmp_path / name / "manifest.json").read_text(encoding="utf-8")))
    a, b = manifests
    assert a["identity_sha256"] == b["identity_sha256"] == write.identity(a)
    assert {k for k in a if a[k] != b[k]} <= {"timings_seconds"}
    r = kam_here("run", "--out", str(tmp_path / "c"), "--entity", "customer", "-q")
    c = json.loads((tmp_path / "c" / "manifest.json").read_text(encoding="utf-8"))
    assert c["identity_sha256"] != a["identity_sha256"]
