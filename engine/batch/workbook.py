"""A workbook from outside, bounded before it is read: what an `.xlsx` file may unpack to, and the
formula cells whose values a spreadsheet never calculated.

An `.xlsx` file is a zip of XML parts. A small file can unpack to gigabytes (a "zip bomb": a 3 MB
workbook holding a 3 GiB sheet took the reader past 16 GB of memory), so before any cell is read
every part is checked against the zip directory and then unpacked as a stream, counting: no part may
unpack to more than `PART_LIMIT` bytes or, past its first megabyte, more than `RATIO_LIMIT` times
its packed size (real sheets pack about 10:1), and the same holds for all parts together (within
`TOTAL_LIMIT`, and `PARTS_LIMIT` parts at most), so that thousands of small parts that each pack
well are no way around it. A directory that lies about the sizes is caught by the counting.

A formula cell holds its formula and the value the spreadsheet last calculated. A workbook written
by a script (openpyxl, pandas `to_excel`, XlsxWriter) has formulas but no calculated values: the
cell is empty or holds a placeholder 0, and the workbook asks to be calculated when opened
(`fullCalcOnLoad`). Reading such a cell would read a fact that is not there, so the cells of the
columns a policy reads are found here and refused with their references.
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator
from xml.etree import ElementTree

from ..language.errors import InputError, Location, Problem

PART_LIMIT = 1 << 30  # bytes of XML one part may unpack to (Excel's largest sheets stay well below)
TOTAL_LIMIT = 2 << 30  # bytes all parts together may unpack to
PARTS_LIMIT = 10_000  # parts in one workbook (a workbook of 200 sheets has about 500)
RATIO_LIMIT = 100  # unpacked : packed, for parts past SMALL_PART (sheets written by Excel: about 10)
SMALL_PART = 1 << 20  # below this, a part may pack as well as it likes
SMALL_XML = 16 << 20  # the workbook's own index parts (workbook.xml, its relationships)
EXCEL_ROWS, EXCEL_COLUMNS = 1_048_576, 16_384  # the most a sheet has in Excel
CELLS_LIMIT = 50_000_000  # rows x columns a sheet may span: the reader holds about 32 bytes per cell
_CHUNK = 1 << 20

# a formula element, with any namespace prefix XML allows (a quick look at every part's bytes)
_FORMULA_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?f[\s/>]")
_REF_TEXT = re.compile(r"([A-Z]{1,3})([0-9]+)")
# a row's or a cell's place (`<row r="7">`, `<c r="B7">`), however quoted
_PLACE = re.compile(rb"""<(?:[A-Za-z_][\w.-]*:)?(?:row|c)\s[^>]*?\br\s*=\s*["']\s*([A-Za-z]*)([0-9]+)""")
_TEXT_RESULTS = {"str", "s", "inlineStr", "e", "b"}  # result types whose empty value is a calculated value


@dataclass
class FormulaCell:
    ref: str  # `H2`
    formula: str
    value: str | None  # the value stored with it (None: no value)
    error: bool = False  # the value is a spreadsheet error (`#DIV/0!`), which the reader gives as empty


@dataclass
class Workbook:
    """What was learnt of a workbook while bounding it."""

    path: Path
    sheet_parts: dict[str, zipfile.ZipInfo] = field(default_factory=dict)  # sheet name -> its part
    with_formulas: set[str] = field(default_factory=set)  # the parts that hold a formula
    recalculate: bool = False  # the workbook asks to be calculated when opened: stored values are not results

    def uncalculated(self, sheet: str, columns: set[str]) -> list[FormulaCell]:
        """The formula cells of a sheet (in the given column letters) whose values are no facts: none
        stored, only a placeholder in a workbook that asks to be calculated, or an error (`#DIV/0!`)."""
        info = self.sheet_parts.get(sheet)
        if info is None or info.filename not in self.with_formulas:
            return []
        return [cell for cell in _formula_cells(self.path, info)
                if cell.ref.rstrip("0123456789") in columns
                and (cell.value is None or self.recalculate or cell.error)]


