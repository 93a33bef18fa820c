"""Facts in: ids stay text, every malformed file is refused with the line where the problem is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.language.errors import InputError
from engine.language.model import Fact
from engine.language.errors import Location
from engine.batch.facts import FactsOptions, read_facts

from .conftest import ROOT, kam


def fact(name: str, type_: str = "string", **kw) -> Fact:
    return Fact(name, type_, Location("p.yaml", 1, 1), **kw)


FACTS = {"customer_id": fact("customer_id", key=True, required=True), "x": fact("x", "number", max=100),
         "region": fact("region"), "ok": fact("ok", "boolean")}


def problem(path: Path, facts=FACTS, options=None, identifiers=None) -> str:
    with pytest.raises(InputError) as exc:
        read_facts(path, facts, options, identifiers)
    return "\n".join(p.render() for p in exc.value.problems)


def test_numeric_ids_in_parquet_are_refused(tmp_path):
    for dtype in ("int64", "float64"):
        path = tmp_path / f"c_{dtype}.parquet"
        pd.DataFrame({"customer_id": np.array([5193, 17], dtype=dtype), "x": [1.0, 2.0], "region": ["n", "s"],
                      "ok": [True, False]}).to_parquet(path)
        text = problem(path)
        assert f"column `customer_id` is stored as numbers ({dtype})" in text
        assert "leading zeros may already be lost" in text and "astype(str)" in text


def test_numeric_and_object_ids_in_json_lines_are_refused(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"customer_id": "000001", "x": 1, "region": "n", "ok": true}\n'
                    '{"customer_id": 5193, "x": 2, "region": "s", "ok": false}\n'
                    '{"customer_id": {"id": "000003"}, "x": 3, "region": "s", "ok": false}\n', encoding="utf-8")
    text = problem(path)
    assert "column `customer_id` must hold an id, but lines 2, 3 hold 5193, {\"id\": \"000003\"}" in text
    path.write_text('{"customer_id": "1", "x": 1, "region": {"a": 1}, "ok": true}\n', encoding="utf-8")
    assert "column `region` must hold text, but line 1 holds {\"a\": 1}" in problem(path)


def test_join_columns_are_ids_too(tmp_path):
    path = tmp_path / "q.parquet"
    pd.DataFrame({"quote_id": ["q1"], "customer_id": [5193]}).to_parquet(path)
    facts = {"quote_id": fact("quote_id", key=True), "customer_id": fact("customer_id", required=True)}
    assert "column `customer_id` is stored as numbers" in problem(path, facts, identifiers={"customer_id"})


def test_short_rows_and_duplicate_headers_are_refused(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('customer_id,x,region,ok\n1,2,"north\nwest",true\n2,3\n3,4,s,false,extra\n', encoding="utf-8")
    text = problem(path)
    # the quoted value spans lines 2-3, so the short row is on line 4
    assert "the header has 4 fields, but line 4 has 2, line 5 has 5" in text
    path.write_text("customer_id,x,region,ok,x\n1,2,n,true,3\n", encoding="utf-8")
    assert "has the column `x` twice in its header (columns 2 and 5)" in problem(path)


def test_line_numbers_after_a_value_spanning_lines(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('customer_id,x,region,ok\n1,2,"north\nwest",true\n2,500,s,false\n', encoding="utf-8")
    assert "above the maximum 100 at line 4: 500" in problem(path)


def test_a_bad_json_line_is_named_by_its_number(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"customer_id": "1", "x": 1, "region": "n", "ok": true}\n\n{"customer_id": "2", x: 1}\n',
                    encoding="utf-8")
    assert "c.jsonl line 3 is not valid JSON" in problem(path)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_json_lines_end_at_a_newline_only(tmp_path, separator):
    """JSON allows these unescaped inside a string; the line-by-line reader (another encoding, mixed
    types) cut the line there and refused a valid file, naming a line that does not exist."""
    path = tmp_path / "c.jsonl"
    lines = [{"customer_id": f"a{separator}b", "x": 1, "region": f"n{separator}w", "ok": True},
             {"customer_id": "2", "x": 2, "region": "s", "ok": False}]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines) + '{"customer_id": "3", "x": 200}\r\n'
    path.write_text(text, encoding="gb18030", newline="")
    refused = problem(path, options=FactsOptions(encoding="gb18030"))
    assert "above the maximum 100 at line 3: 200" in refused, refused
    path.write_text(text.replace("200", "20"), encoding="gb18030", newline="")
    frame = read_facts(path, FACTS, FactsOptions(encoding="gb18030"))
    assert frame["customer_id"].tolist() == [f"a{separator}b", "2", "3"]
    assert frame["region"].tolist()[0] == f"n{separator}w"


def test_messages_show_values_as_written_and_cut_long_ones(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"customer_id": "1", "x": True, "region": "n", "ok": True}) + "\n"
                    + json.dumps({"customer_id": "2", "x": 150, "region": "n", "ok": "x" * 50000}) + "\n",
                    encoding="utf-8")
    text = problem(path)
    assert "line 1 holds true" in text and "'True'" not in text
    assert "at line 2: 150" in text and "150.0" not in text
    assert "(50,002 characters)" in text and len(text) < 2000


def test_semicolons_and_encodings_get_a_hint_and_an_option(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("customer_id;x;region;ok\n001;2;北;true\n", encoding="utf-8")
    assert "--delimiter ';'" in problem(path)
    frame = read_facts(path, FACTS, FactsOptions(delimiter=";"))
    assert frame["customer_id"].tolist() == ["001"]
    path.write_bytes("customer_id,x,region,ok\n001,2,华北,true\n".encode("gb18030"))
    assert "--encoding gb18030" in problem(path)
    assert read_facts(path, FACTS, FactsOptions(encoding="gb18030"))["region"].tolist() == ["华北"]
    path.write_text("customer_id,x,region,ok\n001,2,n,true\n", encoding="utf-16")
    assert "--encoding utf-16" in problem(path)


def test_decimals_round_amounts_as_written(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("customer_id,x,region,ok\n1,77.92999999999999,n,true\n2,77.93,n,true\n3,2.675,n,true\n",
                    encoding="utf-8")
    facts = {**FACTS, "x": fact("x", "number", decimals=2)}
    assert read_facts(path, facts)["x"].tolist() == [77.93, 77.93, 2.68]


def test_mostly_unmatched_join_is_said_prominently(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("customers", "prospects"):
        (data / f"{name}.csv").write_bytes((ROOT / "examples" / f"{name}.csv").read_bytes())
    quotes = pd.read_csv(ROOT / "examples" / "quotes.csv", dtype=str)
    quotes["customer_id"] = quotes["customer_id"].str.lstrip("0")  # what a spreadsheet does
    quotes.to_csv(data / "quotes.csv", index=False)
    r = kam("run", "--data", str(data), "--out", str(tmp_path / "out"), "-q")
    assert r.returncode == 0, r.stderr
    assert "quotes (100%) name a customer that is not in the customer facts" in r.stderr
    assert "lost their leading zeros" in r.stderr
    assert "\n\n" in r.stderr  # set apart, not one line among others


def test_an_unclosed_quote_is_refused_and_a_bare_header_is_an_empty_table(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('customer_id,x,region,ok\n1,2,n,true\n2,"3,s,false\n3,4,s,true\n', encoding="utf-8")
    assert "a quoted value that starts on line 3 is never closed" in problem(path)
    path.write_text("customer_id,x,region,ok", encoding="utf-8")  # no line end after the header
    assert len(read_facts(path, FACTS)) == 0


def test_a_bug_in_the_reader_is_not_shown_as_a_bad_file(tmp_path, monkeypatch):
    """`except Exception` turned kam's own errors while reading into "cannot read the file" (exit 2, no
    traceback); only what the parsers raise is the file's fault."""
    import engine.batch.facts as read

    path = tmp_path / "c.csv"
    path.write_text("customer_id,x,region,ok\n1,2,n,true\n", encoding="utf-8")

    def broken(*_args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(read, "_read_csv", broken)
    with pytest.raises(ZeroDivisionError):
        read_facts(path, FACTS)
    bad = tmp_path / "c.parquet"
    bad.write_bytes(b"PAR1 not really parquet PAR1")
    assert "cannot read c.parquet as parquet" in problem(bad)


def test_files_are_hashed_a_megabyte_at_a_time(tmp_path):
    """Inputs, outputs and the Dask engine's parts are hashed with one function, which never holds a
    file whole (a part was read into memory to hash it)."""
    import hashlib
    import tracemalloc

    from engine.batch.facts import file_sha256

    path = tmp_path / "big.bin"
    data = np.random.default_rng(0).bytes(64 << 20)
    path.write_bytes(data)
    tracemalloc.start()
    try:
        digest = file_sha256(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digest == hashlib.sha256(data).hexdigest()
    assert peak < 4 << 20, peak


def test_half_a_utf16_pair_in_json_lines_is_refused_with_its_line(tmp_path):
    """`"\\ud800"` alone is valid JSON but no character: it reached the writer and was a traceback."""
    path = tmp_path / "c.jsonl"
    path.write_text('{"customer_id": "1", "x": 1, "region": "n", "ok": true}\n'
                    '{"customer_id": "2", "x": 2, "region": "bad \\ud800 x", "ok": true}\n', encoding="utf-8")
    assert "c.jsonl line 2: `region` holds half of a UTF-16 pair" in problem(path)
