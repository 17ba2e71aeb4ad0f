"""From a file's rows to an import plan: layout, one outcome per row, the messages to send. Pure.

Three layouts are recognised from the first row and the options (docs/file-import.md):

- **numbers**: no header, one number per row; every row gets the common text (``--text``
  without placeholders, or a template without parameters).
- **number,content**: no header, the number then the row's own text. In a CSV or TXT file
  further cells are joined back with the delimiter (a text with unquoted commas).
- **header**: the first row names the number column (mobile, phone, 手机号, ...), and
  either a content column (content, 内容, ...), or each of a template's parameters by
  its name (``{name}`` is filled from the column headed ``name``), or nothing else when a
  common text is given.

Each row ends valid, invalid (with a code and a reason in words) or a duplicate (the
same number and text as an earlier row, which would send the same message twice).
Numbers, texts, priority and send time are checked by the very `Validator` the daemon
uses, so the preview's counts and segments are what the gateway will say.

Valid rows with the same text within one block of `GROUP_ROWS` file rows become one
message with many recipients (a common text turns 100,000 rows into 1,000 messages).
Each message's ``ref`` is ``imp-<first 12 hex of the file's SHA-256>-<first row>``: the
same file planned again (after a crash, a timeout or by mistake) gives the same refs,
and the store answers a ref it holds with the stored message instead of sending again.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterator, Sequence

from smsgw.adapters.file._read import FileImportError, Sheet, read_file
from smsgw.model import PRIORITY_BULK, Account, SendRequest
from smsgw.templates import Template, TemplateError, parse, render
from smsgw.validation import Validator

__all__ = ["CONTENT_HEADERS", "GROUP_ROWS", "NUMBER_HEADERS", "ImportOptions", "Outgoing", "Plan", "PlannedRow",
           "build_plan", "chunks", "plan_sheet"]

NUMBER_HEADERS = ("mobile", "phone", "number", "to", "手机", "手机号", "手机号码", "号码",
                  "mobile number", "phone number", "电话", "电话号码", "联系电话", "接收号码")
CONTENT_HEADERS = ("content", "text", "内容", "短信内容", "message", "短信")
GROUP_ROWS = 1000  # rows of one block: valid rows in a block that share a text become one message
_NUMBER_KEYS = frozenset(h.casefold() for h in NUMBER_HEADERS)
_CONTENT_KEYS = frozenset(h.casefold() for h in CONTENT_HEADERS)
_NUMBERISH = re.compile(r"'?[+＋]?[0-9０-９][0-9０-９ \-().]*")
_SCIENTIFIC = re.compile(r"[0-9](\.[0-9]+)?[Ee]\+?[0-9]+")
_NAMES = "mobile, phone, number, to, 手机, 手机号, 手机号码, 号码"


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How to turn rows into messages: a common text or a template, and the message settings.

    `text` is a common text, or an inline template when it holds ``{column}``
    placeholders; `template` a named one. Give at most one of them.

    Raises:
        ValueError: both are given, or `text` is not a usable template text.
    """

    text: str | None = None
    template: Template | None = None
    priority: int = PRIORITY_BULK  # imports are mass sends: they queue behind interactive messages
    send_at: float | None = None
    report: bool = True

    def __post_init__(self) -> None:
        if self.text is not None and self.template is not None:
            raise ValueError("give a text or a template, not both: the template makes the text")
        if self.text is not None:
            try:
                parse(self.text)
            except TemplateError as exc:
                raise ValueError(f"the text is not usable: {exc}") from None

    def effective_template(self) -> Template | None:
        """The named template, or the text as an inline one (named "text")."""
        if self.template is not None:
            return self.template
        if self.text is not None:
            return Template("text", self.text, params=parse(self.text))
        return None


