"""Policy test cases (`kam test`): small populations with expected decisions, and rule coverage.

A test file (YAML, usually `policies/tests/*.yaml`) holds `cases`; each names rows of facts per
entity (or a data file) and, per entity id, the expected decisions:

    defaults:                      # merged into every row of that entity
      customer: {revenue: 100000, profit: 1000, ...}
    cases:
      - name: a loss-making D customer is let go
        customer:
          - {customer_id: "001", profit: -5000, profit_prev_year: -3000}
        expect:
          customer:
            "001": {tier: D, retention: {value: exit, rule: chicken-rib-exit, because: "鸡肋"}}

An expectation is a value, or a mapping with any of `value`, `rule` and `because` (a substring of
the explanation). Keys are decision names, or output names of decisions with several outputs.
Population functions see exactly the rows of the case.

What `previous()` reads is given per case, per entity id: the values of one period back, or a list
of them, most recent first (an id left out is new: its previous values are missing):

        previous:
          customer:
            "001": {tier: A, in_pareto_top: true}
            "002": [{tier: A, in_pareto_top: false}, {tier: A, in_pareto_top: true}]
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..run import service
from ..run import inputs as run_inputs
from ..batch.result import RunResult
from ..language.errors import InputError, Location, PolicyError, Problem, did_you_mean
from ..batch.evaluate import CONFLICT, NO_RULE
from ..batch.explain import output_frame, plain_value, value_text
from ..language.numbers import list_text
from ..language.load import LocatedDoc, load_text
from ..language.plan import Plan

TEST_DIR = "tests"


@dataclass
class CaseResult:
    file: str
    name: str
    loc: Location
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0  # how long the case took, its facts read and decided

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def kind(self) -> str:
        """What failed, for CI reports: the case's facts, deciding it, an invariant or an expectation."""
        first = self.failures[0] if self.failures else ""
        for prefix, kind in (("facts of the case:", "facts"), ("deciding the case:", "deciding"),
                             ("invariant `", "invariant-broken")):
            if first.startswith(prefix):
                return kind
        return "case-setting" if " is neither an entity of the policies nor a case setting" in first \
            else "expectation"


@dataclass
class Coverage:
    """Per policy file, every rule (decision/rule id) and whether some case made it decide."""

    rules: dict[str, list[str]] = field(default_factory=dict)  # file -> ["decision/rule", ...]
    fired: set[str] = field(default_factory=set)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.rules.values())

    @property
    def covered(self) -> int:
        return sum(1 for v in self.rules.values() for r in v if r in self.fired)

    @property
    def percent(self) -> float:
        return 100.0 * self.covered / self.total if self.total else 100.0

    def never_fired(self, file: str) -> list[str]:
        return [r for r in self.rules[file] if r not in self.fired]


@dataclass
class SuiteResult:
    results: list[CaseResult]
    coverage: Coverage

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed


def find_test_files(policy_dir: Path) -> list[Path]:
    folder = policy_dir / TEST_DIR
    return sorted(p for p in folder.glob("*.y*ml")) if folder.is_dir() else []


def _coverage_table(pl: Plan) -> Coverage:
    cov = Coverage()
    for p in pl.checked.policy_set.policies:
        cov.rules[p.file] = [f"{d.name}/{r.id}" for d in p.decisions for r in d.all_rules]
    return cov


def _fired(result: RunResult) -> set[str]:
    out = set()
    for r in result.results.values():
        for name, res in r.decisions.items():
            if res.collected is not None:
                hit = res.collected.any(axis=0)
            else:
                idx = res.rule_index[(res.rule_index != NO_RULE) & (res.rule_index != CONFLICT)]
                hit = np.zeros(len(res.rules), dtype=bool)
                hit[np.unique(idx)] = True
            out |= {f"{name}/{rule.id}" for rule, h in zip(res.rules, hit) if h}
    return out


