"""Dispatch: claim due recipients from the store and hand them to one carrier link.

One `Dispatcher` per link. It keeps the link busy but not flooded: it claims
(leases) at most `target` recipients ahead of the link's answers, in priority
order, and shares each claim round fairly between the origins (accounts) that
have queued work, so one account's 100,000-recipient batch cannot starve a
verification code from another. A link with no live connection claims
nothing: its queue waits in the store (checked once a second, no requeue loop).

Outcomes go back to the store: every segment's Msg_Id, or a retry with
exponential back-off for transient failures (timeouts, Result 8, link down),
or a final failure with the carrier's code and meaning.
"""

from __future__ import annotations

import structlog
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from smsgw.carrier import (
    CarrierLink,
    LinkDown,
    OutboundMessage,
    SubmitError,
    SubmitInvalid,
    SubmitRejected,
    SubmitResult,
    SubmitTimedOut,
)
from smsgw.protocol.cmpp import RESULT_FLOW_CONTROL, msg_id_to_text, submit_result_text
from smsgw.schedule import SendWindow
from smsgw.store import Claimed, ClaimArgs, FailedArgs, SegmentIds, Store, SubmittedArgs

log = structlog.get_logger("smsgw.dispatch")

IDLE_POLL = 1.0  # seconds between looks at an idle or down link's queue (scheduled sends become due)


