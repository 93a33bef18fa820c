"""Stage 4, type-check: names, types, functions and decision values, before any data is read.

Builds one namespace per entity (`namespaces`), infers a type for every expression (`expressions`,
`calls`), and checks here what the policies do with them: derived features in any order (and their
cycles), decisions and their rules, invariants and measures. Every problem is collected and reported
at `file:line:col`.
"""

from __future__ import annotations

from .errors import Location, PolicyError, Problem, did_you_mean
from .expressions import ExpressionTyper
from .functions import POPULATION_FUNCTIONS
from .model import Decision, Derive, Expr, Invariant, Measure, Output, Policy, PolicySet, Rule, Scalar
from .namespaces import build_namespaces
from .nodes import PREVIOUS, STREAK, Call, Name, Node, children, names, past_reads, walk
from .types import LIST_SEPARATOR, QUOTA_VARIABLES, UNKNOWN, Checked, Namespace, Symbol, Type


class _Checker:
    """The checks of one policy set; expressions are typed by `typer`, problems collected in `problems`."""

    def __init__(self, policy_set: PolicySet):
        self.ps = policy_set
        self.problems: list[Problem] = []
        self.namespaces: dict[str, Namespace] = {}
        self.measure_names: dict[str, dict[str, Location]] = {}
        params = {(p.entity, prm.name): prm.value for p in policy_set.policies for prm in p.params}
        self.typer = ExpressionTyper(params, self.problems)

    def error(self, code: str, message: str, loc: Location, hint: str = "") -> None:
        self.problems.append(Problem(code, message, loc, hint))

    def check_derives(self) -> None:
        # features may read each other in any order; resolve types in rounds
        pending = [(p, d) for p in self.ps.policies for d in p.derives]
        while pending:
            progress = False
            still = []
            for p, d in pending:
                ns = self.namespaces[p.entity]
                if self.waits_for(d, ns):
                    still.append((p, d))
                    continue
                self.settle(d, ns, self.typer.check_expr(d.expr, ns))
                progress = True
            pending = still
            if not progress:
                break
        if not pending:
            return
        # what is left reads itself, directly or through others: report each cycle once, then check the
        # rest of those expressions with the features of the cycle as unknown (so nothing follows from it)
        self.report_cycles(pending)
        for p, d in pending:
            self.settle(d, self.namespaces[p.entity], None)
        for p, d in pending:
            self.typer.check_expr(d.expr, self.namespaces[p.entity])

    def waits_for(self, d: Derive, ns: Namespace) -> bool:
        """Whether a feature reads a feature whose type is not known yet (itself included)."""
        node = d.expr.node
        # previous(d) is the value of another period, read from the history: it waits for nothing
        # but the type of d, which infer_previous reports when it is d's own
        read = names(node) + [n for n, _ in past_reads(node) if n != d.name] if node is not None else []
        reads = [ns.symbols.get(n) for n in read]
        return any(s is not None and s.kind == "derive" and s.type.kind == "pending" for s in reads)

    def settle(self, d: Derive, ns: Namespace, t: Type | None) -> None:
        sym = ns.symbols[d.name]
        if sym.kind == "derive" and sym.loc == d.loc:
            ns.symbols[d.name] = Symbol(d.name, "derive", t or UNKNOWN, d.loc)

    def report_cycles(self, pending: list[tuple[Policy, Derive]]) -> None:
        graph = {(p.entity, d.name): [(p.entity, n.name) for n in _names(d.expr.node)] for p, d in pending}
        locs = {(p.entity, d.name): d.loc for p, d in pending}
        reported: set[frozenset] = set()
        for start in graph:
            cycle = _cycle_from(start, graph)
            if cycle and frozenset(cycle) not in reported:
                reported.add(frozenset(cycle))
                chain = [n for _, n in cycle] + [cycle[0][1]]
                self.error("cycle", f"features depend on each other in a cycle: {' -> '.join(chain)}",
                           locs[cycle[0]], "break the cycle: one of them must not read the other")

    def check_then(self, d: Decision, rule: Rule) -> None:
        outputs = {o.name: o for o in d.outputs}
        given = dict(rule.then)
        ns = self.namespaces[d.entity]
        for (name, value), loc in zip(rule.then, rule.then_locs or [rule.loc] * len(rule.then)):
            out = outputs.get(name)
            if out is None:
                self.error("unknown-output", f"decision `{d.name}` has no output `{name}`", loc,
                           did_you_mean(name, outputs) or f"its outputs: {', '.join(outputs)}")
                continue
            if isinstance(value, Expr):
                self.check_computed(d, out, value, ns)
                continue
            self.check_value(d, out.name, out.type, out.values, value, loc)
        if not d.single:
            missing = [o for o in outputs if o not in given]
            if missing:
                self.error("missing-output", f"rule `{rule.id}` does not set {', '.join(missing)}", rule.loc,
                           "every rule of a decision with several outputs sets all of them")

    def check_computed(self, d: Decision, out: Output, value: Expr, ns: Namespace) -> None:
        """An output computed by an expression: of the output's type, in a decision that can hold it."""
        t = self.typer.check_expr(value, ns)
        if t is not None and t.kind != out.type:
            self.error("type", f"`{out.name}` is {Type(out.type)}, but this rule computes {t}", value.loc)
        if out.values is not None:
            self.error("computed-values", f"`{out.name}` is computed by a rule, so it cannot declare `values`",
                       value.loc, "declare `type: number` (with `min`/`max` if it has bounds) instead of values")
        if d.hit in ("any", "priority") or d.gives_list:
            how = "a collected list holds fixed values" if d.gives_list else \
                f"hit policy {d.hit} compares the rules' fixed values"
            self.error("hit", f"`{out.name}` is computed, but {how}", value.loc,
                       "give fixed values, or use hit policy first or unique (collect: aggregate sum, min or max)")

    def check_value(self, d: Decision, out: str, kind: str, values: tuple | None, value: Scalar, loc: Location) -> None:
        actual = "boolean" if isinstance(value, bool) else ("number" if isinstance(value, (int, float)) else "string")
        if values is not None and value not in values:
            allowed = ", ".join(map(str, values))
            self.error("unknown-value", f"{value!r} is not a declared value of `{out}` (declared: {allowed})", loc,
                       did_you_mean(str(value), map(str, values)))
        elif actual != kind:
            self.error("type", f"`{out}` is {Type(kind)}, but this rule gives {Type(actual)}", loc)

    def check_decision(self, p: Policy, d: Decision) -> None:
        ns = self.namespaces[p.entity]
        # as in DMN, the outputs that list their values order the rules (the first such output first);
        # an output without `values:` plays no part in the order
        if d.hit in ("priority", "output-order") and not any(o.values for o in d.outputs):
            where = f"decision `{d.name}`" if d.single else f"one of the outputs of `{d.name}`"
            self.error("priority-values", f"hit policy {d.hit} needs `values:` on {where}", d.outputs[0].loc or d.loc,
                       "list the values from highest to lowest priority")
        if d.hit == "collect" and d.aggregate in ("sum", "min", "max") and d.main.type != "number":
            self.error("type", f"`aggregate: {d.aggregate}` needs a number output", d.loc)
        if d.hit == "collect" and d.aggregate != "list" and not d.single:
            self.error("hit", f"`aggregate: {d.aggregate}` totals one output; this decision has several", d.loc,
                       "collect the rows as lists (no aggregate), or make one decision per total")
        if d.aggregate != "list" and d.hit != "collect":
            self.error("hit", "`aggregate` only applies to hit policy collect", d.loc)
        if d.gives_list:
            for v in [v for o in d.outputs for v in list(o.values or ())] + \
                    [v for r in d.all_rules for _, v in r.then]:
                if isinstance(v, str) and LIST_SEPARATOR in v:
                    self.error("unknown-value", f"{v!r} contains `{LIST_SEPARATOR}`, which separates the values "
                               f"of a collected list in texts and CSV files", d.loc,
                               "write it without the comma, e.g. with a hyphen")
                    break
        ids: dict[str, Location] = {}
        defaults = 0
        for rule in d.rules:
            rules = [rule] + ([rule.quota.else_rule] if rule.quota else [])
            for r in rules:
                if r.id in ids:
                    self.error("duplicate-rule", f"rule id `{r.id}` is used twice in decision `{d.name}`", r.loc,
                               f"first use at line {ids[r.id].line}")
                ids.setdefault(r.id, r.loc)
                self.check_then(d, r)
            extra: dict[str, Type] = {}
            if rule.when is not None:
                t = self.typer.check_expr(rule.when, ns)
                if t is not None and t.kind != "boolean":
                    self.error("type", f"`when` must be a condition (yes/no), but this is {t}", rule.when.loc,
                               "compare it, e.g. `profit > 0`")
            if rule.is_default:
                defaults += 1
                if defaults > 1:
                    self.error("default", f"decision `{d.name}` has more than one default rule (no `when`)", rule.loc)
            if rule.quota is not None:
                q = rule.quota
                if d.hit != "first":
                    self.error("quota", "a quota can only be used with hit policy first", q.loc)
                for key in q.rank_by:
                    t = self.typer.check_expr(key.expr, ns)
                    if t is not None and t.kind != "number":
                        self.error("type", f"`rank_by` needs numbers, but this is {t}", key.expr.loc)
                if q.per is not None and q.per not in ns.symbols:
                    self.error("unknown-name", f"`per: {q.per}` is not a fact, feature or decision of {p.entity}",
                               q.per_loc or q.loc, did_you_mean(q.per, ns.symbols))
                if q.per is not None and q.per in ns.symbols and ns.symbols[q.per].type.kind == "list":
                    self.error("type", f"`per: {q.per}` cannot group by a list", q.per_loc or q.loc)
                extra = dict(QUOTA_VARIABLES)
                self.typer.check_template(q.else_rule.because, ns, extra)
            self.typer.check_template(rule.because, ns, extra)

    def check_invariant(self, p: Policy, inv: Invariant) -> None:
        t = self.typer.check_expr(inv.expr, self.namespaces[p.entity])
        if t is not None and t.kind != "boolean":
            self.error("type", f"`{inv.kind}` of invariant `{inv.id}` must be a condition (yes/no), but this is {t}",
                       inv.expr.loc, "compare it, e.g. `retention == 'exit' and tier == 'A'`")

    def check_measure(self, p: Policy, m: Measure) -> None:
        """A measure is one figure of the population: every value of an entity it reads is read inside
        sum(), mean(), count() or quantile() (over everyone: no `by=`), and it reads no earlier period."""
        ns = self.namespaces[p.entity]
        if m.name in ns.symbols or m.name in self.measure_names.setdefault(p.entity, {}):
            first = ns.symbols[m.name].loc if m.name in ns.symbols else self.measure_names[p.entity][m.name]
            self.error("duplicate-name", f"`{m.name}` is already a name of {p.entity} (at {first})", m.loc,
                       "give the measure a name of its own")
            return
        self.measure_names[p.entity][m.name] = m.loc
        node = m.expr.node
        if node is None:
            return
        t = self.typer.check_expr(m.expr, ns)
        if t is not None and t.kind not in ("number", "boolean"):
            self.error("type", f"measure `{m.name}` must be a number (or yes/no), but this is {t}", m.expr.loc,
                       "e.g. sum(if(in_pareto_top, profit, 0)) / sum(profit)")
        for where, reason in _row_reads(node):
            self.error("type", f"measure `{m.name}` {reason}", m.expr.loc.shifted(where.pos),
                       "a measure is one figure for the whole population: read each entity's values inside "
                       "sum(), mean(), count() or quantile(), e.g. sum(profit), mean(revenue)")
            break

    def run(self) -> Checked:
        self.namespaces.update(build_namespaces(self.ps, self.problems))
        self.check_derives()
        for p in self.ps.policies:
            for d in p.decisions:
                self.check_decision(p, d)
            for inv in p.invariants:
                self.check_invariant(p, inv)
            for m in p.measures:
                self.check_measure(p, m)
        if self.problems:
            raise PolicyError(self.problems)
        return Checked(self.ps, self.namespaces)