def _frames(pl: Plan, doc: LocatedDoc, case: dict[str, Any], folder: Path,
            defaults: dict[str, dict[str, Any]]) -> dict[str, Path]:
    """Write each entity's rows (with defaults) to a CSV so they pass the same checks as real facts."""
    ps = pl.checked.policy_set
    files: dict[str, Path] = {}
    data = case.get("data") or {}
    for ep in pl.entities:
        entity = ep.entity
        path = folder / f"{entity}.csv"
        if entity in data:
            files[entity] = (Path(doc.file).parent / str(data[entity])).resolve()
            continue
        rows = case.get(entity) or []
        facts = list(ps.facts(entity))
        for row in rows:
            unknown = [k for k in (row if isinstance(row, dict) else {}) if k not in facts]
            if unknown:
                raise InputError(Problem("test-file", f"`{unknown[0]}` is not a fact of {entity}",
                                         Location(doc.file), did_you_mean(unknown[0], facts)
                                         or "a case row gives facts; decisions go under `expect:`"))
        frame = pd.DataFrame([{**defaults.get(entity, {}), **row} for row in rows])
        frame = frame.reindex(columns=facts)  # facts a case leaves out are empty cells
        frame.to_csv(path, index=False)
        files[entity] = path
    return files


def _past(pl: Plan, frames: dict[str, pd.DataFrame], given: Any) -> dict[str, pd.DataFrame]:
    """The case's `previous:` as the columns `previous()` reads, row by row."""
    out: dict[str, pd.DataFrame] = {}
    for entity, per_id in (given or {}).items():
        if entity not in frames:
            raise InputError(Problem("test-file", f"`previous:` names entity `{entity}`, which no policy decides",
                                     Location("previous"), did_you_mean(entity, frames)))
        ep = pl.entity(entity)
        symbols = pl.checked.namespaces[entity].symbols
        periods: dict[str, list[dict[str, Any]]] = {}
        for key, values in (per_id or {}).items():
            back = values if isinstance(values, list) else [values]
            for period in back:
                for name, value in (period or {}).items():
                    if name not in symbols or symbols[name].kind == "param":
                        raise InputError(Problem("test-file", f"`previous:` of {entity} {key} names `{name}`, "
                                                 f"which is not a fact, feature or decision of {entity}",
                                                 Location("previous"), did_you_mean(name, symbols)))
                    number = isinstance(value, (int, float)) and not isinstance(value, bool)
                    if number and value == value and not abs(value) <= sys.float_info.max:  # not NaN, beyond
                        raise InputError(Problem("test-file", f"`previous:` of {entity} {key} gives `{name}` a "
                                                 "number beyond the largest kam holds (about 1.8e308)",
                                                 Location("previous"), "write a finite number"))
            periods[str(key)] = [p or {} for p in back]
        keys = frames[entity][ep.key].astype(str).tolist()
        columns = {}
        for r in ep.past:
            values = [periods[k][r.back - 1].get(r.name) if k in periods and len(periods[k]) >= r.back else None
                      for k in keys]
            dtype = {"number": float, "boolean": "boolean"}.get(r.kind, object)
            columns[r.key] = pd.Series([np.nan if v is None and r.kind == "number" else v for v in values],
                                       dtype=dtype)  # type: ignore[call-overload]
        out[entity] = pd.DataFrame(columns)
    return out


def _check_value(got: Any, want: Any) -> bool:
    if got is None or (isinstance(got, float) and np.isnan(got)):
        return want is None
    if isinstance(got, (list, np.ndarray)):
        return [value_text(x) for x in got] == _as_list(want)
    if isinstance(want, bool) or isinstance(got, (bool, np.bool_)):
        return bool(got) == want
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        try:
            return abs(float(got) - float(want)) < 1e-9
        except (TypeError, ValueError):
            return False
    return str(got) == str(want)


def _as_list(want: Any) -> list[str]:
    """An expected list: a YAML list, or one text with the items separated by commas."""
    if isinstance(want, list):
        return [value_text(x) for x in want]
    text = value_text(want)
    return [part.strip() for part in text.split(",")] if text.strip() else []


def _shown(v: Any) -> str:
    return list_text(v) if isinstance(v, list) else value_text(v)


