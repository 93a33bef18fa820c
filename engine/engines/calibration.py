"""Calibrations: the population statistics of one batch, so single entities can be scored later.

A population function (`pct_rank(profit)`, `cumshare(profit)`, `mean(x, by=region)`, ...) needs
the whole batch. `kam run --save-calibration FILE` records, for every population call of the
policies, the sorted argument values per group (and the keys, for `rank` ties), with the policy-set
hash and the time. Evaluating with a calibration treats that batch as the population: an entity
whose facts did not change gets exactly the value it got in the batch; a changed entity is placed
among the calibration's values. Both backends use this one module, so they cannot disagree.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..language.errors import InputError, Location, Problem
from ..batch.population import GroupPopulation, evaluate_against

FORMAT_VERSION = 1


@dataclass
class Calibration:
    """Population statistics per entity and call (its canonical text, e.g. `pct_rank(profit, by=region)`)."""

    policy_hash: str
    created: str
    stats: dict[str, dict[str, dict[Any, GroupPopulation]]] = field(default_factory=dict)
    # entity -> call text -> group value ("" when no by=) -> stats

    def check(self, policy_hash: str, where: str) -> None:
        if self.policy_hash != policy_hash:
            raise InputError(Problem(
                "calibration-mismatch",
                f"the calibration {where} was made for another version of the policies "
                f"({self.policy_hash[:12]}, these are {policy_hash[:12]})", Location(where),
                "make a new one with `kam run --save-calibration FILE` on these policies"))

    def group(self, entity: str, call: str, group: Any) -> GroupPopulation | None:
        return self.stats.get(entity, {}).get(call, {}).get(group)


def evaluate_calibrated(stats: dict[Any, GroupPopulation], func: str, x: np.ndarray, groups: np.ndarray,
                        keys: np.ndarray, q: float = 0.5, ties: str = "key") -> np.ndarray:
    """A population function over rows whose population is the calibration's (vectorized per group)."""
    out = np.full(x.size, np.nan)
    for g in np.unique(groups.astype(object)) if groups.size else []:
        if g is None:
            continue
        rows = np.flatnonzero(groups == g)
        st = stats.get(g)
        if st is None:
            continue  # a group the calibration batch did not have: no population to compare with
        if st.n == 0 and func not in ("sum", "count"):
            continue
        out[rows] = evaluate_against(st, func, x[rows], keys[rows], q, ties)
    return out


def build(policy_hash: str, records: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]
          ) -> Calibration:
    """From recorded arguments: entity -> call -> (values, group labels, keys)."""
    cal = Calibration(policy_hash, _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    for entity, calls in records.items():
        for call, (values, groups, keys) in calls.items():
            per: dict[Any, GroupPopulation] = {}
            for g in dict.fromkeys(groups.tolist()):
                if g is None:
                    continue
                rows = np.flatnonzero((groups == g) & ~np.isnan(values))
                order = np.lexsort((keys[rows].astype(str), values[rows]))
                per[g] = GroupPopulation(values[rows][order], keys[rows][order].astype(object))
            cal.stats.setdefault(entity, {})[call] = per
    return cal


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
