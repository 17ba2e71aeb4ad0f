"""File import, the pure parts: reading CSV/TXT/XLSX, layouts, the plan, outcomes, the result file, config.

The command and the watched folder against a real daemon are in test_file_import_daemon.py.
"""

from __future__ import annotations

import csv
import datetime
import io
import pathlib
import zipfile
from typing import Any

import openpyxl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from daemon_helpers import write_config
from smsgw.adapters.file import (
    FileImportError,
    ImportAborted,
    ImportOptions,
    Outcomes,
    Plan,
    build_plan,
    chunks,
    failure_csv,
    preview,
    read_file,
    result_csv,
)
from smsgw.adapters.file._read import cell_text
from smsgw.adapters.file.command import parse_at, parse_priority
from smsgw.config import Config, check_config, load_config
from smsgw.model import PRIORITY_BULK, Account, Problem
from smsgw.templates import Template
from smsgw.validation import Validator

NOW = 1_750_000_000.0
ACCOUNT = Account("demo")
VALIDATOR = Validator()


def xlsx(rows: dict[int, list[Any]], *, title: str = "名单", first_sheet: str | None = None) -> bytes:
    """A workbook whose first worksheet holds `rows` (Excel row number -> values)."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    if first_sheet is not None:
        sheet.title = first_sheet
        sheet = book.create_sheet()
    sheet.title = title
    for number, values in rows.items():
        for column, value in enumerate(values, start=1):
            sheet.cell(row=number, column=column, value=value)
    if first_sheet is not None:
        book.move_sheet(title, offset=-1)  # the data sheet becomes the first one
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def plan(name: str, data: bytes, text: str | None = None, template: Template | None = None,
         validator: Validator = VALIDATOR, **options: Any) -> Plan:
    return build_plan(name, data, ImportOptions(text, template, **options), validator, ACCOUNT, NOW)


def cells(name: str, data: bytes) -> list[tuple[int, tuple[str, ...]]]:
    return list(read_file(name, data).rows)


# --- reading ----------------------------------------------------------------------------------


def test_utf8_csv_is_read_as_utf8_with_its_row_numbers() -> None:
    """A UTF-8 CSV is named UTF-8; blank lines are skipped and rows keep the file's line numbers."""
    data = "手机号,内容\n13800138000,您好\n\n  \n13900139000, 明天开会 \n".encode()
    sheet = read_file("a.csv", data)
    assert (sheet.kind, sheet.encoding, sheet.delimiter) == ("csv", "UTF-8", ",")
    assert sheet.rows == ((1, ("手机号", "内容")), (2, ("13800138000", "您好")), (5, ("13900139000", "明天开会")))


def test_bom_utf16_and_gbk_are_detected_and_named() -> None:
    """A UTF-8 BOM, Excel's UTF-16 "Unicode text" (tab-separated) and GBK bytes each read the same rows."""
    text = "手机号码\t短信内容\r\n13800138000\t您好，世界\r\n"
    expected = ((1, ("手机号码", "短信内容")), (2, ("13800138000", "您好，世界")))
    for data, encoding in ((b"\xef\xbb\xbf" + text.encode(), "UTF-8 with BOM"),
                           (b"\xff\xfe" + text.encode("utf-16-le"), "UTF-16 (Excel Unicode text)"),
                           (text.encode("gbk"), "GB18030 (GBK)")):
        sheet = read_file("x.txt", data)
        assert (sheet.encoding, sheet.delimiter, sheet.rows) == (encoding, "\t", expected)


def test_semicolon_separated_and_quoted_cells() -> None:
    """Semicolons separate when the lines use them; quoted cells keep their delimiters and line breaks."""
    data = 'mobile;text\n13800138000;"a;b\nc"\n'.encode()
    assert cells("x.csv", data) == [(1, ("mobile", "text")), (2, ("13800138000", "a;b\nc"))]


