"""Byte-preserving edits of policy YAML source: kam studio and the Excel import write users' edits back here.

Every edit splices one span of the original text, so comments, blank lines, key order and quoting outside
it stay byte-identical by construction. Each result is then re-parsed and checked: the data must equal
the original data with exactly the intended change, and the text around the span must be unchanged.
An edit that cannot pass (or that would need reformatting, e.g. a new entry in a flow `[...]`) raises
`EditError` instead of reflowing the file.

Paths are tuples of mapping keys (str) and sequence indexes (int): `("decisions", "tier", "rules", 2, "when")`.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
import tempfile
from pathlib import Path as FilePath
from typing import Any, Mapping, Union

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Scalar = Union[str, int, float, bool, None]
Path = tuple  # of str | int

_BOM = "\ufeff"
# What PyYAML reads raw inside a quoted scalar without folding or refusing it (C1 controls, the Unicode
# line/paragraph separators and the BOM are not): anything else is written as an escape.
_UNSAFE = re.compile("[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")
# Plain text another YAML reader (1.1 or 1.2) could read as a number, bool or null: always quoted, even
# where PyYAML would read it back as text (`1e3`, `0o7`), since studio and Excel users' files travel.
_TYPED = re.compile(r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?|0o[0-7]+|0x[0-9a-fA-F]+"
                    r"|(?i:~|null|y|n|yes|no|on|off|true|false|[-+]?\.inf|\.nan)")
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # the line breaks PyYAML counts lines by


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads booleans as YAML 1.2 and kam's own loader do: `on`, `no`, `yes` stay text
    (`joins: {x: {on: id}}` has an `on` key, which plain `yaml.safe_load` would read as True)."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _read(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


class EditError(ValueError):
    """An edit that cannot be made without touching other parts of the file, or that does not verify."""

    def __init__(self, message: str, path: Path = ()) -> None:
        super().__init__(f"{_show(path)}: {message}" if path else message)
        self.message = message
        self.path = tuple(path)


def _show(path: Path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "(top)"


def _load(text: str) -> tuple[Node, Any]:
    try:
        return yaml.compose(text, Loader=_Loader), _read(text)
    except yaml.YAMLError as exc:
        raise EditError(f"the file is not valid YAML: {exc}") from exc


def _child(node: Node | None, part: str | int) -> tuple[Node | None, Node] | None:
    if isinstance(node, MappingNode) and isinstance(part, str):
        for key, value in node.value:
            # a key written `1:` is the number 1, never the path part "1"
            if isinstance(key, ScalarNode) and key.tag == "tag:yaml.org,2002:str" and key.value == part:
                return key, value
    # bool is an int: a True index would silently mean item 1
    if isinstance(node, SequenceNode) and type(part) is int and 0 <= part < len(node.value):
        return None, node.value[part]
    return None


def _node(root: Node, path: Path, full: Path) -> Node:
    node = root
    for depth, part in enumerate(path):
        found = _child(node, part)
        if found is None:
            raise EditError(f"there is no {_show(path[:depth + 1])} in this file", full)
        node = found[1]
    return node


def _get(data: Any, path: Path) -> Any:
    try:
        for part in path:
            data = data[part]
    except (KeyError, IndexError, TypeError) as exc:  # a key the composer and the loader spell apart
        raise EditError("this file writes a key here in a form the editor does not follow", path) from exc
    return data


def _bol(text: str, i: int) -> int:
    """Start of the line holding index i; never before a leading BOM, which belongs to no line."""
    return max(text.rfind("\n", 0, i) + 1, 1 if text.startswith(_BOM) else 0)


def _line_end(text: str, i: int) -> int:
    """Just past the line break ending the line that holds index i (the end of the text if none)."""
    nl = text.find("\n", i)
    return len(text) if nl < 0 else nl + 1


def _eol(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _scalar_end(text: str, node: Node) -> int:
    # a block scalar's end mark lies past its trailing line breaks, which are layout and must stay
    start = node.start_mark.index
    return start + len(text[start:node.end_mark.index].rstrip())


def _last_end(text: str, node: Node) -> int:
    """End of the last character a node's own text uses: a block collection's end mark lies past the
    comments and blank lines that follow it, so it is found through its last child."""
    while isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style and node.value:
        node = node.value[-1][1] if isinstance(node, MappingNode) else node.value[-1]
    return _scalar_end(text, node) if isinstance(node, ScalarNode) else node.end_mark.index


def _same(a: Any, b: Any) -> bool:
    """Equal as data and in type: 1, 1.0 and True are equal in Python but not in a policy."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b) or (a != a and b != b)  # NaN


