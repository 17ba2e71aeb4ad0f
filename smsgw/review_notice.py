"""SMS notices to reviewers when held messages arrive (review.notify; docs/scheduling.md).

`ReviewNotifier` listens on `Gateway.on_held`. When something is held it sends
each reviewer with phones one SMS saying how much is waiting, through the same
gateway (interface ``review_notice``, urgent priority, never held for review:
`smsgw.review.UNREVIEWED_INTERFACES`). Two rules space the notices out:

- at most one per `interval`: what arrives meanwhile is remembered, and one
  notice goes when the interval is over;
- only inside `hours`: outside them the notice waits for the next window.

A notice that waited says what is waiting when it goes (the store is asked
then), and goes not at all if nothing is waiting any more. All reviewers are
told about every arrival, so one timer serves them all; each gets their own
message (one per reviewer, to all their phones).

What is in memory is only when the last notice went and the timer of the next:
after a restart, anything still waiting is announced once (as an arrival).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import structlog
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from smsgw.lifecycle import Review
from smsgw.model import PRIORITY_URGENT, Account, AcceptedMessage, SendRequest
from smsgw.review import NOTICE_INTERFACE
from smsgw.schedule import SendWindow, parse_range
from smsgw.store import ReviewPage, ReviewQuery

if TYPE_CHECKING:
    from smsgw.config import Config

__all__ = ["INTERFACE", "NoticeGateway", "NoticeSettings", "ReviewNotifier", "notice_settings"]

log = structlog.get_logger("smsgw.review_notice")

#: The interface notices are accepted through (never held: smsgw.review.UNREVIEWED_INTERFACES).
INTERFACE = NOTICE_INTERFACE
_PENDING = ReviewQuery(review=(Review.PENDING,))


class NoticeGateway(Protocol):
    """What the notifier needs of `smsgw.pipeline.Gateway`."""

    on_held: list[Callable[[], None]]

    def accept(self, account: Account, interface: str,
               requests: Sequence[SendRequest]) -> defer.Deferred[list[AcceptedMessage]]: ...

    def review_list(self, query: ReviewQuery, offset: int = 0, limit: int = 50) -> defer.Deferred[ReviewPage]: ...


@dataclass(frozen=True, slots=True)
class NoticeSettings:
    """review.notify and the reviewers with phones."""

    reviewers: tuple[tuple[str, tuple[str, ...]], ...]  # (name, phones); reviewers without phones left out
    window: SendWindow  # when notices may go (SendWindow.open_between(notify.hours))
    interval: float  # seconds: at most one notice per reviewer per interval
    account: Account  # the sender recorded
    text: str  # with {messages}, {recipients}, {oldest}


def notice_settings(config: Config) -> NoticeSettings | None:
    """The notifier's settings from review.notify (hours in schedule.timezone), or None: no notices
    (disabled, or no reviewer has a phone)."""
    notify = config.review.notify
    reviewers = tuple((r.name, tuple(r.phones)) for r in config.review.reviewers if r.phones)
    if not notify.enabled or not reviewers:
        return None
    start, end = parse_range(notify.hours)
    return NoticeSettings(reviewers, SendWindow.open_between(start, end, config.schedule.tz()), notify.interval,
                          Account(name=notify.account), notify.text)


class ReviewNotifier:
    """Tells reviewers by SMS that held messages are waiting (see the module docstring)."""

    def __init__(self, gateway: NoticeGateway, clock: IReactorTime, settings: NoticeSettings) -> None:
        self._gateway = gateway
        self._clock = clock
        self.settings = settings
        self._running = False
        self._last: float | None = None  # when the last notice went
        self._timer: IDelayedCall | None = None
        self._sending = False
        self._again = False  # something arrived (or a send failed) while a notice was under way
        self.sent = 0  # notices sent (one per reviewer)

    def start(self) -> defer.Deferred[None]:
        """Listen for held messages; announce what was already waiting (fires once that is decided)."""
        self._running = True
        self._gateway.on_held.append(self.held)
        d = self._gateway.review_list(_PENDING, 0, 1)

        def found(page: ReviewPage) -> None:
            if page.total:
                log.info("review_notice_pending_at_start", messages=page.total, recipients=page.recipients)
                self._arrived()
        return d.addCallbacks(found, self._read_failed)

    def stop(self) -> None:
        """Stop listening and cancel a waiting notice (what is held stays in the store)."""
        self._running = False
        if self.held in self._gateway.on_held:
            self._gateway.on_held.remove(self.held)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def held(self) -> None:
        """`Gateway.on_held`: messages were just held for review."""
        self._arrived()

    # --- when ----------------------------------------------------------------------

    def _arrived(self) -> None:
        if not self._running:
            return
        if self._sending:
            self._again = True
            return
        if self._timer is not None and self._timer.active():
            return  # the waiting notice will count this arrival too
        now = self._clock.seconds()
        earliest = now if self._last is None else max(now, self._last + self.settings.interval)
        when = self.settings.window.next_allowed(earliest)
        if when <= now:
            self._send()
            return
        self._timer = self._clock.callLater(when - now, self._fire)
        reason = "outside review.notify.hours" if when > earliest else "one notice per review.notify.interval"
        log.info("review_notice_deferred", until=when, wait=round(when - now, 1), reason=reason)

    def _fire(self) -> None:
        self._timer = None
        if self._running:
            self._send()

    # --- what ---------------------------------------------------------------------

    def _send(self) -> None:
        self._sending = True
        started = self._clock.seconds()
        d = self._gateway.review_list(_PENDING, 0, 1)
        d.addCallback(self._compose, started)
        d.addErrback(self._failed)
        d.addBoth(self._done)

    def _compose(self, page: ReviewPage, started: float) -> Any:
        if not self._running:  # stopping: the gateway takes nothing more
            return None
        if not page.total:
            log.info("review_notice_skipped", reason="nothing is waiting for review any more")
            return None
        text = self.settings.text.format(messages=page.total, recipients=page.recipients, oldest=self._oldest(page))
        requests = [SendRequest(to=phones, text=text, priority=PRIORITY_URGENT)
                    for _, phones in self.settings.reviewers]
        d = self._gateway.accept(self.settings.account, INTERFACE, requests)
        return d.addCallback(self._sent, page, started)

    def _oldest(self, page: ReviewPage) -> str:
        """When the oldest waiting message arrived, local to the notice hours' zone."""
        if not page.items:
            return ""
        return dt.datetime.fromtimestamp(page.items[0].created_at, self.settings.window.tz).strftime("%m-%d %H:%M")

    def _sent(self, accepted: list[AcceptedMessage], page: ReviewPage, started: float) -> None:
        self._last = started
        for (name, phones), message in zip(self.settings.reviewers, accepted):
            self.sent += 1
            if message.held:  # ReviewPolicy exempts the interface: this would be a bug
                log.error("alarm", alarm="review_notice_held", message_id=message.id, reviewer=name,
                          action="approve it (smsgw review) and report the bug")
            log.info("review_notice_sent", reviewer=name, phones=list(phones), message_id=message.id,
                     messages=page.total, recipients=page.recipients)

    def _failed(self, failure: Failure) -> None:
        log.error("alarm", alarm="review_notice_failed", error=failure.getErrorMessage(),
                  action="trying again after review.notify.interval")
        self._last = self._clock.seconds()
        self._again = True

    def _done(self, _: object) -> None:
        self._sending = False
        if self._again:
            self._again = False
            self._arrived()

    def _read_failed(self, failure: Failure) -> None:
        log.error("alarm", alarm="review_notice_failed", error=failure.getErrorMessage(),
                  action="announced with the next held message")
