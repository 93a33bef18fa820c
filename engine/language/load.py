"""Stage 1, load: YAML text to a located tree.

Safe loading only. Every node's line and column is kept (keyed by its path in the tree) so that
later stages can point at `file:line:col`. Duplicate keys are errors, not a silent last-one-wins.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Location, PolicyError, Problem

Path_ = tuple[Any, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: `no`, `yes`, `on`, `off` stay text.

    Business users write `then: no` or a country code `NO`; YAML 1.1 would turn those into False.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The same loader on libyaml's parser, where PyYAML has it: the shipped policies parse in 0.03 s
    instead of 0.29 s, at every command. Its error messages say less ("found character that cannot
    start any token", not which), so a file it refuses is parsed again by `_Loader` for the message."""


_FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")}


@dataclass(frozen=True)
class LocatedDoc:
    """A parsed YAML document: plain data plus the location of every node by its path."""

    file: str
    data: Any
    locs: dict[Path_, Location] = field(default_factory=dict)
    key_locs: dict[Path_, Location] = field(default_factory=dict)
    text: str = ""

    def loc(self, path: Path_) -> Location:
        """The location of the node at `path`, or of its nearest located ancestor."""
        p = tuple(path)
        while p:
            if p in self.locs:
                return self.locs[p]
            p = p[:-1]
        return self.locs.get((), Location(self.file, 1, 1))

    def key_loc(self, path: Path_) -> Location:
        """The location of the key that names the node at `path` (falls back to the node)."""
        return self.key_locs.get(tuple(path)) or self.loc(path)


def _mark(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(loader: _Loader, file: str, node: yaml.Node, path: Path_, doc: LocatedDoc, problems: list[Problem]) -> Any:
    doc.locs[path] = _mark(file, node)
    if node.tag not in _PLAIN_TAGS:
        problems.append(Problem("yaml-tag", f"YAML tag `{node.tag}` is not allowed in policy files",
                                _mark(file, node), "remove the `!` tag; policies hold plain values only"))
        return None
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(Problem("yaml-key", "a key must be plain text", _mark(file, key_node)))
                continue
            key = loader.construct_object(key_node)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                problems.append(Problem("yaml-key", f"unsupported key {key!r}", _mark(file, key_node)))
                continue
            if isinstance(key, bool) or not isinstance(key, str):
                key = key_node.value  # lookup tables may use numbers or words as keys; keep the text
            if key in out:
                first = doc.key_locs[path + (key,)]
                problems.append(
                    Problem(
                        "duplicate-key",
                        f"key `{key}` appears twice in the same mapping (first at line {first.line})",
                        _mark(file, key_node),
                        "YAML would silently keep only the last one; remove or rename one of them",
                    )
                )
                continue
            doc.key_locs[path + (key,)] = _mark(file, key_node)
            out[key] = _convert(loader, file, value_node, path + (key,), doc, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, file, item, path + (i,), doc, problems) for i, item in enumerate(node.value)]
    return loader.construct_object(node)


# What one policy file may expand to. Aliases let a few kilobytes stand for billions of nodes ("billion
# laughs"), and deep nesting exhausts the parser's recursion; real policies are far below both.
MAX_NODES = 100_000
MAX_DEPTH = 100


def _check_nesting(text: str, file: str, loader: type = _Loader) -> None:
    """Refuse nesting deeper than MAX_DEPTH before the (recursive) composer sees the document."""
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise PolicyError(Problem("yaml-too-large", f"the YAML is nested more than {MAX_DEPTH} levels deep",
                                          Location(file, mark.line + 1, mark.column + 1),
                                          "a policy file is a few levels deep; check the brackets"))
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _check_size(root: yaml.Node, file: str) -> None:
    """Refuse a document whose aliases expand to more than MAX_NODES nodes (counted without expanding)."""
    sizes: dict[int, int] = {}
    # children before parents, each node once: an alias is the same node object used again
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if done:
            children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else \
                node.value if isinstance(node, yaml.SequenceNode) else []
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > MAX_NODES:
                mark = node.start_mark
                raise PolicyError(Problem(
                    "yaml-too-large", f"the YAML expands to more than {MAX_NODES:,} values (through `*` aliases)",
                    Location(file, mark.line + 1, mark.column + 1),
                    "write the settings out instead of repeating anchors (&name / *name)"))
            continue
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            stack.extend((c, False) for pair in node.value for c in pair if id(c) not in sizes)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((c, False) for c in node.value if id(c) not in sizes)


