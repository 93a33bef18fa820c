"""What a Dask partition keeps between passes is packed (yes/no arrays as bits, codes in the fewest
bytes) and given back exactly; the values of a population call per row are let go once nothing still
to be evaluated reads them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .conftest import ROOT
from engine.batch.evaluate import DecisionResult, ListVec, Text, Tri
from engine.engines import dask as dask_engine
from engine.engines import dask_partition
from engine.engines.dask_packing import Bits, Ints, narrow, pack, unpack
from engine.language.compile import compile_policies

import sys

sys.path.insert(0, str(ROOT / "benchmarks"))
import dask_data  # noqa: E402

# the edges of each narrower type, where a wrong choice of type would wrap a value around
EDGES = [-(2**63), -(2**31) - 1, -(2**31), -32769, -32768, -129, -128, -2, -1, 0, 1, 127, 128, 32767, 32768,
         2**31 - 1, 2**31, 2**63 - 1]


def _same(a: Any, b: Any) -> None:
    """Equal arrays of the same dtype and shape, through vectors, results, dicts, lists and tuples."""
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, (Tri, Text, ListVec, DecisionResult)):
        for f in a.__dataclass_fields__:
            _same(getattr(a, f), getattr(b, f))
    else:
        assert a == b


ints = st.integers(1, 300).flatmap(lambda n: st.one_of(
    hnp.arrays(np.int64, n, elements=st.integers(-(2**63), 2**63 - 1)),
    hnp.arrays(np.int64, n, elements=st.integers(-3, 200)),
    hnp.arrays(np.int64, n, elements=st.sampled_from(EDGES)),
    st.sampled_from(EDGES).map(lambda v: np.full(n, v, dtype=np.int64))))
bools = st.integers(0, 300).flatmap(lambda n: hnp.arrays(np.bool_, st.sampled_from([(n,), (n, 3), (3, n)])))
floats = st.integers(0, 200).flatmap(lambda n: hnp.arrays(np.float64, n))


@settings(max_examples=300, deadline=None)
@given(ints, bools, floats)
def test_a_packed_state_comes_back_exactly(codes, flags, numbers):
    tri = Tri(codes > 0, codes != 0)
    text = Text(np.clip(codes, -1, 3), np.array(["a", "b", "c", "d"], dtype=object))
    res = DecisionResult(None, [], codes.copy(), [tri, tri], conflict_with=np.stack([codes, codes], axis=1),
                         collected=flags, values={"x": text, "y": numbers})
    state = {"kept": {"d": res, "f": numbers, "t": text}, "known": {"rank": numbers, "quota": (numbers, codes)},
             "list": [flags, ListVec(codes, ((),))]}
    packed = pack(state)
    _same(unpack(packed), state)
    # every yes/no or int64 array of 64 cells or more takes fewer bytes, unless its values need 8
    for a in (codes, flags):
        p = pack(a)
        if a.size < 64 or narrow(a).dtype == np.int64:
            assert p is a
        else:
            assert isinstance(p, (Bits, Ints)) and p.data.nbytes < a.nbytes
    assert pack(numbers) is numbers


@pytest.mark.parametrize("value", EDGES)
def test_narrow_keeps_every_value(value):
    a = np.array([value, 0, value], dtype=np.int64)
    got = narrow(a)
    assert got.astype(np.int64).tolist() == a.tolist()
    assert got.itemsize == next(t().itemsize for t in (np.int8, np.int16, np.int32, np.int64)
                                if np.iinfo(t).min <= min(value, 0) and max(value, 0) <= np.iinfo(t).max)


def _unpacked_arrays(obj: Any, path: str = "") -> list[str]:
    """Where a state still holds a yes/no or int64 array large enough to pack."""
    if isinstance(obj, np.ndarray):
        return [path] if obj.size >= 64 and (obj.dtype == np.bool_ or obj.dtype == np.int64) else []
    if isinstance(obj, (Tri, Text, ListVec, DecisionResult)):
        return [p for f in obj.__dataclass_fields__ if f not in ("decision", "rules")
                for p in _unpacked_arrays(getattr(obj, f), f"{path}.{f}")]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _unpacked_arrays(v, f"{path}[{k}]")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in _unpacked_arrays(v, f"{path}[{i}]")]
    return []


def test_the_states_between_passes_are_packed_and_let_go_of_spent_answers(tmp_path, monkeypatch):
    """The shipped policies over two partitions, on a cluster of threads (so the states can be looked
    at): every state a pass leaves for the next holds its decisions and codes packed, keeps the values
    per row only of the calls a later pass still reads, and the run gives the pandas outputs."""
    import distributed

    pl = compile_policies(ROOT / "policies")
    parts = dask_data.make(tmp_path / "data", 3_000, 2)
    seen: list[tuple[str, dask_partition.PartitionState]] = []
    advance = dask_partition._advance

    def watched(pl_, entity, state, *args, **kw):
        after = advance(pl_, entity, state, *args, **kw)
        seen.append((entity, after))
        return after

    monkeypatch.setattr(dask_partition, "_advance", watched)
    staging = tmp_path / "staged"
    staging.mkdir()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as c, \
            distributed.Client(c) as client:
        dask_engine.run(pl, parts, client, staging, range_rows=700)
    between = [(e, s) for e, s in seen if s.out is not None and s.out.final is None and s.rows]
    assert {e for e, _ in between} >= {"customer", "prospect"}
    spent = 0
    for entity, s in between:
        assert _unpacked_arrays({"columns": s.columns, "known": s.known, "kept": s.kept}) == [], entity
        still = dask_partition.calls_still_read(pl.entity(entity), set(s.kept))
        for call, v in s.known.items():
            if isinstance(v, dask_partition.Spent):
                spent += 1
                assert call not in still
            elif dask_partition._per_row(unpack(v)):
                assert call in still, (entity, call)
    assert spent  # the customers' first answers are let go once the steps that read them are final
    from tests.test_dask import _pandas_outputs, _same_outputs

    _same_outputs(_pandas_outputs(pl, parts)[1], staging, tmp_path)