def test_xlsx_numbers_stored_as_floats_become_the_digits_typed() -> None:
    """Excel keeps 13800138000 as a float: it reads back as "13800138000"; dates, bools and decimals as shown."""
    data = xlsx({1: ["手机号", "金额", "日期", "已付"],
                 2: [13800138000.0, 12.5, datetime.datetime(2026, 11, 23, 8, 30), True],
                 4: [13900139000, 3.0, datetime.datetime(2026, 11, 23), None]})
    sheet = read_file("名单.xlsx", data)
    assert (sheet.kind, sheet.encoding, sheet.sheet) == ("xlsx", None, "名单")
    assert sheet.rows == ((1, ("手机号", "金额", "日期", "已付")),
                          (2, ("13800138000", "12.5", "2026-11-23 08:30:00", "TRUE")),
                          (4, ("13900139000", "3", "2026-11-23")))


def test_xlsx_uses_the_first_worksheet_whatever_the_file_is_called() -> None:
    """The first worksheet is read, also from a workbook named .csv (the content decides)."""
    data = xlsx({1: [13800138000, "hi"]}, title="data", first_sheet="notes")
    sheet = read_file("export.csv", data)
    assert (sheet.kind, sheet.sheet, sheet.rows) == ("xlsx", "data", ((1, ("13800138000", "hi")),))


@pytest.mark.parametrize(("name", "data", "words"), [
    ("a.csv", b"", "empty"),
    ("a.csv", b" \r\n\t\n", "empty"),
    ("a.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "Excel 97-2003"),
    ("a.xlsx", b"mobile,text\n", "not one"),
    ("a.xlsx", b"PK\x03\x04garbage", "damaged"),
    ("a.csv", b"1380013800\x00\x00", "NUL"),
    ("a.csv", b"\x81\x30\x81", "neither UTF-8 nor GBK"),
    ("a.csv", b"\xef\xbb\xbf\xff\xfe", "damaged"),
    ("a.csv", b'mobile,text\n1,"' + b"x" * 200_000 + b'"\n', "line"),
])
def test_unreadable_files_raise_one_clear_error(name: str, data: bytes, words: str) -> None:
    """Files that cannot be read at all raise FileImportError saying what is wrong and how to fix it."""
    with pytest.raises(FileImportError, match=words) as info:
        read_file(name, data)
    assert "save it" in str(info.value) or "rows" in str(info.value) or "line" in str(info.value)


def test_cell_text_writes_values_as_a_person_would() -> None:
    """Integral floats lose .0, other floats keep 15 digits, times are ISO, None is empty."""
    assert [cell_text(v) for v in (None, " a ", 13800138000.0, 0.1 + 0.2, 1e20, False, datetime.time(8, 30))] == [
        "", "a", "13800138000", "0.3", "1e+20", "FALSE", "08:30:00"]


@given(st.binary(max_size=2000), st.sampled_from(["a.csv", "a.txt", "a.xlsx", "a"]))
def test_garbage_bytes_never_crash_the_reader_or_the_plan(data: bytes, name: str) -> None:
    """Any bytes under any name give rows and a plan, or FileImportError: never another exception."""
    for text in (None, "hello {x}", "hello"):
        try:
            plan(name, data, text)
        except FileImportError as exc:
            assert str(exc)


def _zip_members(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


GOOD_XLSX = xlsx({1: ["mobile", "content"], 2: [13800138000, "hi"]})


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_xlsx_never_crashes_the_reader(data: st.DataObject) -> None:
    """A workbook with bytes changed, cut short, or with a member replaced by garbage reads or raises FileImportError."""
    raw = bytearray(GOOD_XLSX)
    how = data.draw(st.sampled_from(["flip", "cut", "member"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 20))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        damaged = bytes(raw)
    elif how == "cut":
        damaged = bytes(raw[:data.draw(st.integers(4, len(raw) - 1))])
    else:
        with zipfile.ZipFile(io.BytesIO(GOOD_XLSX)) as archive:
            members = {n: archive.read(n) for n in archive.namelist()}
        victim = data.draw(st.sampled_from(sorted(members)))
        members[victim] = data.draw(st.binary(max_size=300))
        damaged = _zip_members(members)
    try:
        plan("a.xlsx", damaged, None)
    except FileImportError as exc:
        assert "XLSX" in str(exc) or "ZIP" in str(exc) or "row" in str(exc) or "worksheet" in str(exc)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_CELL = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=12)
_CSV_CELL = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters=";"),
                    min_size=1, max_size=12)


