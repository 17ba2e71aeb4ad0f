"""SMS notices to reviewers (smsgw.review_notice): timing on a fake clock, then through a running daemon."""

from __future__ import annotations

import datetime as dt
import inspect
import pathlib
from typing import Callable, Sequence
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs
from twisted.internet import defer
from twisted.internet.task import Clock

from daemon_helpers import ApiClient, DaemonCase, count, make_config, rows, spin, wait_for
from smsgw.model import PRIORITY_URGENT, Account, AcceptedMessage, SendRequest, ServiceUnavailable
from smsgw.pipeline import Gateway
from smsgw.review_notice import NoticeSettings, ReviewNotifier, notice_settings
from smsgw.schedule import SendWindow
from smsgw.store import ReviewItem, ReviewPage, ReviewQuery

SHANGHAI = ZoneInfo("Asia/Shanghai")
TEXT = "{messages} messages ({recipients} recipients) waiting since {oldest}"


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp()


class FakeGateway:
    """The two calls the notifier makes, answered from `pending` (total messages, total recipients)."""

    def __init__(self) -> None:
        self.on_held: list[Callable[[], None]] = []
        self.pending = (0, 0)
        self.oldest = at("2026-10-08 09:15")
        self.sent: list[tuple[Account, str, list[SendRequest]]] = []
        self.fail: Exception | None = None
        self.answer: defer.Deferred[None] | None = None  # set: accept waits for the test to fire it

    def accept(self, account: Account, interface: str,
               requests: Sequence[SendRequest]) -> defer.Deferred[list[AcceptedMessage]]:
        if self.fail is not None:
            return defer.fail(self.fail)
        self.sent.append((account, interface, list(requests)))
        accepted = [AcceptedMessage(str(100 + len(self.sent) * 10 + i), None, len(r.to), 1)
                    for i, r in enumerate(requests)]
        if self.answer is not None:
            return self.answer.addCallback(lambda _: accepted)
        return defer.succeed(accepted)

    def review_list(self, query: ReviewQuery, offset: int = 0, limit: int = 50) -> defer.Deferred[ReviewPage]:
        assert query.review == ("pending",) and limit >= 1
        messages, recipients = self.pending
        items = (ReviewItem(1, "demo", "rest", None, None, "x", None, 1, (), 5, None, self.oldest, "pending_review",
                            "pending", "all", None, None, None, None),) if messages else ()
        return defer.succeed(ReviewPage(items, messages, offset, limit, recipients))

    def texts(self) -> list[str]:
        return [r.text for _, _, requests in self.sent for r in requests]


@pytest.mark.parametrize("name", ["accept", "review_list"])
def test_fake_gateway_signatures_match_the_real_one(name: str) -> None:
    """The fake answers the same calls as smsgw.pipeline.Gateway, with the same parameters."""
    real = inspect.signature(getattr(Gateway, name)).parameters
    fake = inspect.signature(getattr(FakeGateway, name)).parameters
    assert list(real) == list(fake) and [p.default for p in real.values()] == [p.default for p in fake.values()]


def notifier(start: str = "2026-10-08 10:00", hours: tuple[int, int] = (480, 1200),
             interval: float = 1800.0) -> tuple[ReviewNotifier, FakeGateway, Clock]:
    clock, gateway = Clock(), FakeGateway()
    clock.advance(at(start))
    settings = NoticeSettings((("zhang", ("13900000001", "13900000002")), ("li", ("13900000003",))),
                              SendWindow.open_between(*hours, tz=SHANGHAI), interval, Account("review_notice"), TEXT)
    n = ReviewNotifier(gateway, clock, settings)
    n.start()
    return n, gateway, clock


def arrive(gateway: FakeGateway, messages: int, recipients: int) -> None:
    """Messages are held: the store now has that many more pending, and the gateway tells its listeners."""
    total, people = gateway.pending
    gateway.pending = (total + messages, people + recipients)
    for listener in gateway.on_held:
        listener()


def test_held_messages_send_each_reviewer_one_urgent_notice_at_once() -> None:
    """Within the hours a notice goes at once: one message per reviewer to all their phones, urgent, unreviewed."""
    n, gateway, clock = notifier()
    with capture_logs() as logs:
        arrive(gateway, 2, 300)
    [(account, interface, requests)] = gateway.sent
    assert account == Account("review_notice") and interface == "review_notice"
    assert [(r.to, r.priority) for r in requests] == [(("13900000001", "13900000002"), PRIORITY_URGENT),
                                                      (("13900000003",), PRIORITY_URGENT)]
    assert gateway.texts() == ["2 messages (300 recipients) waiting since 10-08 09:15"] * 2
    assert [(e["event"], e["reviewer"], e["messages"]) for e in logs] == [
        ("review_notice_sent", "zhang", 2), ("review_notice_sent", "li", 2)]
    n.stop()
    assert clock.getDelayedCalls() == []


