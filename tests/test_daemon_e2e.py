"""The whole daemon over loopback: REST API in, CMPP to the ISMG simulator out, reports and MO back.

Real parts only: `Daemon` on the real reactor, TCP on 127.0.0.1, SQLite under a
temporary directory, HTTP requests with urllib (on a reactor thread). Timings
come from `daemon_helpers.FAST` (reports after 0.05 s, sweeps every 0.2 s,
retries from 0.1 s) so the module runs in well under a minute and a half.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from structlog.testing import capture_logs

from daemon_helpers import (
    DaemonCase,
    ApiClient,
    account,
    count,
    make_config,
    numbers,
    recipient_states,
    rows,
    spin,
    start_daemon,
    stop_daemon,
    wait_for,
)
from smsgw.lifecycle import FINAL
from smsgw.simulator import _MO_TEXTS, FAIL_STATS

LONG_CHINESE = ("【市民服务】尊敬的市民您好，您预约的社保卡补办业务已受理完成，新卡已制作完毕，"
                "请于本月三十日前携带本人有效身份证件原件前往所选网点领取。逾期未领取的，卡片将退回制卡中心，"
                "届时需重新预约。如有疑问请拨打服务热线咨询，我们将竭诚为您服务。感谢您对我们工作的理解与支持。"
                "祝您生活愉快，工作顺利，身体健康，万事如意。此短信为系统自动发送，请勿直接回复，谢谢配合！"
                "详情请登录市民服务网站查询办理进度，或关注官方公众号。")[:200]


class E2eCase(DaemonCase):
    tmp_prefix = "smsgw-e2e-"

    async def final_view(self, api: ApiClient, message_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """GET the message until every recipient is in a final state; return that view."""
        latest: dict[str, Any] = {}

        async def poll() -> bool:
            status, body = await api.get(f"/api/v1/messages/{message_id}")
            assert status == 200, (status, body)
            latest.clear()
            latest.update(body)
            return all(r["state"] in FINAL for r in body["recipients"])

        deadline = time.monotonic() + timeout
        while not await poll():
            if time.monotonic() > deadline:
                raise AssertionError(f"message {message_id} not final after {timeout:g}s: {latest}")
            await spin(0.05)
        return latest


def events(logs: Sequence[Mapping[str, Any]], name: str, **match: Any) -> list[Mapping[str, Any]]:
    """The captured log lines of event `name` whose fields include `match`."""
    return [e for e in logs if e["event"] == name and all(e.get(k) == v for k, v in match.items())]


class SendAndReportTests(E2eCase):
    async def test_message_to_two_recipients_is_delivered_and_shown(self) -> None:
        """A message to two recipients is accepted, submitted, reported DELIVRD and shown with Msg_Id and Stat."""
        config = make_config(self.tmp)
        with capture_logs() as logs:
            daemon = await self.daemon(config)
            api = ApiClient.for_daemon(daemon)
            status, body = await api.post("/api/v1/messages", {"to": ["13800138000", "13900139000"],
                                                               "text": "您的验证码是 123456", "ref": "order-1"})
            assert status == 202, body
            [accepted] = body["messages"]
            assert (accepted["recipients"], accepted["segments"], accepted["ref"]) == (2, 1, "order-1")
            view = await self.final_view(api, accepted["id"])
        assert view["state"] == "completed"
        by_phone = {r["to"]: r for r in view["recipients"]}
        assert set(by_phone) == {"13800138000", "13900139000"}
        submitted = {e["to"]: e["msg_id"] for e in events(logs, "segment_submitted", message_id=accepted["id"])}
        reported = {e["msg_id"]: e["stat"] for e in events(logs, "report_received", message_id=accepted["id"])}
        for phone, r in by_phone.items():
            assert (r["state"], r["stat"], r["link"], r["attempts"]) == ("delivered", "DELIVRD", "sim", 1)
            [seg] = r["segments"]
            assert (seg["number"], seg["total"], seg["state"], seg["stat"]) == (1, 1, "delivered", "DELIVRD")
            assert seg["msg_id"] == submitted[phone] and len(seg["msg_id"]) == 16
            assert reported[seg["msg_id"]] == "DELIVRD"
        assert len(events(logs, "message_accepted", message_id=accepted["id"], recipients=2)) == 1
        finals = events(logs, "recipient_final", message_id=accepted["id"])
        assert sorted((e["to"], e["state"]) for e in finals) == [("13800138000", "delivered"),
                                                                   ("13900139000", "delivered")]

    async def test_long_chinese_message_is_delivered_once_every_segment_is_reported(self) -> None:
        """A 200-character Chinese text goes out as three segments, and its recipient closes on the third report."""
        assert len(LONG_CHINESE) == 200
        config = make_config(self.tmp)
        with capture_logs() as logs:
            api = ApiClient.for_daemon(await self.daemon(config))
            [mid] = await api.send({"to": "13800138000", "text": LONG_CHINESE})
            view = await self.final_view(api, mid)
        [r] = view["recipients"]
        assert r["state"] == "delivered"
        assert [(s["number"], s["total"], s["state"]) for s in r["segments"]] == [
            (1, 3, "delivered"), (2, 3, "delivered"), (3, 3, "delivered")]
        msg_ids = [s["msg_id"] for s in r["segments"]]
        assert len(set(msg_ids)) == 3
        # The log shows the order: three reports, and the recipient final only after the last.
        mine = [e for e in logs if e.get("message_id") == mid and e["event"] in ("report_received", "recipient_final")]
        assert [e["event"] for e in mine] == ["report_received"] * 3 + ["recipient_final"]
        assert {e["msg_id"] for e in mine[:3]} == set(msg_ids)
        [(reported, segments)] = rows(config, "SELECT reported, segments FROM recipients")
        assert reported == segments == 3

    async def test_failure_reports_make_recipients_undeliverable(self) -> None:
        """With every report failing, recipients end undeliverable with the simulator's Stat."""
        config = make_config(self.tmp, {"simulator": {"fail_ratio": 1.0}})
        api = ApiClient.for_daemon(await self.daemon(config))
        [mid] = await api.send({"to": numbers(3), "text": "您的快递已到"})
        view = await self.final_view(api, mid)
        for r in view["recipients"]:
            [seg] = r["segments"]
            assert r["state"] == "undeliverable" and seg["state"] == "undeliverable"
            assert r["stat"] == seg["stat"] and seg["stat"] in FAIL_STATS
        assert view["state"] == "completed"

    async def test_a_recipient_without_a_report_expires_and_a_late_report_still_delivers_it(self) -> None:
        """With no report within report_timeout the recipient expires; the report arriving later delivers it."""
        config = make_config(self.tmp, {"simulator": {"report_delay": 1.5}, "dispatch": {"report_timeout": 0.3}})
        with capture_logs() as logs:
            api = ApiClient.for_daemon(await self.daemon(config))
            [mid] = await api.send({"to": "13800138000", "text": "迟到的状态报告"})
            await wait_for(lambda: recipient_states(config) == {"expired": 1}, what="the recipient to expire")
            assert rows(config, "SELECT state, open_recipients FROM messages") == [("completed", 0)]
            await wait_for(lambda: recipient_states(config) == {"delivered": 1}, what="the late report")
        assert [e["event"] for e in logs if e["event"] in ("recipient_expired", "recipient_final")] == [
            "recipient_expired", "recipient_final"]
        # The message was completed once: the late report does not count the recipient again.
        assert rows(config, "SELECT state, open_recipients FROM messages") == [("completed", 0)]
        view = await self.final_view(api, mid)
        assert (view["recipients"][0]["state"], view["recipients"][0]["stat"]) == ("delivered", "DELIVRD")

    async def test_invalid_requests_are_refused_with_every_problem_and_nothing_stored(self) -> None:
        """Bad numbers and empty text get 422 listing every problem, and no row is written."""
        config = make_config(self.tmp)
        api = ApiClient.for_daemon(await self.daemon(config))
        status, body = await api.post("/api/v1/messages", {"to": ["12345", "1380013800x", "13800138000"],
                                                           "text": "  "})
        assert status == 422, body
        assert body["error"]["code"] == "validation_failed"
        assert {d["where"] for d in body["error"]["details"]} == {"to[0]", "to[1]", "text"}
        # A batch is all or nothing: the valid first message is not stored either.
        status, body = await api.post("/api/v1/messages", [{"to": "13800138000", "text": "好"},
                                                           {"to": ["99"], "text": ""}])
        assert status == 422, body
        assert {d["where"] for d in body["error"]["details"]} == {"[1].to[0]", "[1].text"}
        assert count(config, "messages") == count(config, "recipients") == 0


