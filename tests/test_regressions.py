"""Bugs and backend quirks found by the differential and property tests, kept as tests."""

from __future__ import annotations

import pandas as pd
import pytest

from engine import api
from engine.errors import PolicyError
from engine.explain import output_frame

from .helpers import compile_text
from .test_differential import deadline

POLICY = """
policy: q
entity: customer
facts:
  id: {type: string, key: true}
  a: {type: number}
  b: {type: number}
  f: {type: boolean}
decisions:
  d:
    hit: collect
    values: [less, gone, flag, unflag]
    rules:
      - {id: less, when: a < b, then: less}
      - {id: gone, when: is_missing(a), then: gone}
      - {id: flag, when: f, then: flag}
      - {id: unflag, when: not f, then: unflag}
"""


def test_durable_needs_both_fields_present_and_never_uses_absence_patterns(tmp_path):
    # durable_rules matches `m.a < m.b` when b is absent, and `-m.a` (absence) hangs: kam relies on neither
    table = pd.DataFrame({"id": ["1", "2", "3", "4"], "a": [1.0, 1.0, None, 5.0], "b": [2.0, None, 3.0, 1.0],
                          "f": [True, None, False, None]})
    pl = compile_text(tmp_path, POLICY)
    table.to_json(tmp_path / "c.jsonl", orient="records", lines=True)
    frames = api.read_inputs(pl, {"customer": tmp_path / "c.jsonl"})
    with deadline(60):
        durable = output_frame(api.run(pl, frames, backend="durable").results["customer"])
    pandas_out = output_frame(api.run(pl, frames).results["customer"])
    expected = [["less", "flag"], [], ["gone", "unflag"], []]
    assert [list(v) for v in pandas_out["d"]] == expected
    assert [list(v) for v in durable["d"]] == expected


def test_empty_lookup_table_is_a_type_error_not_a_crash(tmp_path):
    text = POLICY.replace("decisions:", 'derive:\n  r: "lookup(id, {})"\ndecisions:')
    with pytest.raises(PolicyError) as exc:
        compile_text(tmp_path, text)
    assert exc.value.problems[0].message == "the table of `lookup` is empty"


def test_json_lines_yes_no_column_with_gaps(tmp_path):
    pl = compile_text(tmp_path, POLICY)
    (tmp_path / "c.jsonl").write_text('{"id": "1", "a": 1, "b": 2, "f": null}\n{"id": "2", "a": 1, "b": 2, "f": false}\n',
                                      encoding="utf-8")
    frames = api.read_inputs(pl, {"customer": tmp_path / "c.jsonl"})
    values = frames["customer"]["f"]
    assert pd.isna(values[0]) and not bool(values[1])
    assert str(values.dtype) == "boolean"