@given(st.lists(st.lists(_CSV_CELL, min_size=1, max_size=4), min_size=1, max_size=8),
       st.sampled_from(["utf-8", "gbk"]))
def test_csv_written_by_the_csv_module_reads_back_the_same_cells(rows: list[list[str]], encoding: str) -> None:
    """Rows written as CSV (UTF-8, or GBK when they fit) read back cell for cell (cells without ; or tabs)."""
    rows = [[c.strip() or "x" for c in row] for row in rows]
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    try:
        data = out.getvalue().encode(encoding)
    except UnicodeEncodeError:
        encoding, data = "utf-8", out.getvalue().encode("utf-8")
    # A few short GBK texts are valid UTF-8 too (UTF-8 is tried first): nothing can tell those apart.
    assume(encoding == "utf-8" or data.isascii() or not _utf8(data))
    sheet = read_file("r.csv", data)
    assert sheet.encoding == ("GB18030 (GBK)" if encoding == "gbk" and not data.isascii() else "UTF-8")
    assert [list(c) for _, c in sheet.rows] == rows


_TEXT = _CELL.map(str.strip).filter(lambda t: t != "" and not t.startswith("="))  # "=...": a formula


@settings(max_examples=25)
@given(st.lists(st.tuples(st.integers(13000000000, 19999999999), _TEXT), min_size=1, max_size=6))
def test_xlsx_written_by_openpyxl_reads_back_numbers_and_texts(rows: list[tuple[int, str]]) -> None:
    """Numbers (as Excel floats) and texts written to a workbook read back as the digits and the texts."""
    data = xlsx({i + 1: [float(n), t] for i, (n, t) in enumerate(rows)})
    assert [c for _, c in read_file("r.xlsx", data).rows] == [(str(n), t) for n, t in rows]


# --- layouts and the plan ----------------------------------------------------------------------


def test_one_number_per_line_with_a_common_text() -> None:
    """A TXT of numbers with --text: one message per block of rows, every number a recipient."""
    p = plan("n.txt", b"13800138000\n+86 139 0013 9000\n13700137000\n", "停水通知：明天检修。")
    assert (p.layout, p.read, p.valid, p.invalid, p.segments) == (
        "no header: one number per row, one common text", 3, 3, 0, 3)
    [message] = p.messages
    request = message.request(p.options)
    assert request.to == ("13800138000", "13900139000", "13700137000")
    assert request.text == "停水通知：明天检修。" and request.priority == PRIORITY_BULK
    assert message.ref == request.ref == f"imp-{p.digest[:12]}-1" and message.rows == (1, 2, 3)


def test_number_content_without_header_keeps_commas_in_the_text() -> None:
    """number,content rows: unquoted commas belong to the text; a row without content is invalid."""
    p = plan("m.csv", "13800138000,您好,明天 8:00 开会\n13900139000\n".encode(), None)
    assert p.layout == "no header: number, content"
    assert [(r.row, r.text, r.code) for r in p.rows] == [(1, "您好,明天 8:00 开会", ""), (2, "", "no_content")]


def test_header_with_content_column_and_every_kind_of_invalid_row() -> None:
    """Counts, codes and reasons per row: bad numbers, empty content, ragged rows, Excel's scientific numbers."""
    data = ("电话,短信内容,备注\n"
            "13800138000,第一条,x\n"
            "1380013800,太短,\n"
            "13900139000,,\n"
            "1.38001E+10,科学计数,\n"
            "13700137000,多了,a,b\n"
            ",没有号码\n"
            "13600136000," + "长" * 80 + "\n").encode("gbk")
    p = plan("h.csv", data)
    assert p.layout == "header row: number column '电话', content column '短信内容'"
    assert p.ignored_columns == ("备注",)
    assert [(r.row, r.code) for r in p.rows] == [(2, ""), (3, "wrong_length"), (4, "no_content"),
                                                  (5, "scientific_number"), (6, "ragged"), (7, "no_number"), (8, "")]
    assert (p.valid, p.invalid, p.duplicates, p.segments) == (2, 5, 0, 1 + 2)
    reasons = {r.row: r.reason for r in p.rows}
    assert "10 digits" in reasons[3] and "scientific notation" in reasons[5] and "4 cells" in reasons[6]


