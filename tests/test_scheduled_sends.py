"""Scheduled sends and quiet hours in the store and the running daemon (docs/scheduling.md).

The store's due-time index is the schedule: a message waits as recipients whose
due_at lies ahead, quiet hours move that due_at, and in a quiet period the
dispatchers claim only urgent recipients. A restart changes none of it.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import Engine
from structlog.testing import capture_logs

from daemon_helpers import ApiClient, DaemonCase, make_config, rows, spin, start_daemon, stop_daemon, wait_for
from dbs import reset, server_url
from smsgw.model import PRIORITY_BULK, PRIORITY_NORMAL, PRIORITY_URGENT
from smsgw.store import ClaimArgs, IdGenerator, NewMessage, ReviewQuery, dialect_of, make_engine
from smsgw.store._ops import Ops
from smsgw.validation import PreparedMessage

NOW = 1_800_000_000.0


# --- the claim in a quiet period ------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    # A database of its own on the servers: other test modules reset the shared one.
    url = f"sqlite:///{tmp_path}/store.db" if request.param == "sqlite" else server_url(request.param,
                                                                                          "smsgw_test_schedule")
    eng = make_engine(url, writer=True)
    reset(eng)
    yield eng
    eng.dispose()


def test_a_claim_with_min_priority_leaves_lower_priorities_queued(engine: Engine) -> None:
    """In a quiet period the claim takes only urgent recipients; the others stay queued for later."""
    ops = Ops(dialect_of(str(engine.url)), IdGenerator(1))
    for phone, priority in (("13800000001", PRIORITY_BULK), ("13800000002", PRIORITY_URGENT),
                            ("13800000003", PRIORITY_NORMAL)):
        message = PreparedMessage((phone,), (), "hi", 1, 0, priority, None, "", None, True)
        with engine.begin() as conn:
            ops.accept(conn, [[NewMessage(ops.ids.next(), "a", "rest", message, ["cmcc"], ops.ids.many(1), NOW)]])

    def claim(min_priority: int) -> list[str]:
        with engine.begin() as conn:
            [claimed] = ops.claim(conn, [ClaimArgs("cmcc", "a", 10, NOW, "n1", NOW + 60, min_priority)])
        return [c.phone for c in claimed]

    assert claim(PRIORITY_URGENT) == ["13800000002"]
    assert claim(PRIORITY_URGENT) == []
    assert claim(0) == ["13800000003", "13800000001"]


# --- through the daemon -----------------------------------------------------------------------------

def quiet_now(minutes: int = 60) -> str:
    """A UTC quiet range from `minutes` ago to `minutes` ahead (over midnight when it must)."""
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=minutes), now + dt.timedelta(minutes=minutes)
    return f"{start:%H:%M}-{end:%H:%M}"


def schedule(**extra: Any) -> dict[str, Any]:
    return {"schedule": {"timezone": "UTC", "quiet_hours": [quiet_now()], **extra}}


class ScheduledSendTests(DaemonCase):
    tmp_prefix = "smsgw-schedule-"

    async def test_quiet_hours_defer_a_bulk_message_but_not_an_urgent_one(self) -> None:
        """In quiet hours a bulk message is due at their end (logged as deferred_to); an urgent one goes now."""
        config = make_config(self.tmp, schedule())
        with capture_logs() as logs:
            daemon = await self.daemon(config)
            api = ApiClient.for_daemon(daemon)
            [bulk] = await api.send({"to": ["13800138000"], "text": "newsletter", "priority": "bulk"})
            [urgent] = await api.send({"to": ["13800138001"], "text": "code 1234", "priority": "urgent"})
            await wait_for(lambda: rows(config, "SELECT state FROM recipients WHERE message_id = ?",
                                        int(urgent)) == [("delivered",)], what="the urgent message delivered")
            await spin(0.5)
        [(created, due, state)] = rows(config, "SELECT m.created_at, r.due_at, r.state FROM messages m "
                                               "JOIN recipients r ON r.message_id = m.id WHERE m.id = ?", int(bulk))
        assert state == "queued" and due == daemon.window.next_allowed(created) > created + 60
        accepted = {e["message_id"]: e for e in logs if e["event"] == "message_accepted"}
        assert accepted[bulk]["deferred_to"] == due and accepted[urgent]["deferred_to"] is None

    async def test_a_backlog_waits_when_a_quiet_period_starts(self) -> None:
        """Bulk recipients queued before quiet hours (the link was down) are not sent in them; urgent ones are."""
        config = make_config(self.tmp, embedded_simulator=False)
        daemon = await start_daemon(config)  # no carrier: the messages stay queued
        api = ApiClient.for_daemon(daemon)
        [bulk] = await api.send({"to": ["13800138000"], "text": "newsletter", "priority": "bulk"})
        await stop_daemon(daemon)
        config = make_config(self.tmp, schedule(), embedded_simulator=False)
        self.simulator(config)
        with capture_logs() as logs:
            api = ApiClient.for_daemon(await self.daemon(config))
            [urgent] = await api.send({"to": ["13800138001"], "text": "code 1234", "priority": "urgent"})
            await wait_for(lambda: rows(config, "SELECT state FROM recipients WHERE message_id = ?",
                                        int(urgent)) == [("delivered",)], what="the urgent message delivered")
            await spin(1.5)  # more than the dispatcher's idle poll
        assert rows(config, "SELECT state, attempts FROM recipients WHERE message_id = ?", int(bulk)) == [("queued", 0)]
        [started] = [e for e in logs if e["event"] == "quiet_period_started"]
        assert started["reason"] == "quiet hours" and started["until"] > time.time()

    async def test_a_scheduled_message_survives_a_restart_and_goes_at_its_time(self) -> None:
        """A message with send_at a moment ahead, accepted before a stop, is delivered after the restart, not early."""
        config = make_config(self.tmp)
        daemon = await start_daemon(config)
        send_at = round(time.time() + 2.0, 3)
        [mid] = await ApiClient.for_daemon(daemon).send({"to": ["13800138000"], "text": "at two", "send_at": send_at})
        await stop_daemon(daemon)
        assert rows(config, "SELECT state, due_at FROM recipients WHERE message_id = ?", int(mid)) == [
            ("queued", send_at)]
        await self.daemon(config)
        await wait_for(lambda: rows(config, "SELECT state FROM recipients WHERE message_id = ?", int(mid)) == [
            ("delivered",)], what="the scheduled message delivered")
        [(submitted,)] = rows(config, "SELECT submitted_at FROM recipients WHERE message_id = ?", int(mid))
        assert submitted >= send_at

    async def test_an_approved_message_in_quiet_hours_waits_for_their_end(self) -> None:
        """Approval places a held message like acceptance does: a normal one after the quiet hours, urgent now."""
        config = make_config(self.tmp, {**schedule(), "review": {
            "rules": [{"name": "everything", "action": "review"}], "reviewers": [{"name": "zhang"}]}})
        daemon = await self.daemon(config)
        api = ApiClient.for_daemon(daemon)
        [normal] = await api.send({"to": ["13800138000"], "text": "notice"})
        [urgent] = await api.send({"to": ["13800138001"], "text": "code 1234", "priority": "urgent"})
        result = await daemon.gateway.review_act("zhang", "approve",
                                                 ReviewQuery(message_ids=(int(normal), int(urgent))))
        assert sorted(result.messages) == sorted((int(normal), int(urgent)))
        [(approved_at,)] = rows(config, "SELECT reviewed_at FROM messages WHERE id = ?", int(normal))
        [(state, due)] = rows(config, "SELECT state, due_at FROM recipients WHERE message_id = ?", int(normal))
        assert state == "queued" and due == daemon.window.next_allowed(approved_at) > approved_at + 60
        await wait_for(lambda: rows(config, "SELECT state FROM recipients WHERE message_id = ?",
                                    int(urgent)) == [("delivered",)], what="the urgent message delivered")