class MoTests(E2eCase):
    async def test_mo_is_routed_stored_paged_and_auto_answered(self) -> None:
        """MO lands in mo_messages with its consumer, long ones whole, pages by cursor, and TD gets an auto-reply."""
        service_code = "1069000100"
        config = make_config(self.tmp, {"mo": {
            "routes": [{"consumer": "helpdesk", "keyword": "查询"}, {"consumer": "demo", "ext": "01"}],
            "auto_replies": [{"keyword": "TD", "text": "您已退订。"}],
        }}, embedded_simulator=False)
        daemon = await self.daemon(config)
        # The simulator picks its MO texts at random from _MO_TEXTS (it includes "TD" and "查询").
        sim = self.simulator(config, mo_rate=25.0, mo_long_ratio=0.3, mo_dest=service_code + "01")
        auto = ("SELECT m.id, r.phone, r.state FROM messages m JOIN recipients r ON r.message_id = m.id "
                "WHERE m.interface = 'auto_reply'")

        def enough() -> bool:
            kinds = rows(config, "SELECT keyword, parts FROM mo_messages")
            return (len(kinds) >= 15 and any(p > 1 for _, p in kinds) and ("查询", 1) in kinds
                    and any(state == "delivered" for _, _, state in rows(config, auto)))
        await wait_for(enough, what="15 MO including a long one, a 查询 and a delivered auto-reply")
        await sim.stopService()
        await spin(0.2)  # the last MO's commit and auto-reply accept

        stored = rows(config, "SELECT id, src, dest, ext, content, keyword, consumer, parts, complete "
                              "FROM mo_messages ORDER BY id")
        for _, _, dest, ext, content, keyword, consumer, parts, complete in stored:
            assert (dest, ext, complete) == (service_code + "01", "01", 1)
            assert content in _MO_TEXTS  # long ones reassembled: never a fragment
            assert parts == (2 if content == _MO_TEXTS[-1] else 1)
            assert consumer == ("helpdesk" if keyword == "查询" else "demo")
        td_sources = {src for _, src, _, _, content, *_ in stored if content == "TD"}
        assert td_sources and {phone for _, phone, _ in rows(config, auto)} == td_sources
        assert rows(config, "SELECT DISTINCT content, account FROM messages") == [("您已退订。", "auto_reply")]

        api = ApiClient.for_daemon(daemon)
        seen: list[dict[str, Any]] = []
        cursor = ""
        while True:
            status, page = await api.get(f"/api/v1/mo?limit=4{cursor}")
            assert status == 200, page
            if not page["items"]:
                assert page["next_cursor"] == (seen[-1]["id"] if seen else None)
                break
            seen.extend(page["items"])
            cursor = f"&cursor={page['next_cursor']}"
        assert [m["id"] for m in seen] == [str(row[0]) for row in stored if row[6] == "demo"]
        assert {m["consumer"] for m in seen} == {"demo"}
        assert any(m["text"] == _MO_TEXTS[-1] and m["parts"] == 2 and m["complete"] for m in seen)


