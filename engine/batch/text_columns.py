"""Output columns as text, column-wise, for the writers of text formats (CSV, JSON Lines, the
workbook's sheets): a column of lists by its distinct lists, and text arrays written to a file
straight from their buffers."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa


def is_list_column(col: pd.Series) -> bool:
    """Whether a column holds lists (a `collect` decision's values)."""
    return col.dtype == object and len(col) > 0 and isinstance(col.iloc[0], list)


def list_codes(col: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """A column of lists (shared list objects per distinct value) as codes into the distinct lists."""
    ids = np.fromiter((id(v) for v in col), dtype=np.int64, count=len(col))
    codes, uniques = pd.factorize(ids)
    firsts = np.zeros(len(uniques), dtype=np.int64)
    firsts[codes[::-1]] = np.arange(len(col))[::-1]
    objects = col.to_numpy()
    return codes.astype(np.int64), [objects[i] for i in firsts]


def write_texts(fh: Any, lines: Iterable[pa.Array | pa.ChunkedArray]) -> None:
    """Text arrays written one after the other, straight from their buffers (a string array's value
    buffer is every row's text in a row)."""
    for array in lines:
        for piece in array.chunks if isinstance(array, pa.ChunkedArray) else [array]:
            if len(piece) == 0:
                continue
            offsets = np.frombuffer(piece.buffers()[1], dtype=np.int64)
            begin, end = int(offsets[piece.offset]), int(offsets[piece.offset + len(piece)])
            fh.write(memoryview(piece.buffers()[2])[begin:end])