def _problem(path: Path, message: str, hint: str = "save the workbook again in Excel") -> InputError:
    return InputError(Problem("input-workbook", message, Location(str(path)), hint))


@dataclass
class Tally:
    """Bytes packed and unpacked so far over all the parts of a workbook."""

    packed: int = 0
    unpacked: int = 0


def _stream(path: Path, info: zipfile.ZipInfo, tally: Tally | None = None) -> Iterator[bytes]:
    """A part's bytes, a megabyte at a time, stopped with an error as soon as it (or, with a `tally`,
    the workbook so far) unpacks to more than the bounds allow, whatever the zip directory says (the
    packed bytes are counted here)."""
    tally = tally if tally is not None else Tally()
    if info.flag_bits & 0x1:
        raise _problem(path, f"{path.name} is encrypted (its part {info.filename})",
                       "save it without a password, or export the sheet as CSV")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _problem(path, f"{path.name}: the part {info.filename} is packed in a way Excel never uses "
                       f"(method {info.compress_type})")
    with path.open("rb") as raw:
        raw.seek(info.header_offset)
        head = raw.read(30)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise _problem(path, f"{path.name} is damaged: the part {info.filename} is not where its directory says")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        raw.seek(info.header_offset + 30 + name_len + extra_len)
        packed = unpacked = 0
        inflate = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
        left = info.compress_size
        pending = b""
        while True:
            if inflate is None:
                chunk = raw.read(min(_CHUNK, left))
                left -= len(chunk)
                packed += len(chunk)
                tally.packed += len(chunk)
                if not chunk:
                    return
            else:
                if not pending:
                    if inflate.eof:
                        return
                    # no further than the part's packed size: counting the next part's bytes as this
                    # one's would let many small parts pass the ratio
                    pending = raw.read(min(_CHUNK // 16, left))
                    left -= len(pending)
                    if not pending:
                        raise _problem(path, f"{path.name} is damaged: its part {info.filename} ends early")
                    packed += len(pending)
                    tally.packed += len(pending)
                try:
                    chunk = inflate.decompress(pending, _CHUNK)
                except zlib.error as exc:
                    raise _problem(path, f"{path.name} is damaged: its part {info.filename} cannot be unpacked "
                                   f"({exc})") from None
                pending = inflate.unconsumed_tail
                if inflate.eof:
                    pending = b""
            unpacked += len(chunk)
            tally.unpacked += len(chunk)
            if unpacked > PART_LIMIT or (unpacked > SMALL_PART and unpacked > RATIO_LIMIT * packed):
                raise _bomb(path, info, unpacked, packed)
            if _too_much(tally.unpacked, tally.packed):
                raise _bomb_whole(path, tally.unpacked, tally.packed)
            if chunk:
                yield chunk


def _bomb(path: Path, info: zipfile.ZipInfo, unpacked: int, packed: int, counted: bool = True) -> InputError:
    size = f"more than {_size(PART_LIMIT)}" if unpacked > PART_LIMIT else \
        f"{'at least ' if counted else ''}{_size(unpacked)} from {_size(packed)}"
    return _problem(path, f"{path.name} is not a workbook kam reads: its part {info.filename} unpacks to {size} "
                    f"(kam reads parts of up to {_size(PART_LIMIT)}, packed at most {RATIO_LIMIT}:1)",
                    "a real sheet packs about 10:1; save the data as CSV or Parquet if it is really this large")


def _too_much(unpacked: int, packed: int) -> bool:
    return unpacked > TOTAL_LIMIT or (unpacked > SMALL_PART and unpacked > RATIO_LIMIT * packed)


def _bomb_whole(path: Path, unpacked: int, packed: int, counted: bool = True) -> InputError:
    size = f"more than {_size(TOTAL_LIMIT)}" if unpacked > TOTAL_LIMIT else \
        f"{'at least ' if counted else ''}{_size(unpacked)} from {_size(packed)}"
    return _problem(path, f"{path.name} is not a workbook kam reads: its parts together unpack to {size} "
                    f"(kam reads workbooks of up to {_size(TOTAL_LIMIT)}, packed at most {RATIO_LIMIT}:1)",
                    "a real workbook packs about 10:1; save the data as CSV or Parquet if it is really this large")


def _size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,} bytes"


def bounded(path: Path) -> Workbook:
    """Check a workbook before it is read: every part within the bounds (from the zip directory,
    then by unpacking it), and learn which part holds which sheet and which hold formulas. Raises
    InputError (exit 2)."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        hint = "save it as an Excel workbook (.xlsx), or export the sheet as CSV"
        with path.open("rb") as fh:
            if fh.read(8) == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":  # the old binary format (.xls)
                hint = "it is an old Excel file (.xls): open it in Excel and save it as .xlsx (Excel Workbook)"
        raise _problem(path, f"{path.name} is not an .xlsx workbook ({exc})", hint) from None
    with z:
        infos = z.infolist()
        if len(infos) > PARTS_LIMIT:
            raise _problem(path, f"{path.name} is not a workbook kam reads: it holds {len(infos):,} parts "
                           f"(kam reads workbooks of up to {PARTS_LIMIT:,})",
                           "save the data as CSV or Parquet, or the workbook again in Excel")
        book = _small_text(z, "xl/workbook.xml", path)
        rels = _small_text(z, "xl/_rels/workbook.xml.rels", path)
    for info in infos:
        if info.file_size > PART_LIMIT or (info.file_size > SMALL_PART
                                           and info.file_size > RATIO_LIMIT * max(info.compress_size, 1)):
            raise _bomb(path, info, info.file_size, info.compress_size, counted=False)
    total, packed = sum(i.file_size for i in infos), sum(i.compress_size for i in infos)
    if _too_much(total, packed):
        raise _bomb_whole(path, total, packed, counted=False)
    formulas = set()
    tally = Tally()
    for info in infos:
        tail = b""
        sheet = info.filename.lower().startswith("xl/worksheets/")
        rows = columns = 0
        for chunk in _stream(path, info, tally):
            data = tail + chunk
            if info.filename not in formulas and _FORMULA_TAG.search(data):
                formulas.add(info.filename)
            if sheet:  # how far the cells reach: the reader makes room for every cell up to the last
                for letters, digits in _PLACE.findall(data):
                    rows = max(rows, int(digits[:12]) if len(digits) <= 12 else 10**12)
                    columns = max(columns, column_index(letters[:4].decode("ascii", "replace").upper()) + 1)
            # the last tag may go on in the next piece: it is looked at again, whole
            tail = data[data.rfind(b"<"):] if b"<" in data else b""
            if len(tail) > SMALL_PART:
                raise _problem(path, f"{path.name} is not a workbook kam reads: its part {info.filename} holds a "
                               "tag of more than 1 MiB", "save the workbook again in Excel")
        if sheet and (rows > EXCEL_ROWS or columns > EXCEL_COLUMNS or rows * columns > CELLS_LIMIT):
            raise _problem(path, f"{path.name} is not a workbook kam reads: its part {info.filename} places a "
                           f"cell at row {rows:,}, column {columns:,} ({rows * columns:,} cells to make room for; "
                           f"kam reads sheets of up to {CELLS_LIMIT:,} cells, within Excel's {EXCEL_ROWS:,} rows "
                           f"and {EXCEL_COLUMNS:,} columns)",
                           "save the data as CSV or Parquet, or the workbook again in Excel")
    # the index parts read as XML (quotes, spacing, prefixes, comments and references as XML allows
    # them); part names compared as OPC says, without regard to case, as the reader finds them
    targets: dict[str, str] = {}
    for rel in _elements(rels, "Relationship", path, "xl/_rels/workbook.xml.rels"):
        rid, target = rel.get("Id"), rel.get("Target")
        if rid is not None and target is not None:
            target = target.strip()
            inside = target.lstrip("/") if target.startswith("/") else str(PurePosixPath("xl") / target)
            targets[rid.strip()] = inside.lower()
    by_name = {info.filename.lower(): info for info in infos}
    parts: dict[str, zipfile.ZipInfo] = {}
    recalculate = False
    for element in _elements(book, "*", path, "xl/workbook.xml"):
        local = _local(element.tag)
        if local == "sheet":
            name = element.get("name")
            rid = next((v for k, v in element.attrib.items() if k.startswith("{") and _local(k) == "id"), None)
            target = targets.get(rid.strip()) if rid is not None else None
            if name is not None and target in by_name and name not in parts:  # the first of a name, as read
                parts[name] = by_name[target]
        elif local == "calcPr":
            recalculate = (element.get("fullCalcOnLoad") or "").strip().lower() in ("1", "true")
    return Workbook(path, parts, formulas, recalculate)


def _small_text(z: zipfile.ZipFile, name: str, path: Path) -> bytes:
    """One of the workbook's small index parts (empty when it has none; its name in any case)."""
    info = next((i for i in z.infolist() if i.filename.lower() == name), None)
    if info is None:
        return b""
    if info.file_size > SMALL_XML:
        raise _problem(path, f"{path.name}: its index part {name} is {_size(info.file_size)}")
    return b"".join(_stream(path, info))


def _local(tag: str) -> str:
    """An element's or attribute's name without its namespace (`{uri}sheet` is `sheet`)."""
    return tag.rsplit("}", 1)[-1]


def _elements(xml: bytes, local: str, path: Path, part: str) -> list[ElementTree.Element]:
    """The elements of an index part with a local name (`*`: all), whatever their namespace prefix."""
    if not xml:
        return []
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise _problem(path, f"{path.name} is damaged: its part {part} is not XML ({exc})") from None
    return [e for e in root.iter() if isinstance(e.tag, str) and (local == "*" or _local(e.tag) == local)]


def _formula_cells(path: Path, info: zipfile.ZipInfo) -> list[FormulaCell]:
    """Every formula cell of a sheet part, with the value stored with it, read as a stream of XML
    events (so that nothing XML allows, and no piece boundary, hides a cell or moves it)."""
    out: list[FormulaCell] = []
    parser: Any = ElementTree.XMLPullParser(events=("start", "end"))
    row, col = 0, -1  # where the last row and cell were: a row or a cell may leave out its `r` (the next one)
    cell: dict[str, str | None] | None = None
    for chunk in [*_stream(path, info), b""]:
        try:
            parser.feed(chunk) if chunk else parser.close()
            events: list[tuple[str, Any]] = list(parser.read_events())
        except ElementTree.ParseError as exc:
            raise _problem(path, f"{path.name} is damaged: its part {info.filename} is not XML ({exc})") from None
        for event, element in events:
            local = _local(element.tag)
            if event == "start" and local == "row":
                at = (element.get("r") or "").strip()
                row, col = (int(at) if at.isdigit() else row + 1), -1
            elif event == "start" and local == "c":
                ref = _REF_TEXT.fullmatch((element.get("r") or "").strip())
                if ref:
                    col, row = column_index(ref.group(1)), int(ref.group(2))
                else:
                    col += 1
                cell = {"ref": f"{column_letters(col)}{row}", "t": element.get("t"), "f": None, "v": None}
            elif event == "end" and cell is not None and local in ("f", "v"):
                cell[local] = element.text or ""
            elif event == "end" and local == "c" and cell is not None:
                if cell["f"] is not None:
                    value = cell["v"].strip() if cell["v"] is not None else None
                    # an empty value is a calculated empty text only where the cell says it holds text
                    kept = value if value else ("" if cell["t"] in _TEXT_RESULTS else None)
                    out.append(FormulaCell(str(cell["ref"]), cell["f"], kept, cell["t"] == "e"))
                cell = None
            if event == "end" and local in ("c", "row"):
                element.clear()  # a sheet is read in pieces, never held whole
    return out


def column_index(letters: str) -> int:
    """The index of a column by its letters (A: 0, AA: 26)."""
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n - 1


def column_letters(i: int) -> str:
    """The letters of the i-th column (0: A, 26: AA)."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out
