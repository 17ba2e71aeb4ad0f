"""The durable message store: SQLAlchemy Core on SQLite, PostgreSQL, MySQL/MariaDB or Oracle.

    store = Store(url, reactor, node_id=0, owner="node-a")
    store.start()                      # writer thread + reader threads
    d = store.write("accept", NewMessage(...))   # fires after COMMIT
    d = store.read(store.message_view, "demo", 123)

Nothing here blocks the reactor thread: writes go to one writer thread in
batched transactions (`_writer.py`), reads to a small thread pool.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import structlog
from sqlalchemy import Connection, Engine, func, select
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads
from twisted.python.threadpool import ThreadPool

from smsgw.model import MessageView, MoPage, MoView, RecipientView, SegmentView
from smsgw.store import migrations, schema
from smsgw.store._engine import StoreUnavailable, dialect_of, in_memory, make_engine
from smsgw.store._fast import chunks
from smsgw.store._ops import (
    Claimed,
    ClaimArgs,
    FailedArgs,
    MoArgs,
    MoPartArgs,
    NewMessage,
    Ops,
    OutboxClaimArgs,
    OutboxDone,
    OutboxEvent,
    ReportArgs,
    ReportOutcome,
    SegmentIds,
    SubmittedArgs,
    SweepArgs,
    SweepResult,
)
from smsgw.store._review import (
    ExpiryArgs,
    ExpiryResult,
    ReviewAction,
    ReviewItem,
    ReviewPage,
    ReviewQuery,
    ReviewResult,
    review_page,
    review_rows,
)
from smsgw.store._writer import ChildSpec, ProcessWriter, Writer
from smsgw.store.ids import IdGenerator

__all__ = [
    "Claimed", "ClaimArgs", "ExpiryArgs", "ExpiryResult", "ReviewAction", "ReviewItem", "ReviewPage", "ReviewQuery",
    "ReviewResult", "FailedArgs", "IdGenerator", "MoArgs", "MoPartArgs", "NewMessage", "OutboxClaimArgs",
    "OutboxDone", "OutboxEvent", "ReportArgs", "ReportOutcome",
    "SegmentIds", "Store", "StoreUnavailable", "SubmittedArgs", "SweepArgs", "SweepResult", "chunks",
    "dialect_of", "make_engine", "migrations", "schema",
]

T = TypeVar("T")
log = structlog.get_logger("smsgw.store")


class Store:
    """One store: a writer thread for batched writes and a thread pool for reads."""

    def __init__(self, url: str, reactor: Any, *, node_id: int = 0, owner: str = "smsgw",
                 batch_max: int = 1000, readers: int = 4, busy_timeout: float = 5.0,
                 quiet_submits: frozenset[str] = frozenset(), writer: str = "thread") -> None:
        self.url = url
        self.dialect = dialect_of(url)
        self.owner = owner
        self.ids = IdGenerator(node_id)
        self._reactor = reactor
        self.engine: Engine = make_engine(url, writer=True, busy_timeout=busy_timeout, pool_size=2)
        self.read_engine: Engine = make_engine(url, busy_timeout=busy_timeout, pool_size=readers)
        assert IReactorFromThreads.providedBy(reactor)
        self.writer: Writer | ProcessWriter
        if writer == "process" and not in_memory(url):
            # The child mints its own ids for the tables only it writes (segments, reports, MO, outbox,
            # audit); this process mints message and recipient ids. No table gets ids from both.
            spec = ChildSpec(url, node_id, quiet_submits, busy_timeout, retry_delay=1.0)
            self.writer = ProcessWriter(spec, reactor, Ops.ORDER, batch_max=batch_max)
        elif writer in ("thread", "process"):
            ops = Ops(self.dialect, self.ids, quiet_submits)
            self.writer = Writer(self.engine, reactor, ops.handlers(), Ops.ORDER, Ops.DURABLE, batch_max=batch_max)
        else:
            raise ValueError(f"store writer {writer!r}: use 'process' or 'thread'")
        self._pool = ThreadPool(minthreads=1, maxthreads=readers, name="smsgw-store-reader")
        self._running = False

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the writer and the reader threads. The schema must be current (`smsgw db upgrade`)."""
        migrations.require_current(self.engine)
        self.writer.start()
        self._pool.start()
        self._running = True

    def stop(self) -> None:
        """Commit what is queued and stop the threads (blocks until the writer is done)."""
        if not self._running:
            return
        self._running = False
        self.writer.stop()
        if self.writer.batches:
            log.info("store_stopped", transactions=self.writer.batches, ops=self.writer.ops,
                     ops_per_transaction=round(self.writer.ops / self.writer.batches, 1))
        self._pool.stop()
        self.engine.dispose()
        self.read_engine.dispose()

    # --- writes and reads ---------------------------------------------------------

    def write(self, kind: str, args: Any) -> defer.Deferred[Any]:
        """Queue one operation; the Deferred fires with its result after COMMIT."""
        return self.writer.submit(kind, args)

    def write_many(self, kind: str, items: list[Any]) -> defer.Deferred[list[Any]]:
        """Queue one operation per item; fires with their results once all are committed."""
        if not items:
            return defer.succeed([])
        return defer.gatherResults([self.writer.submit(kind, item) for item in items], consumeErrors=True)

    def read(self, fn: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        """Run `fn(conn, *args)` on a reader thread; returns a Deferred of its result."""
        assert IReactorThreads.providedBy(self._reactor)

        def run() -> T:
            with self.read_engine.connect() as conn:
                return fn(conn, *args)
        return threads.deferToThreadPool(self._reactor, self._pool, run)

    # --- queries (run on reader threads via read()) ---------------------------------------

    review_page = staticmethod(review_page)
    review_rows = staticmethod(review_rows)

    @staticmethod
    def message_view(conn: Connection, account: str | None, message_id: int) -> MessageView | None:
        m, r, s = schema.messages.c, schema.recipients.c, schema.segments.c
        msg = conn.execute(select(schema.messages).where(m.id == message_id)).first()
        if msg is None or (account is not None and msg.account != account):
            return None
        rows = conn.execute(select(schema.recipients).where(r.message_id == message_id).order_by(r.id)).all()
        segs: dict[int, list[SegmentView]] = {}
        ids = [row.id for row in rows]
        for chunk in chunks(ids, 500):
            for seg in conn.execute(select(schema.segments).where(s.recipient_id.in_(chunk))
                                    .order_by(s.recipient_id, s.attempt, s.number)):
                segs.setdefault(seg.recipient_id, []).append(SegmentView(
                    seg.number, seg.total, seg.msg_id, seg.state, seg.stat, seg.submitted_at, seg.reported_at))
        recipients = tuple(
            RecipientView(row.phone, row.state, row.link, row.attempts, row.error, row.stat, row.updated_at,
                          tuple(segs.get(row.id, ()))) for row in rows)
        return MessageView(str(msg.id), msg.account, msg.interface, msg.ref, msg.content, msg.priority,
                           msg.send_at, msg.state, msg.created_at, msg.updated_at, recipients)

    @staticmethod
    def mo_page(conn: Connection, consumers: tuple[str, ...], cursor: int, limit: int) -> MoPage:
        mo = schema.mo_messages.c
        rows = conn.execute(select(schema.mo_messages).where(mo.consumer.in_(consumers), mo.id > cursor)
                            .order_by(mo.id).limit(limit)).all()
        items = tuple(MoView(str(row.id), row.link, row.src, row.dest, row.ext, row.content, row.consumer,
                             row.received_at, row.parts, bool(row.complete)) for row in rows)
        # The cursor moves on with every page; an empty page keeps the caller's.
        return MoPage(items, items[-1].id if items else (str(cursor) if cursor else None))

    @staticmethod
    def mo_parts_kept(conn: Connection) -> list[tuple[str, str, int, bytes, int, float]]:
        """Every kept MO part: (link, part_set, number, payload, msg_fmt, received_at), oldest first."""
        p = schema.mo_parts.c
        return [(row.link, row.part_set, row.number, bytes.fromhex(row.payload), row.msg_fmt, row.received_at)
                for row in conn.execute(select(schema.mo_parts).order_by(p.id))]

    @staticmethod
    def mo_rows(conn: Connection, mo_ids: list[int]) -> dict[int, Any]:
        """MO id -> its row (every column of mo_messages), for the ids still in the store."""
        mo = schema.mo_messages.c
        out = {}
        for chunk in chunks(mo_ids, 500):
            for row in conn.execute(select(schema.mo_messages).where(mo.id.in_(chunk))):
                out[row.id] = row
        return out

    @staticmethod
    def queued_origins(conn: Connection, link: str) -> list[str]:
        r = schema.recipients.c
        return list(conn.execute(select(r.account).where(r.link == link, r.state == "queued").distinct()).scalars())

    @staticmethod
    def current_msg_ids(conn: Connection, attempts: dict[int, int]) -> dict[int, list[str]]:
        """recipient id -> the Msg_Ids of its segments in its current attempt (`attempts`), in segment order."""
        s = schema.segments.c
        out: dict[int, list[str]] = {}
        for chunk in chunks(sorted(attempts), 500):
            for seg in conn.execute(select(s.recipient_id, s.attempt, s.msg_id)
                                    .where(s.recipient_id.in_(chunk)).order_by(s.recipient_id, s.number)):
                if seg.attempt == attempts[seg.recipient_id]:
                    out.setdefault(seg.recipient_id, []).append(seg.msg_id)
        return out

    @staticmethod
    def recipients_since(conn: Connection, accounts: list[str], since: float) -> dict[str, int]:
        """account -> recipients of the messages it had accepted since `since` (the daily quota's count).

        One query per account, so that each is a range scan of ix_messages_account_created.
        """
        m = schema.messages.c
        out = {}
        for account in accounts:
            total = conn.execute(select(func.sum(m.recipients)).where(m.account == account,
                                                                      m.created_at >= since)).scalar()
            out[account] = int(total or 0)
        return out

    @staticmethod
    def queue_counts(conn: Connection) -> dict[str, int]:
        r = schema.recipients.c
        open_states = ("held", "queued", "dispatching", "submitted")  # held: waiting for review
        rows = conn.execute(select(r.state, func.count()).where(r.state.in_(open_states)).group_by(r.state))
        out = {state: 0 for state in open_states}
        out.update({state: count for state, count in rows})
        return out