@dataclass(frozen=True, slots=True)
class PlannedRow:
    """One row of the file and what will become of it."""

    row: int  # the file's own row number
    number: str  # normalised when valid, else as written
    text: str  # the message; "" when it could not be made
    segments: int  # per recipient; 0 unless valid
    code: str = ""  # "": valid; "duplicate"; else why it is invalid (e.g. wrong_length, missing_params)
    reason: str = ""  # in words, with the fix
    params: tuple[tuple[str, str], ...] = ()  # a named template's parameters (the gateway renders it again)

    @property
    def valid(self) -> bool:
        return not self.code


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send: its stable ref, the rows it carries (in the order of `to`) and its text."""

    ref: str
    rows: tuple[int, ...]
    to: tuple[str, ...]  # normalised numbers
    text: str  # as rendered for the preview
    params: tuple[tuple[str, str], ...] = ()  # a named template's parameters

    def request(self, options: ImportOptions, batch: str | None = None, batch_size: int | None = None) -> SendRequest:
        """The message for the gateway (made when sent: 100,000 of them up front cost a third of a second).

        With a named template the gateway is given its name and the parameters, and renders the
        text itself, so the message records the template it came from. `batch` and `batch_size`
        (`Plan.batch`, `Plan.valid`) make the whole file one batch for the review queue.
        """
        o = options
        if o.template is not None:
            return SendRequest(self.to, "", o.priority, o.send_at, ref=self.ref, report=o.report,
                               template=o.template.name, params=dict(self.params), batch=batch,
                               batch_size=batch_size)
        return SendRequest(self.to, self.text, o.priority, o.send_at, ref=self.ref, report=o.report, batch=batch,
                           batch_size=batch_size)


@dataclass(frozen=True, slots=True)
class Plan:
    """What an import will do, before anything is sent: the preview's facts and the messages."""

    source: str  # the file's name as given
    digest: str  # SHA-256 hex of its bytes
    kind: str  # csv, txt or xlsx
    encoding: str | None
    sheet: str | None
    layout: str  # in words, e.g. "header row: number column '手机号', content column '内容'"
    options: ImportOptions
    rows: tuple[PlannedRow, ...]
    messages: tuple[Outgoing, ...]
    valid: int
    invalid: int
    duplicates: int  # rows skipped: same number and text as an earlier row
    duplicate_numbers: tuple[tuple[str, tuple[int, ...]], ...]  # (number, its rows) for numbers in several rows
    segments: int  # over every valid row
    ignored_columns: tuple[str, ...] = ()

    @property
    def read(self) -> int:
        return len(self.rows)

    @property
    def ref_prefix(self) -> str:
        return _ref_prefix(self.digest)

    @property
    def batch(self) -> str:
        """The batch the file's messages form (reviewed and cancelled as a unit): imp-<12 hex of its SHA-256>."""
        return _ref_prefix(self.digest).rstrip("-")


def _ref_prefix(digest: str) -> str:
    """What each ref of a file's messages starts with: imp-<first 12 hex of its SHA-256>-."""
    return f"imp-{digest[:12]}-"


def build_plan(source: str, data: bytes, options: ImportOptions, validator: Validator, account: Account,
               now: float) -> Plan:
    """Read the file and plan its import.

    Args:
        source: the file's name (its extension tells CSV from TXT; shown in the preview).
        data: its bytes.
        options: the common text or template, priority, send time, report.
        validator: the daemon's checks (built from the same config).
        account: whose limits apply (max_priority, default extension).
        now: epoch seconds, for checking the send time.

    Raises:
        FileImportError: the file cannot be read, or its layout cannot be told (a header
            without a number column, parameters without a header, ...).
    """
    return plan_sheet(source, hashlib.sha256(data).hexdigest(), read_file(source, data), options, validator,
                      account, now)


# --- layouts -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    description: str
    skip_first: bool  # the first row is a header
    number: int = 0  # column of the number
    content: int | None = None  # column of the text (number,content and header with content)
    width: int | None = None  # header layouts: the columns the header names
    params: tuple[tuple[int, str], ...] = ()  # (column, parameter name)
    template: Template | None = None  # with parameters
    common: str | None = None  # the common text
    join_rest: str | None = None  # number,content in a text file: the delimiter to join further cells with
    named: bool = False  # the template is a named one: its parameters are sent along
    ignored: tuple[str, ...] = ()