def test_duplicates_are_sent_once_and_repeated_numbers_are_listed() -> None:
    """The same number and text twice is a duplicate (sent once); the same number with another text is sent."""
    data = "mobile,content\n13800138000,a\n138 0013 8000,a\n13800138000,b\n13900139000,a\n".encode()
    p = plan("d.csv", data)
    assert [(r.row, r.code) for r in p.rows] == [(2, ""), (3, "duplicate"), (4, ""), (5, "")]
    assert "row 2" in p.rows[1].reason
    assert p.duplicate_numbers == (("13800138000", (2, 3, 4)),)
    assert [(m.to, m.text, m.rows) for m in p.messages] == [
        (("13800138000", "13900139000"), "a", (2, 5)), (("13800138000",), "b", (4,))]


def test_template_parameters_come_from_the_columns_named_after_them() -> None:
    """An inline template fills {name} and {code} per row; a missing or extra value is that row's error."""
    data = xlsx({1: ["手机号", "name", "code", "备注"],
                 2: [13800138000, "张三", 123456.0, None],
                 3: [13900139000, "李四", None, None],
                 4: [13700137000, "王五", 7, "vip"]})
    p = plan("t.xlsx", data, "尊敬的{name}，您的验证码是{code}。")
    assert p.layout == "header row: number column '手机号', parameters {name}, {code}, {备注} of template 'text'"
    assert [(r.row, r.code, r.text) for r in p.rows] == [
        (2, "", "尊敬的张三，您的验证码是123456。"), (3, "missing_params", ""), (4, "unknown_params", "")]
    assert "{code}" in p.rows[1].reason and "{备注}" in p.rows[2].reason


def test_a_named_template_without_parameters_is_a_common_text() -> None:
    """A named template with no placeholders is the common text ({{ }} become braces)."""
    template = Template.create("notice", "会议改在 {{3 楼}}。")
    p = build_plan("n.txt", b"13800138000\n", ImportOptions(template=template), VALIDATOR, ACCOUNT, NOW)
    assert p.messages[0].text == "会议改在 {3 楼}。"


@pytest.mark.parametrize(("data", "text", "words"), [
    (b"13800138000\n13900139000\n", None, "numbers only"),
    (b"name,content\nx,y\n", None, "neither a header"),
    (b"mobile,name\n13800138000,x\n", None, "no content column"),
    (b"mobile,content\n13800138000,x\n", "common", "content column"),
    (b"13800138000,x\n", "hi {name}", "no header row"),
    (b"mobile,phone\n1,2\n", None, "more than once"),
    (b"mobile,a,a\n1,2,3\n", "{a}", "two columns named"),
    (b"mobile,content\n", None, "no rows below"),
    (b"mobile,content,text\n1,2,3\n", None, "more than one content"),
])
def test_layouts_that_cannot_be_told_are_file_errors(data: bytes, text: str | None, words: str) -> None:
    """A file whose layout cannot be told fails as a whole, saying how to fix it."""
    with pytest.raises(FileImportError, match=words):
        plan("x.csv", data, text)


def test_options_refuse_text_and_template_together_and_bad_template_text() -> None:
    """Text and template together, or an unmatched brace, are refused before any file is read."""
    with pytest.raises(ValueError, match="not both"):
        ImportOptions("x", Template.create("t", "y"))
    with pytest.raises(ValueError, match="unmatched"):
        ImportOptions("您好 {name")


def test_refs_depend_on_the_file_bytes_only() -> None:
    """The same bytes plan the same refs; one changed byte changes every ref."""
    data = "mobile,content\n13800138000,a\n13900139000,b\n".encode()
    first, again = plan("a.csv", data), plan("renamed.csv", data)
    other = plan("a.csv", data.replace(b"b\n", b"c\n"))
    assert [m.ref for m in first.messages] == [m.ref for m in again.messages] == [
        f"imp-{first.digest[:12]}-2", f"imp-{first.digest[:12]}-3"]
    assert not {m.ref for m in other.messages} & {m.ref for m in first.messages}


