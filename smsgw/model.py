"""The daemon's shared vocabulary: what business-side interfaces hand in and get back.

Interfaces (REST today, URL/SOAP/file/DB adapters later) speak only these
types to the gateway core (`smsgw.pipeline.Gateway`), so none of them knows
about the store or the carrier links.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from smsgw.store import ReviewItem, ReviewPage, ReviewQuery, ReviewResult
    from smsgw.templates import Template

# Priorities: higher goes first. Verification codes use URGENT, mass notices BULK. Every interface
# also takes them by these names (PRIORITY_NAMES).
PRIORITY_BULK = 0
PRIORITY_NORMAL = 5
PRIORITY_URGENT = 9
PRIORITY_NAMES = {"bulk": PRIORITY_BULK, "normal": PRIORITY_NORMAL, "urgent": PRIORITY_URGENT}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: `per_second` recipients on average, up to `burst` at once (docs/security.md)."""

    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class Account:
    """A business system or user allowed to send (configured in YAML)."""

    name: str
    api_key_sha256: str = ""  # hex SHA-256 of the API key; the key itself is never stored
    interfaces: tuple[str, ...] = ()  # empty: every interface
    default_ext: str = ""
    max_priority: int = PRIORITY_URGENT
    needs_review: bool = False  # stored on messages now; the review queue is a later issue
    mo_consumers: tuple[str, ...] = ()  # MO consumers whose messages this account may pull (besides its own name)
    permissions: tuple[str, ...] = ()  # beyond sending: "templates" (manage templates), "review" (review queue)
    secret_hash: str = ""  # argon2id or bcrypt hash of the account's secret (smsgw hash-secret)
    allow_from: tuple[str, ...] = ()  # IP addresses and CIDRs requests may come from; empty: anywhere
    rate_limit: RateLimit | None = None  # recipients per second; None: unlimited
    daily_quota: int | None = None  # recipients per local day; None: unlimited

    def over_daily_quota(self, recipients: int) -> str | None:
        """Why `recipients` can never be accepted at once (more than a whole day's quota), or None."""
        if self.daily_quota is None or recipients <= self.daily_quota:
            return None
        return f"{recipients} recipients, more than account {self.name!r}'s daily quota of {self.daily_quota}"


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One message as a business system asks for it (one text, one or many recipients)."""

    to: tuple[str, ...]
    text: str
    priority: int = PRIORITY_NORMAL
    send_at: float | None = None  # epoch seconds; None: now
    ext: str | None = None  # appended to the service number; None: the account's default
    ref: str | None = None  # the caller's own reference, echoed back
    report: bool = True  # whether a status report is wanted
    dlr_url: str | None = None  # Kannel-style per-message report URL (%-escapes), see docs/callbacks.md
    dlr_mask: int = 0  # Kannel's dlr-mask: 1 delivered, 2 undeliverable, 8 submitted, 16 rejected (sum)
    template: str | None = None  # a named template (smsgw.templates): `text` stays empty, `params` fill it
    params: Mapping[str, Any] | None = None  # the template's parameters
    batch: str | None = None  # the caller's name for the batch (one import, one mass send) this belongs to
    batch_size: int | None = None  # recipients in the whole batch, as the caller declares (review rules count it)


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a request was refused: where (a JSON-path-like location) and what."""

    where: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "code": self.code, "message": self.message}

    def position(self) -> tuple[int, int | None] | None:
        """Which message of a many-message request (`[i]…`), and which of its recipients
        (`[i].to[j]`), the problem names; None when it names no message."""
        m = _WHERE.match(self.where)
        if m is None:
            return None
        return int(m.group(1)), None if m.group(2) is None else int(m.group(2))


_WHERE = re.compile(r"\[(\d+)\](?:\.to\[(\d+)\])?")


