"""The store's operations on SQLite and on the real PostgreSQL and MariaDB servers."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import Engine, func, select

from dbs import reset, store_url
from smsgw.lifecycle import R
from smsgw.store import (
    ClaimArgs,
    FailedArgs,
    IdGenerator,
    MoArgs,
    MoPartArgs,
    NewMessage,
    OutboxClaimArgs,
    OutboxDone,
    ReportArgs,
    SegmentIds,
    Store,
    SubmittedArgs,
    SweepArgs,
    dialect_of,
    make_engine,
    migrations,
    schema,
)
from smsgw.store._ops import Claimed, Ops
from smsgw.validation import PreparedMessage

DIALECTS = ["sqlite", "postgresql", "mysql"]
NOW = 1_800_000_000.0


@pytest.fixture(params=DIALECTS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = store_url(request.param, tmp_path)
    eng = make_engine(url, writer=True)
    reset(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def ops(engine: Engine) -> Ops:
    return Ops(dialect_of(str(engine.url)), IdGenerator(1))


def run(engine: Engine, handler: Any, *items: Any) -> list[Any]:
    with engine.begin() as conn:
        return list(handler(conn, list(items)))


def prepared(to: tuple[str, ...], text: str = "hello", segments: int = 1, priority: int = 5,
             send_at: float | None = None, report: bool = True) -> PreparedMessage:
    return PreparedMessage(to, (), text, segments, 0, priority, send_at, "", None, report)


def accept(engine: Engine, ops: Ops, to: tuple[str, ...], account: str = "a", notify: str | None = None,
           **kw: Any) -> int:
    mid = ops.ids.next()
    run(engine, ops.accept, [NewMessage(mid, account, "rest", prepared(to, **kw), ["cmcc"] * len(to),
                                        ops.ids.many(len(to)), NOW, notify=notify)])
    return mid


def claim(engine: Engine, ops: Ops, account: str = "a", limit: int = 10, now: float = NOW,
          owner: str = "n1") -> list[Claimed]:
    return run(engine, ops.claim, ClaimArgs("cmcc", account, limit, now, owner, now + 60))[0]  # type: ignore[no-any-return]


def recipient(engine: Engine, rid: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(schema.recipients).where(schema.recipients.c.id == rid)).one()


def message(engine: Engine, mid: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(schema.messages).where(schema.messages.c.id == mid)).one()


def submit(engine: Engine, ops: Ops, c: Claimed, *msg_ids: str, report: bool = True) -> list[Any]:
    segs = [SegmentIds(i + 1, len(msg_ids), m) for i, m in enumerate(msg_ids)]
    return run(engine, ops.submitted, SubmittedArgs(c.recipient_id, c.attempt, segs, report, NOW + 1))


def report(engine: Engine, ops: Ops, msg_id: str, stat: str = "DELIVRD", now: float = NOW + 2) -> Any:
    return run(engine, ops.report, ReportArgs("cmcc", msg_id, stat, "13800138000", "2601011200", "2601011201", now))[0]


def test_upgrade_applies_each_migration_once(engine: Engine) -> None:
    """A fresh database gets every migration; a second upgrade applies nothing."""
    schema.metadata.drop_all(engine)
    assert migrations.current_version(engine) == 0
    with pytest.raises(migrations.SchemaOutdated, match="smsgw db upgrade"):
        migrations.require_current(engine)
    assert migrations.upgrade(engine) == [m.version for m in migrations.MIGRATIONS]
    assert migrations.upgrade(engine) == []
    migrations.require_current(engine)


def test_claim_takes_best_priority_first_and_leases(engine: Engine, ops: Ops) -> None:
    """Claims return due recipients by priority then age, and lease them to the claimer."""
    accept(engine, ops, ("13800000001",), priority=0)
    accept(engine, ops, ("13800000002",), priority=9)
    accept(engine, ops, ("13800000003",), send_at=NOW + 3600)  # not due yet
    got = claim(engine, ops)
    assert [c.phone for c in got] == ["13800000002", "13800000001"]
    assert all(c.attempt == 1 and c.content == "hello" for c in got)
    row = recipient(engine, got[0].recipient_id)
    assert (row.state, row.lease_owner, row.lease_until) == (R.DISPATCHING, "n1", NOW + 60)
    assert claim(engine, ops) == []
    assert [c.phone for c in claim(engine, ops, now=NOW + 3601)] == ["13800000003"]


def test_claim_is_per_origin(engine: Engine, ops: Ops) -> None:
    """A claim for one account never takes another account's recipients."""
    accept(engine, ops, ("13800000001", "13800000002"), account="bulk")
    accept(engine, ops, ("13800000003",), account="otp")
    assert [c.phone for c in claim(engine, ops, account="otp")] == ["13800000003"]
    assert len(claim(engine, ops, account="bulk", limit=1)) == 1