class Dispatcher:
    """Feeds one link from the store."""

    def __init__(self, link: CarrierLink, store: Store, clock: IReactorTime, *, claim_batch: int,
                 max_attempts: int, retry_initial: float, retry_max: float, lease_seconds: float,
                 window: SendWindow | None = None) -> None:
        self.link = link
        self.name = link.config.name
        self._store = store
        self._clock = clock
        self._claim_batch = claim_batch
        self._max_attempts = max_attempts
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._lease = lease_seconds
        # Quiet hours and holidays: in a quiet period only urgent recipients are claimed, so a backlog
        # queued before it (or waiting for a link) waits for its end too.
        self._window = window if window is not None and not window.empty else None
        self._quiet = False
        cfg = link.config
        # Enough claimed ahead to keep every window full while the next claim commits.
        self.target = max(claim_batch, cfg.window * cfg.connections * 4)
        self.inflight = 0
        self._origins: dict[str, bool] = {}  # account -> may have work (False: last claim found none)
        self._claiming = False
        self._running = False
        self._timer: IDelayedCall | None = None
        self._drained: defer.Deferred[None] | None = None
        self.submitted = 0
        self.failed = 0

    # --- control -------------------------------------------------------------------

    def start(self, origins: list[str]) -> None:
        self._running = True
        for origin in origins:
            self._origins[origin] = True
        self.pump()

    def stop(self) -> defer.Deferred[None]:
        """Stop claiming; fires once everything handed to the link has an outcome."""
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.inflight == 0 and not self._claiming:
            return defer.succeed(None)
        self._drained = defer.Deferred()
        return self._drained

    def wake(self, origin: str) -> None:
        """New work for `origin` (accepted, requeued, or found by the store's origin scan)."""
        self._origins[origin] = True
        if self._running and not self._claiming:
            self.pump()

    # --- claiming ----------------------------------------------------------------

    def pump(self) -> None:
        if not self._running or self._claiming:
            return
        if self.link.live_connections == 0:
            self._poll_later()  # hold the queue while the link is down
            return
        room = self.target - self.inflight
        active = [origin for origin, maybe in self._origins.items() if maybe]
        if room < max(1, self._claim_batch // 4) or not active:
            if not active:
                self._poll_later()
            return
        share = max(1, min(self._claim_batch, room) // len(active))
        now = self._clock.seconds()
        min_priority = self._min_priority(now)
        self._claiming = True
        claims = [self._store.write("claim", ClaimArgs(self.name, origin, share, now, self._store.owner,
                                                       now + self._lease, min_priority)) for origin in active]
        d = defer.gatherResults(claims, consumeErrors=True)
        d.addCallbacks(lambda results: self._claimed(active, share, results), self._claim_failed)

    def _min_priority(self, now: float) -> int:
        """0, or in a quiet period the urgent priority; logs when a quiet period starts and ends."""
        if self._window is None:
            return 0
        quiet = self._window.is_quiet(now)
        if quiet != self._quiet:
            self._quiet = quiet
            if quiet:
                log.info("quiet_period_started", link=self.name, until=self._window.next_allowed(now),
                         reason=self._window.describe(now),
                         action=f"only priorities {self._window.urgent_priority} and up go until then")
            else:
                log.info("quiet_period_ended", link=self.name)
        return self._window.urgent_priority if quiet else 0

    def _claimed(self, origins: list[str], share: int, results: list[list[Claimed]]) -> None:
        self._claiming = False
        batch: list[Claimed] = []
        for origin, claimed in zip(origins, results):
            if len(claimed) < share:
                self._origins[origin] = False
            batch.extend(claimed)
        batch.sort(key=lambda c: -c.priority)  # stable: each origin's own order is kept
        for item in batch:
            self._send(item)
        if not self._running:
            self._check_drained()
            return
        if any(self._origins.values()):
            self._clock.callLater(0, self.pump)
        else:
            self._poll_later()

    def _claim_failed(self, failure: Failure) -> None:
        self._claiming = False
        log.error("alarm", alarm="claim_failed", link=self.name, error=failure.getErrorMessage(),
                  action="retrying in 1s")
        self._poll_later()
        self._check_drained()

    def _poll_later(self) -> None:
        if self._running and (self._timer is None or not self._timer.active()):
            self._timer = self._clock.callLater(IDLE_POLL, self._poll)

    def _poll(self) -> None:
        self._timer = None
        for origin in self._origins:
            self._origins[origin] = True  # scheduled sends and retries become due with time
        self.pump()

    # --- sending and outcomes ------------------------------------------------------------

    def _send(self, item: Claimed) -> None:
        self.inflight += 1
        message = OutboundMessage(to=(item.phone,), text=item.content, ext=item.ext, report=item.report,
                                  msg_fmt=item.msg_fmt)
        d = self.link.submit(message)
        d.addCallbacks(self._sent, self._not_sent, callbackArgs=(item,), errbackArgs=(item,))

    def _sent(self, result: SubmitResult, item: Claimed) -> None:
        now = self._clock.seconds()
        segments = [SegmentIds(s.pk_number, s.pk_total, s.msg_id_text) for s in result.segments]
        self._store.write("submitted", SubmittedArgs(item.recipient_id, item.attempt, segments, item.report, now))
        for seg in segments:
            log.info("segment_submitted", link=self.name, message_id=str(item.message_id), to=item.phone,
                     segment=seg.number, of=seg.total, msg_id=seg.msg_id, attempt=item.attempt)
        self.submitted += 1
        self._settled()

    def _not_sent(self, failure: Failure, item: Claimed) -> None:
        error = failure.value
        if not isinstance(error, SubmitError):
            log.error("submit_crashed", link=self.name, message_id=str(item.message_id),
                      error=failure.getErrorMessage())
            error = SubmitError(f"internal error: {failure.getErrorMessage()}")
        now = self._clock.seconds()
        code, reason, transient = classify(error)
        accepted = [SegmentIds(s.pk_number, s.pk_total, msg_id_to_text(s.msg_id)) for s in error.accepted]
        retry_at = None
        if isinstance(error, LinkDown) and not error.sent and not error.accepted:
            # It never left us (link stopping, or no room in time): no attempt was used up.
            retry_at = now + self._retry_initial
        elif transient and item.attempt < self._max_attempts:
            retry_at = now + min(self._retry_max, self._retry_initial * 2 ** (item.attempt - 1))
        self._store.write("failed", FailedArgs(item.recipient_id, item.attempt, reason, code, retry_at,
                                               accepted, now))
        if retry_at is None:
            self.failed += 1
            log.warning("message_failed", link=self.name, message_id=str(item.message_id), to=item.phone,
                        code=code, reason=reason, attempt=item.attempt, account=item.account)
        else:
            log.info("submit_retry", link=self.name, message_id=str(item.message_id), to=item.phone,
                     code=code, reason=reason, attempt=item.attempt, retry_in=round(retry_at - now, 1))
        self._settled()

    def _settled(self) -> None:
        self.inflight -= 1
        if self._running:
            if not self._claiming and self.inflight <= self.target - max(1, self._claim_batch // 4):
                self.pump()
        else:
            self._check_drained()

    def _check_drained(self) -> None:
        if self._drained is not None and self.inflight == 0 and not self._claiming:
            d, self._drained = self._drained, None
            d.callback(None)


def classify(error: SubmitError) -> tuple[str | None, str, bool]:
    """(code, readable reason, transient?) for a failed submit."""
    if isinstance(error, SubmitRejected):
        code = f"R{error.result}"
        reason = f"carrier result {error.result}: {submit_result_text(error.result)}"
        return code, reason, error.result == RESULT_FLOW_CONTROL
    if isinstance(error, SubmitInvalid):
        return "INVALID", str(error), False
    if isinstance(error, SubmitTimedOut):
        return "TIMEOUT", str(error), True
    if isinstance(error, LinkDown):
        return "LINKDOWN", str(error), True
    return None, str(error), True