def _key(header: str) -> str:
    return " ".join(header.replace("_", " ").split()).casefold()


def _layout(sheet: Sheet, options: ImportOptions) -> _Layout:
    template = options.effective_template()
    common = None
    if template is not None and not template.params:
        rendered = render(template, {})
        assert isinstance(rendered, str)  # no parameters: nothing can be missing or extra
        common, template = rendered, None
    line, first = sheet.rows[0]
    keys = [_key(cell) for cell in first]
    number_cols = [i for i, k in enumerate(keys) if k in _NUMBER_KEYS]
    if number_cols:
        return _header_layout(line, first, keys, number_cols, template, common, options.template is not None)
    if not _NUMBERISH.fullmatch(first[0]) and not _SCIENTIFIC.fullmatch(first[0]):
        raise FileImportError(f"row {line} is neither a header row naming the number column ({_NAMES}) nor starts "
                              f"with a number ({first[0][:30]!r}): add a header row, e.g. 手机号,内容")
    if template is not None:
        raise FileImportError(f"has no header row, so the template's parameters ({_braced(template.params)}) have "
                              "no columns: add a first row naming the number column and each parameter")
    if common is not None:
        return _Layout("no header: one number per row, one common text", False, common=common)
    if all(len(cells) == 1 for _, cells in sheet.rows):
        raise FileImportError("holds numbers only, and no text was given for them: give the common text "
                              "(smsgw import --text, or text: of the inbox), or add each row's content after "
                              "its number")
    join = sheet.delimiter if sheet.kind != "xlsx" else None
    return _Layout("no header: number, content", False, content=1, join_rest=join)


def _header_layout(line: int, names: tuple[str, ...], keys: list[str], number_cols: list[int],
                   template: Template | None, common: str | None, named: bool) -> _Layout:
    if len(number_cols) > 1:
        twice = ", ".join(repr(names[i]) for i in number_cols)
        raise FileImportError(f"row {line} names a number column more than once ({twice}): keep one of them")
    seen: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k and k in seen:
            raise FileImportError(f"row {line} has two columns named {names[i]!r} (columns {_col(seen[k])} and "
                                  f"{_col(i)}): rename one")
        seen.setdefault(k, i)
    n = number_cols[0]
    where = f"header row: number column {names[n]!r}"
    others = [(i, names[i]) for i in range(len(names)) if i != n and names[i]]
    unnamed = tuple(f"column {_col(i)} (no header)" for i in range(len(names)) if i != n and not names[i])
    contents = [i for i, _ in others if keys[i] in _CONTENT_KEYS]
    if template is not None:
        return _Layout(f"{where}, parameters {_braced(name for _, name in others) or '(none)'} of template "
                       f"{template.name!r}", True, n, width=len(names), params=tuple(others), template=template,
                       ignored=unnamed, named=named)
    if common is not None:
        if contents:
            raise FileImportError(f"has a content column ({names[contents[0]]!r}) and a common text is given as well: "
                                  "leave the common text out to send each row's own content, or remove the column")
        return _Layout(f"{where}, one common text", True, n, width=len(names), common=common,
                       ignored=tuple(name for _, name in others) + unnamed)
    if not contents:
        raise FileImportError(f"has a number column ({names[n]!r}) but no content column "
                              f"({', '.join(CONTENT_HEADERS[:4])}): add one, or give a common text or a template")
    if len(contents) > 1:
        raise FileImportError(f"has more than one content column ({', '.join(repr(names[i]) for i in contents)}): "
                              "keep one, or use a template naming the columns as parameters")
    c = contents[0]
    return _Layout(f"{where}, content column {names[c]!r}", True, n, content=c, width=len(names),
                   ignored=tuple(name for i, name in others if i != c) + unnamed)