def test_reports_deliver_a_long_message_segment_by_segment(engine: Engine, ops: Ops) -> None:
    """A recipient is delivered when every segment is; ACCEPTD and repeats change nothing."""
    mid = accept(engine, ops, ("13800000001",), segments=2)
    c = claim(engine, ops)[0]
    assert submit(engine, ops, c, "0000000000000001", "0000000000000002") == [R.SUBMITTED]
    assert report(engine, ops, "0000000000000001", "ACCEPTD").final_state is None
    first = report(engine, ops, "0000000000000001")
    assert first.matched and first.final_state is None
    assert report(engine, ops, "0000000000000001").final_state is None  # a repeat
    assert recipient(engine, c.recipient_id).state == R.SUBMITTED
    last = report(engine, ops, "0000000000000002")
    assert (last.final_state, last.phone, last.message_id) == (R.DELIVERED, "13800000001", mid)
    row = recipient(engine, c.recipient_id)
    assert (row.state, row.stat, row.reported, row.failed) == (R.DELIVERED, "DELIVRD", 2, 0)
    assert (message(engine, mid).state, message(engine, mid).open_recipients) == ("completed", 0)


def test_a_failed_segment_makes_the_recipient_undeliverable(engine: Engine, ops: Ops) -> None:
    """One non-DELIVRD final report closes the recipient as undeliverable with that Stat."""
    accept(engine, ops, ("13800000001",), segments=2)
    c = claim(engine, ops)[0]
    submit(engine, ops, c, "00000000000000a1", "00000000000000a2")
    report(engine, ops, "00000000000000a1", "MK:0001")
    assert report(engine, ops, "00000000000000a2").final_state == R.UNDELIVERABLE
    assert recipient(engine, c.recipient_id).stat == "MK:0001"


def test_report_before_its_msg_id_is_matched_by_the_sweep(engine: Engine, ops: Ops) -> None:
    """A report that matches nothing is kept pending, matched later, and else becomes an orphan."""
    accept(engine, ops, ("13800000001",))
    c = claim(engine, ops)[0]
    early = report(engine, ops, "00000000000000b1")
    assert not early.matched
    report(engine, ops, "00000000000000ff")  # never matches
    submit(engine, ops, c, "00000000000000b1")
    result = run(engine, ops.sweep, SweepArgs(NOW + 10, "n1", NOW + 70, NOW - 3600, NOW))[0]
    assert result.rematched == 1 and result.orphans == []
    assert recipient(engine, c.recipient_id).state == R.DELIVERED
    result = run(engine, ops.sweep, SweepArgs(NOW + 20, "n1", NOW + 80, NOW - 3600, NOW + 100))[0]
    assert result.orphans == [("cmcc", "00000000000000ff", "DELIVRD")]


def test_transient_failure_requeues_and_old_attempt_reports_do_not_count(engine: Engine, ops: Ops) -> None:
    """A retry goes back to the queue; a late report of the earlier attempt is recorded only."""
    accept(engine, ops, ("13800000001",), segments=2)
    c = claim(engine, ops)[0]
    run(engine, ops.failed, FailedArgs(c.recipient_id, 1, "timed out", None, NOW + 5,
                                       [SegmentIds(1, 2, "00000000000000c1")], NOW))
    row = recipient(engine, c.recipient_id)
    assert (row.state, row.due_at, row.error, row.lease_owner) == (R.QUEUED, NOW + 5, "timed out", None)
    again = claim(engine, ops, now=NOW + 5)[0]
    assert again.attempt == 2
    submit(engine, ops, again, "00000000000000c3", "00000000000000c4")
    assert report(engine, ops, "00000000000000c1").matched
    report(engine, ops, "00000000000000c3")
    assert recipient(engine, c.recipient_id).state == R.SUBMITTED
    assert report(engine, ops, "00000000000000c4").final_state == R.DELIVERED


