"""Stage 2, validate: located YAML tree to policy model.

JSON Schema (Draft 2020-12) checks the structure; its errors are translated to plain words at the
`file:line:col` of the offending YAML node. Then the tree is turned into the immutable model.
Semantic checks that need names and types live in `typecheck`.
"""

from __future__ import annotations

import json
import math
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from .errors import Location, PolicyError, Problem, did_you_mean
from .load import LocatedDoc, policy_set_hash
from .figures import known_locale
from .numbers import number_text
from .model import Decision, Derive, Expr, Fact, Invariant, Join, Measure, Output, Param, Policy, PolicySet, Quota, \
    RankKey, Rule, Template

SCHEMA_NAME = "policy.schema.json"
TESTS_SCHEMA_NAME = "tests.schema.json"  # of the test-case files of `kam test`


def schema_path(name: str = SCHEMA_NAME) -> Path:
    """Where a JSON Schema of kam's files lives: the repository's `schemas/`, else the installed copy."""
    repo = Path(__file__).resolve().parents[2] / "schemas" / name
    if repo.exists():
        return repo
    return Path(sys.prefix) / "share" / "kam" / "schemas" / name


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The policy schema as a dict."""
    return json.loads(schema_path().read_text(encoding="utf-8"))


def _describe_path(path: tuple[Any, ...]) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "the file"


def _plain(error: ValidationError) -> tuple[str, str]:
    """A plain-words message and hint for one schema error."""
    v = error.validator
    where = _describe_path(tuple(error.absolute_path))
    if v == "required":
        missing = [m for m in error.validator_value if isinstance(error.instance, dict) and m not in error.instance]
        name = missing[0] if missing else error.validator_value[0]
        return f"`{name}` is missing in {where}", f"add `{name}:`"
    if v == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed] if isinstance(error.instance, dict) else []
        name = extra[0] if extra else "?"
        hint = did_you_mean(str(name), allowed) or (f"allowed here: {', '.join(allowed)}" if allowed else "")
        return f"`{name}` is not a known setting in {where}", hint
    if v == "enum":
        options = ", ".join(str(o) for o in error.validator_value)
        hint = did_you_mean(str(error.instance), [str(o) for o in error.validator_value]) or f"use one of: {options}"
        return f"{error.instance!r} is not allowed in {where}", hint
    if v == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        words = {"object": "a mapping (name: value lines)", "array": "a list", "string": "text"}
        return f"{where} must be {words.get(expected, expected)}, not {type(error.instance).__name__}", ""
    if v == "pattern":
        if error.schema.get("description"):
            return f"{error.instance!r} is not a valid name in {where}", str(error.schema["description"])
        return f"{error.instance!r} has the wrong form in {where}", f"expected the pattern {error.validator_value}"
    if v in ("minItems", "minProperties"):
        return f"{where} must not be empty", ""
    if v == "not":
        return f"{where} cannot have both `values` and `outputs`", "use `values` for one output, `outputs` for several"
    if v == "uniqueItems":
        return f"{where} lists the same value twice", ""
    return f"{where}: {error.message}", ""


def schema_problems(doc: LocatedDoc) -> list[Problem]:
    """Every structural problem of one policy document, located in the YAML."""
    validator = jsonschema.Draft202012Validator(load_schema())
    problems = []
    for error in validator.iter_errors(doc.data):
        path = tuple(error.absolute_path)
        choice = _required_choice(error)
        if choice:  # `never` or `always`: exactly one of some settings
            names = " or ".join(f"`{n}`" for n in choice)
            present = [n for n in choice if isinstance(error.instance, dict) and n in error.instance]
            message = (f"{_describe_path(path)} has both {' and '.join(f'`{n}`' for n in present)}; give one"
                       if present else f"{names} is missing in {_describe_path(path)}")
            problems.append(Problem("schema", message, doc.loc(path), f"write exactly one of {names}"))
            continue
        # oneOf/anyOf errors say little; descend to the most relevant cause
        if error.context:
            error = best_match(error.context) or error
        path = tuple(error.absolute_path)
        loc = doc.loc(path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = error.schema.get("properties", {})
            extra = [k for k in error.instance if k not in allowed]
            if extra:
                loc = doc.key_loc(path + (extra[0],))
        message, hint = _plain(error)
        problems.append(Problem("schema", message, loc, hint))
    return problems


def _required_choice(error: ValidationError) -> list[str]:
    """The settings of a `oneOf` that only asks for one of several keys (as an invariant's never/always)."""
    options = error.schema.get("oneOf") if error.validator == "oneOf" and isinstance(error.schema, dict) else None
    if not options or not all(isinstance(o, dict) and set(o) == {"required"} for o in options):
        return []
    return [name for o in options for name in o["required"]]


def _expr_loc(doc: LocatedDoc, path: tuple[Any, ...]) -> Location:
    """Location of the first character of an expression (inside the quotes, if quoted)."""
    loc = doc.loc(path)
    lines = doc.text.splitlines()
    if 0 < loc.line <= len(lines):
        line = lines[loc.line - 1]
        if loc.col - 1 < len(line) and line[loc.col - 1] in "'\"":
            return loc.shifted(1)
    return loc


def _expr(doc: LocatedDoc, value: Any, path: tuple[Any, ...]) -> Expr:
    if isinstance(value, bool):
        source = "true" if value else "false"
    else:
        source = str(value)
    return Expr(source, _expr_loc(doc, path))


def _then(doc: LocatedDoc, value: Any, path: tuple[Any, ...], single_name: str | None,
          types: dict[str, str]) -> tuple[tuple, tuple]:
    """A rule's outputs; text given for a number or yes/no output is an expression to compute."""
    items = tuple(value.items()) if isinstance(value, dict) else ((single_name or "", value),)
    paths = [path + (k,) for k, _ in items] if isinstance(value, dict) else [path]
    out = []
    for (name, v), p in zip(items, paths):
        if isinstance(v, str) and types.get(name) in ("number", "boolean"):
            v = _expr(doc, v, p)
        out.append((name, v))
    return tuple(out), tuple(doc.loc(p) for p in paths)


def _rule(doc: LocatedDoc, r: dict[str, Any], path: tuple[Any, ...], single_name: str | None,
          types: dict[str, str]) -> Rule:
    then, then_locs = _then(doc, r["then"], path + ("then",), single_name, types)
    quota = None
    if "quota" in r:
        q = r["quota"]
        qp = path + ("quota",)
        rank_src = q["rank_by"] if isinstance(q["rank_by"], list) else [q["rank_by"]]
        keys = []
        for i, text in enumerate(rank_src):
            kpath = qp + ("rank_by", i) if isinstance(q["rank_by"], list) else qp + ("rank_by",)
            text = str(text).strip()
            descending = True
            lowered = text.lower()
            for suffix, desc in ((" asc", False), (" desc", True)):
                if lowered.endswith(suffix):
                    text, descending = text[: -len(suffix)].rstrip(), desc
            keys.append(RankKey(Expr(text, _expr_loc(doc, kpath)), descending))
        top = q["top"]
        top_n, top_share = (None, float(str(top)[:-1]) / 100) if isinstance(top, str) else (int(top), None)
        e = q["else"]
        else_then, else_locs = _then(doc, e["then"], qp + ("else", "then"), single_name, types)
        else_rule = Rule(
            id=str(e["id"]),
            then=else_then,
            loc=doc.loc(qp + ("else",)),
            because=Template(e["because"], _expr_loc(doc, qp + ("else", "because"))) if "because" in e else None,
            then_locs=else_locs,
        )
        quota = Quota(
            rank_by=tuple(keys), loc=doc.loc(qp), else_rule=else_rule, top_n=top_n, top_share=top_share,
            per=q.get("per"), per_loc=doc.loc(qp + ("per",)) if "per" in q else None, ties=q.get("ties", "key"),
        )
    return Rule(
        id=str(r["id"]),
        then=then,
        loc=doc.loc(path),
        when=_expr(doc, r["when"], path + ("when",)) if "when" in r else None,
        because=Template(r["because"], _expr_loc(doc, path + ("because",))) if "because" in r else None,
        quota=quota,
        then_locs=then_locs,
    )


def _scalars(values: list[Any] | None) -> tuple | None:
    return tuple(values) if values is not None else None


def _output(doc: LocatedDoc, name: str, o: dict[str, Any], path: tuple[Any, ...]) -> Output:
    kind = o.get("type") or (_values_type(o["values"]) if o.get("values") else "string")
    return Output(name, kind, _scalars(o.get("values")), o.get("min"), o.get("max"), o.get("decimals"),
                  doc.key_loc(path), o.get("unit"), o.get("currency"))


def _decision(doc: LocatedDoc, name: str, d: dict[str, Any], policy: str, entity: str) -> Decision:
    path = ("decisions", name)
    if "outputs" in d:
        outputs = tuple(_output(doc, o_name, o, path + ("outputs", o_name)) for o_name, o in d["outputs"].items())
        single = False
    else:
        outputs = (_output(doc, name, d, path),)
        single = True
    types = {o.name: o.type for o in outputs}
    rules = tuple(
        _rule(doc, r, path + ("rules", i), name if single else None, types) for i, r in enumerate(d["rules"])
    )
    return Decision(
        name=name, hit=d.get("hit", "first"), outputs=outputs, rules=rules, loc=doc.key_loc(path),
        policy=policy, entity=entity, aggregate=d.get("aggregate", "list"), single=single,
        target=tuple((str(v), float(param_value(share))) for v, share in (d.get("target") or {}).items()),
    )


def _range_invariants(decisions: tuple[Decision, ...], policy: str, entity: str) -> tuple[Invariant, ...]:
    """`min`/`max` of a number output, as the invariant kam checks: on the rules and on every entity."""
    out = []
    for d in decisions:
        for o in d.outputs:
            bounds = [f"{o.name} >= {number_text(o.min)}" if o.min is not None else "",
                      f"{o.name} <= {number_text(o.max)}" if o.max is not None else ""]
            bounds = [b for b in bounds if b]
            if bounds and o.loc is not None:
                text = f"is_missing({o.name}) or ({' and '.join(bounds)})"
                out.append(Invariant(f"{o.name.replace('_', '-')}-in-range", "always", Expr(text, o.loc), o.loc,
                                     f"`{o.name}` stays within its declared range", policy, entity, declared=False))
    return tuple(out)


def _values_type(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "number"
    return "string"


_PERCENT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*%\s*$")


def param_value(value: Any) -> Any:
    """A parameter as written: numbers, yes/no and text; "80%" is the number 0.8, as in expressions."""
    if isinstance(value, str):
        m = _PERCENT.match(value)
        if m:
            return float(m.group(1)) / 100
    return value


_LARGEST = sys.float_info.max


def _not_finite_words(value: float | int) -> str:
    if isinstance(value, int):
        return f"a number of {len(str(abs(value)))} digits, beyond the largest kam holds (about 1.8e308)"
    return ".nan (not a number)" if value != value else ".inf (infinite)"


def _non_finite(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], float | int]]:
    """Where a document holds `.nan` or `.inf` (YAML's words for them), or a whole number too large for
    a float (it would become one at the first comparison): (path, value)."""
    if isinstance(data, float) and not math.isfinite(data):
        return [(path, data)]
    if isinstance(data, int) and not isinstance(data, bool) and abs(data) > _LARGEST:
        return [(path, data)]
    if isinstance(data, dict):
        return [found for k, v in data.items() for found in _non_finite(v, path + (k,))]
    if isinstance(data, list):
        return [found for i, v in enumerate(data) for found in _non_finite(v, path + (i,))]
    return []