def _splice(text: str, start: int, end: int, candidates: list[str], expected: Any, path: Path) -> str:
    """Text with [start, end) replaced by the first candidate whose result re-parses to `expected`."""
    for piece in candidates:
        new = text[:start] + piece + text[end:]
        tail = len(text) - end
        if new[:start] != text[:start] or new[len(new) - tail:] != text[end:]:
            continue
        try:
            if _same(_read(new), expected):
                return new
        except yaml.YAMLError:
            continue
    raise EditError("no way to write this edit without reformatting other parts of the file", path)


def _double(value: str) -> str:
    def escape(m: re.Match[str]) -> str:
        code = ord(m.group())
        return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

    return _UNSAFE.sub(escape, json.dumps(value, ensure_ascii=False))


def _candidates(value: Scalar, style: str | None) -> list[str]:
    """Ways to write a value, the preferred first: the node's own style where the result verifies."""
    if value is None:
        return ["null"]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return [".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"]
        text = repr(value)
        # YAML 1.1 (PyYAML) reads `1e+16` as a string: its floats need a dot
        return [text if "." in text else text.replace("e", ".0e")]
    if not isinstance(value, str):
        raise EditError(f"cannot write a {type(value).__name__}: only str, int, float, bool or None")
    double = _double(value)
    if "\n" in value or "\r" in value or _UNSAFE.search(value):
        return [double]
    if style == "'":
        return ["'" + value.replace("'", "''") + "'", double]
    return [double] if style or _TYPED.fullmatch(value) else [value, double]


def _pick(value: Scalar, as_key: bool = False) -> str:
    """The first rendering that reads back as itself in a block mapping (keys and values of new lines)."""
    for piece in _candidates(value, None):
        try:
            got = _read(f"{piece}: 0" if as_key else f"k: {piece}")
        except yaml.YAMLError:
            continue
        if _same(got, {value: 0} if as_key else {"k": value}):
            return piece
    raise EditError(f"cannot write {value!r} on a line of its own")


def _pick_flow(value: Mapping[str, Scalar]) -> str:
    """A mapping of scalars as one flow mapping (`{service_level: gold, response_hours: 8}`, as a rule of
    several outputs writes its `then`): each value plain where it reads back inside `{...}`, else quoted."""
    if not value:
        raise EditError("an empty mapping has no line of its own")
    parts = []
    for key, item in value.items():
        for piece in _candidates(item, None):
            try:
                got = _read(f"k: {{x: {piece}}}")
            except yaml.YAMLError:
                continue
            if _same(got, {"k": {"x": item}}):
                parts.append(f"{_pick(key, as_key=True)}: {piece}")
                break
        else:
            raise EditError(f"cannot write {item!r} inside {{...}}")
    return "{" + ", ".join(parts) + "}"


