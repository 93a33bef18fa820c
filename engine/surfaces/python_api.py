"""The Python API, for notebooks and services: a policy folder loaded once, run on pandas DataFrames.

    import engine

    policies = engine.load_policies("policies")      # compiled and checked once
    decided = policies.run({"customer": customers})  # any entities (and those they read) as DataFrames
    decided["customer"]                              # id, each decision, its rule id and because text
    print(decided.explain("000320"))                 # the trace `kam explain` prints

The frames get the checks a facts file gets from `kam run` (types, required values, ranges, declared
values, ids as text, duplicate ids), with the same messages located at the frame's row labels; a
problem raises `engine.InputError` (policy problems `engine.PolicyError`), whose `problems` say
what and where. Broken invariants raise `engine.InvariantError` unless `allow_violations=True`, as
`kam run` writes nothing unless `--allow-violations`.

What a notebook shows (the policies, a run's decisions) writes its figures for the readers of the
policies' `locale:`, or of the `locale=` given to `load_policies` or `run` (`"zh_CN"`, `"de_DE"`);
the frames themselves keep exact numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..run import service
from . import display
from ..batch.result import RunResult
from ..language.compile import compile_policies
from ..language.errors import InputError, KamError, Location, Problem
from ..language.figures import Reader
from ..batch.explain import Trace
from ..language.plan import Plan
from .locales import figures_reader


class InvariantError(KamError):
    """A run in which some entities break an invariant of the policies (`problems` name them)."""

    exit_code = 1


@dataclass(frozen=True)
class Explanation:
    """Why one entity got its decisions: `str()` is the text of `kam explain`, `to_dict()` its JSON."""

    trace: Trace

    def __str__(self) -> str:
        return self.trace.render_text()

    def __repr__(self) -> str:
        return f"<Explanation {self.trace.entity} {self.trace.key}>"

    def _repr_html_(self) -> str:
        return display.trace_html(self.trace)

    def to_dict(self) -> dict[str, Any]:
        return self.trace.to_dict()


class Decisions(Mapping[str, pd.DataFrame]):
    """The decisions of one run, a DataFrame per entity (as `kam run` writes them: the id, then per
    decision its value(s), `<decision>_rule` and `<decision>_because`; with `features=True` the
    derived features after them)."""

    def __init__(self, result: RunResult, features: bool, reader: Reader | None = None):
        self.result = result
        self.reader = reader or figures_reader(None, result.plan.checked.policy_set)  # how figures are shown
        self._frames = result.outputs()
        if features:
            for entity, frame in self._frames.items():
                self._frames[entity] = _with_features(frame, result, entity)

    def __getitem__(self, entity: str) -> pd.DataFrame:
        if entity not in self._frames:
            raise KeyError(f"no decisions for `{entity}` in this run (it has: {', '.join(self._frames)})")
        return self._frames[entity]

    def __iter__(self) -> Iterator[str]:
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    def explain(self, key: str, entity: str | None = None) -> Explanation:
        """The trace of the entity with this id (in every entity of the run unless one is named)."""
        return Explanation(service.explain(self.result, str(key), entity))

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per entity and decision, how many entities got each value."""
        return self.result.counts()

    def summary(self) -> pd.DataFrame:
        """The counts as a table: entity, decision, value, count and share of the entity (exact numbers,
        to compute with; the notebook display of the decisions writes them for people)."""
        return display.counts_frame(self.result)

    def __repr__(self) -> str:
        return display.decisions_text(self.result, self.reader)

    def _repr_html_(self) -> str:
        return display.decisions_html(self.result, self.reader)

    @property
    def measures(self) -> dict[str, dict[str, Any]]:
        """Per entity, the values of its policies' `measures:` (figures of the whole population)."""
        return self.result.measures()

    @property
    def warnings(self) -> list[str]:
        """What `kam run` warns of: ids that name an entity the other table lacks, rule conflicts."""
        return self.result.warnings() + self.result.conflicts()

    @property
    def violations(self) -> list[str]:
        """The invariants broken in this run, in words (empty unless run with allow_violations=True)."""
        return [v.text() for v in self.result.violations()]


def _with_features(frame: pd.DataFrame, result: RunResult, entity: str) -> pd.DataFrame:
    features = result.features(entity)
    return frame.assign(**{c: features[c] for c in features.columns if c not in frame.columns})


