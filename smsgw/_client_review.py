"""The review queue and cancelling in smsgw's clients (docs/review.md): what goes in and comes out,
and the calls both `Client` and `TwistedClient` make (no network I/O here; `file_in_place` writes the
exports both save; smsgw.client re-exports the names).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import tempfile
from dataclasses import dataclass
from typing import IO, Any, Iterator, Sequence
from urllib.parse import quote, urlencode

from smsgw._client_codec import Call, _encode, _required_time, _time

__all__ = ["Cancelled", "Export", "ReviewFilter", "ReviewMessage", "ReviewOutcome", "ReviewPage"]

_Time = datetime.datetime | float | str


@dataclass(frozen=True, slots=True)
class ReviewFilter:
    """Which messages of the review queue: every filter given must match; none given: every message that
    was held for review.

    `content` a substring of the text; `to` a recipient (written any way: "+86 138 0013 8000");
    `account` the sender; `interface` rest, url, soap, file, auto_reply, db or db:<source>;
    `state` review states (pending, approved, rejected, cancelled, passed, or any), one or several;
    `batch` as stored ("<account>:<name>", or the first message id of a request that named none);
    `since` / `until` when it was created (since inclusive, until exclusive): an aware datetime,
    epoch seconds, or ISO-8601 text with a UTC offset.
    """

    content: str | None = None
    to: str | None = None
    account: str | None = None
    interface: str | None = None
    state: str | Sequence[str] | None = None
    batch: str | None = None
    since: _Time | None = None
    until: _Time | None = None

    def __post_init__(self) -> None:
        if self.state is not None and not isinstance(self.state, str):
            object.__setattr__(self, "state", tuple(self.state))

    def values(self) -> dict[str, str]:
        """The filters given, as the query string and the JSON filter take them.

        Raises:
            ValueError: `since` or `until` is a datetime without a time zone.
        """
        out: dict[str, str] = {}
        for name in ("content", "to", "account", "interface", "batch"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.state is not None:
            out["state"] = self.state if isinstance(self.state, str) else ",".join(self.state)
        for name in ("since", "until"):
            when = getattr(self, name)
            if when is not None:
                out[name] = _when(name, when)
        return out

    def narrows(self) -> bool:
        """Whether it narrows which messages an approve or reject touches (state alone does not)."""
        return any(getattr(self, name) is not None
                   for name in ("content", "to", "account", "interface", "batch", "since", "until"))


def _when(name: str, value: _Time) -> str:
    if isinstance(value, datetime.datetime):
        if value.utcoffset() is None:
            raise ValueError(f"{name} {value.isoformat()} has no time zone, so the server cannot tell which clock "
                             "it means: give tzinfo (e.g. ZoneInfo('Asia/Shanghai')) or epoch seconds")
        return value.isoformat()
    if isinstance(value, (int, float)):
        return repr(float(value))
    return value


@dataclass(frozen=True, slots=True)
class ReviewMessage:
    """One message as the review queue shows it (times are epoch seconds)."""

    id: str
    account: str
    interface: str
    batch: str | None
    ref: str | None
    text: str
    template: str | None
    recipients: int  # how many numbers it goes to
    numbers: tuple[str, ...]  # review_list: the first 5; review_get: all of them
    priority: int
    send_at: float | None
    created_at: float
    state: str  # the message's: pending_review, accepted, completed
    review: str  # pending, approved, rejected, cancelled, passed
    rule: str | None  # the review rule that held it
    deadline: float | None  # when the rule's time limit runs out (pending ones)
    reviewed_by: str | None
    reviewed_at: float | None
    comment: str | None


@dataclass(frozen=True, slots=True)
class ReviewPage:
    items: tuple[ReviewMessage, ...]
    total: int  # messages matching the filter
    total_recipients: int  # their recipients
    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class ReviewOutcome:
    """What an approve or reject changed."""

    action: str  # approve or reject
    reviewer: str  # who acted (as the gateway recorded it)
    messages: tuple[str, ...]  # the messages it changed
    recipients: int  # recipients queued (approve) or rejected
    unchanged: tuple[str, ...] = ()  # ids named that were not waiting for review (decided before, or unknown)


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What a cancel stopped: recipients that had already gone to the carrier go on."""

    messages: tuple[str, ...]
    recipients: int


