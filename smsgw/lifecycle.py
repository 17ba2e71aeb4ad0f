"""Message and recipient states, and the one table of transitions every store update obeys.

A message is one text for one or many recipients; each recipient moves on its
own (see docs/message-lifecycle.md for the picture):

    queued ──claim──▶ dispatching ──all segments have Msg_Ids──▶ submitted ──reports──▶ delivered
       ▲                 │   │ └─ no report wanted ─▶ sent                  │  └──────▶ undeliverable
       └─ retry/lease ───┘   └─ permanent error / attempts used ─▶ failed   └─ no report in time ─▶ expired
                                                                    (a late report still moves expired on)

Bulk SQL updates (claims, sweeps) select their rows with `sources(target)`;
row-by-row updates ask `allowed(old, new)`. Nothing else decides.
"""

from __future__ import annotations

from typing import Final


class R:
    """Recipient states (strings: they are stored and shown as they are)."""

    QUEUED: Final = "queued"
    DISPATCHING: Final = "dispatching"
    SUBMITTED: Final = "submitted"
    DELIVERED: Final = "delivered"
    UNDELIVERABLE: Final = "undeliverable"
    EXPIRED: Final = "expired"
    FAILED: Final = "failed"
    SENT: Final = "sent"


class M:
    """Message states: accepted until every recipient is final, then completed."""

    ACCEPTED: Final = "accepted"
    COMPLETED: Final = "completed"


class S:
    """Segment states."""

    SUBMITTED: Final = "submitted"
    DELIVERED: Final = "delivered"
    UNDELIVERABLE: Final = "undeliverable"


TRANSITIONS: Final[frozenset[tuple[str, str]]] = frozenset({
    (R.QUEUED, R.DISPATCHING),         # claimed by a node (a lease)
    (R.DISPATCHING, R.QUEUED),         # transient failure, lease expired, node restarted
    (R.DISPATCHING, R.SUBMITTED),      # every segment has a Msg_Id; reports awaited
    (R.DISPATCHING, R.SENT),           # every segment has a Msg_Id; no report wanted
    (R.DISPATCHING, R.FAILED),         # permanent error, or attempts used up
    (R.SUBMITTED, R.DELIVERED),        # every segment reported DELIVRD
    (R.SUBMITTED, R.UNDELIVERABLE),    # every segment reported, at least one not delivered
    (R.SUBMITTED, R.EXPIRED),          # no final report within dispatch.report_timeout
    (R.EXPIRED, R.DELIVERED),          # a late report is still the truth
    (R.EXPIRED, R.UNDELIVERABLE),
})

FINAL: Final[frozenset[str]] = frozenset({R.DELIVERED, R.UNDELIVERABLE, R.EXPIRED, R.FAILED, R.SENT})
"""States that close a recipient (the message's open count drops once, on the first)."""


def allowed(old: str, new: str) -> bool:
    return (old, new) in TRANSITIONS


def sources(target: str) -> tuple[str, ...]:
    """Every state a recipient may reach `target` from (for WHERE state IN (...))."""
    return tuple(sorted(old for old, new in TRANSITIONS if new == target))


def closes(old: str, new: str) -> bool:
    """Whether the move makes an open recipient final (so its message has one fewer open)."""
    return old not in FINAL and new in FINAL