class RequestRejected(Exception):
    """A request failed validation; `problems` lists every reason at once."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.where}: {p.message}" for p in problems))
        self.problems = problems


class ServiceUnavailable(Exception):
    """The gateway cannot take messages now (draining, store down): try again later."""


class LimitExceeded(Exception):
    """The account's rate limit or daily quota does not allow the request now; nothing was stored.

    `kind` is "rate_limit" or "daily_quota"; `retry_after` the seconds until the request
    would fit; `allowed` how many recipients would fit now (a poller may send that many
    and leave the rest waiting).
    """

    def __init__(self, message: str, *, kind: str, retry_after: float, allowed: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after
        self.allowed = allowed


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """What the caller gets back once a message is committed to the store."""

    id: str
    ref: str | None
    recipients: int
    segments: int  # per recipient
    dropped_duplicates: tuple[str, ...] = ()
    repeated: bool = False  # stored before (same ref, or the same legacy row): not sent again
    held: bool = False  # a review rule holds it until a reviewer approves it (smsgw.review)
    batch: str | None = None  # the batch it belongs to (review and cancel a batch as a unit)


@dataclass(frozen=True, slots=True)
class SegmentView:
    number: int  # 1-based
    total: int
    msg_id: str | None  # canonical 16-hex text
    state: str
    stat: str | None
    submitted_at: float | None
    reported_at: float | None


@dataclass(frozen=True, slots=True)
class RecipientView:
    to: str
    state: str
    link: str | None
    attempts: int
    error: str | None
    stat: str | None
    updated_at: float
    segments: tuple[SegmentView, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageView:
    id: str
    account: str
    interface: str
    ref: str | None
    text: str
    priority: int
    send_at: float | None
    state: str
    created_at: float
    updated_at: float
    recipients: tuple[RecipientView, ...] = ()


@dataclass(frozen=True, slots=True)
class MoView:
    id: str  # also the cursor value
    link: str
    src: str
    dest: str  # full destination number: service code + extension
    ext: str
    text: str
    consumer: str | None
    received_at: float
    parts: int = 1
    complete: bool = True


@dataclass(frozen=True, slots=True)
class MoPage:
    items: tuple[MoView, ...]
    next_cursor: str | None  # pass back as `cursor` for the next page (an empty page keeps the cursor)


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    node: str
    accepting: bool
    links: tuple[dict[str, Any], ...] = ()  # name, live_connections, connections, pending, state
    queues: dict[str, int] = field(default_factory=dict)  # state -> recipients
    rates: dict[str, float] = field(default_factory=dict)  # accepted/submitted/reported per second, last minute


class GatewayApi(Protocol):
    """What business-side interfaces call. Implemented by `smsgw.pipeline.Gateway`."""

    def accept(self, account: Account, interface: str,
               requests: Sequence[SendRequest]) -> Deferred[list[AcceptedMessage]]:
        """Validate and commit; fires once every message is committed.

        Fails with RequestRejected (every problem of every request; nothing
        stored), LimitExceeded (the account's rate limit or daily quota; nothing
        stored) or ServiceUnavailable (draining, store unreachable).
        """

    def get_message(self, account: Account, message_id: str) -> Deferred[MessageView | None]:
        """One of the account's own messages, or None (unknown id or someone else's)."""

    def list_mo(self, account: Account, cursor: str | None, limit: int) -> Deferred[MoPage]:
        """Uplink messages routed to the account's consumers, oldest first, after `cursor`."""

    def status(self) -> Deferred[GatewayStatus]:
        """Links, queue depths and rates."""

    def list_templates(self) -> Deferred[list[Template]]:
        """Every named template, by name."""

    def put_template(self, account: Account, name: str, text: str,
                     pre_approved: bool) -> Deferred[tuple[Template, str]]:
        """Add or change a template (fires with it and "added" or "changed" once committed).

        Fails with RequestRejected (a bad name or text) or ServiceUnavailable.
        """

    def delete_template(self, account: Account, name: str) -> Deferred[bool]:
        """Delete a template: True once committed, False when there was none."""

    def review_list(self, query: ReviewQuery, offset: int = 0, limit: int = 50) -> Deferred[ReviewPage]:
        """A page of the messages the review query selects, oldest first (docs/review.md)."""

    def review_rows(self, query: ReviewQuery, limit: int = 1_000_000) -> Deferred[list[ReviewItem]]:
        """Every message the query selects (at most `limit`), with all its numbers: for exports."""

    def review_act(self, reviewer: str, action: str, query: ReviewQuery,
                   comment: str = "") -> Deferred[ReviewResult]:
        """Approve or reject the held messages the query selects, as a configured reviewer.

        Fails with RequestRejected (an unknown reviewer or action) or ServiceUnavailable.
        """

    def cancel(self, account: Account, query: ReviewQuery, comment: str = "") -> Deferred[ReviewResult]:
        """Cancel the account's own messages the query selects, as far as they have not gone out."""
