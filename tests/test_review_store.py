"""The review queue in the store, on SQLite and on the real PostgreSQL and MariaDB servers:
held messages are never claimed; approve, reject, cancel and expiry move them, once, with audit rows."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, select

from smsgw.lifecycle import M, R, Review
from smsgw.review import Decision
from smsgw.store import ClaimArgs, ExpiryArgs, NewMessage, ReviewAction, ReviewQuery, Store, schema
from smsgw.store._ops import Ops
from smsgw.validation import PreparedMessage
from test_store import NOW, engine, ops, run  # noqa: F401 (engine and ops are fixtures: on every dialect)

HELD = Decision(True, "mass", None, None)


def accept(engine: Engine, ops: Ops, to: tuple[str, ...], *, review: Decision | None = HELD, text: str = "通知",
           account: str = "a", interface: str = "rest", batch: str | None = None, send_at: float | None = None,
           priority: int = 5, notify: str | None = None, now: float = NOW) -> int:
    mid = ops.ids.next()
    message = PreparedMessage(to, (), text, 1, 8, priority, send_at, "", None, True)
    run(engine, ops.accept, [NewMessage(mid, account, interface, message, ["cmcc"] * len(to),
                                        ops.ids.many(len(to)), now, notify=notify, review=review,
                                        batch=batch or str(mid))])
    return mid


def claim(engine: Engine, ops: Ops, account: str = "a", now: float = NOW + 1) -> list[Any]:
    return run(engine, ops.claim, ClaimArgs("cmcc", account, 100, now, "n1", now + 60))[0]  # type: ignore[no-any-return]


def act(engine: Engine, ops: Ops, action: str, query: ReviewQuery, *, actor: str = "li", comment: str = "",
        now: float = NOW + 10, due: Any = None) -> Any:
    return run(engine, ops.review, ReviewAction(action, query, actor, comment, now, due))[0]


def states(engine: Engine, mid: int) -> list[str]:
    r = schema.recipients.c
    with engine.connect() as conn:
        return [row.state for row in conn.execute(select(r.state).where(r.message_id == mid).order_by(r.id))]


def message(engine: Engine, mid: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(schema.messages).where(schema.messages.c.id == mid)).one()


def audit(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(schema.audit_log).order_by(schema.audit_log.c.id)))


def test_held_message_waits_and_records_the_rule(engine: Engine, ops: Ops) -> None:
    """A held message is pending_review with its rule; its recipients are held and never claimed."""
    held = accept(engine, ops, ("13800000001", "13800000002"))
    passed = accept(engine, ops, ("13800000003",), review=Decision(False, "otp"))
    plain = accept(engine, ops, ("13800000004",), review=None)
    row = message(engine, held)
    assert (row.state, row.review, row.review_rule) == (M.PENDING_REVIEW, Review.PENDING, "mass")
    assert states(engine, held) == [R.HELD, R.HELD]
    assert (message(engine, passed).review, message(engine, passed).review_rule) == (Review.PASSED, "otp")
    assert (message(engine, plain).review, message(engine, plain).review_rule) == (Review.PASSED, None)
    assert sorted(c.phone for c in claim(engine, ops)) == ["13800000003", "13800000004"]


def test_approve_queues_at_the_send_time_and_is_audited(engine: Engine, ops: Ops) -> None:
    """Approval queues the recipients (at send_at when later, moved by `due`), once; a second approval changes
    nothing; the audit row names the reviewer, the comment and the messages."""
    now_msg = accept(engine, ops, ("13800000001",), batch="a:b1")
    later = accept(engine, ops, ("13800000002",), batch="a:b1", send_at=NOW + 3600)
    other = accept(engine, ops, ("13800000003",), batch="a:b2")
    result = act(engine, ops, "approve", ReviewQuery(batch="a:b1"), comment="好",
                 due=lambda due, priority: due + 1)
    assert sorted(result.messages) == sorted([now_msg, later]) and result.recipients == 2
    assert result.wake == (("cmcc", "a"),)
    assert states(engine, other) == [R.HELD]
    row = message(engine, now_msg)
    assert (row.state, row.review, row.reviewed_by, row.reviewed_at, row.review_comment) == (
        M.ACCEPTED, Review.APPROVED, "li", NOW + 10, "好")
    assert [c.phone for c in claim(engine, ops, now=NOW + 11)] == ["13800000001"]
    assert [c.phone for c in claim(engine, ops, now=NOW + 3601)] == ["13800000002"]
    again = act(engine, ops, "approve", ReviewQuery(batch="a:b1"))
    assert again.messages == () and again.recipients == 0
    (entry,) = audit(engine)
    details = json.loads(entry.details)
    assert (entry.actor, entry.action, entry.subject) == ("li", "review_approve", "batch:a:b1")
    assert sorted(details["messages"]) == sorted([str(now_msg), str(later)])
    assert details["comment"] == "好" and details["recipients"] == 2


def test_reject_closes_the_recipients_and_tells_the_origin(engine: Engine, ops: Ops) -> None:
    """Rejected recipients reach `rejected` with the reviewer's comment, the message completes, and the origin
    is owed a recipient_final event per recipient."""
    mid = accept(engine, ops, ("13800000001", "13800000002"), notify="db:erp")
    result = act(engine, ops, "reject", ReviewQuery(message_ids=(mid,)), comment="含敏感内容")
    assert result.messages == (mid,) and result.recipients == 2
    assert states(engine, mid) == [R.REJECTED, R.REJECTED]
    row = message(engine, mid)
    assert (row.state, row.open_recipients, row.review) == (M.COMPLETED, 0, Review.REJECTED)
    r = schema.recipients.c
    with engine.connect() as conn:
        errors = {e for (e,) in conn.execute(select(r.error).where(r.message_id == mid))}
        events = list(conn.execute(select(schema.outbox.c.kind, schema.outbox.c.event, schema.outbox.c.payload)))
    assert errors == {"rejected in review by li: 含敏感内容"}
    assert [(k, e, json.loads(p)["state"]) for k, e, p in events] == [("db:erp", "recipient_final", "rejected")] * 2
    assert act(engine, ops, "approve", ReviewQuery(message_ids=(mid,))).messages == ()  # decided already
    assert claim(engine, ops) == []


def test_queries_combine_their_filters(engine: Engine, ops: Ops) -> None:
    """Content, number, account, interface, state, batch and time filters combine; pages count every match."""
    a = accept(engine, ops, ("13800000001",), text="停水通知：明天", account="a", interface="file", batch="a:x")
    b = accept(engine, ops, ("13800000002", "13800000001"), text="停电通知", account="b", interface="db:erp",
               now=NOW + 100)
    c = accept(engine, ops, ("13800000003",), text="100%_off", account="a", interface="rest", now=NOW + 200)
    accept(engine, ops, ("13800000004",), review=Decision(False, None), text="通知")  # passed: not listed

    def ids(**kw: Any) -> list[int]:
        with engine.connect() as conn:
            return [item.id for item in Store.review_page(conn, ReviewQuery(**kw), 0, 50).items]

    assert ids() == [a, b, c]
    assert ids(content="通知") == [a, b]
    assert ids(content="%_") == [c]  # LIKE wildcards are literal
    assert ids(to="13800000001") == [a, b]
    assert ids(to="13800000001", account="b") == [b]
    assert ids(interface="db") == [b] and ids(interface="db:erp") == [b] and ids(interface="db:x") == []
    assert ids(batch="a:x") == [a]
    assert ids(since=NOW + 100) == [b, c] and ids(since=NOW + 50, until=NOW + 150) == [b]
    assert len(ids(review=(Review.PASSED,))) == 1
    act(engine, ops, "approve", ReviewQuery(message_ids=(a,)))
    assert ids(review=(Review.PENDING,)) == [b, c] and ids(review=(Review.APPROVED,)) == [a]
    with engine.connect() as conn:
        page = Store.review_page(conn, ReviewQuery(), 1, 1, phones=1)
        rows = Store.review_rows(conn, ReviewQuery(message_ids=(b,)), 10)
    assert (page.total, page.recipients, [i.id for i in page.items], page.items[0].phones) == (
        3, 4, [b], ("13800000002",))
    assert rows[0].phones == ("13800000002", "13800000001") and rows[0].content == "停电通知"


def test_cancel_stops_what_has_not_gone_out(engine: Engine, ops: Ops) -> None:
    """Cancel moves held and queued recipients to `cancelled` (final); a claimed one goes on."""
    held = accept(engine, ops, ("13800000001",))
    queued = accept(engine, ops, ("13800000002", "13800000003"), review=None, send_at=NOW + 60)
    taken = accept(engine, ops, ("13800000004",), review=None)
    claim(engine, ops)
    everything = (Review.PASSED, Review.PENDING, Review.APPROVED)
    result = act(engine, ops, "cancel", ReviewQuery(message_ids=(held, queued, taken), account="a",
                                                    review=everything), actor="a")
    assert sorted(result.messages) == sorted([held, queued]) and result.recipients == 3
    assert states(engine, held) == [R.CANCELLED] and states(engine, queued) == [R.CANCELLED] * 2
    assert states(engine, taken) == [R.DISPATCHING]
    assert message(engine, held).review == Review.CANCELLED and message(engine, queued).state == M.COMPLETED
    assert audit(engine)[0].action == "review_cancel"


def test_expiry_approves_rejects_or_alarms_once(engine: Engine, ops: Ops) -> None:
    """Past its time limit a held message is approved, rejected, or alarmed about once and left waiting."""
    approve = accept(engine, ops, ("13800000001",), review=Decision(True, "r1", NOW + 60, "approve"))
    reject = accept(engine, ops, ("13800000002",), review=Decision(True, "r2", NOW + 60, "reject"))
    alarm = accept(engine, ops, ("13800000003",), review=Decision(True, "r3", NOW + 60, "alarm"))
    later = accept(engine, ops, ("13800000004",), review=Decision(True, "r4", NOW + 600, "reject"))
    (early,) = run(engine, ops.review_expire, ExpiryArgs(NOW + 59))
    assert (early.approved, early.rejected, early.alarmed) == (None, None, ())
    (result,) = run(engine, ops.review_expire, ExpiryArgs(NOW + 61))
    assert result.approved.messages == (approve,) and result.rejected.messages == (reject,)
    assert result.alarmed == ((alarm, "a", "r3"),)
    assert states(engine, approve) == [R.QUEUED] and states(engine, reject) == [R.REJECTED]
    assert states(engine, alarm) == [R.HELD] and states(engine, later) == [R.HELD]
    assert message(engine, approve).reviewed_by == "expiry"
    (again,) = run(engine, ops.review_expire, ExpiryArgs(NOW + 120))
    assert (again.approved, again.rejected, again.alarmed) == (None, None, ())  # the alarm is raised once
    assert [e.action for e in audit(engine)] == ["review_expired_approve", "review_expired_reject",
                                                 "review_expired_alarm"]
