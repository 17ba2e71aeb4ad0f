"""The review queue in the store: queries over held messages, and the actions on them.

Reads (`review_page`, `review_rows`) run on reader threads; actions (`ReviewAction`,
`ExpiryArgs`) on the writer, each in one transaction with its audit-log row.
An action selects its messages by a `ReviewQuery` (ids, a batch, or any filter)
and adds its own condition on their state, so approving twice, or approving what
another reviewer rejected a moment ago, changes nothing the second time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from sqlalchemy import Connection, and_, bindparam, func, select, update
from sqlalchemy.sql.elements import ColumnElement

from smsgw.lifecycle import M, R, Review, first_due
from smsgw.store._fast import chunks
from smsgw.store.schema import audit_log, messages, recipients

if TYPE_CHECKING:
    from smsgw.store._ops import Ops

#: review states a query may ask for; "any" includes messages no rule held ("passed")
_REVIEWED = tuple(state for state in Review.ALL if state != Review.PASSED)  # held for review at some time
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ReviewQuery:
    """Combinable filters (all given ones must match); empty: every message that was held for review."""

    message_ids: tuple[int, ...] = ()
    review: tuple[str, ...] = ()  # review states; empty: all but "passed"
    content: str | None = None  # substring of the text
    to: str | None = None  # a recipient's normalised number
    account: str | None = None
    interface: str | None = None  # rest, url, soap, file, db (every source) or db:<source>
    batch: str | None = None
    since: float | None = None  # created at or after
    until: float | None = None  # created before

    def described(self) -> dict[str, Any]:
        """The filters given, for the audit log."""
        out = {k: v for k, v in asdict(self).items() if v not in (None, ())}
        if "message_ids" in out:
            out["message_ids"] = [str(i) for i in self.message_ids]
        return out


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """One message as the review queue shows it."""

    id: int
    account: str
    interface: str
    batch: str | None
    ref: str | None
    content: str
    template: str | None
    recipients: int
    phones: tuple[str, ...]  # the first `phones` numbers (review_page) or all (review_rows)
    priority: int
    send_at: float | None
    created_at: float
    state: str  # the message's state
    review: str
    rule: str | None
    deadline: float | None
    reviewed_by: str | None
    reviewed_at: float | None
    comment: str | None


@dataclass(frozen=True, slots=True)
class ReviewPage:
    items: tuple[ReviewItem, ...]
    total: int  # messages matching the query
    offset: int
    limit: int
    recipients: int = 0  # recipients of all matching messages


@dataclass(frozen=True, slots=True)
class ReviewAction:
    """Approve, reject or cancel the messages a query selects (the action adds its own state condition).

    approve / reject: messages waiting for review. cancel: messages not yet gone out (their held or
    queued recipients; dispatched ones go on), normally with `query.account` set to the sender.
    """

    action: str  # approve, reject, cancel
    query: ReviewQuery
    actor: str
    comment: str
    now: float
    due: Callable[[float, int], float] | None = None  # (due, priority) -> when it may go out (quiet hours)
    audit_action: str | None = None  # default review_<action> (cancel: message_cancel)


@dataclass(frozen=True, slots=True)
class ReviewResult:
    action: str
    messages: tuple[int, ...]  # the messages it changed
    recipients: int  # recipients moved (approved: queued; rejected/cancelled: final)
    wake: tuple[tuple[str, str], ...] = ()  # (link, account) with newly queued work


@dataclass(frozen=True, slots=True)
class ExpiryArgs:
    now: float
    due: Callable[[float, int], float] | None = None


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    approved: ReviewResult | None = None
    rejected: ReviewResult | None = None
    alarmed: tuple[tuple[int, str, str | None], ...] = ()  # (message id, account, rule): alarm once, keep waiting


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def where(q: ReviewQuery) -> list[ColumnElement[bool]]:
    m = messages.c
    conds: list[ColumnElement[bool]] = []
    conds.append(m.review.in_(q.review) if q.review else m.review.in_(_REVIEWED))
    if q.message_ids:
        conds.append(m.id.in_(q.message_ids))
    if q.account is not None:
        conds.append(m.account == q.account)
    if q.interface is not None:
        conds.append(m.interface == q.interface if ":" in q.interface
                     else (m.interface == q.interface) | m.interface.like(_escape_like(q.interface) + ":%", escape="\\"))
    if q.batch is not None:
        conds.append(m.batch == q.batch)
    if q.since is not None:
        conds.append(m.created_at >= q.since)
    if q.until is not None:
        conds.append(m.created_at < q.until)
    if q.content:
        conds.append(m.content.like("%" + _escape_like(q.content) + "%", escape="\\"))
    if q.to is not None:
        conds.append(m.id.in_(select(recipients.c.message_id).where(recipients.c.phone == q.to)))
    return conds


def review_page(conn: Connection, q: ReviewQuery, offset: int, limit: int, phones: int = 5) -> ReviewPage:
    """A page of matching messages, oldest first, with the first `phones` numbers of each."""
    m = messages.c
    conds = where(q)
    total, count = conn.execute(select(func.count(), func.coalesce(func.sum(m.recipients), 0))
                                .select_from(messages).where(and_(*conds))).one()
    rows = conn.execute(select(messages).where(and_(*conds)).order_by(m.created_at, m.id)
                        .offset(offset).limit(limit)).all()
    numbers = _phones(conn, [row.id for row in rows], phones)
    return ReviewPage(tuple(_item(row, numbers.get(row.id, ())) for row in rows), int(total), offset, limit,
                      int(count))


def review_rows(conn: Connection, q: ReviewQuery, limit: int) -> list[ReviewItem]:
    """Every matching message (at most `limit`), oldest first, with all its numbers: for exports."""
    m = messages.c
    rows = conn.execute(select(messages).where(and_(*where(q))).order_by(m.created_at, m.id).limit(limit)).all()
    numbers = _phones(conn, [row.id for row in rows], None)
    return [_item(row, numbers.get(row.id, ())) for row in rows]


def _phones(conn: Connection, ids: Sequence[int], most: int | None) -> dict[int, tuple[str, ...]]:
    r = recipients.c
    out: dict[int, list[str]] = {}
    for chunk in chunks(ids, _CHUNK):
        for message_id, phone in conn.execute(select(r.message_id, r.phone).where(r.message_id.in_(chunk))
                                              .order_by(r.message_id, r.id)):
            got = out.setdefault(message_id, [])
            if most is None or len(got) < most:
                got.append(phone)
    return {k: tuple(v) for k, v in out.items()}


def _item(row: Any, phones: tuple[str, ...]) -> ReviewItem:
    return ReviewItem(row.id, row.account, row.interface, row.batch, row.ref, row.content, row.template,
                      row.recipients, phones, row.priority, row.send_at, row.created_at, row.state, row.review,
                      row.review_rule, row.review_deadline, row.reviewed_by, row.reviewed_at, row.review_comment)


# --- actions (writer thread) --------------------------------------------------------------------


def act(ops: Ops, conn: Connection, a: ReviewAction) -> ReviewResult:
    if a.action == "approve":
        result = _approve(ops, conn, a)
    elif a.action in ("reject", "cancel"):
        result = _close(ops, conn, a)
    else:
        raise ValueError(f"unknown review action {a.action!r}")
    if result.messages:
        details = {"messages": [str(i) for i in result.messages], "recipients": result.recipients,
                   "comment": a.comment, "filter": a.query.described()}
        subject = (f"batch:{a.query.batch}" if a.query.batch is not None and not a.query.message_ids
                   else f"messages:{len(result.messages)}")
        conn.execute(audit_log.insert().values(
            id=ops.ids.next(), at=a.now, actor=a.actor[:64], action=a.audit_action or f"review_{a.action}",
            subject=subject[:255], details=json.dumps(details, ensure_ascii=False)))
    return result


def _selected(ops: Ops, conn: Connection, q: ReviewQuery, extra: ColumnElement[bool]) -> list[Any]:
    m = messages.c
    stmt = select(m.id, m.send_at, m.priority, m.review).where(and_(*where(q)), extra).order_by(m.id)
    if ops.locks_rows:
        stmt = stmt.with_for_update()
    return list(conn.execute(stmt))


def _approve(ops: Ops, conn: Connection, a: ReviewAction) -> ReviewResult:
    m, r = messages.c, recipients.c
    rows = _selected(ops, conn, a.query, m.review == Review.PENDING)
    ids = [row.id for row in rows]
    for chunk in chunks(ids, _CHUNK):
        conn.execute(update(messages).where(m.id.in_(chunk), m.review == Review.PENDING).values(
            review=Review.APPROVED, state=M.ACCEPTED, reviewed_by=a.actor[:64], reviewed_at=a.now,
            review_comment=a.comment[:500] or None, review_deadline=None, updated_at=a.now))
    moved = 0
    if rows:
        params = []
        for row in rows:
            due = first_due(row.send_at, a.now)
            if a.due is not None:
                due = a.due(due, row.priority)
            params.append({"b_mid": row.id, "b_due": due})
        moved = conn.execute(update(recipients).where(r.message_id == bindparam("b_mid"), r.state == R.HELD)
                             .values(state=R.QUEUED, due_at=bindparam("b_due"), updated_at=a.now), params).rowcount
    wake: set[tuple[str, str]] = set()
    for chunk in chunks(ids, _CHUNK):
        wake.update((link, account) for link, account in conn.execute(
            select(r.link, r.account).where(r.message_id.in_(chunk)).distinct()))
    return ReviewResult("approve", tuple(ids), max(moved, 0), tuple(sorted(wake)))


def _close(ops: Ops, conn: Connection, a: ReviewAction) -> ReviewResult:
    """Reject (held recipients) or cancel (held or queued ones): a final state, the origin told."""
    m = messages.c
    if a.action == "reject":
        rows = _selected(ops, conn, a.query, m.review == Review.PENDING)
        from_states: tuple[str, ...] = (R.HELD,)
        new, review = R.REJECTED, Review.REJECTED
        error = f"rejected in review by {a.actor}" + (f": {a.comment}" if a.comment else "")
    else:
        rows = _selected(ops, conn, a.query, m.state.in_((M.PENDING_REVIEW, M.ACCEPTED)))
        from_states = (R.HELD, R.QUEUED)
        new, review = R.CANCELLED, Review.CANCELLED
        error = f"cancelled by {a.actor}" + (f": {a.comment}" if a.comment else "")
    ids = [row.id for row in rows]
    pending = [row.id for row in rows if row.review == Review.PENDING]
    for chunk in chunks(pending, _CHUNK):
        conn.execute(update(messages).where(m.id.in_(chunk), m.review == Review.PENDING).values(
            review=review, reviewed_by=a.actor[:64], reviewed_at=a.now, review_comment=a.comment[:500] or None,
            review_deadline=None, updated_at=a.now))
    current = ops.recipients_of(conn, ids, from_states)
    with_recipients = {rec.message_id for rec in current.values()}  # messages with recipients in from_states
    moved = ops.move(conn, current, new, a.now, error[:255])
    # The messages it changed: rejected ones, or cancelled ones that still had something to cancel.
    changed = set(pending) | set(with_recipients)
    return ReviewResult(a.action, tuple(i for i in ids if i in changed), moved)


def expire(ops: Ops, conn: Connection, e: ExpiryArgs) -> ExpiryResult:
    """Held messages past their rule's time limit: approved, rejected, or (alarm) left waiting, alarmed once."""
    m = messages.c
    rows = conn.execute(select(m.id, m.account, m.review_rule, m.review_expiry)
                        .where(m.review == Review.PENDING, m.review_deadline <= e.now).order_by(m.id)).all()
    decided: dict[str, list[int]] = {"approve": [], "reject": []}
    alarmed = []
    for row in rows:
        if row.review_expiry in decided:
            decided[row.review_expiry].append(row.id)
        else:
            alarmed.append((row.id, row.account, row.review_rule))

    def decide(action: str) -> ReviewResult | None:
        if not decided[action]:
            return None
        query = ReviewQuery(message_ids=tuple(decided[action]), review=(Review.PENDING,))
        return act(ops, conn, ReviewAction(action, query, "expiry", "review time limit ran out", e.now, e.due,
                                           audit_action=f"review_expired_{action}"))
    approved, rejected = decide("approve"), decide("reject")
    alarm = [message_id for message_id, _, _ in alarmed]
    for chunk in chunks(alarm, _CHUNK):
        conn.execute(update(messages).where(m.id.in_(chunk)).values(review_deadline=None))
    if alarm:
        conn.execute(audit_log.insert().values(
            id=ops.ids.next(), at=e.now, actor="expiry", action="review_expired_alarm",
            subject=f"messages:{len(alarm)}",
            details=json.dumps({"messages": [str(i) for i in alarm], "outcome": "keep waiting, alarm raised"})))
    return ExpiryResult(approved, rejected, tuple(alarmed))
