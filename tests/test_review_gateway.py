"""The gateway's review path on a real store with a fake clock: held at accept, the time limit's outcome
(reject, approve, alarm) applied by the sweep, reviewers checked, and the origin told of rejections."""

from __future__ import annotations

import json
import pathlib
import tempfile
from typing import Any, MutableMapping

import structlog
from sqlalchemy import select
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from daemon_helpers import R, spin, wait_for
from smsgw.lifecycle import M, Review
from smsgw.model import Account, RequestRejected, SendRequest
from smsgw.pipeline import Gateway, Timing
from smsgw.review import ReviewPolicy, ReviewRule
from smsgw.store import ReviewQuery, Store, make_engine, migrations, schema
from smsgw.template_registry import TemplateRegistry
from smsgw.validation import Router, Validator

RULES = (
    ReviewRule("quick-reject", "review", accounts=("shop",), time_limit=60, on_expiry="reject"),
    ReviewRule("quick-approve", "review", accounts=("hr",), time_limit=60, on_expiry="approve"),
    ReviewRule("mass", "review", min_recipients=3, time_limit=60, on_expiry="alarm"),
)


class GatewayReviewTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="smsgw-review-"))
        url = f"sqlite:///{tmp}/store.db"
        engine = make_engine(url, writer=True)
        migrations.upgrade(engine)
        engine.dispose()
        self.store = Store(url, R, owner="n1")
        self.store.start()
        self.addCleanup(self.store.stop)
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.gateway = Gateway(self.store, Validator(), Router([], "cmcc"), {}, {}, self.clock, node="n1",
                               timing=Timing(sweep_interval=5.0),
                               templates=TemplateRegistry(self.store, self.clock),
                               notify={"shop": "db:shop"},
                               review=ReviewPolicy(RULES), reviewers=["li"])
        self.logs: list[dict[str, Any]] = []
        self.addCleanup(structlog.configure, **structlog.get_config())
        structlog.configure(processors=[self._capture])

    def _capture(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        self.logs.append(dict(event))
        raise structlog.DropEvent

    async def start(self) -> None:
        await self.gateway.start()
        self.addCleanup(lambda: defer.ensureDeferred(self._stop()))

    async def _stop(self) -> None:
        await self.gateway.stop()

    async def run_clock(self, seconds: int) -> None:
        """Let `seconds` of fake time pass a second at a time, giving the store's thread time to answer."""
        for _ in range(seconds):
            self.clock.advance(1)
            await spin(0.02)

    def rows(self, table: Any, *where: Any) -> list[Any]:
        with self.store.engine.connect() as conn:
            return list(conn.execute(select(table).where(*where)))

    async def send(self, account: str, *to: str) -> str:
        (accepted,) = await self.gateway.accept(Account(account), "rest", [SendRequest(to=to, text="通知")])
        return accepted.id

    async def test_time_limits_reject_approve_or_alarm(self) -> None:
        await self.start()
        rejected = await self.send("shop", "13800000001")
        approved = await self.send("hr", "13800000002")
        alarmed = await self.send("ops", "13800000003", "13800000004", "13800000005")
        passed = await self.send("ops", "13800000006")
        m = schema.messages.c
        assert {row.id: row.review for row in self.rows(schema.messages)} == {
            int(rejected): Review.PENDING, int(approved): Review.PENDING, int(alarmed): Review.PENDING,
            int(passed): Review.PASSED}

        await self.run_clock(58)  # sweeps every 5 s, all before the limit
        assert {row.review for row in self.rows(schema.messages)} == {Review.PENDING, Review.PASSED}
        await self.run_clock(10)  # past it
        (shop,) = self.rows(schema.messages, m.id == int(rejected))
        assert (shop.state, shop.reviewed_by, shop.review_comment) == (M.COMPLETED, "expiry",
                                                                      "review time limit ran out")
        (event,) = self.rows(schema.outbox, schema.outbox.c.message_id == int(rejected))
        assert json.loads(event.payload)["state"] == "rejected"  # the origin is told, like any final state
        r = schema.recipients.c
        assert [x.state for x in self.rows(schema.recipients, r.message_id == int(approved))] == ["queued"]
        await wait_for(lambda: any(e.get("alarm") == "review_overdue" for e in self.logs), what="the alarm")
        alarm = next(e for e in self.logs if e.get("alarm") == "review_overdue")
        assert (alarm["message_id"], alarm["rule"]) == (alarmed, "mass")
        (waiting,) = self.rows(schema.messages, m.id == int(alarmed))
        assert (waiting.review, waiting.review_deadline) == (Review.PENDING, None)  # still waits, alarmed once
        await self.run_clock(10)
        assert sum(1 for e in self.logs if e["event"] == "review_expired") == 2
        assert sum(1 for e in self.logs if e.get("alarm") == "review_overdue") == 1

    async def test_only_configured_reviewers_act(self) -> None:
        await self.start()
        held = await self.send("shop", "13800000001")
        query = ReviewQuery(message_ids=(int(held),))
        try:
            await self.gateway.review_act("mallory", "approve", query)
        except RequestRejected as exc:
            assert exc.problems[0].code == "unknown_reviewer" and "review.reviewers" in exc.problems[0].message
        else:
            raise AssertionError("an unknown reviewer acted")
        result = await self.gateway.review_act("li", "reject", query, "不合规")
        assert result.messages == (int(held),) and result.recipients == 1
        page = await self.gateway.review_list(ReviewQuery(review=(Review.REJECTED,)))
        assert [(i.id, i.reviewed_by, i.comment, i.rule) for i in page.items] == [
            (int(held), "li", "不合规", "quick-reject")]
        (audit,) = self.rows(schema.audit_log)
        assert (audit.actor, audit.action) == ("li", "review_reject")

    async def test_cancel_is_limited_to_the_senders_own_messages(self) -> None:
        await self.start()
        held = await self.send("shop", "13800000001")
        query = ReviewQuery(message_ids=(int(held),))
        nothing = await self.gateway.cancel(Account("hr"), query)
        assert nothing.messages == ()
        mine = await self.gateway.cancel(Account("shop"), query, "不发了")
        assert mine.messages == (int(held),) and mine.recipients == 1
        (row,) = self.rows(schema.messages)
        assert (row.review, row.state) == (Review.CANCELLED, M.COMPLETED)
        (audit,) = self.rows(schema.audit_log)
        assert (audit.actor, audit.action) == ("shop", "message_cancel")