def _compare(pl: Plan, outputs: dict[str, pd.DataFrame], expect: dict[str, Any]) -> list[str]:
    failures = []
    for entity, per_id in (expect or {}).items():
        if entity not in outputs:
            failures.append(f"no entity `{entity}` in the policies")
            continue
        out = outputs[entity]
        ep = pl.entity(entity)
        decisions = {d.name: d for d in ep.decisions}
        outputs_of = {o.name: d for d in ep.decisions for o in d.outputs}
        keyed = out.set_index(ep.key, drop=False)
        for key, checks in (per_id or {}).items():
            key = str(key)
            if key not in keyed.index:
                failures.append(f"{entity} {key}: not in the case's population")
                continue
            row = keyed.loc[key]
            for name, want in (checks or {}).items():
                d = decisions.get(name) or outputs_of.get(name)
                if d is None:
                    failures.append(f"{entity} {key}: no decision or output `{name}` "
                                    f"({did_you_mean(name, list(decisions) + list(outputs_of)) or 'check the name'})")
                    continue
                spec = want if isinstance(want, dict) and set(want) <= {"value", "rule", "because"} else {"value": want}
                got_rule = plain_value(row[f"{d.name}_rule"])
                got_because = plain_value(row[f"{d.name}_because"])
                if "value" in spec:
                    if name == d.name and not d.single:  # all outputs of the decision at once
                        wanted = spec["value"] if isinstance(spec["value"], dict) else {}
                        got = {o.name: plain_value(row[o.name]) for o in d.outputs}
                        ok = all(_check_value(got.get(k), v) for k, v in wanted.items())
                    else:  # the column of a single-output decision, or of one output
                        got = plain_value(row[name])
                        ok = _check_value(got, spec["value"])
                    if not ok:
                        failures.append(f"{entity} {key} {name}: expected {spec['value']!r}, got {got!r} "
                                        f"(rule `{_shown(got_rule)}`: {got_because})")
                if "rule" in spec and not _check_value(got_rule, spec["rule"]):
                    failures.append(f"{entity} {key} {d.name}: expected rule `{_shown(spec['rule'])}`, "
                                    f"got `{_shown(got_rule)}` ({got_because})")
                if "because" in spec and str(spec["because"]) not in str(got_because):
                    failures.append(f"{entity} {key} {d.name}: expected the explanation to contain "
                                    f"{spec['because']!r}, got {got_because!r}")
    return failures


def _load_test_file(path: Path) -> LocatedDoc:
    doc = load_text(path.read_text(encoding="utf-8"), str(path))
    data = doc.data
    problems = []
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        problems.append(Problem("test-file", "a test file needs a list `cases:`", doc.loc(())))
    else:
        for key in data:
            if key not in ("cases", "defaults", "description"):
                problems.append(Problem("test-file", f"`{key}` is not a known setting of a test file",
                                        doc.key_loc((key,)), did_you_mean(key, ["cases", "defaults", "description"])))
        for i, case in enumerate(data["cases"]):
            if not isinstance(case, dict) or "name" not in case or "expect" not in case:
                problems.append(Problem("test-file", "each case needs `name:` and `expect:`", doc.loc(("cases", i))))
    if problems:
        raise PolicyError(problems)
    return doc


def run_tests(pl: Plan, files: list[Path]) -> SuiteResult:
    """Run every case of the given test files against the compiled policies."""
    coverage = _coverage_table(pl)
    results: list[CaseResult] = []
    entities = {e.entity for e in pl.entities}
    for path in files:
        doc = _load_test_file(path)
        defaults = doc.data.get("defaults") or {}
        for i, case in enumerate(doc.data["cases"]):
            loc = doc.loc(("cases", i))
            res = CaseResult(str(path), str(case["name"]), loc)
            results.append(res)
            t0 = time.perf_counter()
            _run_case(pl, doc, case, defaults, entities, res, coverage)
            res.seconds = time.perf_counter() - t0
    return SuiteResult(results, coverage)


def _run_case(pl: Plan, doc: LocatedDoc, case: dict[str, Any], defaults: dict[str, Any], entities: set[str],
              res: CaseResult, coverage: Coverage) -> None:
    """One case: its facts read as files would be, decided, its expectations and the invariants checked."""
    unknown = [k for k in case if k not in ("name", "expect", "data", "description", "previous")
               and k not in entities]
    if unknown:
        known = did_you_mean(unknown[0], sorted(entities)) or "entities: " + ", ".join(sorted(entities))
        res.failures.append(f"`{unknown[0]}` is neither an entity of the policies nor a case setting ({known})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            inputs = _frames(pl, doc, case, Path(tmp), defaults)
            frames = run_inputs.read_inputs(pl, inputs)
            past = _past(pl, frames, case.get("previous"))
        except InputError as exc:
            res.failures += [f"facts of the case: {p.message}" for p in exc.problems]
            return
    try:
        result = service.run(pl, frames, past=past)
    except InputError as exc:  # this case's facts cannot be decided (a number too large): the others can
        res.failures += [f"deciding the case: {p.message}" for p in exc.problems]
        return
    coverage.fired |= _fired(result)
    res.failures += [v.text() for v in result.violations()]
    outputs = {e: output_frame(r) for e, r in result.results.items()}
    res.failures += _compare(pl, outputs, case["expect"])