def set_value(text: str, path: Path, value: Scalar, after: str | None = None) -> str:
    """Set the scalar at `path`, keeping its quoting style where the result reads back the same.

    A missing last key of a block mapping is added on a new line, aligned with its siblings, after the
    last one (or after the sibling `after`, e.g. `when` right after `id`).
    """
    path = tuple(path)
    if not path:
        raise EditError("an empty path names the whole file, not a value")
    root, data = _load(text)
    parent = _node(root, path[:-1], path)
    found = _child(parent, path[-1])
    expected = copy.deepcopy(data)
    if found is None:
        if not isinstance(parent, MappingNode):
            raise EditError(f"there is no {_show(path)} in this file", path)
        _get(expected, path[:-1])[path[-1]] = value
        return _add_key(text, parent, path, value, after, expected)
    node = found[1]
    if not isinstance(node, ScalarNode):
        raise EditError("this is a list or mapping, not a single value", path)
    current = _get(data, path)
    if type(current) is type(value) and _same(current, value):
        return text
    _get(expected, path[:-1])[path[-1]] = value
    start, end = node.start_mark.index, _scalar_end(text, node)
    gap = " " if start == end else ""  # an empty value's mark sits right after the `:`
    return _splice(text, start, end, [gap + c for c in _candidates(value, node.style)], expected, path)


def _add_key(text: str, parent: MappingNode, path: Path, value: Scalar, after: str | None, expected: Any) -> str:
    if parent.flow_style or not parent.value or not isinstance(path[-1], str):
        raise EditError("a new key goes only into a non-empty block mapping (this one would need reformatting)",
                        path)
    keys = [k.value if isinstance(k, ScalarNode) else None for k, _ in parent.value]
    if after is not None and after not in keys:
        raise EditError(f"there is no key {after!r} to insert after", path)
    _, anchor = parent.value[keys.index(after) if after is not None else -1]
    at = _line_end(text, _last_end(text, anchor))
    line = f"{' ' * parent.value[0][0].start_mark.column}{_pick(path[-1], as_key=True)}: {_pick(value)}"
    eol = _eol(text)
    piece = line + eol if text[:at].endswith("\n") else eol + line
    return _splice(text, at, at, [piece], expected, path)


def _blank_run(text: str, pos: int, stop: int, step: int) -> int:
    """Move from pos towards stop over whole blank lines (step 1: forward, -1: backward)."""
    while (pos < stop) if step > 0 else (pos > stop):
        lo, hi = (pos, _line_end(text, pos)) if step > 0 else (_bol(text, pos - 1), pos)
        if text[lo:hi].strip() or hi == lo:
            break
        pos = hi if step > 0 else lo
    return pos


def _cut(text: str, start: int, end: int, prev_end: int | None, next_start: int | None) -> tuple[int, int]:
    """The whole lines to remove for an entry spanning [start, end) between its siblings: with the blank
    lines that separated it, on the side that keeps the file's rhythm (a group of entries stays a group,
    separated entries stay separated)."""
    if next_start is None:
        start = start if prev_end is None else _blank_run(text, start, prev_end, -1)
    elif prev_end is None or _blank_run(text, start, prev_end, -1) < start:
        end = _blank_run(text, end, next_start, 1)
    # at the end of a file without a final newline the line break before goes, so it still ends without
    if end == len(text) and not text.endswith("\n") and start > 0 and text[start - 1] == "\n":
        start -= 2 if text[start - 2:start] == "\r\n" else 1
    return start, end


def remove_key(text: str, path: Path) -> str:
    """Delete a key of a block mapping: its line and the lines of its value. Comments above it stay."""
    path = tuple(path)
    root, data = _load(text)
    parent = _node(root, path[:-1], path)
    found = _child(parent, path[-1]) if path else None
    if found is None or not isinstance(parent, MappingNode) or found[0] is None:
        raise EditError(f"there is no key {_show(path)} in this file", path)
    if parent.flow_style:
        raise EditError("removing a key from a flow mapping `{...}` would need reformatting it", path)
    if len(parent.value) == 1:
        raise EditError("the only key of a mapping cannot go: an empty mapping would need `{}`", path)
    key_at, node = found[0].start_mark.index, found[1]
    start = _bol(text, key_at)
    if text[start:key_at].strip():
        raise EditError("the key shares its line with a `-` (first key of a list item): remove the item", path)
    i = [k.start_mark.index for k, _ in parent.value].index(key_at)
    prev_end = _line_end(text, _last_end(text, parent.value[i - 1][1])) if i else None
    next_start = _bol(text, parent.value[i + 1][0].start_mark.index) if i + 1 < len(parent.value) else None
    start, end = _cut(text, start, _line_end(text, _last_end(text, node)), prev_end, next_start)
    expected = copy.deepcopy(data)
    del _get(expected, path[:-1])[path[-1]]
    return _splice(text, start, end, [""], expected, path)


