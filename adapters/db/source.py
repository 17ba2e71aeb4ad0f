"""One legacy database source: the poller that takes rows, and the write-back of their results.

Taking rows (one poll, on a thread of the source's own pool):

1. In one transaction on the legacy database, lock up to `batch_size`
   pending rows (`Statements.claim_rows`: SKIP LOCKED / READPAST / BEGIN
   IMMEDIATE by dialect).
2. Turn each row into a message and validate it. Bad rows get the
   `rejected` write-back with the reasons in words.
3. Commit the good ones to smsgw's store in one operation, each with its
   idempotency key (source, row key), and wait for that commit.
4. Give them the `accepted` write-back (the row's new state and message id)
   and commit the legacy transaction.

If smsgw's commit fails, the legacy transaction rolls back and the rows are
taken at a later poll. If the legacy commit fails after smsgw's, the rows
are still pending there: the next poll takes them again, the store answers
with the message it already has for (source, key), and only the write-back
is repeated: reconciled, never sent twice.

If the account's rate limit or daily quota does not allow them all
(`smsgw.model.LimitExceeded`), the first rows that fit are accepted, the rest
stay pending, untouched, and the next poll comes when the limit allows more.

Results (submitted, reported, MO for the inbox) are outbox events in smsgw's
store, delivered by `smsgw.outbox.OutboxWorker` through `DbWriteback`: while
the legacy database is down they wait there and go out in order once it is
back; other sources are not held up.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import structlog
from sqlalchemy import Connection, Engine, select
from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from smsgw._config_db import ActiveWindow, DbSourceConfig
from smsgw.adapter import Poller
from smsgw.adapters.db.engine import is_unreachable, make_source_engine, short_error
from smsgw.adapters.db.rows import RowError, request
from smsgw.adapters.db.statements import Statements, WriteBack, local_time
from smsgw.lifecycle import FINAL, R
from smsgw.model import Account, AcceptedMessage, LimitExceeded, Problem, RequestRejected, ServiceUnavailable
from smsgw.outbox import Outcome, Refused, Unreachable
from smsgw.schedule import WEEKDAYS
from smsgw.store import OutboxEvent, Store, chunks, schema
from smsgw.store._engine import StoreUnavailable
from smsgw.validation import PreparedMessage, Validator

log = structlog.get_logger("smsgw.adapters.db")

_OK_STATES = (R.DELIVERED, R.SENT)
_OPEN_STATES = (R.QUEUED, R.DISPATCHING, R.HELD)  # not submitted yet (held: waiting for review)


@dataclass(slots=True)
class PollResult:
    taken: int = 0
    held: int = 0  # left pending: over the account's rate limit or daily quota
    limit: LimitExceeded | None = None


def active(windows: Sequence[ActiveWindow], now: dt.datetime) -> bool:
    """Whether `now` (local) falls in one of the windows; no windows: always."""
    if not windows:
        return True
    minute = now.hour * 60 + now.minute
    day = WEEKDAYS[now.weekday()]
    yesterday = WEEKDAYS[(now.weekday() - 1) % 7]
    for w in windows:
        start, end = _minutes(w.from_), _minutes(w.to)
        if start <= end:
            if day in w.days and start <= minute < end:
                return True
        elif (day in w.days and minute >= start) or (yesterday in w.days and minute < end):
            return True  # spans midnight: belongs to the day it started
    return False


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class DbSource(Poller):
    """Polls one legacy database and writes results back to it."""

    def __init__(self, source: DbSourceConfig, gateway: Any, store: Store, validator: Validator,
                 account: Account, reactor: Any, *, node: str) -> None:
        super().__init__(reactor)
        self.source = source
        self.name: str = f"db:{source.name}"
        self.kind = source.interface()
        self._gateway = gateway
        self._store = store
        self._validator = validator
        self._account = account
        self._reactor = reactor
        self._node = node
        self.statements = Statements(source)
        self.engine: Engine | None = None
        self._pool = ThreadPool(minthreads=1, maxthreads=source.pool_size, name=f"smsgw-db-{source.name}")
        self._backoff = 0.0
        self._last_error: str | None = None
        self._was_active: bool | None = None
        self._held_by: str | None = None  # the limit that last held rows back
        self.writeback = DbWriteback(self)

    # --- lifecycle ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.engine = make_source_engine(self.source)
        self._pool.start()
        log.info("db_source_started", source=self.source.name, url=self.source.plain_url(hide_password=True),
                 table=self.statements.mapping.table, poll_interval=self.source.poll_interval,
                 batch_size=self.source.batch_size)
        self._schedule(0.0)

    def stopService(self) -> defer.Deferred[Any]:
        d = self.stop_polling()

        def close(_: Any) -> Any:
            Service.stopService(self)

            def dispose() -> None:
                self._pool.stop()
                if self.engine is not None:
                    self.engine.dispose()
            return threads.deferToThread(dispose)
        return d.addBoth(close)

    # --- polling -------------------------------------------------------------------

    def _poll(self) -> defer.Deferred[None] | None:
        now = dt.datetime.fromtimestamp(self._clock.seconds())
        is_active = active(self.source.active_hours, now)
        if is_active != self._was_active:
            if self._was_active is not None or not is_active:
                log.info("db_source_active" if is_active else "db_source_inactive", source=self.source.name,
                         reason="inside its active_hours" if is_active else "outside its active_hours")
            self._was_active = is_active
        if not is_active or not self._gateway.accepting:
            self._schedule(self.source.poll_interval)
            return None
        d = threads.deferToThreadPool(self._reactor, self._pool, self.poll_once)
        return d.addCallbacks(self._polled, self._poll_failed)

    def _polled(self, result: PollResult) -> None:
        if self._last_error is not None:
            log.info("db_source_recovered", source=self.source.name, after=self._last_error)
            self._last_error = None
        self._backoff = 0.0
        if result.limit is not None:
            self._held(result)
            return
        if self._held_by is not None:
            log.info("db_source_released", source=self.source.name, limit=self._held_by)
            self._held_by = None
        full = result.taken >= self.source.batch_size
        self._schedule(0.0 if full else self.source.poll_interval)

    def _held(self, result: PollResult) -> None:
        """Rows were left pending for the account's limit: poll again when it allows more (at most in 10 min)."""
        limit = result.limit
        assert limit is not None
        if limit.kind != self._held_by:
            log.info("db_rows_held", source=self.source.name, account=self._account.name, limit=limit.kind,
                     held=result.held, retry_after=round(limit.retry_after, 1), reason=str(limit),
                     action="rows stay pending in the legacy table and are taken when the limit allows")
            self._held_by = limit.kind
        self._schedule(min(max(limit.retry_after, 0.05), 600.0))

    def _poll_failed(self, failure: Failure) -> None:
        error = failure.value
        assert error is not None
        self._backoff = min(max(self._backoff * 2, self.source.poll_interval), 60.0)
        if isinstance(error, (StoreUnavailable, ServiceUnavailable)):
            text = f"smsgw's store did not take the rows: {error}"
            action = "rows stay pending in the legacy table and are taken when the store is back"
            alarm = "store_unreachable"
        elif is_unreachable(error):
            text = short_error(error)
            action = "rows wait in the legacy table; polling again with back-off"
            alarm = "legacy_db_unreachable"
        else:
            text = short_error(error)
            action = ("check db_sources mapping (table, columns, select) against the table; "
                      "for the standard tables run `smsgw db init-interface --url URL`")
            alarm = "legacy_db_poll_failed"
        if text != self._last_error:
            log.error("alarm", alarm=alarm, source=self.source.name, error=text, action=action,
                      retry_in=self._backoff)
        self._last_error = text
        self._schedule(self._backoff)

    def poll_once(self) -> PollResult:
        """One claim round (on a pool thread): see the module docstring."""
        assert self.engine is not None
        out = PollResult()
        with self.engine.connect() as conn:
            with conn.begin():
                raw = self.statements.claim_rows(conn, self.source.batch_size)
                if not raw:
                    return out
                out.taken = len(raw)
                now = time.time()
                good: list[tuple[Any, str, PreparedMessage]] = []
                bad: list[tuple[Any, str]] = []
                for row in raw:
                    key = str(row.key)
                    try:
                        req = request(row.values, default_priority=self.source.priority,
                                      default_report=self.source.report)
                        prepared = self._validator.prepare_one(self._account, req, now, interface=self.kind)
                    except RowError as exc:
                        bad.append((row.key, str(exc)))
                        continue
                    if isinstance(prepared, list):
                        bad.append((row.key, _reasons(prepared)))
                    elif (over := self._account.over_daily_quota(len(prepared.to))) is not None:
                        bad.append((row.key, over))
                    else:
                        good.append((row.key, key, prepared))
                accepted, good = self._accept_what_fits(good, now, out, bad)
                ids = [a.id for a in accepted]
                stamp = local_time(now)
                self.statements.accepted.run(conn, [
                    {"key": key, "message_id": mid, "state": "accepted", "now": stamp, "node": self._node}
                    for (key, _, _), mid in zip(good, ids)])
                self.statements.rejected.run(conn, [
                    {"key": key, "message_id": None, "state": "rejected", "error": reason[:500], "now": stamp,
                     "node": self._node} for key, reason in bad])
        for key, reason in bad:
            log.warning("db_row_rejected", source=self.source.name, key=str(key), error=reason)
        return out

    def _accept_what_fits(self, good: list[tuple[Any, str, PreparedMessage]], now: float, out: PollResult,
                          bad: list[tuple[Any, str]]) -> tuple[list[AcceptedMessage],
                                                               list[tuple[Any, str, PreparedMessage]]]:
        """Accept the rows (on the pool thread); over a limit, the first rows that fit. Returns what was
        accepted and the rows it was accepted for; the rest stay pending (`out.held`, `out.limit`), but
        rows the gateway refused (a duplicate of a message sent shortly before) are added to `bad`."""
        rows = good
        dropped = 0  # rows the gateway refused: neither accepted nor pending
        accepted: list[AcceptedMessage]
        while rows:
            try:
                accepted = threads.blockingCallFromThread(self._reactor, self._accept, rows, now)
                break
            except RequestRejected as exc:
                refused = _refused(exc.problems, len(rows))
                bad.extend((rows[i][0], reason) for i, reason in refused.items())
                dropped += len(refused)
                rows = [row for i, row in enumerate(rows) if i not in refused]
            except LimitExceeded as exc:
                out.limit = exc
                fit, total = 0, 0
                for _, _, prepared in rows:
                    total += len(prepared.to)
                    if total > exc.allowed:
                        break
                    fit += 1
                # A second refusal (the allowance went to another interface meanwhile) holds them all.
                rows = rows[:fit] if fit < len(rows) else []
        else:
            accepted = []
        out.held = len(good) - dropped - len(rows)
        return accepted, rows

    def _accept(self, good: list[tuple[Any, str, PreparedMessage]],
                now: float) -> defer.Deferred[list[AcceptedMessage]]:
        st = self.statements
        notify = self.kind if st.submitted is not None or st.reported is not None else None
        d: defer.Deferred[list[AcceptedMessage]] = self._gateway.accept_prepared(
            self._account, self.kind, [p for _, _, p in good], now, notify=notify,
            sources=[(self.source.name, key) for _, key, _ in good])
        return d