def _semantic_problems(doc: LocatedDoc) -> list[Problem]:
    """What the schema cannot say: settings that only make sense for some fact and output types, and
    numbers that are no numbers (a parameter of `.nan` made every comparison with it quietly false)."""
    problems = [Problem("schema", f"`{path[-1]}` is {_not_finite_words(value)}: "
                        "kam needs a finite number here", doc.loc(path), "write the number, e.g. 0.8 or 80%")
                for path, value in _non_finite(doc.data)]
    for d_name, d in (doc.data.get("decisions") or {}).items():
        outputs = d.get("outputs", {d_name: d}) if isinstance(d, dict) else {}
        for o_name, o in outputs.items():
            path = ("decisions", d_name) + (("outputs", o_name) if "outputs" in d else ())
            kind = o.get("type") or (_values_type(o["values"]) if o.get("values") else "string")
            problems += _unit_problems(doc, o, path, kind)
            for key in ("min", "max", "decimals"):
                if key in o and kind != "number":
                    problems.append(Problem("schema", f"`{key}` applies to number outputs, and `{o_name}` is {kind}",
                                            doc.key_loc(path + (key,)), "declare `type: number`, or remove it"))
        target = d.get("target") if isinstance(d, dict) else None
        if target:
            values = [str(v) for v in (d.get("values") or [])]
            for value in target:
                if str(value) not in values:
                    problems.append(Problem("schema", f"`target` names `{value}`, which is not a value of `{d_name}`",
                                            doc.key_loc(("decisions", d_name, "target", value)),
                                            f"its values: {', '.join(values) or '(none declared)'}"))
            total = sum(float(param_value(v)) for v in target.values())
            if total > 1 + 1e-9:
                problems.append(Problem("schema", f"the `target` shares of `{d_name}` add up to {total:.0%}, more "
                                        "than all entities", doc.key_loc(("decisions", d_name, "target"))))
    for f_name, f in (doc.data.get("facts") or {}).items():
        if isinstance(f, dict):
            problems += _unit_problems(doc, f, ("facts", f_name), f.get("type", ""))
        if isinstance(f, dict) and "decimals" in f and f.get("type") != "number":
            problems.append(Problem("schema", f"`decimals` applies to facts of type number, not {f.get('type')}",
                                    doc.key_loc(("facts", f_name, "decimals")),
                                    "remove it; whole numbers (integer) are never rounded"))
    named = set(doc.data.get("derive") or {}) | set(doc.data.get("measures") or {})
    for u_name in doc.data.get("units") or {}:
        if u_name not in named:
            problems.append(Problem("schema", f"`units` names `{u_name}`, which is not a derived feature or a "
                                    "measure of this policy", doc.key_loc(("units", u_name)),
                                    did_you_mean(str(u_name), sorted(named)) or
                                    "facts and outputs say their unit where they are declared"))
    for u_name, u in (doc.data.get("units") or {}).items():
        if isinstance(u, dict) and "currency" in u and u.get("unit") != "money":
            problems.append(Problem("schema", "`currency` goes with `unit: money`",
                                    doc.key_loc(("units", u_name, "currency")), "add `unit: money`, or remove it"))
    problems += _currency_problems(doc)
    locale = doc.data.get("locale")
    if isinstance(locale, str) and not known_locale(locale):
        problems.append(Problem("schema", f"`locale: {locale}` is not a locale kam knows", doc.loc(("locale",)),
                                "a language and a country, e.g. en_US, zh_CN, de_DE, fr_FR"))
    return problems