def _parse(text: str, file: str, loader_type: type) -> yaml.Node | None:
    loader = loader_type(text)
    try:
        _check_nesting(text, file, loader_type)
        node = loader.get_single_node()
        if node is not None:
            _check_size(node, file)
        return node
    finally:
        loader.dispose()


def load_text(text: str, file: str) -> LocatedDoc:
    """Parse one YAML document held in `text`; raise PolicyError with a location on bad YAML."""
    try:
        try:
            node = _parse(text, file, _FastLoader)
        except yaml.YAMLError as fast_error:
            _parse(text, file, _Loader)  # for its clearer message (or its verdict on depth)
            raise fast_error
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        hint = ""
        if "mapping values are not allowed" in str(exc.problem):
            hint = "a value that contains `: ` (like a lookup table) must be written in quotes"
        elif "found character '\\t'" in str(exc.problem):
            hint = "indent with spaces, not tabs"
        raise PolicyError(Problem("yaml-syntax", f"not valid YAML: {exc.problem or exc}", loc, hint)) from None
    except yaml.YAMLError as exc:
        raise PolicyError(Problem("yaml-syntax", f"not valid YAML: {exc}", Location(file, 1, 1))) from None
    doc = LocatedDoc(file=file, data=None, text=text)
    if node is None:
        return doc
    problems: list[Problem] = []
    data = _convert(_Loader(""), file, node, (), doc, problems)
    if problems:
        raise PolicyError(problems)
    return LocatedDoc(file=file, data=data, locs=doc.locs, key_locs=doc.key_locs, text=text)


def policy_files(policy_dir: Path) -> list[Path]:
    """The policy files of a policy set: `*.yaml` / `*.yml` directly in the folder, sorted. Hidden
    files (`.pre-commit-config.yaml` in a repository that keeps its policies at the top) are not."""
    return sorted(p for p in policy_dir.iterdir()
                  if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith("."))


def policy_texts(policy_dir: Path) -> list[tuple[Path, bytes, str]]:
    """Every policy file of a folder as its bytes and its text (for editing them where they are: the
    studio page, `kam import`); a file that is not UTF-8 text is a PolicyError."""
    out = []
    for path in policy_files(policy_dir):
        data = path.read_bytes()
        try:
            out.append((path, data, data.decode("utf-8")))
        except UnicodeDecodeError as exc:
            raise PolicyError(Problem("encoding", f"not UTF-8 text: {exc.reason}", Location(str(path)))) from None
    return out


def load_policy_dir(policy_dir: Path) -> list[LocatedDoc]:
    """Load every policy file of a folder; all YAML problems of all files are raised together."""
    if not policy_dir.is_dir():
        raise PolicyError(Problem("no-policy-dir", f"{policy_dir} is not a folder", Location(str(policy_dir))))
    files = policy_files(policy_dir)
    if not files:
        raise PolicyError(
            Problem("no-policies", f"no policy files (*.yaml) in {policy_dir}", Location(str(policy_dir)))
        )
    docs: list[LocatedDoc] = []
    problems: list[Problem] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem("encoding", f"not UTF-8 text: {exc.reason}", Location(str(path))))
            continue
        try:
            docs.append(load_text(text, str(path)))
        except PolicyError as exc:
            problems.extend(exc.problems)
    if problems:
        raise PolicyError(problems)
    return docs


def policy_set_hash(docs: list[LocatedDoc]) -> str:
    """sha256 over file names and contents: identifies a policy-set version in manifests."""
    h = hashlib.sha256()
    for doc in sorted(docs, key=lambda d: Path(d.file).name):
        h.update(Path(doc.file).name.encode())
        h.update(b"\0")
        h.update(doc.text.encode())
        h.update(b"\0")
    return h.hexdigest()
