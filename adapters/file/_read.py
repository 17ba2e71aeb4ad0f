"""Reading import files: CSV, TXT and XLSX bytes into rows of text cells. Pure: no Twisted, no clock.

What people drop in an import folder or hand to ``smsgw import`` comes from Excel, WPS,
a database export or Notepad, so this module is forgiving about the container and exact
about what it says it found:

- **Text (CSV, TXT)**: a UTF-8, UTF-16 or GB18030 byte-order mark decides the encoding;
  without one, strict UTF-8 is tried first and GB18030 (a superset of GBK and GB2312)
  second, and the preview names the one that worked. The delimiter is a tab (Excel's
  "Unicode text"), a comma, or a semicolon (Excel in some locales), whichever the first
  lines use.
- **XLSX**: the first worksheet, read with openpyxl in read-only (streaming) mode. Numbers
  come back as the text a person would type: ``13800138000.0`` is ``"13800138000"``.

Every cell is stripped; rows with no cell left are skipped. Row numbers are the
file's own (the line of a CSV record's start, Excel's row number), so a reason given
for "row 7" points where the user looks. A file that cannot be read at all raises
`FileImportError`, saying what is wrong and how to fix it; anything about single rows
is left to the layouts (smsgw.adapters.file._plan), which never raise for a row.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import io
import zipfile
from dataclasses import dataclass
from typing import Iterable, Iterator

__all__ = ["MAX_ROWS", "FileImportError", "Sheet", "cell_text", "decode_text", "read_file"]

MAX_ROWS = 1_000_000  # more is a mistake (a whole database dump?) or an attack: split it
MAX_UNPACKED = 512 * 1024 * 1024  # an XLSX whose members unpack to more is refused (a zip bomb)
_ZIP = b"PK\x03\x04"
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003 .xls and other OLE2 files
_BOMS = ((codecs.BOM_UTF8, "utf-8", "UTF-8 with BOM"),
         (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 (Excel Unicode text)"),
         (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 big-endian"))
_DELIMITERS = ("\t", ",", ";")
_SAVE_AS = "save it from Excel or WPS as .xlsx or as CSV UTF-8"


class FileImportError(ValueError):
    """A file that cannot be imported as a whole; the message says what is wrong and how to fix it."""


@dataclass(frozen=True, slots=True)
class Sheet:
    """A file's rows as text cells, and what was found out about the file on the way."""

    kind: str  # "csv", "txt" or "xlsx": what the content is (an XLSX named .csv is "xlsx")
    encoding: str | None  # text files: "UTF-8", "UTF-8 with BOM", "GB18030 (GBK)", ...; None for XLSX
    delimiter: str | None  # text files: "\t", "," or ";"
    sheet: str | None  # XLSX: the worksheet's name
    rows: tuple[tuple[int, tuple[str, ...]], ...]  # (row number in the file, stripped cells), blank rows left out


def read_file(name: str, data: bytes) -> Sheet:
    """Read an import file's bytes.

    Args:
        name: the file's name; its extension decides CSV or TXT for text. The content
            decides XLSX (a ZIP), whatever the name says.
        data: the whole file.

    Returns:
        The rows, with the kind and encoding found.

    Raises:
        FileImportError: the file is empty, binary but not XLSX, in an encoding that is
            neither UTF-8, UTF-16 nor GB18030, a damaged workbook, or has more than
            `MAX_ROWS` rows.
    """
    lower = name.lower()
    if data.startswith(_ZIP):
        sheet_name, rows = _read_xlsx(data)
        return Sheet("xlsx", None, None, sheet_name, rows)
    if data.startswith(_OLE):
        raise FileImportError("is an Excel 97-2003 workbook (.xls), which is not supported: " + _SAVE_AS)
    if lower.endswith((".xlsx", ".xlsm")):
        raise FileImportError("is named like an Excel workbook but is not one (an XLSX file is a ZIP archive): "
                              + _SAVE_AS)
    text, encoding = decode_text(data)
    delimiter = _delimiter(text)
    return Sheet("txt" if lower.endswith(".txt") else "csv", encoding, delimiter, None,
                 _kept(_read_delimited(text, delimiter)))


