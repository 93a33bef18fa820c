"""Stage 8, write: outputs and manifest, atomically.

Every file is written to a temporary name in the target folder and renamed into place only after
all of them were written, so a failure never leaves a half-written output behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .read import file_sha256

OUTPUT_FORMATS = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}


def _plain_lists(frame: pd.DataFrame, sep: str | None) -> pd.DataFrame:
    """`collect` list columns: joined text for CSV (sep), kept as lists otherwise."""
    out = frame.copy(deep=False)
    for name in frame.columns:
        col = frame[name]
        if col.dtype == object and len(col) and isinstance(col.iloc[0], list):
            out[name] = [sep.join(map(str, v)) for v in col] if sep is not None else col
    return out


def _write_frame(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "csv":
        _plain_lists(frame, "|").to_csv(path, index=False, encoding="utf-8", lineterminator="\n")
    elif fmt == "parquet":
        table = pa.Table.from_pandas(frame, preserve_index=False)
        # pandas metadata embeds library versions; leave it out so identical runs are identical bytes
        table = table.replace_schema_metadata(None)
        pq.write_table(table, path, compression="zstd")
    elif fmt == "jsonl":
        records = _plain_lists(frame, None)
        text = records.to_json(orient="records", lines=True, force_ascii=False)
        path.write_text(text if text.endswith("\n") or not text else text + "\n", encoding="utf-8")
    else:
        raise ValueError(fmt)


def write_outputs(out_dir: Path, frames: dict[str, pd.DataFrame], fmt: str,
                  manifest: dict[str, Any]) -> dict[str, Path]:
    """Write one file per entity plus `manifest.json`; all or nothing."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ext = OUTPUT_FORMATS[fmt]
    staged: list[tuple[Path, Path]] = []
    try:
        for entity in frames:
            final = out_dir / f"{entity}_decisions{ext}"
            fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=out_dir)
            os.close(fd)
            staged.append((Path(tmp_name), final))
        # the files are independent; writers release the GIL while encoding and compressing
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            list(pool.map(lambda job: _write_frame(job[0], job[1], fmt),
                          [(frame, tmp) for frame, (tmp, _) in zip(frames.values(), staged)]))
        final_paths = {entity: final for (_, final), entity in zip(staged, frames)}
        manifest = dict(manifest)
        manifest["outputs"] = [
            {"entity": e, "path": p.name, "rows": int(len(frames[e])), "sha256": file_sha256(t)}
            for (t, p), e in zip(staged, frames)
        ]
        fd, tmp_name = tempfile.mkstemp(prefix=".manifest.json.", suffix=".tmp", dir=out_dir)
        os.close(fd)
        tmp = Path(tmp_name)
        staged.append((tmp, out_dir / "manifest.json"))
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=_json_default) + "\n",
                       encoding="utf-8")
        for tmp_path, final in staged:
            os.replace(tmp_path, final)
        return final_paths
    except BaseException:
        for tmp_path, _ in staged:
            tmp_path.unlink(missing_ok=True)
        raise


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))
