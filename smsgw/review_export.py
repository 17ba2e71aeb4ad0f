"""Review-queue exports: the messages a review query selects, as an Excel (XLSX) or CSV file.

The daemon writes them for `GET /api/v1/review/export` (and so for `smsgw review list
--export FILE`); anything holding `smsgw.store.ReviewItem`s can call `write` too. One row per
message, the columns of `HEADER`, times in the local time of the machine writing the file.

- XLSX: one sheet, written in openpyxl's write-only (streaming) mode; times are real Excel
  dates, message ids and numbers text (Excel would round a 19-digit id), and no text is ever
  read as a formula.
- CSV: UTF-8 with a byte-order mark (so Excel shows Chinese text as it is), CRLF, every field
  quoted where needed. Text starting with = + - @ gets a leading ' so a spreadsheet does not
  run it as a formula (the usual CSV-injection guard).
"""

from __future__ import annotations

import csv
import datetime
import io
import tempfile
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:  # the client imports format_for: no store (SQLAlchemy) for that
    from smsgw.store import ReviewItem

__all__ = ["CONTENT_TYPES", "EXPORT_MAX_ROWS", "FORMATS", "HEADER", "filename", "format_for", "rows", "write",
           "write_temporary"]

#: The most messages one export holds (an XLSX sheet holds 1,048,576 rows); larger queries are refused.
EXPORT_MAX_ROWS = 1_000_000
FORMATS = ("xlsx", "csv")
CONTENT_TYPES = {"xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                 "csv": "text/csv; charset=utf-8"}
HEADER = ("message id", "batch", "account", "interface", "created at (local time)", "send at (local time)",
          "recipients", "numbers", "text", "template", "review state", "rule", "reviewed by",
          "reviewed at (local time)", "comment")
_WIDTHS = (21, 24, 14, 10, 20, 20, 11, 28, 60, 16, 13, 18, 14, 20, 40)
_TIMES = frozenset({4, 5, 13})  # columns holding times
_CELL_MAX = 32_767  # the most characters an Excel cell holds
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_EXTENSIONS = {".xlsx": "xlsx", ".csv": "csv", ".txt": "csv"}


def format_for(path: str) -> str:
    """The export format a file name asks for: .xlsx, or .csv / .txt (CSV).

    Raises:
        ValueError: saying which endings work.
    """
    lower = path.lower()
    for ending, fmt in _EXTENSIONS.items():
        if lower.endswith(ending):
            return fmt
    raise ValueError(f"{path!r} does not end in .xlsx, .csv or .txt: name the file so its ending says the format")


def filename(fmt: str, now: float) -> str:
    """A download's name, e.g. review-20240305-080000.xlsx (local time)."""
    return f"review-{datetime.datetime.fromtimestamp(now):%Y%m%d-%H%M%S}.{fmt}"


def _local(when: float | None) -> datetime.datetime | None:
    return None if when is None else datetime.datetime.fromtimestamp(when).replace(microsecond=0)


def rows(items: Iterable[ReviewItem]) -> Iterator[tuple[Any, ...]]:
    """One tuple per message in the order of `HEADER`: text, whole numbers, local datetimes or None."""
    for m in items:
        yield (str(m.id), m.batch, m.account, m.interface, _local(m.created_at), _local(m.send_at), m.recipients,
               ";".join(m.phones), m.content, m.template, m.review, m.rule, m.reviewed_by, _local(m.reviewed_at),
               m.comment)


def write_temporary(items: Iterable[ReviewItem], fmt: str) -> tuple[IO[bytes], int, int]:
    """The export in a new temporary file (deleted once closed): (the file, its size in bytes, rows).

    Raises:
        ValueError: an unknown format. OSError: the file cannot be written.
    """
    file = tempfile.TemporaryFile()
    try:
        count = write(items, fmt, file)
        size = file.seek(0, io.SEEK_END)
    except BaseException:
        file.close()
        raise
    return file, size, count


def write(items: Iterable[ReviewItem], fmt: str, out: IO[bytes]) -> int:
    """Write the export of `items` to the binary file `out`; returns the rows written (header not counted).

    Raises:
        ValueError: an unknown format.
    """
    writers: dict[str, Callable[[Iterable[ReviewItem], IO[bytes]], int]] = {"xlsx": _write_xlsx, "csv": _write_csv}
    if fmt not in writers:
        raise ValueError(f"unknown export format {fmt!r}: {' or '.join(FORMATS)}")
    return writers[fmt](items, out)


# -- CSV ------------------------------------------------------------------------------------------

def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _write_csv(items: Iterable[ReviewItem], out: IO[bytes]) -> int:
    text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="", write_through=False)
    try:
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(HEADER)
        count = 0
        for row in rows(items):
            writer.writerow([_csv_value(v) for v in row])
            count += 1
        text.flush()
    finally:
        text.detach()  # leave `out` open: the caller owns it
    return count


# -- XLSX -----------------------------------------------------------------------------------------

def _write_xlsx(items: Iterable[ReviewItem], out: IO[bytes]) -> int:
    import openpyxl  # here: only exports pay for importing it
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("review")
    for i, width in enumerate(_WIDTHS, start=1):
        sheet.column_dimensions[get_column_letter(i)].width = width
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)
    header = []
    for title in HEADER:
        heading = WriteOnlyCell(sheet, value=title)
        heading.font = bold
        header.append(heading)
    sheet.append(header)

    def cell(column: int, value: Any) -> Any:
        if isinstance(value, str):
            value = ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)  # control characters are not allowed in XLSX
            if len(value) > _CELL_MAX:
                value = value[:_CELL_MAX - 1] + "…"
            if value.startswith("="):  # openpyxl would store it as a formula
                text = WriteOnlyCell(sheet, value=value)
                text.data_type = "s"
                return text
        elif column in _TIMES and value is not None:
            stamp = WriteOnlyCell(sheet, value=value)
            stamp.number_format = "yyyy-mm-dd hh:mm:ss"
            return stamp
        return value

    count = 0
    for row in rows(items):
        sheet.append([cell(i, v) for i, v in enumerate(row)])
        count += 1
    book.save(out)
    return count