def _reasons(problems: list[Problem]) -> str:
    return "; ".join(p.message for p in problems)


def _refused(problems: list[Problem], rows: int) -> dict[int, str]:
    """Row index -> the reasons, from the gateway's problems naming "[i]..." of the rows it was given.

    Raises:
        RequestRejected: a problem names no row (the poll fails and is retried, as any error).
    """
    out: dict[int, list[str]] = {}
    for p in problems:
        at = p.position()
        if at is None or at[0] >= rows:
            raise RequestRejected(problems)
        out.setdefault(at[0], []).append(p.message)
    return {i: "; ".join(reasons) for i, reasons in out.items()}


# --- write-back ------------------------------------------------------------------------------


@dataclass(slots=True)
class RowState:
    """What a legacy row should show now, computed from smsgw's store."""

    key: str
    message_id: int
    state: str
    complete: bool
    result: str | None = None
    msg_ids: list[str] = field(default_factory=list)
    stat: str | None = None
    error: str | None = None
    submitted_at: float | None = None
    done_at: float | None = None

    def values(self, node: str, now: float) -> dict[str, Any]:
        msg_ids = ",".join(self.msg_ids)
        if len(msg_ids) > 2000:
            msg_ids = msg_ids[:2001].rsplit(",", 1)[0]  # whole ids only
        return {"message_id": str(self.message_id), "state": self.state, "result": self.result,
                "msg_id": self.msg_ids[0] if self.msg_ids else None, "msg_ids": msg_ids or None,
                "stat": self.stat, "error": self.error[:500] if self.error else None,
                "submitted_at": local_time(self.submitted_at), "done_at": local_time(self.done_at),
                "now": local_time(now), "node": node}