def _currency_problems(doc: LocatedDoc) -> list[Problem]:
    """Every currency a policy names is one ISO 4217 knows (CNY, EUR, USD), so its symbol can be shown."""
    from babel.numbers import is_currency

    data = doc.data
    named: list[tuple[tuple[Any, ...], Any]] = [(("currency",), data.get("currency"))]
    named += [(("facts", n, "currency"), f.get("currency")) for n, f in (data.get("facts") or {}).items()
              if isinstance(f, dict)]
    named += [(("units", n, "currency"), u.get("currency")) for n, u in (data.get("units") or {}).items()
              if isinstance(u, dict)]
    for d_name, d in (data.get("decisions") or {}).items():
        outputs = d.get("outputs", {d_name: d}) if isinstance(d, dict) else {}
        named += [(("decisions", d_name) + (("outputs", o_name) if "outputs" in d else ()) + ("currency",),
                   o.get("currency")) for o_name, o in outputs.items() if isinstance(o, dict)]
    return [Problem("schema", f"`currency: {code}` is not a currency code ISO 4217 knows", doc.loc(path),
                    "e.g. CNY, EUR, USD, JPY")
            for path, code in named if isinstance(code, str) and not is_currency(code)]


def _unit_problems(doc: LocatedDoc, spec: dict[str, Any], path: tuple[Any, ...], kind: str) -> list[Problem]:
    """`unit:` is for numbers (a whole number may be a count), `currency:` for money."""
    out = []
    unit = spec.get("unit")
    if unit is not None and kind not in ("number", "integer"):
        out.append(Problem("schema", f"`unit` applies to numbers, and this is {kind}", doc.key_loc(path + ("unit",)),
                           "remove it"))
    if "currency" in spec and unit != "money":
        out.append(Problem("schema", "`currency` goes with `unit: money`", doc.key_loc(path + ("currency",)),
                           "add `unit: money`, or remove the currency"))
    return out


