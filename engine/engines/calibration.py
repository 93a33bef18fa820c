"""Calibrations: the population statistics of one batch, so single entities can be scored later.

A population function (`pct_rank(profit)`, `cumshare(profit)`, `mean(x, by=region)`, ...) needs
the whole batch. `kam run --save-calibration FILE` records, for every population call of the
policies, the sorted argument values per group (and the keys, for `rank` ties), with the policy-set
hash and the time. Evaluating with a calibration treats that batch as the population: an entity
whose facts did not change gets exactly the value it got in the batch; a changed entity is placed
among the calibration's values. Both backends use this one module, so they cannot disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..language.version import __version__
from ..language.errors import InputError, Location, Problem
from ..batch.population import Calibration, GroupPopulation

FORMAT_VERSION = 1


def dumps(cal: Calibration) -> bytes:
    """The calibration as JSON text (safe to load)."""
    doc = {
        "format": FORMAT_VERSION, "kam_version": __version__, "policy_set_sha256": cal.policy_hash,
        "created": cal.created,
        "entities": {
            entity: {call: [{"group": g, "values": st.values.tolist(),
                             "keys": st.keys.tolist() if st.keys is not None else None}
                            for g, st in groups.items()] for call, groups in calls.items()}
            for entity, calls in cal.stats.items()
        },
    }
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def save(cal: Calibration, path: Path) -> None:
    """As JSON, written to a temporary file first and renamed into place."""
    from ..batch.write import write_bytes_atomic

    write_bytes_atomic(path, dumps(cal))


def load(path: Path) -> Calibration:
    """Read a calibration file; a damaged file is an input error."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        cal = Calibration(doc["policy_set_sha256"], doc["created"])
        for entity, calls in doc["entities"].items():
            for call, groups in calls.items():
                cal.stats.setdefault(entity, {})[call] = {
                    g["group"]: GroupPopulation(np.asarray(g["values"], dtype=float),
                                           np.asarray(g["keys"], dtype=object) if g["keys"] is not None else None)
                    for g in groups}
        return cal
    except FileNotFoundError:
        raise InputError(Problem("calibration", f"calibration file {path} does not exist", Location(str(path)))) \
            from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(Problem("calibration", f"{path} is not a kam calibration: {exc}", Location(str(path)))) \
            from None
