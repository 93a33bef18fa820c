"""Which facts file each entity reads, and reading them all: every problem of every file together."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pandas as pd

from ..batch.facts import FORMATS, FactsOptions, identifier_facts, read_facts, release_memory
from ..language.errors import InputError, Location, Problem, did_you_mean
from ..language.plan import Plan


def find_inputs(pl: Plan, data_dir: Path | None, given: dict[str, Path]) -> dict[str, Path]:
    """The facts file of every entity: given explicitly, or `<data_dir>/<entity>s.<ext>` / `<entity>.<ext>`."""
    out: dict[str, Path] = {}
    problems: list[Problem] = []
    entities = [e.entity for e in pl.entities]
    for name in given:
        if name not in entities:
            problems.append(Problem("usage", f"--input names entity `{name}`, which no policy decides",
                                    Location("command line"), did_you_mean(name, entities)))
    for entity in entities:
        if entity in given:
            out[entity] = given[entity]
            continue
        found = None
        if data_dir is not None:
            for stem in (f"{entity}s", entity):
                for ext in FORMATS:
                    candidate = data_dir / f"{stem}{ext}"
                    if candidate.exists():
                        found = found or candidate
        if found is None:
            where = f" in {data_dir}" if data_dir else ""
            hint = f"name it {entity}s.csv (or .parquet/.jsonl/.xlsx) or pass --input {entity}=FILE"
            # a file of the right name in a format kam does not read (an old .xls, a .txt export)
            others = sorted(p.name for stem in (f"{entity}s", entity) for p in (data_dir.glob(f"{stem}.*") if data_dir
                            else []) if p.suffix.lower() not in FORMATS and p.is_file())
            if others:
                xls = next((o for o in others if o.lower().endswith(".xls")), None)
                hint = (f"{xls} is an old Excel file (.xls): open it in Excel and save it as .xlsx (Excel Workbook)"
                        if xls else f"{others[0]} is in a format kam does not read: save it as .csv, .xlsx, .parquet "
                        f"or .jsonl, or pass --input {entity}=FILE with --facts-format if it is one of these")
            problems.append(Problem("input-missing-file", f"no facts file for entity `{entity}`{where}",
                                    Location(str(data_dir or "command line")), hint))
        else:
            out[entity] = found
    if problems:
        raise InputError(problems)
    return out


def read_inputs(pl: Plan, inputs: dict[str, Path], options: FactsOptions | str | None = None,
                on_read: Callable[[str], None] | None = None) -> dict[str, pd.DataFrame]:
    """Read and check the facts of every entity; all problems of all files together."""
    ps = pl.checked.policy_set

    def read_one(entity: str) -> pd.DataFrame | InputError:
        try:
            return read_facts(inputs[entity], ps.facts(entity), options, identifier_facts(pl, entity), entity)
        except InputError as exc:
            return exc
        finally:
            if on_read:
                on_read(entity)

    # files are independent; Parquet decoding and text conversion release the GIL
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        read = dict(zip([ep.entity for ep in pl.entities], pool.map(read_one, [ep.entity for ep in pl.entities])))
    release_memory()  # the decoded files' buffers: the frames hold what is needed
    problems = [p for r in read.values() if isinstance(r, InputError) for p in r.problems]
    if problems:
        raise InputError(problems)
    return {e: r for e, r in read.items() if isinstance(r, pd.DataFrame)}