def build_policy(doc: LocatedDoc) -> Policy:
    """The model of one schema-valid document."""
    data = doc.data
    name, entity = data["policy"], data["entity"]
    facts = tuple(
        Fact(
            name=f_name, type=f["type"], loc=doc.key_loc(("facts", f_name)), key=bool(f.get("key", False)),
            required=bool(f.get("required", False)) or bool(f.get("key", False)),
            min=f.get("min"), max=f.get("max"), values=_scalars(f.get("values")),
            measure=bool(f.get("measure", False)), policy=name, decimals=f.get("decimals"),
            unit=f.get("unit"), currency=f.get("currency"),
        )
        for f_name, f in (data.get("facts") or {}).items()
    )
    params = tuple(Param(p_name, param_value(value), doc.key_loc(("params", p_name)),
                         isinstance(value, str) and _PERCENT.match(value) is not None)
                   for p_name, value in (data.get("params") or {}).items())
    joins = tuple(
        Join(
            name=j_name, entity=j.get("entity", j_name), on=j["on"], take=tuple(j["take"]),
            loc=doc.key_loc(("joins", j_name)),
            take_locs=tuple(doc.loc(("joins", j_name, "take", i)) for i in range(len(j["take"]))),
        )
        for j_name, j in (data.get("joins") or {}).items()
    )
    derives = tuple(
        Derive(d_name, _expr(doc, src, ("derive", d_name)), doc.key_loc(("derive", d_name)), name)
        for d_name, src in (data.get("derive") or {}).items()
    )
    decisions = tuple(_decision(doc, d_name, d, name, entity) for d_name, d in data["decisions"].items())
    invariants = tuple(
        Invariant(str(inv["id"]), kind, _expr(doc, inv[kind], ("invariants", i, kind)),
                  doc.loc(("invariants", i)), str(inv.get("because", "")), name, entity)
        for i, inv in enumerate(data.get("invariants") or [])
        for kind in ("never", "always") if kind in inv
    ) + _range_invariants(decisions, name, entity)
    measures = tuple(
        Measure(m_name, _expr(doc, src, ("measures", m_name)), doc.key_loc(("measures", m_name)), name)
        for m_name, src in (data.get("measures") or {}).items()
    )
    units = tuple((u_name, u, None, None) if isinstance(u, str) else
                  (u_name, u.get("unit"), u.get("currency"), u.get("decimals"))
                  for u_name, u in (data.get("units") or {}).items())
    return Policy(name, entity, doc.file, doc.loc(()), facts, params, joins, derives, decisions, invariants,
                  measures, data.get("locale"), data.get("currency"), units)


