"""The shipped policies through kam equal the same policies coded by hand: benchmarks/handwritten.py
(numpy/pyarrow) and benchmarks/handwritten_polars.py (polars, installed with the `test` extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from .conftest import ROOT, kam


@pytest.mark.parametrize("reference", ["handwritten.py", "handwritten_polars.py"])
def test_kam_agrees_with_the_hand_written_policies(tmp_path: Path, reference: str):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("customers", "prospects", "quotes"):
        pd.read_csv(ROOT / "examples" / f"{name}.csv", dtype=str).to_parquet(data / f"{name}.parquet", index=False)
    r = kam("run", "--data", str(data), "--out", str(tmp_path / "kam"), "--output-format", "parquet", "-q")
    assert r.returncode == 0, r.stderr
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / reference), str(data), str(tmp_path / "hand")],
                   check=True, cwd=ROOT)
    for entity in ("customer", "quote", "prospect"):
        a = pq.read_table(tmp_path / "kam" / f"{entity}_decisions.parquet")
        b = pq.read_table(tmp_path / "hand" / f"{entity}_decisions.parquet")
        assert a.schema.names == b.schema.names
        for column in a.schema.names:
            assert a[column].to_pylist() == b[column].to_pylist(), f"{entity}.{column}"
        if reference == "handwritten_polars.py":  # also the Arrow types kam writes
            assert a.schema.remove_metadata() == b.schema.remove_metadata(), entity
