"""What an import shows and leaves behind: the preview, each row's outcome, the result file. Pure.

`preview` is the text ``smsgw import`` prints before asking to send. `Outcomes` collects
what the gateway answered for each message sent and maps a refusal naming
``[3].to[0]`` back to the file's row. `result_csv` is the ``<file>.result.csv`` both the
command and the watched folder write: one line per row with its outcome, the reason and
the message id, in UTF-8 with a BOM so that Excel and WPS open it with the Chinese intact.
"""

from __future__ import annotations

import csv
import datetime
import io
from collections import Counter
from dataclasses import replace
from typing import Iterable, Iterator, Sequence

from smsgw.adapters.file._plan import Outgoing, Plan
from smsgw.model import PRIORITY_NAMES, Problem

__all__ = ["ACCEPTED", "DUPLICATE", "INVALID", "NOT_SENT", "ImportAborted", "Outcomes", "failure_csv", "preview",
           "result_csv"]

ACCEPTED, INVALID, DUPLICATE, NOT_SENT = "accepted", "invalid", "duplicate", "not_sent"
RESULT_HEADER = ("row", "number", "outcome", "reason", "message_id")
SENT_BEFORE = "sent before by an import of this same file: not sent again"
NOT_REACHED = "not sent: the import stopped before this row"
_PRIORITIES = {value: name for name, value in PRIORITY_NAMES.items()}


class ImportAborted(Exception):
    """The gateway refused a whole request, not rows of it (an account not allowed the interface...)."""


# --- the preview ---------------------------------------------------------------------------------


def preview(plan: Plan, *, show: int = 5, problems: int = 10) -> str:
    """The plan in words: the file, its layout, the counts, the first messages and the invalid rows.

    Args:
        plan: what `build_plan` found.
        show: how many rendered messages to show.
        problems: how many invalid or duplicate rows to list (all are in the result file).
    """
    lines = [f"file:      {plan.source} ({_container(plan)}; sha256 {plan.digest[:12]}…)",
             f"layout:    {plan.layout}"]
    if plan.ignored_columns:
        lines.append(f"ignored:   {', '.join(plan.ignored_columns)} (not used by this layout)")
    lines.append(f"rows:      {plan.read:,} read: {plan.valid:,} valid, {plan.invalid:,} invalid, "
                 f"{plan.duplicates:,} duplicate{'' if plan.duplicates == 1 else 's'} (same number and text as an "
                 "earlier row; sent once)")
    if plan.duplicate_numbers:
        shown = "; ".join(f"{n} (rows {', '.join(map(str, rows[:5]))}{', …' if len(rows) > 5 else ''})"
                          for n, rows in plan.duplicate_numbers[:5])
        more = f"; and {len(plan.duplicate_numbers) - 5:,} more" if len(plan.duplicate_numbers) > 5 else ""
        lines.append(f"numbers:   {len(plan.duplicate_numbers):,} in more than one row: {shown}{more}")
    lines.append(f"messages:  {plan.valid:,} recipient{'' if plan.valid == 1 else 's'}, {plan.segments:,} "
                 f"segment{'' if plan.segments == 1 else 's'} in all, sent as {len(plan.messages):,} "
                 f"message{'' if len(plan.messages) == 1 else 's'}")
    o = plan.options
    when = "now" if o.send_at is None else f"at {_local(o.send_at)}"
    lines.append(f"send:      {when}, priority {o.priority}"
                 f"{f' ({_PRIORITIES[o.priority]})' if o.priority in _PRIORITIES else ''}"
                 f"{'' if o.report else ', no status reports'}; refs {plan.ref_prefix}<row>")
    valid = [r for r in plan.rows if r.valid][:show]
    if valid:
        lines.append("first messages:")
        lines += [f"  row {r.row:<6} {r.number:<14} {_one_line(r.text)}" for r in valid]
    bad = [r for r in plan.rows if not r.valid]
    if bad:
        reasons = Counter(r.code for r in bad)
        lines.append("not sent, by reason: " + ", ".join(f"{code} {n:,}" for code, n in reasons.most_common()))
        lines += [f"  row {r.row:<6} {r.number[:20]:<14} {r.code}: {r.reason}" for r in bad[:problems]]
        if len(bad) > problems:
            lines.append(f"  … and {len(bad) - problems:,} more (every row is in the result file)")
    return "\n".join(lines)


def _container(plan: Plan) -> str:
    if plan.kind == "xlsx":
        return f"XLSX, sheet {plan.sheet!r}"
    return f"{plan.kind.upper()}, {plan.encoding}"


def _local(when: float) -> str:
    return datetime.datetime.fromtimestamp(when).astimezone().isoformat(sep=" ", timespec="minutes")