def validate(docs: list[LocatedDoc], directory: str = "") -> PolicySet:
    """Schema-check every document (all problems at once) and build the policy set."""
    problems: list[Problem] = []
    for doc in docs:
        if doc.data is None:
            problems.append(Problem("empty", "the policy file is empty", Location(doc.file, 1, 1),
                                    "a policy needs at least `policy:`, `entity:` and `decisions:`"))
            continue
        found = schema_problems(doc)
        problems.extend(found or _semantic_problems(doc))
    if problems:
        raise PolicyError(problems)
    policies = tuple(build_policy(doc) for doc in docs)
    invariant_ids: dict[str, Invariant] = {}
    for p in policies:
        for inv in p.invariants:
            if inv.id in invariant_ids:
                problems.append(Problem("duplicate-invariant", f"invariant `{inv.id}` is also declared at "
                                        f"{invariant_ids[inv.id].loc}", inv.loc, "give each invariant its own id"))
            invariant_ids.setdefault(inv.id, inv)
    seen: dict[str, Policy] = {}
    for p in policies:
        if p.name in seen:
            problems.append(Problem("duplicate-policy", f"policy `{p.name}` is also declared in {seen[p.name].file}",
                                    p.loc, "give each policy its own name"))
        seen.setdefault(p.name, p)
    if problems:
        raise PolicyError(problems)
    locales = {p.locale: p for p in policies if p.locale}
    if len(locales) > 1:
        first, *others = locales.values()
        problems += [Problem("locale-disagrees", f"policy `{p.name}` names locale {p.locale}, and `{first.name}` "
                             f"names {first.locale}", p.loc, "the readers' locale is one for the whole policy set: "
                             "name it in one file") for p in others]
        raise PolicyError(problems)
    entities = tuple(dict.fromkeys(p.entity for p in policies))
    return PolicySet(policies, policy_set_hash(docs), directory, entities, tuple((d.file, d.text) for d in docs))