def _col(index: int) -> str:
    """Excel's column letter: 0 -> A, 26 -> AA."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _braced(names: Sequence[str] | Iterator[str]) -> str:
    return ", ".join(f"{{{n}}}" for n in names)


# --- rows --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    row: int
    number: str
    text: str = ""
    code: str = ""
    reason: str = ""
    params: tuple[tuple[str, str], ...] = ()


def _draft(row: int, cells: tuple[str, ...], layout: _Layout) -> _Draft:
    """A row's number and text, or why it has none. Never raises."""
    if layout.width is not None and len(cells) > layout.width:
        return _Draft(row, _cell(cells, layout.number), code="ragged",
                      reason=f"the row has {len(cells)} cells but the header row names {layout.width} columns: "
                             "move the extra cells into a named column, or remove them")
    number, problem = _number(_cell(cells, layout.number))
    draft = _Draft(row, number)
    if problem is not None:
        draft.code, draft.reason = problem
        return draft
    if layout.common is not None:
        if layout.width is None and len(cells) > 1:
            draft.code, draft.reason = "ragged", (f"the row has {len(cells)} cells, but with a common text each row "
                                                  "holds one number only: remove the other cells")
        draft.text = layout.common
    elif layout.template is not None:
        _fill(draft, cells, layout.params, layout.template)
        if layout.named and not draft.code:
            draft.params = tuple((name, cells[i]) for i, name in layout.params if i < len(cells) and cells[i])
    elif layout.content is not None:
        if layout.join_rest is not None:
            draft.text = layout.join_rest.join(cells[1:])
        elif layout.width is None and len(cells) > 2:
            draft.code, draft.reason = "ragged", (f"the row has {len(cells)} cells; without a header a row holds "
                                                  "the number and the content only")
        else:
            draft.text = _cell(cells, layout.content)
        if not draft.code and not draft.text:
            draft.code, draft.reason = "no_content", "the content is empty: write the message after the number"
    return draft


def _cell(cells: tuple[str, ...], index: int) -> str:
    return cells[index] if index < len(cells) else ""


def _number(raw: str) -> tuple[str, tuple[str, str] | None]:
    """The number cell tidied (Excel's text mark and ".0" dropped), or why it cannot be a number."""
    number = raw[1:] if raw.startswith("'") else raw
    if not number:
        return raw, ("no_number", "the number cell is empty: write the mobile number")
    if _SCIENTIFIC.fullmatch(number):
        return raw, ("scientific_number", f"{number!r} is a number Excel saved in scientific notation, which loses "
                                          "its last digits: format the column as text (or as a number with 0 "
                                          "decimals) and save the file again")
    if number.endswith(".0") and number[:-2].isdigit():
        number = number[:-2]  # written by a program that read the column as floats
    return number, None


def _fill(draft: _Draft, cells: tuple[str, ...], params: tuple[tuple[int, str], ...], template: Template) -> None:
    given = {name: cells[i] for i, name in params if i < len(cells) and cells[i]}
    missing = [p for p in template.params if p not in given]
    extra = [p for p in given if p not in template.params]
    if missing:
        draft.code, draft.reason = "missing_params", (
            f"no value for {_braced(missing)}: template {template.name!r} needs "
            + ("a column" if len(missing) == 1 else "columns") + " of that name, filled in every row")
        return
    if extra:
        draft.code, draft.reason = "unknown_params", (
            f"{_braced(extra)} {'is' if len(extra) == 1 else 'are'} not a parameter of template {template.name!r} "
            f"(it takes {_braced(template.params) or 'none'}): remove the column or leave it empty")
        return
    text = render(template, given)
    assert isinstance(text, str)  # checked above: nothing missing, nothing extra
    draft.text = text


# --- the plan ----------------------------------------------------------------------------------