def _one_line(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


# --- outcomes ----------------------------------------------------------------------------------


class Outcomes:
    """What became of each row of a plan, filled in as the gateway answers each request.

    Rows the plan found invalid or duplicate keep that outcome; a row of a message the
    gateway accepted is accepted (with the message's id; `SENT_BEFORE` when the store
    already held the message's ref); a row the gateway refused is invalid with its reason;
    any other valid row was not sent (the import stopped before it).
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._done: dict[int, tuple[str, str, str]] = {}  # row -> (outcome, reason, message id)
        self.accepted = 0  # rows newly accepted
        self.repeated = 0  # rows an earlier import of this file had sent
        self.refused = 0  # rows the gateway refused although the plan found them valid
        self.messages = 0  # messages accepted (new or repeated)
        self.held = 0  # rows accepted but held by a review rule until a reviewer approves them
        self.batches: set[str] = set()  # the batches the held rows belong to
    def record(self, message: Outgoing, message_id: str, repeated: bool, held: bool = False,
               batch: str | None = None) -> None:
        """The gateway accepted `message` as `message_id` (`repeated`: it held the ref already; `held`: a review
        rule holds it, in `batch`)."""
        reason = SENT_BEFORE if repeated else ""
        if held:
            self.held += len(message.rows)
            if batch:
                self.batches.add(batch)
        for row in message.rows:
            self._done[row] = (ACCEPTED, reason, message_id)
        self.messages += 1
        if repeated:
            self.repeated += len(message.rows)
        else:
            self.accepted += len(message.rows)

    def refuse(self, chunk: Sequence[Outgoing], problems: Sequence[Problem]) -> list[Outgoing]:
        """Record the rows the gateway's problems name; return what of `chunk` may be sent again.

        `where` is "[i].to[j]" (recipient j of message i: that row), or "[i].text" and the
        like (every row of message i). A message keeps its ref without the refused rows.

        Raises:
            ImportAborted: a problem names no message (the request as a whole was refused).
        """
        whole: set[int] = set()
        rows: dict[int, set[int]] = {}
        for p in problems:
            at = p.position()
            if at is None or at[0] >= len(chunk):
                raise ImportAborted(f"{p.code}: {p.message}")
            i, j = at
            message = chunk[i]
            if j is not None and j < len(message.rows):
                rows.setdefault(i, set()).add(j)
                self._refuse_row(message.rows[j], p)
            else:
                whole.add(i)
                for row in message.rows:
                    self._refuse_row(row, p)
        left = []
        for i, message in enumerate(chunk):
            if i in whole:
                continue
            drop = rows.get(i, set())
            kept = [j for j in range(len(message.rows)) if j not in drop]
            if len(kept) == len(message.rows):
                left.append(message)
            elif kept:
                left.append(replace(message, rows=tuple(message.rows[j] for j in kept),
                                    to=tuple(message.to[j] for j in kept)))
        return left

    def _refuse_row(self, row: int, problem: Problem) -> None:
        if self._done.get(row, ("",))[0] != INVALID:
            self.refused += 1
        self._done[row] = (INVALID, f"{problem.code}: {problem.message}", "")

    @property
    def not_sent(self) -> int:
        """Valid rows with no answer (yet)."""
        return sum(1 for r in self.plan.rows if r.valid and r.row not in self._done)

    def rows(self, not_sent_reason: str | None = None) -> Iterator[tuple[int, str, str, str, str]]:
        """(row, number, outcome, reason, message id) for every row, in file order; valid rows with no
        answer give `not_sent_reason` (None: `NOT_REACHED`)."""
        if not_sent_reason is None:
            not_sent_reason = NOT_REACHED
        for r in self.plan.rows:
            if r.row in self._done:
                outcome, reason, message_id = self._done[r.row]
                yield r.row, r.number, outcome, reason, message_id
            elif r.valid:
                yield r.row, r.number, NOT_SENT, not_sent_reason, ""
            else:
                yield r.row, r.number, *((DUPLICATE, r.reason) if r.code == "duplicate" else (INVALID, f"{r.code}: {r.reason}")), ""


def result_csv(outcomes: Outcomes, not_sent_reason: str | None = None) -> bytes:
    """The result file: a header and one line per row (`RESULT_HEADER`), UTF-8 with a BOM, CRLF."""
    return _csv(outcomes.rows(not_sent_reason))


def failure_csv(reason: str) -> bytes:
    """The result file of a file that could not be imported at all: one line with the reason."""
    return _csv([("", "", "failed", reason, "")])


def _csv(rows: Iterable[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(RESULT_HEADER)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8-sig")