def _chunks(text: str, seq: SequenceNode, path: Path) -> list[tuple[int, int]]:
    """The span of each item: from its own comment lines (directly above its `-`, no blank line between)
    to the line break after its last line."""
    spans: list[tuple[int, int]] = []
    prev_end = 0
    for i, item in enumerate(seq.value):
        dash = item.start_mark.index - 1
        while dash >= 0 and text[dash] in " \t\r\n":
            dash -= 1
        start = _bol(text, dash)
        # an alias's marks point at its anchor elsewhere: a span out of order is refused, not guessed
        if dash < prev_end or text[dash] != "-" or text[start:dash].strip():
            raise EditError("this item does not start its own line with `-`", path + (i,))
        while start > prev_end:
            above = _bol(text, start - 1)
            if not text[above:start].strip().startswith("#"):
                break
            start = above
        prev_end = _line_end(text, _last_end(text, item))
        spans.append((start, prev_end))
    return spans


def _seq(text: str, seq_path: Path, full: Path) -> tuple[Any, SequenceNode, list[tuple[int, int]]]:
    root, data = _load(text)
    seq = _node(root, seq_path, full)
    if not isinstance(seq, SequenceNode) or seq.flow_style or not seq.value:
        raise EditError(f"{_show(seq_path)} is not a non-empty block list (`- ` lines): this edit would need "
                        "reformatting it", full)
    return data, seq, _chunks(text, seq, seq_path)


def _item(text: str, path: Path) -> tuple[Any, list[tuple[int, int]], int]:
    path = tuple(path)
    if not path or type(path[-1]) is not int:
        raise EditError("the path of a list item ends with its index", path)
    data, _, spans = _seq(text, path[:-1], path)
    if not 0 <= path[-1] < len(spans):
        raise EditError(f"there is no item {path[-1]}: the list has {len(spans)}", path)
    return data, spans, path[-1]


def delete_item(text: str, path: Path) -> str:
    """Delete one item of a block sequence with its own comment lines, keeping the blank-line rhythm."""
    data, spans, i = _item(text, path)
    if len(spans) == 1:
        raise EditError("the only item of a list cannot go: an empty list would need `[]`", tuple(path))
    start, end = _cut(text, *spans[i], spans[i - 1][1] if i else None, spans[i + 1][0] if i + 1 < len(spans) else None)
    expected = copy.deepcopy(data)
    del _get(expected, tuple(path)[:-1])[i]
    return _splice(text, start, end, [""], expected, tuple(path))


def move_item(text: str, path: Path, new_index: int) -> str:
    """Move a block sequence item (with its own comment lines) to `new_index`; what lies between items
    (blank lines, detached comments) stays where it is."""
    data, spans, i = _item(text, path)
    if not 0 <= new_index < len(spans):
        raise EditError(f"cannot move to {new_index}: the list has {len(spans)} items", tuple(path))
    if new_index == i:
        return text
    eol = _eol(text)
    chunks = [text[s:e] for s, e in spans]
    gaps = [text[spans[j][1]:spans[j + 1][0]] for j in range(len(spans) - 1)]
    bare = not chunks[-1].endswith("\n")  # the last line of a file without a final newline
    if bare:
        chunks[-1] += eol
    chunks.insert(new_index, chunks.pop(i))
    region = chunks[0] + "".join(g + c for g, c in zip(gaps, chunks[1:]))
    expected = copy.deepcopy(data)
    items = _get(expected, tuple(path)[:-1])
    items.insert(new_index, items.pop(i))
    return _splice(text, spans[0][0], spans[-1][1], [region[:-len(eol)] if bare else region], expected,
                   tuple(path))