def test_common_text_is_grouped_by_blocks_of_rows_within_max_recipients() -> None:
    """Rows of one text form one message per block of max_recipients rows, in file order."""
    data = "".join(f"138{i:08d}\n" for i in range(7)).encode()
    p = plan("n.txt", data, "hi", validator=Validator(max_recipients=3))
    assert [m.rows for m in p.messages] == [(1, 2, 3), (4, 5, 6), (7,)]
    assert [m.ref.rsplit("-", 1)[1] for m in p.messages] == ["1", "4", "7"]


def test_send_time_and_priority_are_checked_per_row_by_the_validator() -> None:
    """A send time more than a year ahead, or a priority above the account's, makes the rows invalid."""
    p = plan("n.txt", b"13800138000\n", "hi", send_at=NOW + 400 * 86400)
    assert p.rows[0].code == "send_at_too_far"
    limited = build_plan("n.txt", b"13800138000\n", ImportOptions("hi", priority=9), VALIDATOR,
                         Account("low", max_priority=5), NOW)
    assert limited.rows[0].code == "bad_priority"


def test_chunks_bound_messages_and_recipients_per_request() -> None:
    """Requests hold at most max_messages messages and about max_recipients recipients."""
    p = plan("n.txt", "".join(f"138{i:08d}\n" for i in range(10)).encode(), "hi",
             validator=Validator(max_recipients=2))
    assert [len(c) for c in chunks(p.messages, 2)] == [2, 2, 1]
    assert [sum(len(m.rows) for m in c) for c in chunks(p.messages, 10, max_recipients=5)] == [4, 4, 2]
    assert [len(c) for c in chunks(p.messages, 10, max_bytes=2 * (3 * 2 + 16 * 2 + 100))] == [2, 2, 1]


# --- preview, outcomes, result file ------------------------------------------------------------


def test_preview_names_the_encoding_layout_counts_first_messages_and_reasons() -> None:
    """The preview says what was found and lists the invalid rows with their reasons."""
    data = "手机号,内容\n13800138000,您好\n123,坏\n13800138000,您好\n".encode("gbk")
    text = preview(plan("p.csv", data), show=5)
    for words in ("p.csv (CSV, GB18030 (GBK)", "content column '内容'", "3 read: 1 valid, 1 invalid, 1 duplicate",
                  "13800138000 (rows 2, 4)", "row 2      13800138000    您好", "row 3", "wrong_length",
                  "priority 0 (bulk)", "send:      now"):
        assert words in text, words


def test_outcomes_map_the_gateways_problems_back_to_rows() -> None:
    """"[i].to[j]" refuses one row and keeps its message without it; "[i].text" refuses every row of message i."""
    data = "mobile,content\n13800138000,a\n13900139000,a\n13700137000,b\n".encode()
    p = plan("o.csv", data)
    outcomes = Outcomes(p)
    left = outcomes.refuse(list(p.messages), [Problem("[0].to[1]", "bad_number", "no"),
                                              Problem("[1].text", "unencodable_text", "bad")])
    assert [(m.rows, m.to, m.ref) for m in left] == [((2,), ("13800138000",), p.messages[0].ref)]
    outcomes.record(left[0], "42", repeated=False)
    assert (outcomes.accepted, outcomes.refused, outcomes.not_sent) == (1, 2, 0)
    assert list(outcomes.rows()) == [(2, "13800138000", "accepted", "", "42"),
                                     (3, "13900139000", "invalid", "bad_number: no", ""),
                                     (4, "13700137000", "invalid", "unencodable_text: bad", "")]
    with pytest.raises(ImportAborted, match="interface_not_allowed"):
        outcomes.refuse(left, [Problem("", "interface_not_allowed", "may not use 'file'")])


def test_result_file_is_utf8_with_bom_and_one_line_per_row() -> None:
    """The result CSV opens in Excel with Chinese intact: BOM, header, every row with outcome and message id."""
    p = plan("r.csv", "mobile,content\n13800138000,您好\nbad,x\n13900139000,再见\n".encode())
    outcomes = Outcomes(p)
    outcomes.record(p.messages[0], "7", repeated=True)
    raw = result_csv(outcomes)
    assert raw.startswith(b"\xef\xbb\xbf")
    lines = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert lines[0] == ["row", "number", "outcome", "reason", "message_id"]
    assert lines[1] == ["2", "13800138000", "accepted", "sent before by an import of this same file: not sent again",
                        "7"]
    assert lines[2][:3] == ["3", "bad", "invalid"] and lines[3][:3] == ["4", "13900139000", "not_sent"]
    assert list(csv.reader(io.StringIO(failure_csv("x.csv is empty").decode("utf-8-sig"))))[1] == [
        "", "", "failed", "x.csv is empty", ""]