class FlowAndLinkTests(E2eCase):
    async def test_flow_control_answers_are_retried_until_everything_is_delivered(self) -> None:
        """Against a simulator limited to 40 submits/s, 200 messages all end delivered after Result 8 retries."""
        config = make_config(self.tmp, {"simulator": {"flow_limit": 40},
                                        "dispatch": {"max_attempts": 50, "retry_initial": 0.05, "retry_max": 0.5}})
        daemon = await self.daemon(config)
        api = ApiClient.for_daemon(daemon)
        await api.send([{"to": n, "text": f"第{i}条通知"} for i, n in enumerate(numbers(200))])
        await wait_for(lambda: recipient_states(config) == {"delivered": 200}, timeout=30,
                       what="200 recipients delivered")
        assert daemon.simulator is not None and daemon.simulator.stats.flow_rejects > 0
        # Result 8 is retried (by the session, then the dispatcher) until answered with a Msg_Id:
        # the ISMG accepted each message exactly once.
        assert daemon.simulator.stats.segments == count(config, "segments", "state = 'delivered'") == 200

    async def test_dropped_connections_lose_no_message(self) -> None:
        """A simulator that drops the connection every 25 submits still gets every message delivered."""
        config = make_config(self.tmp, embedded_simulator=False)
        daemon = await self.daemon(config)
        sim = self.simulator(config, drop_every=25)
        await wait_for(lambda: daemon.links["sim"].live_connections == 1, what="the link to log in")
        api = ApiClient.for_daemon(daemon)
        await api.send([{"to": n, "text": "您的账单已出"} for n in numbers(150)])
        await wait_for(lambda: recipient_states(config) == {"delivered": 150}, timeout=30,
                       what="150 recipients delivered")
        assert sim.stats.drops >= 3
        # Submits written but unanswered when a connection drops are sent again (at-least-once):
        # a carrier that had already taken one would deliver it twice (the ISMG then counts more
        # segments than recipients). This simulator closes without reading them, so the resends
        # here are not duplicates; what it does repeat are the reports lost with a connection,
        # and those close nothing twice.
        duplicates = sim.stats.segments - 150
        assert duplicates == count(config, "segments") - 150 <= count(config, "recipients", "attempts > 1")
        assert duplicates == 0
        await wait_for(lambda: sim.stats.reports_acked >= 150, what="the last DELIVER_RESPs to reach the simulator")
        assert count(config, "reports") >= 150
        assert count(config, "segments", "state = 'delivered'") == 150

    async def test_a_down_link_holds_the_queue_until_the_carrier_answers(self) -> None:
        """With nothing listening at the carrier's port, messages stay queued without busy claiming, then go out."""
        config = make_config(self.tmp, embedded_simulator=False)
        daemon = await self.daemon(config)
        api = ApiClient.for_daemon(daemon)
        await api.send([{"to": n, "text": "排队测试"} for n in numbers(20)])
        ops, cpu = daemon.store.writer.ops, time.process_time()
        await spin(2.0)
        assert recipient_states(config) == {"queued": 20}
        assert count(config, "recipients", "attempts > 0") == 0  # never claimed
        # Sweeps run every 0.2 s (about 10 writes); a claim loop would make thousands.
        assert daemon.store.writer.ops - ops < 40
        assert time.process_time() - cpu < 1.0
        self.simulator(config)
        await wait_for(lambda: recipient_states(config) == {"delivered": 20}, what="20 recipients delivered")

    async def test_scheduled_message_waits_for_its_time(self) -> None:
        """A message with send_at 2 s ahead is not submitted before then, and is right after."""
        config = make_config(self.tmp)
        api = ApiClient.for_daemon(await self.daemon(config))
        send_at = time.time() + 2.0
        [mid] = await api.send({"to": "13800138000", "text": "定时提醒", "send_at": send_at})
        while time.time() < send_at - 0.1:
            assert count(config, "recipients", "state = 'queued' AND attempts = 0") == 1
            assert count(config, "segments") == 0
            await spin(0.1)
        view = await self.final_view(api, mid, timeout=10)
        assert view["recipients"][0]["state"] == "delivered"
        [(submitted_at,)] = rows(config, "SELECT submitted_at FROM segments")
        assert send_at <= submitted_at < send_at + 3.0