@dataclass(frozen=True, slots=True)
class Export:
    """A review export written to `path`."""

    path: str
    format: str  # xlsx or csv
    size: int  # bytes
    rows: int | None  # messages in it (None if the server did not say)

    @classmethod
    def written(cls, path: str, fmt: str, size: int, rows: str | None) -> Export:
        """The export of `size` bytes at `path`; `rows` is the server's X-Smsgw-Rows header."""
        return cls(path, fmt, size, int(rows) if rows is not None and rows.isdigit() else None)


@contextlib.contextmanager
def file_in_place(path: str) -> Iterator[IO[bytes]]:
    """A temporary file next to `path`, moved onto `path` when the block ends, deleted if it fails: a
    reader never sees half an export."""
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".smsgw-export-", delete=False) as part:
        try:
            yield part
        except BaseException:
            part.close()
            os.unlink(part.name)
            raise
    os.replace(part.name, path)


# -- calls --------------------------------------------------------------------------------------

def review_list_call(where: ReviewFilter | None, offset: int, limit: int) -> Call[ReviewPage]:
    query = {**(where or ReviewFilter()).values(), "offset": str(offset), "limit": str(limit)}
    return Call("GET", f"/review?{urlencode(query)}", None, 200, _page)


def review_get_call(message_id: str) -> Call[ReviewMessage]:
    return Call("GET", f"/review/{quote(str(message_id), safe='')}", None, 200, _message)


def review_export_call(where: ReviewFilter | None, fmt: str) -> Call[None]:
    query = {**(where or ReviewFilter()).values(), "format": fmt}
    return Call("GET", f"/review/export?{urlencode(query)}", None, 200, lambda answer: None)


def review_action_call(action: str, ids: Sequence[str] | None, batch: str | None, where: ReviewFilter | None,
                       all_matching: bool, comment: str, reviewer: str | None) -> Call[ReviewOutcome]:
    """POST /review/approve or /review/reject.

    Raises:
        ValueError: not exactly one of ids, batch and where; `where` narrows nothing and
            `all_matching` is not set; a reject without a comment.
    """
    given = [name for name, value in (("ids", ids), ("batch", batch), ("where", where)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of ids, batch and where to say which messages to {action}, "
                         f"not {' and '.join(given) or 'none'}")
    if isinstance(ids, str):
        raise ValueError("ids must be a list of message ids, not one string")
    body: dict[str, Any] = {}
    if ids is not None:
        body["ids"] = [str(i) for i in ids]
    elif batch is not None:
        body["batch"] = batch
    elif where is not None:
        if not where.narrows() and not all_matching:
            raise ValueError(f"this filter selects every message waiting for review: pass all_matching=True to "
                             f"{action} them all, or narrow it")
        body["filter"] = where.values()
        if all_matching:
            body["all"] = True
    if action == "reject" and not comment.strip():
        raise ValueError("a reject needs a comment saying why: the sender is told")
    if comment:
        body["comment"] = comment
    if reviewer is not None:
        body["reviewer"] = reviewer
    return Call("POST", f"/review/{action}", _encode(body), 200, _outcome)


def cancel_call(message_id: str, comment: str | None) -> Call[Cancelled]:
    body = _encode({"comment": comment}) if comment else None
    return Call("POST", f"/messages/{quote(str(message_id), safe='')}/cancel", body, 200, _cancelled)


def cancel_batch_call(batch: str, comment: str | None) -> Call[Cancelled]:
    body = _encode({"comment": comment}) if comment else None
    return Call("POST", f"/batches/{quote(batch, safe='')}/cancel", body, 200, _cancelled)


def _message(m: Any) -> ReviewMessage:
    return ReviewMessage(str(m["id"]), m["account"], m["interface"], m["batch"], m["ref"], m["text"], m["template"],
                         int(m["recipients"]), tuple(m["numbers"]), int(m["priority"]), _time(m["send_at"]),
                         _required_time(m["created_at"]), m["state"], m["review"], m["rule"], _time(m["deadline"]),
                         m["reviewed_by"], _time(m["reviewed_at"]), m["comment"])


def _page(p: Any) -> ReviewPage:
    return ReviewPage(tuple(_message(m) for m in p["items"]), int(p["total"]), int(p["total_recipients"]),
                      int(p["offset"]), int(p["limit"]))


def _outcome(r: Any) -> ReviewOutcome:
    return ReviewOutcome(r["action"], r["reviewer"], tuple(r["messages"]), int(r["recipients"]),
                         tuple(r.get("unchanged", ())))


def _cancelled(r: Any) -> Cancelled:
    return Cancelled(tuple(r["messages"]), int(r["recipients"]))