# --- the command's options ---------------------------------------------------------------------


def test_at_accepts_local_times_offsets_clock_times_and_epoch() -> None:
    """--at: naive ISO is this machine's time; an offset is honoured; HH:MM is the next such time."""
    assert parse_at("2026-11-23T08:30+08:00") == datetime.datetime(2026, 11, 23, 0, 30,
                                                                   tzinfo=datetime.timezone.utc).timestamp()
    assert parse_at("2026-11-23 08:30") == datetime.datetime(2026, 11, 23, 8, 30).astimezone().timestamp()
    assert parse_at("1893456000") == 1893456000.0
    assert 0 < parse_at("08:30") - datetime.datetime.now().timestamp() <= 86400
    with pytest.raises(ValueError, match="is not a time"):
        parse_at("tomorrow")
    assert [parse_priority(p) for p in ("bulk", "URGENT", "7")] == [0, 9, 7]
    with pytest.raises(ValueError, match="0 to 9"):
        parse_priority("10")


# --- configuration -----------------------------------------------------------------------------


def test_file_import_section_loads_with_defaults(tmp_path: pathlib.Path) -> None:
    """An inbox needs dir and account; done/failed default inside dir; priority bulk; poll every 5 s."""
    path = write_config(tmp_path, {"file_import": {"inboxes": [{"dir": str(tmp_path / "in"), "account": "demo",
                                                                "text": "您好 {name}"}]}})
    [inbox] = load_config(str(path), {}).file_import.inboxes
    assert (inbox.done_path(), inbox.failed_path()) == (str(tmp_path / "in" / "done"), str(tmp_path / "in" / "failed"))
    assert (inbox.priority, inbox.poll_interval, inbox.template, inbox.report) == (0, 5.0, None, True)


def test_file_import_problems_name_the_key_and_the_fix(tmp_path: pathlib.Path) -> None:
    """Unknown or unauthorised accounts, shared folders, done_dir = dir, text with template, bad text."""
    inbox = {"dir": str(tmp_path / "in"), "account": "demo"}
    accounts = [{"name": "demo", "api_key_sha256": "0" * 64},
                {"name": "rest-only", "api_key_sha256": "1" * 64, "interfaces": ["rest"]}]
    types = write_config(tmp_path, {"accounts": accounts, "file_import": {"inboxes": [
        {**inbox, "text": "x", "template": "t"},
        {**inbox, "text": "您好 {name"},
    ]}}, name="types.yaml")
    meaning = write_config(tmp_path, {"accounts": accounts, "file_import": {"inboxes": [
        {**inbox, "account": "nobody"},
        {**inbox, "account": "rest-only"},
        {**inbox, "dir": str(tmp_path / "b"), "done_dir": str(tmp_path / "b")},
    ]}})
    problems = "\n".join(check_config(str(types), {}) + check_config(str(meaning), {}))
    for words in ("file_import.inboxes[0]: both text and template are set",
                  "file_import.inboxes[1].text: unmatched '{'",
                  "file_import.inboxes[0].account: no account is named 'nobody'",
                  "file_import.inboxes[1].account: account 'rest-only' may not use the file interface",
                  "file_import.inboxes[1].dir: file_import.inboxes[0] watches the same folder",
                  "file_import.inboxes[2].done_dir: done_dir is the watched folder itself"):
        assert words in problems, (words, problems)
    assert problems.count("fix:") == 6


def test_import_talks_https_to_an_api_with_tls() -> None:
    """`smsgw import` reaches the API as `smsgw send` does: https when api.tls is set, loopback for 0.0.0.0."""
    from smsgw.adapters.file.command import _client

    config = Config.model_validate({"api": {"listen": "0.0.0.0", "port": 8443,
                                            "tls": {"cert": "cert.pem", "key": "key.pem"}}})
    assert config.api_url() == "https://127.0.0.1:8443"
    assert _client(config, None, "demo-key").base_url == "https://127.0.0.1:8443"
