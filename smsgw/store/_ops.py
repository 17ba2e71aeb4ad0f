"""The store's write operations, each run by the writer thread for a whole batch at once.

Every handler takes the open connection and the list of argument objects of
its kind, and returns one result per argument. State changes follow
`smsgw.lifecycle`; nothing here decides a transition on its own.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

from sqlalchemy import Connection, bindparam, case, literal_column, select, update

from smsgw import lifecycle
from smsgw.lifecycle import M, R, S, first_due
from smsgw.protocol.cmpp import stat_is_final
from smsgw.store import _review
from smsgw.store._fast import Fast, chunks
from smsgw.store._review import ExpiryArgs, ExpiryResult, ReviewAction, ReviewResult
from smsgw.store.ids import IdGenerator
from smsgw.store.schema import audit_log, messages, mo_messages, mo_parts, outbox, recipients, reports, segments
from smsgw.store.schema import templates as templates_table
from smsgw.store.schema import source_rows as source_rows_table
from smsgw.review import PASS, Decision
from smsgw.validation import PreparedMessage

DELIVERED_STAT = "DELIVRD"


# --- argument and result types ----------------------------------------------------


@dataclass(slots=True)
class NewMessage:
    id: int
    account: str
    interface: str
    message: PreparedMessage
    links: list[str]  # per recipient, in message.to order
    recipient_ids: list[int]
    now: float
    needs_review: bool = False
    notify: str | None = None  # outbox kind owed on submit and final states (e.g. "db:erp")
    source: tuple[str, str] | None = None  # (source, row key) of a legacy-database row: taken once
    review: Decision | None = None  # what the review rules decided (None: passed, no rule matched)
    batch: str | None = None  # one import or mass send, reviewed as a unit
    due_at: float | None = None  # when it may go out (send_at, moved out of quiet hours); None: send_at or now


@dataclass(frozen=True, slots=True)
class TemplateChange:
    """Add or change (`content` set) or delete (`content` None) a template, audit-logged as `actor`."""

    name: str
    content: str | None
    pre_approved: bool
    actor: str
    now: float


@dataclass(slots=True)
class ClaimArgs:
    link: str
    account: str
    limit: int
    now: float
    owner: str
    lease_until: float
    min_priority: int = 0  # in a quiet period only urgent priorities are claimed (smsgw.schedule)


@dataclass(slots=True)
class Claimed:
    """A recipient this node now holds a lease on, with what it needs to send it."""

    recipient_id: int
    message_id: int
    phone: str
    link: str
    account: str
    priority: int
    attempt: int  # 1 for the first try
    content: str
    ext: str
    report: bool
    msg_fmt: int
    segments: int


@dataclass(slots=True)
class SegmentIds:
    number: int
    total: int
    msg_id: str


@dataclass(slots=True)
class SubmittedArgs:
    recipient_id: int
    attempt: int
    segments: list[SegmentIds]
    report: bool
    now: float


@dataclass(slots=True)
class FailedArgs:
    recipient_id: int
    attempt: int
    error: str
    code: str | None  # the carrier's result code, e.g. "R13"
    retry_at: float | None  # None: final
    accepted: list[SegmentIds]
    now: float


@dataclass(slots=True)
class ReportArgs:
    link: str
    msg_id: str
    stat: str
    dest: str
    submit_time: str
    done_time: str
    now: float


@dataclass(slots=True)
class ReportOutcome:
    report_id: int
    matched: bool
    recipient_id: int | None = None
    message_id: int | None = None
    phone: str | None = None
    final_state: str | None = None  # set when this report closed the recipient


@dataclass(slots=True)
class MoArgs:
    link: str
    src: str
    dest: str
    ext: str
    text: str
    service_id: str
    keyword: str | None
    consumer: str | None
    parts: int
    complete: bool
    now: float
    part_set: str | None = None  # a long message: delete its kept parts in the same transaction
    notify: str | None = None  # outbox kind owed this MO (e.g. "db:erp" writes it to an inbox table)


@dataclass(slots=True)
class MoPartArgs:
    link: str
    part_set: str
    number: int
    payload: bytes
    msg_fmt: int
    now: float


@dataclass(slots=True)
class OutboxClaimArgs:
    kinds: tuple[str, ...]
    limit: int
    now: float
    owner: str
    lease_until: float


@dataclass(slots=True)
class OutboxEvent:
    """A notification owed to an origin, leased to this node until it is done or retried."""

    id: int
    kind: str
    event: str  # recipient_submitted, recipient_final, mo
    message_id: int | None
    recipient_id: int | None
    payload: str  # JSON
    attempts: int
    created_at: float
    data: dict[str, Any] = field(init=False, repr=False, compare=False)  # the payload, parsed once

    def __post_init__(self) -> None:
        try:
            data = json.loads(self.payload)
        except (TypeError, ValueError):
            data = None
        self.data = data if isinstance(data, dict) else {}


@dataclass(slots=True)
class OutboxDone:
    id: int
    now: float
    error: str | None = None  # None: done
    retry_at: float | None = None  # with an error: try again then; None: give up (dead)
    count: bool = True  # count the attempt (False: the receiver was unreachable, not at fault)


@dataclass(slots=True)
class SweepArgs:
    now: float
    owner: str
    lease_until: float
    report_deadline: float  # submitted before this and still no final report: expired
    orphan_deadline: float  # unmatched reports received before this become orphans
    limit: int = 1000
    outbox_done_before: float | None = None  # delivered outbox events done before this are deleted


@dataclass(slots=True)
class SweepResult:
    leases_extended: int = 0
    requeued: int = 0
    expired: list[int] = field(default_factory=list)
    rematched: int = 0
    orphans: list[tuple[str, str, str]] = field(default_factory=list)  # (link, msg_id, stat)


# --- the handlers ------------------------------------------------------------------


class Ops:
    """Handlers bound to one store (its dialect and id generator)."""

    def __init__(self, dialect: str, ids: IdGenerator, quiet_submits: frozenset[str] = frozenset()) -> None:
        self.dialect = dialect
        self.ids = ids
        # Outbox kinds not told when a recipient is submitted (callbacks without `submitted`): no event is
        # written for them, rather than one written, claimed and dropped per recipient.
        self.quiet_submits = quiet_submits
        self.locks_rows = dialect != "sqlite"  # SQLite's writer already holds the database lock
        self._fast: Fast | None = None

    def fast(self, conn: Connection) -> Fast:
        """The hot statements, compiled for this store's dialect on first use (smsgw.store._fast)."""
        if self._fast is None:
            self._fast = Fast(conn.dialect)
        return self._fast

    def handlers(self) -> dict[str, Any]:
        return {"accept": self.accept, "release": self.release, "claim": self.claim,
                "submitted": self.submitted, "failed": self.failed, "report": self.report,
                "mo": self.mo, "mo_part": self.mo_part, "sweep": self.sweep, "outbox_done": self.outbox_done,
                "outbox_claim": self.outbox_claim, "template": self.template, "review": self.review,
                "review_expire": self.review_expire}

    ORDER = ("template", "accept", "review", "review_expire", "release", "submitted", "failed", "report", "mo_part",
             "mo", "sweep", "claim", "outbox_done", "outbox_claim")
    DURABLE = frozenset({"submitted", "failed", "report", "mo_part", "mo", "outbox_done"})

    # accept -----------------------------------------------------------------

    def accept(self, conn: Connection, requests: list[list[NewMessage]]) -> list[list[int]]:
        """Each argument is one request's messages: they commit together or not at all.

        A message whose `ref` this account already used is not stored again: its
        result is the id of the stored one (callers retry with the same ref safely).
        """
        items = [item for request in requests for item in request]
        known = self._known_refs(conn, items)
        taken = self._known_sources(conn, items)
        message_rows: list[tuple[Any, ...]] = []
        recipient_rows: list[tuple[Any, ...]] = []
        source_rows = []
        for item in items:
            if item.message.ref is not None and (item.account, item.message.ref) in known:
                continue
            if item.source is not None:
                if item.source in taken:
                    continue
                taken[item.source] = item.id
                source_rows.append({"source": item.source[0], "row_key": item.source[1], "message_id": item.id,
                                    "created_at": item.now})
            if item.message.ref is not None:
                known[(item.account, item.message.ref)] = item.id  # a repeat within this batch
            m = item.message
            review = item.review or PASS
            held = review.held
            state = M.PENDING_REVIEW if held else M.ACCEPTED
            message_rows.append((  # MESSAGE_COLUMNS
                item.id, item.account, item.interface, m.ref, m.text, m.priority, m.send_at, m.ext, m.report,
                m.msg_fmt, m.segments, len(m.to), len(m.to), state, item.needs_review, item.notify, item.now,
                item.now, m.dlr_url, m.dlr_mask if m.dlr_url else None, m.template, item.batch,
                review.review, review.rule, review.deadline, review.on_expiry if held else None))
            due = item.due_at if item.due_at is not None else first_due(m.send_at, item.now)
            recipient_state = R.HELD if held else R.QUEUED
            for rid, phone, link in zip(item.recipient_ids, m.to, item.links):
                recipient_rows.append((  # RECIPIENT_COLUMNS
                    rid, item.id, phone, link, item.account, m.priority, recipient_state, due, 0, m.segments, 0, 0,
                    item.now, item.notify))
        fast = self.fast(conn)
        fast.executemany(conn, fast.insert(messages, MESSAGE_COLUMNS), message_rows)
        fast.executemany(conn, fast.insert(recipients, RECIPIENT_COLUMNS), recipient_rows)
        if source_rows:
            conn.execute(source_rows_table.insert(), source_rows)
        return [[self._stored_id(item, known, taken) for item in request] for request in requests]

    @staticmethod
    def _stored_id(item: NewMessage, known: dict[tuple[str, str], int], taken: dict[tuple[str, str], int]) -> int:
        if item.source is not None:
            return taken[item.source]
        if item.message.ref is not None:
            return known.get((item.account, item.message.ref), item.id)
        return item.id

    def _known_sources(self, conn: Connection, items: list[NewMessage]) -> dict[tuple[str, str], int]:
        """(source, row key) -> message id of rows already taken (a claim the legacy side did not commit)."""
        sr = source_rows_table.c
        wanted: dict[str, set[str]] = defaultdict(set)
        for item in items:
            if item.source is not None:
                wanted[item.source[0]].add(item.source[1])
        return _known(conn, wanted, sr.source, sr.row_key, sr.message_id)

    def _known_refs(self, conn: Connection, items: list[NewMessage]) -> dict[tuple[str, str], int]:
        """(account, ref) -> id of the message the account already sent with that ref."""
        m = messages.c
        wanted: dict[str, set[str]] = defaultdict(set)
        for item in items:
            if item.message.ref is not None:
                wanted[item.account].add(item.message.ref)
        return _known(conn, wanted, m.account, m.ref, m.id)

    # claims and leases ---------------------------------------------------------

    def release(self, conn: Connection, owners: list[str]) -> list[int]:
        """Requeue every lease an owner holds (its in-flight work died with its process): recipients and
        outbox events; returns the recipients requeued."""
        out = []
        for owner in owners:
            result = conn.execute(
                update(recipients)
                .where(recipients.c.lease_owner == owner, recipients.c.state == R.DISPATCHING)
                .values(state=R.QUEUED, lease_owner=None, lease_until=None))
            out.append(result.rowcount)
            # Its leased notifications go out again at once (it died before recording their outcome).
            conn.execute(update(outbox).where(outbox.c.lease_owner == owner, outbox.c.state == "pending")
                         .values(lease_owner=None, next_at=0.0))
        return out

    def claim(self, conn: Connection, items: list[ClaimArgs]) -> list[list[Claimed]]:
        return [self._claim_one(conn, item) for item in items]

    def _claim_one(self, conn: Connection, a: ClaimArgs) -> list[Claimed]:
        r = recipients.c
        # Ids only: the claim index covers the query, so the database walks it in
        # order and locks just the rows it returns (MariaDB, selecting other
        # columns, sorted and locked every queued row of the origin).
        stmt = (select(r.id)
                .where(r.link == a.link, r.state == R.QUEUED, r.account == a.account, r.due_at <= a.now)
                .order_by(r.priority.desc(), r.due_at, r.id))
        if a.min_priority > 0:
            stmt = stmt.where(r.priority >= a.min_priority)
        ids = self._lock_ids(conn, stmt, a.limit)
        if not ids:
            return []
        fast = self.fast(conn)
        fast.execute_in(conn, "claim", _claim_statement, {"c_owner": a.owner, "c_until": a.lease_until, "c_at": a.now},
                        ids)
        found = {row[0]: row for row in fast.fetch_in(
            conn, recipients, ("id", "message_id", "phone", "priority", "attempts"), "id", ids)}
        rows = [found[i] for i in ids]
        bodies = {row[0]: row for row in fast.fetch_in(
            conn, messages, ("id", "content", "ext", "report", "msg_fmt", "segments"), "id",
            {row[1] for row in rows})}
        out = []
        for rid, message_id, phone, priority, attempts in rows:
            _, content, ext, report, msg_fmt, nseg = bodies[message_id]
            out.append(Claimed(rid, message_id, phone, a.link, a.account, priority, attempts, content, ext,
                               bool(report), msg_fmt, nseg))
        return out

    def _lock_ids(self, conn: Connection, stmt: Any, limit: int) -> list[int]:
        """The ids of up to `limit` rows of an id SELECT, locked (SKIP LOCKED) where the dialect locks rows."""
        if self.dialect == "oracle":
            # Oracle refuses FOR UPDATE with FETCH FIRST; rows lock as they are fetched.
            result = conn.execute(stmt.with_for_update(skip_locked=True))
            ids = [row.id for row in result.fetchmany(limit)]
            result.close()
            return ids
        stmt = stmt.limit(limit)
        if self.locks_rows:
            stmt = stmt.with_for_update(skip_locked=True)
        return list(conn.execute(stmt).scalars())

    # submit results ---------------------------------------------------------------

    def submitted(self, conn: Connection, items: list[SubmittedArgs]) -> list[str | None]:
        self._insert_segments(conn, [(i.recipient_id, i.attempt, i.segments, i.now) for i in items])
        current = self._recipients(conn, [i.recipient_id for i in items])
        changes = []
        for item in items:
            new = R.SUBMITTED if item.report else R.SENT
            changes.append(_Change(item.recipient_id, new, item.now, submitted_at=item.now,
                                    attempt=item.attempt))
        return self._apply(conn, current, changes)

    def failed(self, conn: Connection, items: list[FailedArgs]) -> list[str | None]:
        self._insert_segments(conn, [(i.recipient_id, i.attempt, i.accepted, i.now) for i in items if i.accepted])
        current = self._recipients(conn, [i.recipient_id for i in items])
        changes = []
        for item in items:
            if item.retry_at is None:
                changes.append(_Change(item.recipient_id, R.FAILED, item.now, error=item.error, stat=item.code,
                                       attempt=item.attempt))
            else:
                changes.append(_Change(item.recipient_id, R.QUEUED, item.now, error=item.error, stat=item.code,
                                       due_at=item.retry_at, attempt=item.attempt))
        return self._apply(conn, current, changes)

    def _insert_segments(self, conn: Connection, items: list[tuple[int, int, list[SegmentIds], float]]) -> None:
        rows = []
        for recipient_id, attempt, segs, now in items:
            ids = self.ids.many(len(segs))
            for sid, seg in zip(ids, segs):
                rows.append((sid, recipient_id, seg.number, seg.total, attempt, seg.msg_id, S.SUBMITTED, now))
        fast = self.fast(conn)
        fast.executemany(conn, fast.insert(segments, SEGMENT_COLUMNS), rows)

    # reports ----------------------------------------------------------------------

    def report(self, conn: Connection, items: list[ReportArgs]) -> list[ReportOutcome]:
        report_ids = self.ids.many(len(items))
        matches = self._match(conn, items)
        rows: list[tuple[Any, ...]] = []
        outcomes = []
        for rid, item, match in zip(report_ids, items, matches):
            rows.append((rid, item.link, item.msg_id, item.stat, item.dest, item.submit_time, item.done_time,
                         item.now, match.segment_id if match else None, "matched" if match else "pending"))
            outcomes.append(ReportOutcome(rid, match is not None))
        fast = self.fast(conn)
        fast.executemany(conn, fast.insert(reports, REPORT_COLUMNS), rows)
        self._apply_reports(conn, [(i, item, m) for i, (item, m) in enumerate(zip(items, matches))
                                   if m is not None], outcomes)
        return outcomes

    def _match(self, conn: Connection, items: Sequence[ReportArgs]) -> list[_SegmentRow | None]:
        """The segment each report belongs to (the newest with that Msg_Id), or None."""
        found: dict[str, _SegmentRow] = {}
        for seg_id, recipient_id, attempt, state, msg_id in self.fast(conn).fetch_in(
                conn, segments, ("id", "recipient_id", "attempt", "state", "msg_id"), "msg_id",
                (item.msg_id for item in items)):
            prev = found.get(msg_id)
            if prev is None or seg_id > prev.segment_id:
                found[msg_id] = _SegmentRow(seg_id, recipient_id, attempt, state)
        return [found.get(item.msg_id) for item in items]

    def _apply_reports(self, conn: Connection, matched: list[tuple[int, ReportArgs, _SegmentRow]],
                       outcomes: list[ReportOutcome]) -> None:
        if not matched:
            return
        seg_updates = []
        newly_final: dict[int, list[tuple[int, int, ReportArgs]]] = defaultdict(list)  # recipient -> (idx, attempt, r)
        seen: set[int] = set()
        for index, item, s in matched:
            if s.state != S.SUBMITTED or s.segment_id in seen:
                continue  # a repeated report for a segment already closed
            if not stat_is_final(item.stat):
                seg_updates.append((S.SUBMITTED, item.stat, item.now, s.segment_id))
                continue
            seen.add(s.segment_id)
            state = S.DELIVERED if item.stat == DELIVERED_STAT else S.UNDELIVERABLE
            seg_updates.append((state, item.stat, item.now, s.segment_id))
            newly_final[s.recipient_id].append((index, s.attempt, item))
        fast = self.fast(conn)
        fast.executemany(conn, fast.update(segments, ("state", "stat", "reported_at")), seg_updates)
        current = self._recipients(conn, list(newly_final))
        changes = []
        counters = []
        for recipient_id, finals in newly_final.items():
            row = current.get(recipient_id)
            if row is None:
                continue
            for index, _, _ in finals:
                outcomes[index].recipient_id = recipient_id
                outcomes[index].message_id = row.message_id
                outcomes[index].phone = row.phone
            counted = [(i, r) for i, attempt, r in finals if attempt == row.attempts]
            if not counted:
                continue  # reports of an earlier attempt: recorded on their segments only
            reported = row.reported + len(counted)
            failed_stats = [r.stat for _, r in counted if r.stat != DELIVERED_STAT]
            failed = row.failed + len(failed_stats)
            first_failure = failed_stats[0] if failed_stats and row.failed == 0 else row.stat
            if reported >= row.segments:
                last_index, last = counted[-1]
                new = R.DELIVERED if failed == 0 else R.UNDELIVERABLE
                if lifecycle.allowed(row.state, new):
                    counts = {"reported": reported, "failed": failed, "stat": first_failure if failed else last.stat}
                    changes.append(_Change(recipient_id, new, last.now, extra=counts))
                    outcomes[last_index].final_state = new
                    continue
            counters.append((reported, failed, first_failure, recipient_id))
        fast.executemany(conn, fast.update(recipients, ("reported", "failed", "stat")), counters)
        self._apply(conn, current, changes)

    # MO ---------------------------------------------------------------------------

    def mo(self, conn: Connection, items: list[MoArgs]) -> list[int]:
        ids = self.ids.many(len(items))
        conn.execute(mo_messages.insert(), [
            {"id": mid, "link": i.link, "src": i.src, "dest": i.dest, "ext": i.ext, "content": i.text,
             "service_id": i.service_id, "keyword": i.keyword, "consumer": i.consumer, "parts": i.parts,
             "complete": i.complete, "received_at": i.now} for mid, i in zip(ids, items)])
        self.insert_events(conn, [
            self._event(i.notify, "mo", None, None, {"mo_id": str(mid), "consumer": i.consumer}, i.now)
            for mid, i in zip(ids, items) if i.notify])
        done = sorted({i.part_set for i in items if i.part_set})
        for chunk in chunks(done, 200):
            conn.execute(mo_parts.delete().where(mo_parts.c.part_set.in_(chunk)))
        return ids

    def mo_part(self, conn: Connection, items: list[MoPartArgs]) -> list[int]:
        ids = self.ids.many(len(items))
        conn.execute(mo_parts.insert(), [
            {"id": pid, "link": i.link, "part_set": i.part_set, "number": i.number, "payload": i.payload.hex(),
             "msg_fmt": i.msg_fmt, "received_at": i.now} for pid, i in zip(ids, items)])
        return ids

    # sweeps -------------------------------------------------------------------------

    def sweep(self, conn: Connection, items: list[SweepArgs]) -> list[SweepResult]:
        return [self._sweep_one(conn, a) for a in items]

    def _sweep_one(self, conn: Connection, a: SweepArgs) -> SweepResult:
        r = recipients.c
        out = SweepResult()
        out.leases_extended = conn.execute(
            update(recipients).where(r.lease_owner == a.owner, r.state == R.DISPATCHING)
            .values(lease_until=a.lease_until)).rowcount
        out.requeued = conn.execute(
            update(recipients)
            .where(r.state.in_(lifecycle.sources(R.QUEUED)), r.lease_until < a.now, r.lease_owner != a.owner)
            .values(state=R.QUEUED, lease_owner=None, lease_until=None, updated_at=a.now)).rowcount
        stale = conn.execute(
            select(r.id).where(r.state.in_(lifecycle.sources(R.EXPIRED)), r.submitted_at < a.report_deadline)
            .limit(a.limit)).scalars().all()
        if stale:
            current = self._recipients(conn, list(stale))
            self._apply(conn, current, [_Change(rid, R.EXPIRED, a.now, error="no status report in time")
                                        for rid in stale])
            out.expired = list(stale)
        out.rematched, out.orphans = self._rematch(conn, a)
        if a.outbox_done_before is not None:
            # All of them, in one statement: a capped batch per sweep (1,000 per 5 s) falls behind
            # a daemon that delivers more than 200 notifications a second.
            conn.execute(outbox.delete().where(outbox.c.state == "done", outbox.c.done_at < a.outbox_done_before))
        return out

    def _rematch(self, conn: Connection, a: SweepArgs) -> tuple[int, list[tuple[str, str, str]]]:
        rp = reports.c
        rows = conn.execute(select(rp.id, rp.link, rp.msg_id, rp.stat, rp.dest, rp.submit_time, rp.done_time,
                                   rp.received_at).where(rp.state == "pending").order_by(rp.id)
                            .limit(a.limit)).all()
        if not rows:
            return 0, []
        items = [ReportArgs(row.link, row.msg_id, row.stat, row.dest, row.submit_time, row.done_time, a.now)
                 for row in rows]
        matches = self._match(conn, items)
        outcomes = [ReportOutcome(row.id, m is not None) for row, m in zip(rows, matches)]
        self._apply_reports(conn, [(i, item, m) for i, (item, m) in enumerate(zip(items, matches))
                                   if m is not None], outcomes)
        done = [{"b_id": row.id, "b_state": "matched", "b_seg": m.segment_id}
                for row, m in zip(rows, matches) if m is not None]
        orphans = [row for row, m in zip(rows, matches) if m is None and row.received_at < a.orphan_deadline]
        done += [{"b_id": row.id, "b_state": "orphan", "b_seg": None} for row in orphans]
        if done:
            conn.execute(update(reports).where(rp.id == bindparam("b_id"))
                         .values(state=bindparam("b_state"), segment_id=bindparam("b_seg")), done)
        matched = sum(1 for m in matches if m is not None)
        return matched, [(row.link, row.msg_id, row.stat) for row in orphans]

    # outbox -------------------------------------------------------------------------

    def outbox_claim(self, conn: Connection, items: list[OutboxClaimArgs]) -> list[list[OutboxEvent]]:
        """Lease due events of the given kinds, oldest first (their order per origin is kept)."""
        ob = outbox.c
        out: list[list[OutboxEvent]] = []
        for a in items:
            stmt = (select(ob.id).where(ob.state == "pending", ob.kind.in_(a.kinds), ob.next_at <= a.now)
                    .order_by(ob.id))
            ids = self._lock_ids(conn, stmt, a.limit)
            if not ids:
                out.append([])
                continue
            conn.execute(update(outbox).where(ob.id.in_(ids)).values(lease_owner=a.owner, next_at=a.lease_until))
            rows = conn.execute(select(ob.id, ob.kind, ob.event, ob.message_id, ob.recipient_id, ob.payload,
                                       ob.attempts, ob.created_at).where(ob.id.in_(ids)).order_by(ob.id))
            out.append([OutboxEvent(r.id, r.kind, r.event, r.message_id, r.recipient_id, r.payload, r.attempts,
                                    r.created_at) for r in rows])
        return out

    def outbox_done(self, conn: Connection, items: list[OutboxDone]) -> list[None]:
        """Done (error None), retried at retry_at, or dead (an error and no retry_at).

        One statement per group (done; retried or dead, each counted or not): a receiver that
        is down has the whole leased batch back at once.
        """
        ob = outbox.c
        done = [{"b_id": i.id, "b_at": i.now} for i in items if i.error is None]
        if done:
            conn.execute(update(outbox).where(ob.id == bindparam("b_id"))
                         .values(state="done", done_at=bindparam("b_at"), last_error=None, lease_owner=None), done)
        failed: dict[tuple[bool, bool], list[dict[str, Any]]] = defaultdict(list)  # (dead, counted) -> rows
        for i in items:
            if i.error is not None:
                dead = i.retry_at is None
                failed[(dead, i.count)].append({"b_id": i.id, "b_error": i.error[:255],
                                                "b_at": i.now if dead else i.retry_at})
        for (dead, counted), rows in failed.items():
            values: dict[str, Any] = ({"state": "dead", "done_at": bindparam("b_at")} if dead
                                      else {"next_at": bindparam("b_at")})
            if counted:
                values["attempts"] = ob.attempts + 1
            conn.execute(update(outbox).where(ob.id == bindparam("b_id"))
                         .values(lease_owner=None, last_error=bindparam("b_error"), **values), rows)
        return [None] * len(items)

    def review(self, conn: Connection, items: list[ReviewAction]) -> list[ReviewResult]:
        """Review actions (approve, reject, cancel), in order, each with its audit-log row."""
        return [_review.act(self, conn, item) for item in items]

    def review_expire(self, conn: Connection, items: list[ExpiryArgs]) -> list[ExpiryResult]:
        return [_review.expire(self, conn, item) for item in items]

    def template(self, conn: Connection, items: list[TemplateChange]) -> list[str]:
        """Each change applied in order; result: "added", "changed", "deleted" or "absent" (nothing to delete)."""
        t = templates_table.c
        out = []
        for change in items:
            old = conn.execute(select(t.content, t.pre_approved).where(t.name == change.name)).first()
            if change.content is None:
                if old is None:
                    out.append("absent")
                    continue
                conn.execute(templates_table.delete().where(t.name == change.name))
                outcome, details = "deleted", {"content": old.content, "pre_approved": bool(old.pre_approved)}
            elif old is None:
                conn.execute(templates_table.insert().values(
                    name=change.name, content=change.content, pre_approved=change.pre_approved,
                    created_at=change.now, updated_at=change.now, updated_by=change.actor))
                outcome, details = "added", {"content": change.content, "pre_approved": change.pre_approved}
            else:
                conn.execute(update(templates_table).where(t.name == change.name).values(
                    content=change.content, pre_approved=change.pre_approved, updated_at=change.now,
                    updated_by=change.actor))
                outcome = "changed"
                details = {"content": change.content, "pre_approved": change.pre_approved,
                           "before": {"content": old.content, "pre_approved": bool(old.pre_approved)}}
            conn.execute(audit_log.insert().values(
                id=self.ids.next(), at=change.now, actor=change.actor[:64], action=f"template_{outcome}",
                subject=f"template:{change.name}", details=json.dumps(details, ensure_ascii=False)))
            out.append(outcome)
        return out

    def _event(self, kind: str, event: str, message_id: int | None, recipient_id: int | None,
               payload: dict[str, Any], now: float) -> tuple[Any, ...]:
        """An outbox row (OUTBOX_COLUMNS), pending from `now`."""
        return (self.ids.next(), kind, event, message_id, recipient_id, json.dumps(payload, ensure_ascii=False),
                "pending", 0, now, now)

    def insert_events(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        fast = self.fast(conn)
        fast.executemany(conn, fast.insert(outbox, OUTBOX_COLUMNS), rows)

    # recipient transitions: the one place they are applied -----------------------------

    def _recipients(self, conn: Connection, ids: list[int]) -> dict[int, Any]:
        rows = self.fast(conn).fetch_in(conn, recipients, _Recipient._fields, "id", ids, lock=self.locks_rows)
        return {row[0]: _Recipient._make(row) for row in rows}

    def recipients_of(self, conn: Connection, message_ids: list[int], states: tuple[str, ...]) -> dict[int, Any]:
        """The recipients of `message_ids` in one of `states`, read with their row locks, for `move`."""
        r = recipients.c
        out: dict[int, Any] = {}
        for chunk in chunks(message_ids, 500):
            query = select(*(r[name] for name in _Recipient._fields)).where(r.message_id.in_(chunk), r.state.in_(states))
            if self.locks_rows:  # only the rows it moves: final recipients of the same messages stay unlocked
                query = query.with_for_update()
            out.update((rec.id, rec) for rec in map(_Recipient._make, conn.execute(query)))
        return out

    def move(self, conn: Connection, current: dict[int, Any], new: str, now: float, error: str) -> int:
        """Move recipients (as `recipients_of` read them) to `new` (where the lifecycle allows it)
        with `error`; how many moved.

        For the review queue's reject and cancel (smsgw.store._review): final states, so each
        message's open count drops and its origin is told, as for any other final state.
        """
        changes = [_Change(rid, new, now, error=error) for rid in current]
        return sum(1 for moved in self._apply(conn, current, changes) if moved is not None) if changes else 0

    def _apply(self, conn: Connection, current: dict[int, Any], changes: list[_Change]) -> list[str | None]:
        """Apply legal transitions in bulk; returns the new state per change (None: refused)."""
        results: list[str | None] = []
        pending: dict[int, dict[str, Any]] = {}  # recipient -> merged values (a batch may move one twice)
        closing: dict[int, int] = defaultdict(int)
        notify: list[tuple[int, int, str]] = []
        owed: list[tuple[Any, ...]] = []  # recipient_submitted events
        states = {rid: row.state for rid, row in current.items()}  # as this batch moves them
        for ch in changes:
            row = current.get(ch.recipient_id)
            if row is None or not lifecycle.allowed(states[ch.recipient_id], ch.new) or (
                    ch.attempt is not None and ch.attempt != row.attempts):
                results.append(None)  # stale (a newer attempt owns it) or already moved on
                continue
            pending.setdefault(ch.recipient_id, {}).update(ch.values())
            if lifecycle.closes(states[ch.recipient_id], ch.new):
                closing[row.message_id] += 1
                notify.append((row.message_id, ch.recipient_id, ch.new))
            elif ch.new == R.SUBMITTED and row.notify and row.notify not in self.quiet_submits:
                owed.append(self._event(row.notify, "recipient_submitted", row.message_id, ch.recipient_id,
                                        {"message_id": str(row.message_id), "recipient_id": str(ch.recipient_id),
                                         "state": ch.new}, ch.now))
            states[ch.recipient_id] = ch.new
            results.append(ch.new)
        rows_by_kind: dict[tuple[str, ...], list[tuple[Any, ...]]] = defaultdict(list)
        for rid, values in pending.items():
            keys = tuple(sorted(values))
            rows_by_kind[keys].append((*(values[k] for k in keys), rid))
        fast = self.fast(conn)
        for keys, rows in rows_by_kind.items():
            fast.executemany(conn, fast.update(recipients, keys), rows)
        self.insert_events(conn, owed)
        if closing:
            self._close_recipients(conn, closing, notify, changes[0].now if changes else 0.0)
        return results

    def _close_recipients(self, conn: Connection, closing: dict[int, int],
                          notify: list[tuple[int, int, str]], now: float) -> None:
        fast = self.fast(conn)
        fast.executemany(conn, fast.compile("close_recipients", _close_statement, ("c_n", "c_at", "c_id")),
                         [(n, now, mid) for mid, n in closing.items()])
        wanting = {row[0]: row for row in fast.fetch_in(conn, messages, ("id", "notify", "ref", "account"), "id",
                                                           closing, present="notify")}
        rows = []
        for message_id, recipient_id, state in notify:
            msg = wanting.get(message_id)
            if msg is None:
                continue
            _, kind, ref, account = msg
            rows.append(self._event(kind, "recipient_final", message_id, recipient_id,
                                    {"message_id": str(message_id), "recipient_id": str(recipient_id),
                                     "ref": ref, "account": account, "state": state}, now))
        self.insert_events(conn, rows)


# Row layouts of the hot statements (smsgw.store._fast): the columns each insert sets, in tuple order.
# A column left out is NULL (none of them has a default).
MESSAGE_COLUMNS = ("id", "account", "interface", "ref", "content", "priority", "send_at", "ext", "report", "msg_fmt",
                   "segments", "recipients", "open_recipients", "state", "needs_review", "notify", "created_at",
                   "updated_at", "dlr_url", "dlr_mask", "template", "batch", "review", "review_rule",
                   "review_deadline", "review_expiry")
RECIPIENT_COLUMNS = ("id", "message_id", "phone", "link", "account", "priority", "state", "due_at", "attempts",
                     "segments", "reported", "failed", "updated_at", "notify")
SEGMENT_COLUMNS = ("id", "recipient_id", "number", "total", "attempt", "msg_id", "state", "submitted_at")
REPORT_COLUMNS = ("id", "link", "msg_id", "stat", "dest", "submit_time", "done_time", "received_at", "segment_id",
                  "state")
OUTBOX_COLUMNS = ("id", "kind", "event", "message_id", "recipient_id", "payload", "state", "attempts", "next_at",
                  "created_at")


class _Recipient(NamedTuple):
    """What a state change needs to know of a recipient (read with its row lock)."""

    id: int
    message_id: int
    phone: str
    state: str
    attempts: int
    segments: int
    reported: int
    failed: int
    stat: str | None
    notify: str | None


def _claim_statement(ids: list[Any]) -> Any:
    """The claimed recipients: dispatching, leased to c_owner until c_until, one more attempt (one statement)."""
    r = recipients.c
    return (update(recipients).where(r.id.in_(ids))
            .values(state=literal_column(f"'{R.DISPATCHING}'"), lease_owner=bindparam("c_owner"),
                    lease_until=bindparam("c_until"), attempts=r.attempts + literal_column("1"),
                    updated_at=bindparam("c_at")))


def _close_statement() -> Any:
    """A message's open count drops by c_n; at zero it is completed."""
    m = messages.c
    left = m.open_recipients - bindparam("c_n")
    return (update(messages).where(m.id == bindparam("c_id"))
            .values(open_recipients=left,
                    state=case((left <= literal_column("0"), literal_column(f"'{M.COMPLETED}'")), else_=m.state),
                    updated_at=bindparam("c_at")))


@dataclass(slots=True)
class _SegmentRow:
    segment_id: int
    recipient_id: int
    attempt: int
    state: str


@dataclass(slots=True)
class _Change:
    recipient_id: int
    new: str
    now: float
    error: str | None = None
    stat: str | None = None
    due_at: float | None = None
    submitted_at: float | None = None
    attempt: int | None = None  # only apply if the recipient is still on this attempt
    extra: dict[str, Any] | None = None  # more columns to set in the same UPDATE

    def values(self) -> dict[str, Any]:
        v: dict[str, Any] = {"state": self.new, "updated_at": self.now}
        if self.new == R.QUEUED:
            v.update(lease_owner=None, lease_until=None, due_at=self.due_at if self.due_at is not None else self.now)
        elif self.new in (R.SUBMITTED, R.SENT):
            v.update(lease_owner=None, lease_until=None, submitted_at=self.submitted_at, reported=0, failed=0)
        elif self.new == R.FAILED:
            v.update(lease_owner=None, lease_until=None)
        if self.new in lifecycle.FINAL:
            v["final_at"] = self.now
        if self.error is not None or self.new in (R.SUBMITTED, R.SENT, R.DELIVERED):
            v["error"] = self.error
        if self.stat is not None:
            v["stat"] = self.stat
        if self.extra:
            v.update(self.extra)
        return v


def _known(conn: Connection, wanted: dict[str, set[str]], group: Any, key: Any,
           ident: Any) -> dict[tuple[str, str], int]:
    """(group, key) -> `ident` of the stored rows: for each group in `wanted`, those with one of its keys."""
    found: dict[tuple[str, str], int] = {}
    for name, keys in wanted.items():
        for chunk in chunks(sorted(keys), 500):
            for row_key, row_id in conn.execute(select(key, ident).where(group == name, key.in_(chunk))):
                found.setdefault((name, row_key), row_id)
    return found

