"""Delivering the durable outbox: notifications owed to the systems messages came from.

The store inserts an outbox event in the same transaction as the state change
it reports (a recipient submitted or final, an MO routed to a consumer), so
nothing owed is lost. `OutboxWorker` leases due events per kind, oldest
first, hands each batch to the kind's handler (a legacy database's
write-back, later HTTP callbacks) and records the outcome:

- done;
- unreachable (the receiver is down): the whole kind pauses with a growing
  back-off and an alarm line, the events wait without using up attempts, and
  they go out in their original order once the receiver is back;
- refused (the receiver is up but rejects this one event): retried with
  back-off until `retry_for` seconds after the event was created, then dead,
  with an alarm line. Other events keep going.

At-least-once: an event whose outcome was not recorded (the daemon died) is
leased again when its lease runs out, or at once when this node restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import structlog
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from smsgw.store import OutboxClaimArgs, OutboxDone, OutboxEvent, Store

log = structlog.get_logger("smsgw.outbox")


class Unreachable(Exception):
    """The receiver cannot be reached at all: pause the kind, keep the events."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The receiver refused one event (its reason in words)."""

    error: str


Outcome = Refused | None  # None: done


class OutboxHandler(Protocol):
    def deliver(self, events: Sequence[OutboxEvent]) -> defer.Deferred[list[Outcome]]:
        """Deliver the events (same kind, oldest first); one outcome each, or fail with Unreachable."""


@dataclass(slots=True)
class _Kind:
    name: str
    handler: OutboxHandler
    retry_for: float
    busy: bool = False
    paused_until: float = 0.0
    pause: float = 0.0  # current back-off while unreachable (0: reachable)
    timer: IDelayedCall | None = None
    delivered: int = 0


class OutboxWorker:
    """Leases and delivers outbox events for the kinds it has handlers for."""

    def __init__(self, store: Store, clock: Any, *, owner: str, batch: int = 500, interval: float = 0.5,
                 lease_seconds: float = 60.0, retry_initial: float = 5.0, retry_max: float = 600.0,
                 pause_max: float = 60.0) -> None:
        self._store = store
        self._clock = clock
        self._owner = owner
        self._batch = batch
        self._interval = interval
        self._lease = lease_seconds
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._pause_max = pause_max
        self._kinds: dict[str, _Kind] = {}
        self._running = False
        self._inflight: set[defer.Deferred[None]] = set()

    def add(self, kind: str, handler: OutboxHandler, *, retry_for: float) -> None:
        self._kinds[kind] = _Kind(kind, handler, retry_for)

    def delivered(self, kind: str) -> int:
        return self._kinds[kind].delivered

    def start(self) -> None:
        self._running = True
        for kind in self._kinds.values():
            self._schedule(kind, 0.0)

    def stop(self) -> defer.Deferred[Any]:
        """Stop leasing; fires when the deliveries under way have their outcomes recorded."""
        self._running = False
        for kind in self._kinds.values():
            if kind.timer is not None and kind.timer.active():
                kind.timer.cancel()
            kind.timer = None
        return defer.DeferredList(list(self._inflight), consumeErrors=True)

    # --- the loop per kind ---------------------------------------------------------

    def _schedule(self, kind: _Kind, delay: float) -> None:
        if not self._running:
            return
        if kind.timer is not None and kind.timer.active():
            if delay >= kind.timer.getTime() - self._clock.seconds():
                return
            kind.timer.cancel()
        kind.timer = self._clock.callLater(delay, self._round, kind)

    def _round(self, kind: _Kind) -> None:
        kind.timer = None
        if kind.busy or not self._running:
            return
        kind.busy = True
        now = self._clock.seconds()
        d = self._store.write("outbox_claim", OutboxClaimArgs((kind.name,), self._batch, now, self._owner,
                                                              now + self._lease))
        d.addCallback(self._deliver, kind)
        d.addErrback(self._round_failed, kind)
        d.addBoth(self._round_done, kind)
        self._inflight.add(d)

        def finished(result: None) -> None:
            self._inflight.discard(d)
        d.addBoth(finished)

    def _deliver(self, events: list[OutboxEvent], kind: _Kind) -> Any:
        if not events:
            return 0
        d = defer.maybeDeferred(kind.handler.deliver, events)
        d.addCallbacks(self._record, self._unreachable, callbackArgs=(events, kind), errbackArgs=(events, kind))
        return d

    def _record(self, outcomes: list[Outcome], events: list[OutboxEvent], kind: _Kind) -> Any:
        now = self._clock.seconds()
        if kind.pause:
            log.info("receiver_recovered", kind=kind.name, waited_events=len(events))
            kind.pause = 0.0
        done = []
        for event, outcome in zip(events, outcomes):
            if outcome is None:
                done.append(OutboxDone(event.id, now))
                continue
            give_up = now - event.created_at >= kind.retry_for
            retry_at = None if give_up else now + min(self._retry_initial * 2 ** event.attempts, self._retry_max)
            if give_up:
                log.error("alarm", alarm="notification_dead", kind=kind.name, outbox_event=event.event,
                          outbox_id=str(event.id), error=outcome.error, attempts=event.attempts + 1,
                          action=f"refused for {kind.retry_for:g}s: given up; the store keeps it as dead")
            else:
                log.warning("outbox_refused", kind=kind.name, outbox_event=event.event, outbox_id=str(event.id),
                            error=outcome.error, attempts=event.attempts + 1, retry_at=retry_at)
            done.append(OutboxDone(event.id, now, outcome.error, retry_at))
        kind.delivered += sum(1 for o in outcomes if o is None)
        d = self._store.write_many("outbox_done", done)
        return d.addCallback(lambda _: len(events))

    def _unreachable(self, failure: Failure, events: list[OutboxEvent], kind: _Kind) -> Any:
        now = self._clock.seconds()
        error = failure.getErrorMessage() if failure.check(Unreachable) else repr(failure.value)
        first = kind.pause == 0.0
        kind.pause = min(max(kind.pause * 2, 1.0), self._pause_max)
        kind.paused_until = now + kind.pause
        if first:
            log.error("alarm", alarm="receiver_unreachable", kind=kind.name, waiting_events=len(events),
                      error=error, action="notifications wait in the store and go out in order when it is back")
        else:
            log.warning("receiver_still_unreachable", kind=kind.name, error=error, retry_in=kind.pause)
        done = [OutboxDone(e.id, now, error, kind.paused_until, count=False) for e in events]
        d = self._store.write_many("outbox_done", done)
        return d.addCallback(lambda _: 0)

    def _round_failed(self, failure: Failure, kind: _Kind) -> int:
        log.error("alarm", alarm="outbox_round_failed", kind=kind.name, error=failure.getErrorMessage())
        kind.paused_until = self._clock.seconds() + self._interval
        return 0

    def _round_done(self, delivered: Any, kind: _Kind) -> None:
        kind.busy = False
        full = delivered >= self._batch  # an int: the events delivered, 0 after _round_failed
        wait = max(kind.paused_until - self._clock.seconds(), 0.0)
        self._schedule(kind, wait if wait else (0.0 if full else self._interval))