def test_permanent_failure_is_final_and_owes_a_notification(engine: Engine, ops: Ops) -> None:
    """A rejected recipient fails with the carrier's code; the origin gets an outbox entry."""
    mid = accept(engine, ops, ("13800000001", "13800000002"), notify="callback")
    first, second = claim(engine, ops)
    assert run(engine, ops.failed, FailedArgs(first.recipient_id, 1, "R13: wrong destination", "R13", None,
                                              [], NOW)) == [R.FAILED]
    assert message(engine, mid).open_recipients == 1
    submit(engine, ops, second, "00000000000000d1", report=False)
    assert (message(engine, mid).state, recipient(engine, second.recipient_id).state) == ("completed", R.SENT)
    with engine.connect() as conn:
        rows = conn.execute(select(schema.outbox).order_by(schema.outbox.c.id)).all()
    assert [(r.kind, r.event, r.state) for r in rows] == [("callback", "recipient_final", "pending")] * 2
    assert '"state": "failed"' in rows[0].payload


def test_stale_results_are_refused(engine: Engine, ops: Ops) -> None:
    """A result for an attempt that is no longer current changes nothing."""
    accept(engine, ops, ("13800000001",))
    c = claim(engine, ops)[0]
    assert submit(engine, ops, c, "00000000000000e1") == [R.SUBMITTED]
    assert run(engine, ops.failed, FailedArgs(c.recipient_id, c.attempt, "late", None, None, [], NOW)) == [None]
    assert run(engine, ops.failed, FailedArgs(c.recipient_id, 7, "other attempt", None, None, [], NOW)) == [None]


def test_sweep_expires_requeues_foreign_leases_and_extends_own(engine: Engine, ops: Ops) -> None:
    """Reports overdue expire; another node's dead lease is requeued; this node's leases live on."""
    accept(engine, ops, ("13800000001", "13800000002", "13800000003"))
    mine = claim(engine, ops, limit=1, owner="n1")[0]
    theirs = claim(engine, ops, limit=1, owner="n2")[0]
    sent = claim(engine, ops, limit=1, owner="n1")[0]
    submit(engine, ops, sent, "00000000000000f1")
    result = run(engine, ops.sweep, SweepArgs(NOW + 100, "n1", NOW + 160, NOW + 50, NOW))[0]
    assert (result.leases_extended, result.requeued, result.expired) == (1, 1, [sent.recipient_id])
    assert recipient(engine, theirs.recipient_id).state == R.QUEUED
    assert recipient(engine, mine.recipient_id).lease_until == NOW + 160
    assert recipient(engine, sent.recipient_id).state == R.EXPIRED
    assert report(engine, ops, "00000000000000f1", now=NOW + 200).final_state == R.DELIVERED  # late truth
    assert run(engine, ops.release, "n1") == [1]
    assert recipient(engine, mine.recipient_id).state == R.QUEUED


def test_mo_and_chinese_text_round_trip(engine: Engine, ops: Ops) -> None:
    """MO rows and message content keep Chinese text intact in every dialect."""
    text = "您好，工单已受理 😀"
    mid = accept(engine, ops, ("13800000001",), text=text)
    assert message(engine, mid).content == text
    [mo_id] = run(engine, ops.mo, MoArgs("cmcc", "13800000001", "106900001", "01", text, "svc", "您好",
                                         "worksheet", 2, True, NOW))
    with engine.connect() as conn:
        page = Store.mo_page(conn, ("worksheet",), 0, 10)
        assert Store.mo_page(conn, ("worksheet",), mo_id, 10).items == ()
        assert Store.mo_page(conn, ("other",), 0, 10).items == ()
    assert [(m.id, m.text, m.ext) for m in page.items] == [(str(mo_id), text, "01")]
    assert page.next_cursor == str(mo_id)