class PriorityTests(E2eCase):
    async def test_urgent_messages_overtake_a_queued_bulk_batch(self) -> None:
        """5 urgent messages from account B queued behind 500 bulk ones from A are submitted among the first."""
        config = make_config(self.tmp, {"accounts": [account("demo", "demo-key"), account("b", "b-key")]},
                             embedded_simulator=False)
        daemon = await self.daemon(config)
        a, b = ApiClient.for_daemon(daemon, "demo-key"), ApiClient.for_daemon(daemon, "b-key")
        await a.send({"to": numbers(500), "text": "促销活动通知", "priority": 0})
        urgent = numbers(5, prefix="139")
        await b.send([{"to": n, "text": "验证码 4321", "priority": 9} for n in urgent])
        assert recipient_states(config) == {"queued": 505}
        self.simulator(config)
        await wait_for(lambda: recipient_states(config) == {"delivered": 505}, timeout=30, what="505 delivered")
        order = [phone for (phone,) in rows(config, "SELECT r.phone FROM segments s JOIN recipients r "
                                                    "ON r.id = s.recipient_id ORDER BY s.submitted_at, s.id")]
        ranks = sorted(order.index(n) for n in urgent)
        assert ranks[-1] < 16, f"urgent recipients submitted at positions {ranks} of 505"