class Policies:
    """A policy folder, compiled and checked: run it as many times as needed."""

    def __init__(self, plan: Plan, locale: str | None = None):
        self.plan = plan
        self.locale = locale  # the readers' locale of what is shown; None: the policies' `locale:`, else en_US
        self.reader = _reader(locale, plan)
        self._proofs: dict[str, str] | None = None

    def __repr__(self) -> str:
        return display.policies_text(self.plan)

    def _repr_html_(self) -> str:
        return display.policies_html(self.plan, self.proofs(), self.reader)

    def proofs(self) -> dict[str, str]:
        """Per invariant id, what `kam check` proved: proved, violated or not-analysed (worked out once)."""
        if self._proofs is None:
            from ..analysis.invariants import prove

            self._proofs = {r.invariant.id: r.status for r in prove(self.plan)} \
                if self.plan.checked.policy_set.invariants() else {}
        return self._proofs

    @property
    def folder(self) -> str:
        return str(self.plan.checked.policy_set.directory)

    @property
    def hash(self) -> str:
        """The policy-set hash `kam run` writes into its manifest."""
        return self.plan.checked.policy_set.hash

    @property
    def entities(self) -> list[str]:
        """The entities the policies decide, in the order they are decided."""
        return [ep.entity for ep in self.plan.entities]

    def facts(self, entity: str) -> list[str]:
        """The columns a frame of this entity must have."""
        return list(self.plan.checked.policy_set.facts(self._entity(entity)))

    def _entity(self, entity: str) -> str:
        if entity not in self.entities:
            from ..language.errors import did_you_mean

            raise InputError(Problem("usage", f"the policies decide no entity `{entity}`", Location(self.folder),
                                     did_you_mean(entity, self.entities) or f"entities: {', '.join(self.entities)}"))
        return entity

    def run(self, frames: Mapping[str, pd.DataFrame], *, backend: str = "pandas", features: bool = False,
            allow_violations: bool = False, locale: str | None = None) -> Decisions:
        """Decide the entities given as DataFrames (an entity whose policies read another, like quotes
        reading their customer's tier, needs that one's frame too). `features=True` adds the derived
        features to the decisions (to plot `profit_share`, say). `locale` ("zh_CN", "de_DE") is how the
        decisions show their figures in a notebook [default: that of `load_policies`]."""
        shown = self.reader if locale is None else _reader(locale, self.plan)
        for entity in frames:
            self._entity(entity)
        pl = self.plan.only(list(frames))
        needed = [ep.entity for ep in pl.entities if ep.entity not in frames]
        if needed:
            readers = [ep.entity for ep in pl.entities if any(j.entity in needed for j in ep.joins)]
            raise InputError(Problem("input-missing-file",
                                     f"{', '.join(readers)} read{'s' if len(readers) == 1 else ''} {', '.join(needed)}"
                                     f": pass {'its' if len(needed) == 1 else 'their'} frame too",
                                     Location(self.folder),
                                     f"e.g. policies.run({{{', '.join(f'{e!r}: ...' for e in [*frames, *needed])}}})"))
        if backend not in service.BACKENDS:
            raise InputError(Problem("usage", f"no backend `{backend}`", Location(self.folder),
                                     f"backends: {', '.join(service.BACKENDS)}"))
        result = service.decide_frames(pl, dict(frames), backend=backend)
        broken = result.violations()
        if broken and not allow_violations:
            raise InvariantError([Problem("invariant-violated", v.text(), v.invariant.loc,
                                          "see decided.explain(ID); allow_violations=True returns the decisions anyway")
                                  for v in broken])
        return Decisions(result, features, shown)


def _reader(locale: str | None, plan: Plan) -> Reader:
    """The reader of `locale=` (the policies' `locale:`, else en_US, when None); an unknown one raises
    `InputError` at once."""
    try:
        return figures_reader(locale, plan.checked.policy_set, "locale=")
    except InputError as exc:
        raise InputError([Problem(p.code, p.message, Location(str(plan.checked.policy_set.directory)), p.hint)
                          for p in exc.problems]) from None


def load_policies(folder: str | Path = "policies", locale: str | None = None) -> Policies:
    """Compile a policy folder (raises `PolicyError` with every problem `kam check` reports as an error).
    `locale` ("zh_CN", "de_DE") is how what a notebook shows writes its figures [default: the policies'
    `locale:`, else en_US]."""
    return Policies(compile_policies(Path(folder)), locale)


class Problems(list):
    """Problems as `kam check` prints them (a list of `Problem`; in a notebook, a table of located lines)."""

    def __repr__(self) -> str:
        return "\n".join(p.render() for p in self) if self else "no problems"

    def _repr_html_(self) -> str:
        return display.problems_html(list(self))


def check(folder: str | Path = "policies") -> list[Problem]:
    """What `kam check` finds in a policy folder: errors, warnings and notes (each with `.severity`,
    `.code`, `.message`, `.loc` and `.hint`; `problem.render()` is what `kam check` prints)."""
    from ..analysis.findings import check_policies

    return Problems(check_policies(Path(folder)).problems)