def load_row_states(conn: Connection, source: str, message_ids: list[int]) -> dict[int, RowState]:
    """The current state of the legacy rows behind `message_ids` (a reader-thread query on smsgw's store)."""
    sr, r = schema.source_rows.c, schema.recipients.c
    keys: dict[int, str] = {}
    recips: dict[int, list[Any]] = defaultdict(list)
    attempts: dict[int, int] = {}
    for chunk in chunks(message_ids, 500):
        for key_row in conn.execute(select(sr.message_id, sr.row_key).where(sr.source == source,
                                                                           sr.message_id.in_(chunk))):
            keys[key_row.message_id] = key_row.row_key
        for row in conn.execute(select(r.id, r.message_id, r.state, r.stat, r.error, r.attempts, r.submitted_at,
                                       r.final_at).where(r.message_id.in_(chunk)).order_by(r.id)):
            recips[row.message_id].append(row)
            attempts[row.id] = row.attempts
    seg_ids = Store.current_msg_ids(conn, attempts)
    out = {}
    for mid, key in keys.items():
        rows = recips.get(mid, [])
        out[mid] = _aggregate(key, mid, rows, seg_ids)
    return out


def _aggregate(key: str, message_id: int, rows: list[Any], seg_ids: dict[int, list[str]]) -> RowState:
    states = [row.state for row in rows]
    complete = bool(rows) and all(st in FINAL for st in states)
    if complete:
        ok = [st for st in states if st in _OK_STATES]
        if len(ok) == len(states):
            state = "delivered" if "delivered" in states else "sent"
        elif ok:
            state = "partial"
        else:
            state = next(st for st in states if st not in _OK_STATES)
    elif rows and not any(st in _OPEN_STATES for st in states):
        state = "submitted"
    else:
        state = "accepted"
    submitted = [row.submitted_at for row in rows if row.submitted_at is not None]
    failed_at_submit = [row for row in rows if row.state == "failed"]
    result = (failed_at_submit[0].stat or "failed") if failed_at_submit else ("0" if submitted else None)
    bad = [row for row in rows if row.state in FINAL and row.state not in _OK_STATES]
    stat = None
    if complete:
        stats = [row.stat for row in rows if row.stat]
        stat = (bad[0].stat if bad and bad[0].stat else (stats[0] if stats else None))
    error = next((row.error for row in bad if row.error), None)
    finals = [row.final_at for row in rows if row.final_at is not None]
    return RowState(key, message_id, state, complete, result, [m for row in rows for m in seg_ids.get(row.id, [])],
                    stat, error, min(submitted) if submitted else None, max(finals) if complete and finals else None)