def test_arrivals_within_the_interval_make_one_notice_when_it_is_over() -> None:
    """A second and third arrival within the interval send nothing then, and one notice with the totals after it."""
    n, gateway, clock = notifier(interval=1800.0)
    arrive(gateway, 1, 10)
    clock.advance(600)
    with capture_logs() as logs:
        arrive(gateway, 1, 5)
        clock.advance(600)
        arrive(gateway, 3, 30)
    assert len(gateway.sent) == 1
    assert [(e["event"], e["until"], e["reason"]) for e in logs] == [
        ("review_notice_deferred", at("2026-10-08 10:30"), "one notice per review.notify.interval")]
    clock.advance(599)
    assert len(gateway.sent) == 1
    clock.advance(1)
    assert len(gateway.sent) == 2 and gateway.texts()[-1] == "5 messages (45 recipients) waiting since 10-08 09:15"
    n.stop()
    assert clock.getDelayedCalls() == []


def test_outside_the_hours_the_notice_waits_for_the_window() -> None:
    """An arrival at 22:00 is announced at 08:00 the next morning, with what is waiting then."""
    n, gateway, clock = notifier(start="2026-10-08 22:00")
    with capture_logs() as logs:
        arrive(gateway, 1, 1)
        clock.advance(3600)
        arrive(gateway, 1, 1)
    assert gateway.sent == []
    assert [(e["event"], e["until"], e["reason"]) for e in logs] == [
        ("review_notice_deferred", at("2026-10-09 08:00"), "outside review.notify.hours")]
    clock.advance(at("2026-10-09 08:00") - clock.seconds())
    assert gateway.texts() == ["2 messages (2 recipients) waiting since 10-08 09:15"] * 2
    n.stop()


def test_the_interval_ending_outside_the_hours_waits_for_the_window_too() -> None:
    """After a notice at 19:50, an arrival at 19:55 is announced at 08:00, not at 20:20."""
    n, gateway, clock = notifier(start="2026-10-08 19:50")
    arrive(gateway, 1, 1)
    clock.advance(300)
    arrive(gateway, 1, 1)
    assert [c.getTime() for c in clock.getDelayedCalls()] == [at("2026-10-09 08:00")]
    n.stop()


def test_a_deferred_notice_is_dropped_when_nothing_waits_any_more() -> None:
    """If the reviewers dealt with everything before the notice was due, no notice goes."""
    n, gateway, clock = notifier(start="2026-10-08 22:00")
    arrive(gateway, 1, 1)
    gateway.pending = (0, 0)  # approved meanwhile (e.g. smsgw review approve at night)
    with capture_logs() as logs:
        clock.advance(at("2026-10-09 08:00") - clock.seconds())
    assert gateway.sent == []
    assert [e["event"] for e in logs] == ["review_notice_skipped"]
    arrive(gateway, 1, 1)  # the next arrival is not held back by a notice that never went
    assert len(gateway.sent) == 1
    n.stop()


def test_what_waits_at_start_is_announced_once() -> None:
    """Held messages left from before a restart make one notice when the notifier starts."""
    clock, gateway = Clock(), FakeGateway()
    clock.advance(at("2026-10-08 10:00"))
    gateway.pending = (4, 40)
    settings = NoticeSettings((("zhang", ("13900000001",)),), SendWindow.open_between(0, 1440, tz=SHANGHAI),
                              60.0, Account("review_notice"), "{messages}")
    n = ReviewNotifier(gateway, clock, settings)
    n.start()
    assert gateway.texts() == ["4"]
    n.stop()


def test_a_failed_notice_raises_an_alarm_and_is_tried_again_after_the_interval() -> None:
    """The gateway refusing the notice is an alarm; the fact that something waits is kept and retried."""
    n, gateway, clock = notifier(interval=600.0)
    gateway.fail = ServiceUnavailable("the gateway is not accepting messages (starting or draining)")
    with capture_logs() as logs:
        arrive(gateway, 1, 1)
    assert [(e["event"], e["alarm"]) for e in logs if e["event"] == "alarm"] == [("alarm", "review_notice_failed")]
    gateway.fail = None
    clock.advance(600)
    assert len(gateway.sent) == 1
    n.stop()