def test_message_view_shows_recipients_and_segments(engine: Engine, ops: Ops) -> None:
    """The view lists each recipient with its segments, and hides other accounts' messages."""
    mid = accept(engine, ops, ("13800000001",), segments=2)
    c = claim(engine, ops)[0]
    submit(engine, ops, c, "0000000000000101", "0000000000000102")
    report(engine, ops, "0000000000000101")
    with engine.connect() as conn:
        view = Store.message_view(conn, "a", mid)
        assert Store.message_view(conn, "someone-else", mid) is None
        assert Store.queue_counts(conn)["submitted"] == 1
    assert view is not None
    [rcpt] = view.recipients
    assert [(s.number, s.msg_id, s.state) for s in rcpt.segments] == [
        (1, "0000000000000101", "delivered"), (2, "0000000000000102", "submitted")]


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_concurrent_claims_skip_locked_rows(dialect: str, tmp_path: Path) -> None:
    """Two nodes claiming at once on a shared server get disjoint recipients (SKIP LOCKED)."""
    eng = make_engine(store_url(dialect, tmp_path), writer=True)
    reset(eng)
    ops = Ops(dialect, IdGenerator(1))
    accept(eng, ops, tuple(f"138000000{i:02d}" for i in range(20)))
    first_done, second_done = threading.Event(), threading.Event()
    got: dict[str, list[str]] = {}

    def first() -> None:
        with eng.begin() as conn:
            got["n1"] = [c.phone for c in ops.claim(conn, [ClaimArgs("cmcc", "a", 10, NOW, "n1", NOW + 60)])[0]]
            first_done.set()
            second_done.wait(10)  # hold the row locks while the other node claims

    thread = threading.Thread(target=first)
    thread.start()
    assert first_done.wait(10)
    with eng.begin() as conn:
        got["n2"] = [c.phone for c in ops.claim(conn, [ClaimArgs("cmcc", "a", 10, NOW, "n2", NOW + 60)])[0]]
    second_done.set()
    thread.join()
    eng.dispose()
    assert len(got["n1"]) == len(got["n2"]) == 10
    assert not set(got["n1"]) & set(got["n2"])


def test_kept_mo_parts_are_deleted_with_the_reassembled_message(engine: Engine, ops: Ops) -> None:
    """Long-MO parts stay in the store until the whole message is stored, in the same transaction."""
    run(engine, ops.mo_part, MoPartArgs("cmcc", "13800000001|106900001|svc||8|7|2", 1, "您好".encode("utf-16-be"),
                                        8, NOW))
    with engine.connect() as conn:
        assert Store.mo_parts_kept(conn) == [("cmcc", "13800000001|106900001|svc||8|7|2", 1,
                                              "您好".encode("utf-16-be"), 8, NOW)]
    run(engine, ops.mo, MoArgs("cmcc", "13800000001", "106900001", "", "您好世界", "svc", None, None, 2, True, NOW,
                               "13800000001|106900001|svc||8|7|2"))
    with engine.connect() as conn:
        assert Store.mo_parts_kept(conn) == []


def test_a_repeated_ref_is_answered_with_the_stored_message(engine: Engine, ops: Ops) -> None:
    """Accepting a ref the account already used stores nothing new and returns the first id."""
    first = NewMessage(ops.ids.next(), "a", "rest", PreparedMessage(("13800000001",), (), "hi", 1, 0, 5, None, "",
                                                                    "order-1", True), ["cmcc"], ops.ids.many(1), NOW)
    again = NewMessage(ops.ids.next(), "a", "rest", first.message, ["cmcc"], ops.ids.many(1), NOW)
    other = NewMessage(ops.ids.next(), "b", "rest", first.message, ["cmcc"], ops.ids.many(1), NOW)
    assert run(engine, ops.accept, [first]) == [[first.id]]
    assert run(engine, ops.accept, [again, other]) == [[first.id, other.id]]
    with engine.connect() as conn:
        assert conn.execute(select(schema.messages.c.id).order_by(schema.messages.c.id)).scalars().all() == [
            first.id, other.id]