def decode_text(data: bytes) -> tuple[str, str]:
    """The text of a text file and the name of its encoding.

    A byte-order mark decides; else strict UTF-8, else GB18030 (which contains GBK and GB2312).

    Raises:
        FileImportError: no encoding fits, the file is empty, or it holds NUL characters (binary).
    """
    text = label = None
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            try:
                text, label = data[len(bom):].decode(codec), name
            except UnicodeDecodeError as exc:
                raise FileImportError(f"starts with a {name} byte-order mark, but byte {exc.start + len(bom)} is "
                                      f"not {name}: the file is damaged; {_SAVE_AS}") from None
            break
    if text is None:
        try:
            text, label = data.decode("utf-8"), "UTF-8"
        except UnicodeDecodeError:
            try:
                text, label = data.decode("gb18030"), "GB18030 (GBK)"
            except UnicodeDecodeError as exc:
                raise FileImportError(f"is neither UTF-8 nor GBK/GB18030 text (byte {exc.start} cannot be read "
                                      f"either way): {_SAVE_AS}") from None
    if "\x00" in text:
        raise FileImportError(f"holds NUL characters, so it is not a text file (a binary file named .csv?): "
                              f"{_SAVE_AS}")
    if not text.strip():
        raise FileImportError("is empty: it has no rows")
    assert label is not None
    return text, label


def _delimiter(text: str) -> str:
    """Tab, comma or semicolon: the first one most of the first lines hold; comma when none does."""
    sample = [line for line in text[:65536].splitlines()[:50] if line.strip()]
    counts = {d: sum(1 for line in sample if d in line) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])  # ties go to the first: tab, then comma
    return best if counts[best] else ","


def _read_delimited(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 1
    try:
        for record in reader:
            yield start, record
            start = reader.line_num + 1
    except csv.Error as exc:
        raise FileImportError(f"line {reader.line_num}: {exc}: check the quotes there, or {_SAVE_AS}") from None


def _read_xlsx(data: bytes) -> tuple[str, tuple[tuple[int, tuple[str, ...]], ...]]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except Exception as exc:  # noqa: BLE001 - zipfile reports damaged archives as BadZipFile, NotImplementedError, ...
        raise FileImportError(f"is a damaged ZIP/XLSX file ({type(exc).__name__}: {exc}): {_SAVE_AS}") from None
    if unpacked > MAX_UNPACKED:
        raise FileImportError(f"is an XLSX that unpacks to {unpacked // 2**20} MiB, more than the "
                              f"{MAX_UNPACKED // 2**20} MiB allowed: split it, or save it as CSV")
    import openpyxl  # here: only XLSX files pay for importing it

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True, keep_links=False)
        try:
            if not book.worksheets:
                raise FileImportError("has no worksheet: put the numbers on the first sheet")
            sheet = book.worksheets[0]
            rows = _kept(enumerate(sheet.iter_rows(values_only=True), start=1))  # streamed: MAX_ROWS stops it
            title = str(sheet.title)
        finally:
            book.close()
    except FileImportError:
        raise
    except Exception as exc:  # noqa: BLE001 - openpyxl reports damaged workbooks with many exception types
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise FileImportError(f"cannot be read as an XLSX workbook ({type(exc).__name__}"
                              f"{': ' + detail if detail else ''}): {_SAVE_AS}") from None
    return title, rows


def _kept(rows: Iterable[tuple[int, Iterable[object]]]) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """Cells as stripped text, trailing empty cells dropped, blank rows left out, at most MAX_ROWS rows."""
    out: list[tuple[int, tuple[str, ...]]] = []
    for number, values in rows:
        cells = [cell_text(v) for v in values]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            continue
        if len(out) >= MAX_ROWS:
            raise FileImportError(f"has more than {MAX_ROWS:,} rows: split it into several files")
        out.append((number, tuple(cells)))
    if not out:
        raise FileImportError("has no rows: every row is empty")
    return tuple(out)


def cell_text(value: object) -> str:
    """A cell as the text a person would type in it.

    Integral floats lose their ``.0`` (Excel keeps every number as a float, so a mobile
    number typed into a cell is 13800138000.0); other floats keep at most 15 significant
    digits, as Excel shows them; dates and times are ISO-like; TRUE/FALSE as Excel writes them.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e18:
            return str(int(value))
        return f"{value:.15g}"
    if isinstance(value, datetime.datetime):
        if value.time() == datetime.time():
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds" if value.microsecond == 0 else "auto")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value).strip()