class StopAndStatusTests(E2eCase):
    timeout = 90

    async def test_graceful_stop_loses_no_recipient(self) -> None:
        """Stopping during traffic leaves work queued or submitted, and a second start finishes all of it."""
        # Small claims: at 100 submits/s most of the 300 are still queued (not leased) when the stop comes.
        config = make_config(self.tmp, {"dispatch": {"claim_batch": 20}}, carrier={"rate_limit": 100},
                             embedded_simulator=False)
        sim = self.simulator(config)
        first = await start_daemon(config)
        api = ApiClient.for_daemon(first)
        for i in range(3):
            await api.send({"to": numbers(100, start=100 * i), "text": f"第{i}批"})
        await wait_for(lambda: count(config, "segments") >= 50, what="50 submitted")
        with capture_logs() as stopping:
            await stop_daemon(first)
        assert [e["event"] for e in stopping if e["event"].startswith("daemon_")] == ["daemon_stopping",
                                                                                      "daemon_stopped"]
        left = recipient_states(config)
        assert sum(left.values()) == 300
        assert set(left) <= {"queued", "dispatching", "submitted", "delivered"}, left
        assert left.get("queued", 0) > 0, "stopped too late to leave anything queued"
        assert sum(d.inflight for d in first.dispatchers.values()) == 0

        second = await self.daemon(config)
        await wait_for(lambda: recipient_states(config) == {"delivered": 300}, timeout=30,
                       what="all 300 recipients delivered after the restart")
        assert second.links["sim"].live_connections == 1
        # A report is acknowledged after it is committed: the last acks may trail the store by a moment.
        await wait_for(lambda: sim.stats.reports_acked >= 300, what="every report acknowledged")

    async def test_stop_without_drain_requeues_in_flight_work_on_the_next_start(self) -> None:
        """Stopping with no time to drain loses nothing: the next start requeues and finishes what was left."""
        config = make_config(self.tmp, {"shutdown": {"drain_timeout": 0}},
                             carrier={"rate_limit": 100}, embedded_simulator=False)
        sim = self.simulator(config)
        first = await start_daemon(config)
        await ApiClient.for_daemon(first).send({"to": numbers(200), "text": "不等待停止"})
        await wait_for(lambda: count(config, "segments") >= 20, what="20 submitted")
        await stop_daemon(first)
        left = recipient_states(config)
        assert sum(left.values()) == 200
        assert set(left) <= {"queued", "dispatching", "submitted", "delivered"}, left
        with capture_logs() as logs:
            await self.daemon(config)
            await wait_for(lambda: recipient_states(config) == {"delivered": 200}, timeout=30,
                           what="all 200 recipients delivered after the restart")
        # The links settle what they hold as they stop (answered, or failed and requeued), so
        # usually nothing is left leased; whatever is, the second start requeues and says so.
        requeued = sum(e["count"] for e in events(logs, "inflight_requeued"))
        assert requeued == left.get("dispatching", 0)
        await wait_for(lambda: sim.stats.reports_acked >= 200, what="every report acknowledged")

    async def test_status_shows_the_link_and_queue_depths(self) -> None:
        """GET /api/v1/status shows the link down with the queue, then up with the queue empty."""
        config = make_config(self.tmp, embedded_simulator=False)
        daemon = await self.daemon(config)
        api = ApiClient.for_daemon(daemon)
        await api.send({"to": numbers(7), "text": "状态页测试"})
        status, body = await api.get("/api/v1/status")
        assert status == 200, body
        [link] = body["links"]
        assert (link["name"], link["state"], link["live_connections"]) == ("sim", "down", 0)
        assert body["queues"] == {"held": 0, "queued": 7, "dispatching": 0, "submitted": 0}
        assert body["accepting"] is True
        self.simulator(config)
        await wait_for(lambda: recipient_states(config) == {"delivered": 7}, what="7 delivered")
        status, body = await api.get("/api/v1/status")
        [link] = body["links"]
        assert (link["state"], link["live_connections"]) == ("up", 1)
        assert body["queues"] == {"held": 0, "queued": 0, "dispatching": 0, "submitted": 0}