def load_mo(conn: Connection, mo_ids: list[int]) -> dict[int, dict[str, Any]]:
    """MO id -> the inbox values of the MO (a reader-thread query on smsgw's store)."""
    return {mo_id: {"mo_id": str(row.id), "mobile": row.src, "content": row.content, "dest": row.dest,
                    "ext": row.ext, "received_at": local_time(row.received_at)}
            for mo_id, row in Store.mo_rows(conn, mo_ids).items()}


class DbWriteback:
    """The outbox handler of one source: submitted / reported write-backs and MO into the inbox."""

    def __init__(self, source: DbSource) -> None:
        self._source = source

    def deliver(self, events: Sequence[OutboxEvent]) -> defer.Deferred[list[Outcome]]:
        src = self._source
        message_ids = sorted({e.message_id for e in events if e.message_id is not None and e.event != "mo"})
        mo_ids = sorted({int(e.data["mo_id"]) for e in events if e.event == "mo"})

        def load(conn: Connection) -> tuple[dict[int, RowState], dict[int, dict[str, Any]]]:
            return load_row_states(conn, src.source.name, message_ids), load_mo(conn, mo_ids)
        d: defer.Deferred[Any] = src._store.read(load)
        d.addCallback(lambda loaded: threads.deferToThreadPool(src._reactor, src._pool, self._write, list(events),
                                                               *loaded))
        return d

    def _plan(self, events: list[OutboxEvent], states: dict[int, RowState], mos: dict[int, dict[str, Any]],
              now: float) -> tuple[list[list[tuple[WriteBack, dict[str, Any]]]], list[Outcome]]:
        """Per event: the statements to run (with their values), or an outcome already known."""
        st = self._source.statements
        node = self._source._node
        plans: list[list[tuple[WriteBack, dict[str, Any]]]] = []
        outcomes: list[Outcome] = []
        for e in events:
            steps: list[tuple[WriteBack, dict[str, Any]]] = []
            outcome: Outcome = None
            if e.event == "mo":
                mo_id = str(e.data["mo_id"])
                mo = mos.get(int(mo_id))
                if st.inbox is None:
                    outcome = Refused("MO routed to this source, but it has no inbox (set inbox: or mo_inbox:)")
                elif mo is None:
                    outcome = Refused(f"MO {mo_id} is no longer in the store")
                else:
                    steps.append((st.inbox, {**mo, "now": local_time(now), "node": node}))
            else:
                state = states.get(e.message_id or 0)
                if state is None:
                    outcome = Refused(f"message {e.message_id} has no legacy row recorded")
                else:
                    values = {"key": st.key_value(state.key), **state.values(node, now)}
                    final_event = e.event == "recipient_final"
                    if st.submitted is not None and (not final_event or e.data.get("state") in (R.SENT, R.FAILED)):
                        steps.append((st.submitted, values))
                    # Whatever the event: a row that is complete gets its final columns in the same
                    # transaction that may show its final state (a submitted step carries the state).
                    if state.complete and st.reported is not None:
                        steps.append((st.reported, values))
            plans.append(steps)
            outcomes.append(outcome)
        return plans, outcomes

    def _write(self, events: list[OutboxEvent], states: dict[int, RowState],
               mos: dict[int, dict[str, Any]]) -> list[Outcome]:
        src = self._source
        assert src.engine is not None
        plans, outcomes = self._plan(events, states, mos, time.time())
        try:
            with src.engine.begin() as conn:
                self._run(conn, [step for plan in plans for step in plan])
            return outcomes
        except Exception as exc:
            if is_unreachable(exc):
                raise Unreachable(f"{src.source.name}: {short_error(exc)}") from exc
        # The database refused something: find which, each event in a transaction of its own.
        for i, plan in enumerate(plans):
            if not plan or outcomes[i] is not None:
                continue
            try:
                with src.engine.begin() as conn:
                    self._run(conn, plan)
            except Exception as exc:
                if is_unreachable(exc):
                    raise Unreachable(f"{src.source.name}: {short_error(exc)}") from exc
                outcomes[i] = Refused(short_error(exc))
        return outcomes

    def _run(self, conn: Connection, steps: list[tuple[WriteBack, dict[str, Any]]]) -> None:
        """Same statements together (executemany), in the order submitted, reported, inbox; each row once.

        A row that still looks new (its claim's commit failed after smsgw stored it, and the next
        poll has not come yet) first gets its accepted step here: taken, never sent twice.
        """
        st = self._source.statements
        grouped: dict[int, tuple[WriteBack, dict[Any, dict[str, Any]]]] = {}
        for wb, values in steps:
            ident = values.get("key", values.get("mo_id"))
            grouped.setdefault(id(wb), (wb, {}))[1][ident] = values
        rows_by_key = {values["key"]: values for wb, values in steps if wb is not st.inbox}
        untaken = st.still_pending(conn, list(rows_by_key))
        if untaken:
            st.accepted.run(conn, [{**rows_by_key[k], "state": "accepted"} for k in untaken])
            for k in untaken:
                log.info("db_row_reconciled", source=self._source.source.name, key=str(k),
                         message_id=rows_by_key[k]["message_id"],
                         reason="stored by smsgw, but the claim's commit did not reach the legacy database")
        for step in (st.submitted, st.reported, st.inbox):
            if step is None or id(step) not in grouped:
                continue
            wb = step
            rows = list(grouped[id(wb)][1].values())
            if wb is st.inbox:
                existing = st.inbox_existing(conn, [r["mo_id"] for r in rows])
                rows = [r for r in rows if r["mo_id"] not in existing]
            wb.run(conn, rows)
