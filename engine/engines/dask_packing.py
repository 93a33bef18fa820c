"""What a partition's state keeps between passes, packed: yes/no arrays as bits, integer codes in the
fewest bytes that hold them, given back exactly as they were at the start of the next pass.

A worker holds its partitions' states between passes, and Dask spills to disk what does not fit
under its memory target, then reads it back for the next pass: at 20M customers on two 2 GiB
workers, pickling, writing and reading spilled states took about 30% of the workers' time. Most of
a state's bytes after the first pass are not its numbers but its decisions: a deciding-rule index
(int64) and two yes/no arrays per rule (where it matched, where that was known), and the codes of
text values (int64 into a handful of distinct texts). Packed, those take 1/8 (bits) and 1/8 (an
int8 code) of their bytes; numbers (float64) and ids (Arrow strings) stay as they are.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any, Callable

import numpy as np

from ..batch.evaluate import DecisionResult, ListVec, Text, Tri

_VECTORS = (Tri, Text, ListVec, DecisionResult)
_MODEL_FIELDS = ("decision", "rules")  # the policy's own objects: nothing to pack in them
_SMALLEST = (np.int8, np.int16, np.int32)
_MIN_SIZE = 64  # a small array costs more as a wrapper than it saves


@dataclass(frozen=True)
class Bits:
    """A yes/no array as bits (np.packbits), with its shape."""

    data: np.ndarray
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Ints:
    """An int64 array stored in a narrower integer type that holds every value."""

    data: np.ndarray


def pack(obj: Any) -> Any:
    """`obj` (a vector, a decision's result, or dicts, lists and tuples of them) with its yes/no
    arrays and int64 arrays packed; anything else is given back as it is (the same object)."""
    return _map(obj, _pack_array)


def unpack(obj: Any) -> Any:
    """What `pack` packed, as it was: equal arrays of the original dtypes and shapes."""
    return _map(obj, _unpack_leaf)


def _map(obj: Any, leaf: Callable[[Any], Any]) -> Any:
    """`obj` with `leaf` applied to everything inside it; a vector whose fields all come back as
    they were is given back itself (no copy)."""
    got = leaf(obj)
    if got is not obj:
        return got
    if isinstance(obj, _VECTORS):
        changed = {f.name: _map(getattr(obj, f.name), leaf) for f in fields(obj) if f.name not in _MODEL_FIELDS}
        changed = {k: v for k, v in changed.items() if v is not getattr(obj, k)}
        if not changed:
            return obj
        new = copy.copy(obj)
        for k, v in changed.items():
            object.__setattr__(new, k, v)  # Text and Tri are frozen
        return new
    if isinstance(obj, dict):
        return {k: _map(v, leaf) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_map(v, leaf) for v in obj]
    if isinstance(obj, tuple) and type(obj) is tuple:
        return tuple(_map(v, leaf) for v in obj)
    return obj


def narrow(a: np.ndarray) -> np.ndarray:
    """An integer array in the narrowest integer type that holds its values (indexes and codes)."""
    if a.size == 0:
        return a.astype(np.int8)
    lo, hi = int(a.min()), int(a.max())
    for t in _SMALLEST:
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return a.astype(t, copy=False)
    return a


def _unpack_leaf(obj: Any) -> Any:
    if isinstance(obj, Bits):
        return np.unpackbits(obj.data, count=int(np.prod(obj.shape))).view(np.bool_).reshape(obj.shape)
    if isinstance(obj, Ints):
        return obj.data.astype(np.int64)
    return obj


def _pack_array(a: Any) -> Any:
    if not isinstance(a, np.ndarray) or a.size < _MIN_SIZE:
        return a
    if a.dtype == np.bool_:
        return Bits(np.packbits(a, axis=None), a.shape)
    if a.dtype == np.int64:
        small = narrow(a)
        if small.dtype != np.int64:
            return Ints(small)
    return a