def plan_sheet(source: str, digest: str, sheet: Sheet, options: ImportOptions, validator: Validator,
               account: Account, now: float) -> Plan:
    """`build_plan` for a file already read (`digest`: the SHA-256 hex of its bytes)."""
    layout = _layout(sheet, options)
    rows = sheet.rows[1:] if layout.skip_first else sheet.rows
    o = options
    planned: list[PlannedRow] = []
    first_of: dict[tuple[str, str], int] = {}
    for line, cells in rows:
        draft = _draft(line, cells, layout)
        if draft.code:
            planned.append(PlannedRow(line, draft.number, draft.text, 0, draft.code, draft.reason))
            continue
        # The full check per row (about 9 µs, 1 s per 100,000 rows) keeps the preview exactly
        # what the gateway will say.
        checked = validator.prepare_one(account, SendRequest((draft.number,), draft.text, o.priority, o.send_at,
                                                             report=o.report), now, interface="file")
        if isinstance(checked, list):
            planned.append(PlannedRow(line, draft.number, draft.text, 0, checked[0].code,
                                      "; ".join(p.message for p in checked)))
            continue
        number = checked.to[0]
        earlier = first_of.setdefault((number, draft.text), line)
        if earlier != line:
            planned.append(PlannedRow(line, number, draft.text, 0, "duplicate",
                                      f"the same number and text as row {earlier}: sent once"))
            continue
        planned.append(PlannedRow(line, number, draft.text, checked.segments, params=draft.params))
    if not planned:
        raise FileImportError("has a header row but no rows below it")
    return _plan(source, digest, sheet, layout, options, tuple(planned), validator.max_recipients)


def _plan(source: str, digest: str, sheet: Sheet, layout: _Layout, options: ImportOptions,
          rows: tuple[PlannedRow, ...], max_recipients: int) -> Plan:
    valid = [r for r in rows if not r.code]
    sent_to = [r for r in rows if not r.code or r.code == "duplicate"]
    several = {n for n, times in Counter(r.number for r in sent_to).items() if times > 1}
    by_number: dict[str, list[int]] = defaultdict(list)
    for r in sent_to:
        if r.number in several:
            by_number[r.number].append(r.row)
    block = max(1, min(GROUP_ROWS, max_recipients))
    groups: dict[tuple[int, str, tuple[tuple[str, str], ...]], list[PlannedRow]] = {}
    for r in valid:
        key = ((r.row - 1) // block, r.text, r.params)
        group = groups.get(key)
        if group is None:
            groups[key] = [r]
        else:
            group.append(r)
    prefix = _ref_prefix(digest)
    messages = tuple(Outgoing(f"{prefix}{members[0].row}", tuple(m.row for m in members),
                              tuple(m.number for m in members), text, params)
                     for (_, text, params), members in groups.items())
    duplicates = len(sent_to) - len(valid)
    return Plan(source, digest, sheet.kind, sheet.encoding, sheet.sheet, layout.description, options, rows,
                messages, len(valid), len(rows) - len(sent_to), duplicates,
                tuple((n, tuple(lines)) for n, lines in by_number.items()), sum(r.segments for r in valid),
                layout.ignored)


def chunks(messages: Sequence[Outgoing], max_messages: int, max_recipients: int = 20_000,
           max_bytes: int = 2 * 1024 * 1024) -> Iterator[list[Outgoing]]:
    """The messages in order, in requests of at most `max_messages` messages, about `max_recipients`
    recipients and about `max_bytes` of JSON (at most 3 bytes per character of text, 16 per number,
    100 for the rest), so that a request body stays under the API's size limit."""
    chunk: list[Outgoing] = []
    recipients = size = 0
    for message in messages:
        count = len(message.rows)
        weight = 3 * len(message.text) + 16 * count + 100
        if chunk and (len(chunk) >= max_messages or recipients + count > max_recipients or size + weight > max_bytes):
            yield chunk
            chunk, recipients, size = [], 0, 0
        chunk.append(message)
        recipients += count
        size += weight
    if chunk:
        yield chunk