AGGREGATES = ("sum", "mean", "count", "quantile")  # one value for everyone (without `by=`)


def _row_reads(node: Node, inside: bool = False) -> list[tuple[Node, str]]:
    """Where an expression depends on the row it is evaluated for: a name outside an aggregate, an
    aggregate per group (`by=`), an earlier period's value (the parts of a measure that cannot be)."""
    if isinstance(node, Call) and node.func in (PREVIOUS, STREAK):
        return [(node, f"reads earlier periods with {node.func}(); measures are of this run's population")]
    if isinstance(node, Call) and node.func in AGGREGATES:
        if node.kwarg("by") is not None:
            return [(node, f"computes {node.func}() per group (`by=`), not one figure for everyone")]
        return [r for a in node.args for r in _row_reads(a, True)]
    if isinstance(node, Name) and not inside:
        return [(node, f"reads `{node.name}`, which differs from one entity to the next")]
    if isinstance(node, Call) and node.func in POPULATION_FUNCTIONS and not inside:
        return [(node, f"uses {node.func}(), which gives each entity a value of its own")]
    return [r for child in children(node) for r in _row_reads(child, inside)]


def _cycle_from(start: tuple[str, str], graph: dict[tuple[str, str], list[tuple[str, str]]]
                ) -> list[tuple[str, str]] | None:
    """The cycle `start` lies on (in reading order from `start`), or None when it only leads into one."""
    path = [start]
    seen = {start}

    def walk_from(node: tuple[str, str]) -> list[tuple[str, str]] | None:
        for nxt in graph.get(node, []):
            if nxt == start:
                return list(path)
            if nxt in graph and nxt not in seen:
                seen.add(nxt)
                path.append(nxt)
                found = walk_from(nxt)
                if found:
                    return found
                path.pop()
        return None

    return walk_from(start)


def _names(node: Node | None) -> list[Name]:
    return [n for n in walk(node) if isinstance(n, Name)] if node is not None else []


def typecheck(policy_set: PolicySet) -> Checked:
    """Check every name, type, function call and decision value; raise PolicyError with all problems."""
    return _Checker(policy_set).run()