def test_a_source_row_is_stored_once_whatever_the_batch(engine: Engine, ops: Ops) -> None:
    """(source, row key) is taken once: a repeat, in a later batch or the same one, answers with the first id."""
    def item(source: tuple[str, str]) -> NewMessage:
        return NewMessage(ops.ids.next(), "erp", "db:erp", prepared(("13800000001",)), ["cmcc"], ops.ids.many(1),
                          NOW, notify="db:erp", source=source)
    first, other = item(("erp", "1")), item(("crm", "1"))
    assert run(engine, ops.accept, [first, other]) == [[first.id, other.id]]
    again, twin_a, twin_b = item(("erp", "1")), item(("erp", "2")), item(("erp", "2"))
    assert run(engine, ops.accept, [again, twin_a, twin_b]) == [[first.id, twin_a.id, twin_a.id]]
    with engine.connect() as conn:
        keys = conn.execute(select(schema.source_rows.c.source, schema.source_rows.c.row_key,
                                   schema.source_rows.c.message_id).order_by(schema.source_rows.c.message_id)).all()
        assert [tuple(k) for k in keys] == [("erp", "1", first.id), ("crm", "1", other.id), ("erp", "2", twin_a.id)]
        assert conn.execute(select(func.count()).select_from(schema.messages)).scalar_one() == 3


def test_submit_and_final_states_owe_events_to_the_origin(engine: Engine, ops: Ops) -> None:
    """A message with notify gets a recipient_submitted event on submit and recipient_final on its report."""
    mid = accept(engine, ops, ("13800000001",), notify="db:erp")
    c = claim(engine, ops)[0]
    submit(engine, ops, c, "00000000000000a9")
    report(engine, ops, "00000000000000a9")
    with engine.connect() as conn:
        rows = conn.execute(select(schema.outbox).order_by(schema.outbox.c.id)).all()
    assert [(r.kind, r.event, r.message_id, r.recipient_id) for r in rows] == [
        ("db:erp", "recipient_submitted", mid, c.recipient_id), ("db:erp", "recipient_final", mid, c.recipient_id)]


def test_outbox_claims_in_order_leases_and_records_outcomes(engine: Engine, ops: Ops) -> None:
    """Claims take due events of the kinds asked for, oldest first; done / retry / dead are recorded;
    release gives a dead node's leases back; the sweep deletes events delivered long ago."""
    run(engine, ops.mo, *[MoArgs("cmcc", f"1380000000{i}", "10690001", "", f"mo {i}", "", None, "erp", 1, True,
                                 NOW, notify="db:erp") for i in range(4)])
    run(engine, ops.mo, MoArgs("cmcc", "13800000009", "10690001", "", "other", "", None, "crm", 1, True, NOW,
                               notify="db:crm"))
    first = run(engine, ops.outbox_claim, OutboxClaimArgs(("db:erp",), 3, NOW, "n1", NOW + 60))[0]
    assert [e.event for e in first] == ["mo"] * 3 and [e.id for e in first] == sorted(e.id for e in first)
    assert run(engine, ops.outbox_claim, OutboxClaimArgs(("db:erp",), 10, NOW, "n2", NOW + 60))[0][0].id > first[-1].id
    run(engine, ops.outbox_done, OutboxDone(first[0].id, NOW), OutboxDone(first[1].id, NOW, "busy", NOW + 5),
        OutboxDone(first[2].id, NOW, "refused", None))
    ob = schema.outbox.c
    with engine.connect() as conn:
        got = {r.id: r for r in conn.execute(select(schema.outbox))}
    assert (got[first[0].id].state, got[first[1].id].state, got[first[2].id].state) == ("done", "pending", "dead")
    assert (got[first[1].id].attempts, got[first[1].id].next_at, got[first[1].id].last_error) == (1, NOW + 5, "busy")
    assert run(engine, ops.release, "n2") == [0]  # n2's leased event is due again at once
    again = run(engine, ops.outbox_claim, OutboxClaimArgs(("db:erp",), 10, NOW + 1, "n1", NOW + 60))[0]
    assert len(again) == 1 and again[0].id not in {e.id for e in first}
    run(engine, ops.sweep, SweepArgs(NOW + 10, "n1", NOW + 70, NOW - 100, NOW - 100, outbox_done_before=NOW + 1))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.outbox).where(ob.id == first[0].id)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(schema.outbox)).scalar() == 4
