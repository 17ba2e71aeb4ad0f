"""Message and recipient states, and the one table of transitions every store update obeys.

A message is one text for one or many recipients; each recipient moves on its
own (see docs/message-lifecycle.md for the picture):

    queued ──claim──▶ dispatching ──all segments have Msg_Ids──▶ submitted ──reports──▶ delivered
       ▲                 │   │ └─ no report wanted ─▶ sent                  │  └──────▶ undeliverable
       └─ retry/lease ───┘   └─ permanent error / attempts used ─▶ failed   └─ no report in time ─▶ expired
                                                                    (a late report still moves expired on)

    held ──approved──▶ queued        (a message a review rule holds waits in `held`; smsgw.review)
      ├──rejected───▶ rejected       (final: the reviewer said no, or the review time ran out)
      └──cancelled──▶ cancelled      (final: cancelled before it went out; queued ones can be too)

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
    HELD: Final = "held"  # waiting for review: no dispatcher claims it
    REJECTED: Final = "rejected"  # a reviewer (or the review time limit) rejected it
    CANCELLED: Final = "cancelled"  # cancelled by its sender before it went out


class M:
    """Message states: accepted until every recipient is final, then completed."""

    ACCEPTED: Final = "accepted"
    PENDING_REVIEW: Final = "pending_review"  # held by a review rule until a reviewer decides
    COMPLETED: Final = "completed"


class Review:
    """A message's review decision (messages.review), set when it is accepted and when it is decided."""

    PASSED: Final = "passed"  # no rule held it: it went straight on
    PENDING: Final = "pending"  # held: waits in pending_review
    APPROVED: Final = "approved"
    REJECTED: Final = "rejected"
    CANCELLED: Final = "cancelled"  # its sender cancelled it while it waited
    ALL: Final = (PENDING, APPROVED, REJECTED, CANCELLED, PASSED)  # in the order they are listed to users


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
    (R.HELD, R.QUEUED),                # approved (by a reviewer, or on review expiry)
    (R.HELD, R.REJECTED),              # rejected (by a reviewer, or on review expiry)
    (R.HELD, R.CANCELLED),             # cancelled by its sender while waiting for review
    (R.QUEUED, R.CANCELLED),           # cancelled by its sender before it went out
})

FINAL: Final[frozenset[str]] = frozenset({R.DELIVERED, R.UNDELIVERABLE, R.EXPIRED, R.FAILED, R.SENT,
                                          R.REJECTED, R.CANCELLED})
"""States that close a recipient (the message's open count drops once, on the first)."""


def allowed(old: str, new: str) -> bool:
    return (old, new) in TRANSITIONS


def sources(target: str) -> tuple[str, ...]:
    """Every state a recipient may reach `target` from (for WHERE state IN (...))."""
    return tuple(sorted(old for old, new in TRANSITIONS if new == target))


def closes(old: str, new: str) -> bool:
    """Whether the move makes an open recipient final (so its message has one fewer open)."""
    return old not in FINAL and new in FINAL


def first_due(send_at: float | None, now: float) -> float:
    """When a message may first go out, before quiet hours move it: its send time if still ahead, else now."""
    return send_at if send_at is not None and send_at > now else now