def insert_item(text: str, seq_path: Path, index: int, item: Mapping[str, Scalar | Mapping[str, Scalar]]) -> str:
    """Insert a mapping item at `index` (== length appends), laid out like its siblings: the same `-`
    column, one key per line aligned under the first, values plain when they read back, else quoted; a
    value that is itself a mapping of scalars (a rule's `then` of several outputs) as one `{...}`."""
    seq_path = tuple(seq_path)
    data, seq, spans = _seq(text, seq_path, seq_path)
    n = len(spans)
    if not item or not 0 <= index <= n:
        raise EditError(f"need a non-empty item and an index from 0 to {n}", seq_path)
    dash = seq.start_mark.column
    first = seq.value[0]
    key_col = first.value[0][0].start_mark.column if isinstance(first, MappingNode) and first.value else dash + 2
    eol = _eol(text)
    lines = [f"{' ' * key_col}{_pick(k, as_key=True)}: {_pick_flow(v) if isinstance(v, Mapping) else _pick(v)}{eol}"
             for k, v in item.items()]
    lines[0] = " " * dash + "-" + " " * (key_col - dash - 1) + lines[0][key_col:]
    new = "".join(lines)
    rhythm = text[spans[0][1]:_blank_run(text, spans[0][1], spans[1][0], 1)] if n > 1 else ""
    if index < n:
        at, piece = spans[index][0], new + rhythm
    else:
        at = spans[-1][1]
        piece = rhythm + new if text[:at].endswith("\n") else eol + rhythm + new[:-len(eol)]
    expected = copy.deepcopy(data)
    _get(expected, seq_path).insert(index, {k: dict(v) if isinstance(v, Mapping) else v for k, v in item.items()})
    return _splice(text, at, at, [piece], expected, seq_path)


@functools.lru_cache(maxsize=16)
def _composed(text: str) -> Node | None:
    """The node tree of a text (a page asks where each of a file's problems is: composed once)."""
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return None


def path_at(text: str, line: int, col: int) -> Path:
    """The path of the deepest node whose text holds 1-based `line`/`col` (a key counts as its entry);
    `()` when none does or the file does not parse."""
    root = _composed(text)
    starts = [0] + [m.end() for m in _BREAK.finditer(text)]
    if root is None or not 1 <= line <= len(starts) or col < 1:
        return ()
    # PyYAML counts no column for a leading BOM
    pos = starts[line - 1] + col - 1 + (1 if line == 1 and text.startswith(_BOM) else 0)
    return _deepest(text, root, pos, ()) or ()


def _deepest(text: str, node: Node, pos: int, path: Path) -> Path | None:
    if isinstance(node, MappingNode):
        for key, value in node.value:
            sub = path + (key.value if isinstance(key, ScalarNode) else str(key.value),)
            if key.start_mark.index <= pos < _last_end(text, key):
                return sub
            hit = _deepest(text, value, pos, sub)
            if hit is not None:
                return hit
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            hit = _deepest(text, item, pos, path + (i,))
            if hit is not None:
                return hit
    return path if node.start_mark.index <= pos < _last_end(text, node) else None


def write_atomic(path: FilePath, text: str) -> None:
    """Write an edited policy file beside itself, then rename it over the file: a reader (kam run, an
    editor, the next import) sees the old file or the new one, never half of it. The file keeps its mode."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def comment_above(lines: list[str], line: int) -> str:
    """The comment lines written directly above 1-based `line` of a YAML text, as one text (what the
    studio page and the exported workbook show as an entry's description)."""
    out: list[str] = []
    i = line - 2
    while i >= 0 and lines[i].strip().startswith("#"):
        out.insert(0, lines[i].strip().lstrip("#").strip())
        i -= 1
    return " ".join(x for x in out if x)