def test_an_arrival_while_a_notice_is_being_sent_waits_for_the_next_interval() -> None:
    """Held messages arriving while the notice is being accepted are announced once, an interval later."""
    n, gateway, clock = notifier(interval=600.0)
    gateway.answer = defer.Deferred()
    arrive(gateway, 1, 1)
    arrive(gateway, 1, 1)
    assert len(gateway.sent) == 1 and clock.getDelayedCalls() == []
    answer, gateway.answer = gateway.answer, None
    answer.callback(None)
    [call] = clock.getDelayedCalls()
    assert call.getTime() == at("2026-10-08 10:10")
    clock.advance(600)
    assert len(gateway.sent) == 2
    n.stop()


def test_stop_cancels_a_waiting_notice_and_stops_listening() -> None:
    """After stop no timer is left and held messages are no longer heard of."""
    n, gateway, clock = notifier(start="2026-10-08 22:00")
    arrive(gateway, 1, 1)
    n.stop()
    assert clock.getDelayedCalls() == [] and gateway.on_held == []
    clock.advance(86400)
    assert gateway.sent == []


# --- through the daemon -----------------------------------------------------------------------------

REVIEWERS = [{"name": "zhang", "phones": ["13900000001", "13900000002"]},
             {"name": "li", "phones": ["13900000003"]}, {"name": "wang"}]


class ReviewNoticeDaemonTests(DaemonCase):
    tmp_prefix = "smsgw-notice-"

    async def test_held_messages_notify_every_reviewer_phone_by_sms_that_is_never_held(self) -> None:
        """With a rule holding everything, a held message makes one notice per reviewer, sent and delivered."""
        config = make_config(self.tmp, {"review": {
            "rules": [{"name": "everything", "action": "review"}], "reviewers": REVIEWERS,
            "notify": {"hours": "00:00-24:00", "text": "{messages} waiting ({recipients} recipients)"}}},
            embedded_simulator=False)
        sim = self.simulator(config)
        with capture_logs() as logs:
            api = ApiClient.for_daemon(await self.daemon(config))
            [held] = await api.send({"to": ["13800138000", "13800138001"], "text": "mass notice"})
            await wait_for(lambda: count(config, "recipients", "state = 'delivered'") == 3, what="notices delivered")
            await api.send({"to": ["13800138002"], "text": "another"})  # within notify.interval: no notice
            await spin(0.5)
        notices = rows(config, "SELECT m.account, m.interface, m.priority, m.review, m.content, r.phone, r.state "
                               "FROM messages m JOIN recipients r ON r.message_id = m.id "
                               "WHERE m.interface = 'review_notice' ORDER BY r.phone")
        assert notices == [("review_notice", "review_notice", PRIORITY_URGENT, "passed",
                            "1 waiting (2 recipients)", phone, "delivered")
                           for phone in ("13900000001", "13900000002", "13900000003")]
        assert rows(config, "SELECT state FROM recipients WHERE message_id = ?", int(held)) == [("held",)] * 2
        assert sim.stats.submits == 3
        sent = [(e["reviewer"], e["phones"]) for e in logs if e["event"] == "review_notice_sent"]
        assert sent == [("zhang", ["13900000001", "13900000002"]), ("li", ["13900000003"])]
        assert [e["reason"] for e in logs if e["event"] == "review_notice_deferred"] == [
            "one notice per review.notify.interval"]


def test_no_notifier_without_phones_or_when_disabled(tmp_path: pathlib.Path) -> None:
    """Reviewers without phones, or notify.enabled false, mean no notices; otherwise hours are in schedule's zone."""
    rule = [{"name": "everything", "action": "review"}]
    assert notice_settings(make_config(tmp_path, {"review": {"rules": rule, "reviewers": [{"name": "wang"}]}})) is None
    off = {"review": {"rules": rule, "reviewers": REVIEWERS, "notify": {"enabled": False}}}
    assert notice_settings(make_config(tmp_path, off)) is None
    on = {"review": {"rules": rule, "reviewers": REVIEWERS}, "schedule": {"timezone": "Asia/Shanghai"}}
    settings = notice_settings(make_config(tmp_path, on))
    assert settings is not None and settings.reviewers == (("zhang", ("13900000001", "13900000002")),
                                                           ("li", ("13900000003",)))
    assert settings.window.tz == SHANGHAI and settings.interval == 1800.0
    assert settings.window.next_allowed(at("2026-10-08 20:00")) == at("2026-10-09 08:00")
