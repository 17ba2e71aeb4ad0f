"""HTTP callbacks over loopback: the real daemon pushes delivery reports and MO to a real HTTP receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import pathlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

from structlog.testing import capture_logs
from twisted.internet.interfaces import IListeningPort
from twisted.web import resource, server

from daemon_helpers import (
    DaemonCase,
    R,
    ApiClient,
    account,
    count,
    make_config,
    rows,
    spin,
    start_simulator,
    wait_for,
    write_config,
)
from ports import free_port
from smsgw.callbacks import kannel_url, signature, wanted
from smsgw.config import Config, check_config
from smsgw.model import RequestRejected, SendRequest
from smsgw.store import OutboxEvent


class Receiver(resource.Resource):
    """Records every request; answers `status` (a list: one per request, the last repeats)."""

    isLeaf = True

    def __init__(self, statuses: list[int] | None = None) -> None:
        super().__init__()
        self.statuses = statuses or [200]
        self.requests: list[dict[str, Any]] = []

    def render(self, request: Any) -> bytes:
        body = request.content.read()
        self.requests.append({"method": request.method.decode(), "uri": request.uri.decode(), "body": body,
                              "headers": {k.decode().lower(): v[0].decode()
                                          for k, v in request.requestHeaders.getAllRawHeaders()}})
        request.setResponseCode(self.statuses[min(len(self.requests) - 1, len(self.statuses) - 1)])
        return b"ok"

    def json_bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests if r["method"] == "POST"]


class CallbackCase(DaemonCase):
    tmp_prefix = "smsgw-cb-"

    def listen(self, receiver: Receiver, port: int = 0) -> IListeningPort:
        listening: IListeningPort = R.listenTCP(port, server.Site(receiver), interface="127.0.0.1")
        self.addCleanup(lambda: listening.stopListening() if listening.connected else None)  # type: ignore[attr-defined]
        return listening

    def config(self, callbacks: dict[str, Any], **overrides: Any) -> Config:
        acct = account("demo", "demo-key", callbacks=callbacks)
        return make_config(self.tmp, {"accounts": [acct], **overrides})


class JsonCallbackTests(CallbackCase):
    async def test_final_state_is_posted_signed_with_a_stable_event_id(self) -> None:
        """Each recipient's final state is POSTed once as JSON, signed with HMAC-SHA256 over t.body."""
        receiver = Receiver()
        port = self.listen(receiver).getHost().port  # type: ignore[attr-defined]
        config = self.config({"dlr_url": f"http://127.0.0.1:{port}/dlr", "secret": "s3cret"})
        daemon = await self.daemon(config)
        status, body = await ApiClient.for_daemon(daemon).post(
            "/api/v1/messages", {"to": ["13800138000", "13900139000"], "text": "您好", "ref": "r-1"})
        assert status == 202, body
        mid = body["messages"][0]["id"]
        await wait_for(lambda: len(receiver.requests) >= 2, what="two callbacks")
        await spin(0.5)
        bodies = receiver.json_bodies()
        assert sorted(b["to"] for b in bodies) == ["13800138000", "13900139000"]
        for request, b in zip(receiver.requests, bodies):
            assert (b["type"], b["message_id"], b["ref"], b["state"], b["stat"]) == ("dlr", mid, "r-1", "delivered",
                                                                                     "DELIVRD")
            assert len(b["msg_ids"]) == 1 and len(b["msg_ids"][0]) == 16 and b["done_at"].endswith("+00:00")
            assert request["headers"]["x-smsgw-event-id"] == b["event_id"]
            t, v1 = (part.split("=", 1)[1] for part in request["headers"]["x-smsgw-signature"].split(","))
            expected = hmac.new(b"s3cret", t.encode() + b"." + request["body"], hashlib.sha256).hexdigest()
            assert hmac.compare_digest(v1, expected)
        assert len({b["event_id"] for b in bodies}) == 2
        # Two final events; none for the submits, which this account's callbacks do not ask for.
        assert count(config, "outbox", "state = 'done'") == 2

    async def test_a_receiver_that_is_down_holds_up_nothing_and_gets_everything_later(self) -> None:
        """Messages are delivered while the receiver is down; the callbacks follow once it listens."""
        receiver = Receiver()
        port = free_port()
        config = self.config({"dlr_url": f"http://127.0.0.1:{port}/dlr"})
        daemon = await self.daemon(config)
        api = ApiClient.for_daemon(daemon)
        with capture_logs() as logs:
            ids = await api.send([{"to": [f"1380013800{i}"], "text": f"m{i}"} for i in range(5)])
            await wait_for(lambda: count(config, "recipients", "state = 'delivered'") == 5, what="5 delivered")
            await wait_for(lambda: any(e["event"] == "outbox_refused" for e in logs), what="a refused callback")
        self.listen(receiver, port)
        await wait_for(lambda: len(receiver.requests) >= 5, timeout=30, what="the callbacks after the outage")
        await spin(0.5)
        assert sorted(b["message_id"] for b in receiver.json_bodies()) == sorted(ids)
        refused = [e for e in logs if e["event"] == "outbox_refused"]
        assert "connection refused" in refused[0]["error"].lower() or "refused" in refused[0]["error"].lower()

    async def test_an_error_answer_is_retried_then_given_up_after_retry_for(self) -> None:
        """A 500 is retried with back-off; after retry_for seconds the event is dead with an alarm line."""
        receiver = Receiver([500])
        port = self.listen(receiver).getHost().port  # type: ignore[attr-defined]
        config = self.config({"dlr_url": f"http://127.0.0.1:{port}/dlr", "retry_for": 1.5})
        daemon = await self.daemon(config)
        with capture_logs() as logs:
            await ApiClient.for_daemon(daemon).send({"to": ["13800138000"], "text": "x"})
            await wait_for(lambda: count(config, "outbox", "state = 'dead'") == 1, timeout=30, what="a dead event")
        assert len(receiver.requests) >= 2
        [alarm] = [e for e in logs if e.get("alarm") == "notification_dead"]
        assert "HTTP 500" in alarm["error"]

    async def test_mo_routed_to_the_account_is_pushed(self) -> None:
        """MO whose consumer is the account goes to its mo_url, with the text intact."""
        receiver = Receiver()
        port = self.listen(receiver).getHost().port  # type: ignore[attr-defined]
        config = self.config({"mo_url": f"http://127.0.0.1:{port}/mo"}, mo={"default_consumer": "demo"},
                             simulator={"enabled": False})
        daemon = await self.daemon(config)
        sim = start_simulator(config, mo_rate=20.0)
        self.addCleanup(lambda: sim.stopService() if sim.running else None)
        await wait_for(lambda: len(receiver.requests) >= 3, timeout=30, what="three MO callbacks")
        sim.stopService()
        await spin(0.5)
        stored = {str(row_id): text for row_id, text in rows(config, "SELECT id, content FROM mo_messages")}
        for b in receiver.json_bodies():
            assert b["type"] == "mo" and stored[b["mo_id"]] == b["text"]
        assert daemon.running


class KannelCallbackTests(CallbackCase):
    async def test_kannel_style_get_with_escapes(self) -> None:
        """format kannel: a GET of the URL with %d %p %A %I %F %r replaced and URL-encoded."""
        receiver = Receiver()
        port = self.listen(receiver).getHost().port  # type: ignore[attr-defined]
        config = self.config({"dlr_url": f"http://127.0.0.1:{port}/dlr?type=%d&to=%p&stat=%A&id=%I&s=%F&ref=%r&p=%%",
                              "format": "kannel", "submitted": True})
        daemon = await self.daemon(config)
        [mid] = await ApiClient.for_daemon(daemon).send({"to": ["13800138000"], "text": "x", "ref": "a b&c"})
        await wait_for(lambda: len(receiver.requests) >= 2, what="submitted and delivered")
        got = [parse_qs(urlsplit(r["uri"]).query) for r in receiver.requests]
        assert all(r["method"] == "GET" for r in receiver.requests)
        assert [g["type"][0] for g in got] == ["8", "1"]
        final = got[1]
        assert (final["to"][0], final["stat"][0], final["id"][0], final["s"][0], final["ref"][0], final["p"][0]) == (
            "13800138000", "DELIVRD", mid, "delivered", "a b&c", "%")


def test_kannel_url_escapes_and_signature_are_exact() -> None:
    """kannel_url leaves unknown escapes alone and encodes values; signature is t=...,v1=hmac(t.body)."""
    event = OutboxEvent(1, "http:a", "mo", None, None, '{"mo_id": "7"}', 0, 0.0)
    data = {"mo_id": 7, "from": "13800138000", "to": "106900010001", "text": "查询 余额", "keyword": "查询"}
    url = kannel_url("http://h/mo?from=%p&to=%P&text=%a&k=%k&x=%Z&t=%T", event, data, 1700000000.0)
    q = parse_qs(urlsplit(url).query)
    assert (q["from"][0], q["to"][0], q["text"][0], q["k"][0], q["x"][0], q["t"][0]) == (
        "13800138000", "106900010001", "查询 余额", "查询", "%Z", "1700000000")
    sig = signature("k", b"{}", 1700000000.9)
    assert sig == "t=1700000000,v1=" + hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()


def test_rejected_and_cancelled_recipients_are_kannel_type_16() -> None:
    """A recipient rejected in review or cancelled never reached the carrier: DLR type 16, which a mask asks for."""
    for state in ("rejected", "cancelled", "failed"):
        event = OutboxEvent(1, "dlr-url", "recipient_final", 5, 6, "{}", 0, 0.0)
        data = {"to": "13800138000", "ext": "", "message_id": 5, "stat": None, "state": state, "ref": None,
                "dlr_mask": 16}
        assert wanted(event, data) and not wanted(event, {**data, "dlr_mask": 1 + 2 + 8}), state
        url = kannel_url("http://h/dlr?type=%d&state=%F", event, data, 1700000000.0)
        assert parse_qs(urlsplit(url).query) == {"type": ["16"], "state": [state]}


def test_callback_settings_are_checked(tmp_path: pathlib.Path) -> None:
    """No URL, a URL that is not http(s), and https without TLS support are each a problem with a fix."""
    def problems(callbacks: dict[str, Any]) -> list[str]:
        path = write_config(tmp_path, {"accounts": [account("demo", "demo-key", callbacks=callbacks)]})
        return check_config(str(path), {})
    [none] = problems({"format": "json"})
    assert "accounts[0].callbacks: callbacks has neither dlr_url nor mo_url" in none
    [bad] = problems({"dlr_url": "ftp://x/y"})
    assert "accounts[0].callbacks.dlr_url: 'ftp://x/y' is not an http(s) URL" in bad and "fix:" in bad
    import importlib.util

    tls = importlib.util.find_spec("OpenSSL") is not None and importlib.util.find_spec("service_identity") is not None
    https = problems({"dlr_url": "https://oa.example/dlr"})
    assert https == [] if tls else ("https callbacks need Twisted's TLS support" in https[0])


class PerMessageUrlTests(CallbackCase):
    async def test_a_message_with_its_own_dlr_url_gets_what_its_mask_asks(self) -> None:
        """dlr_url + dlr_mask on the message (Kannel's dlr-url): GETs with escapes, only the masked events."""
        receiver = Receiver()
        port = self.listen(receiver).getHost().port  # type: ignore[attr-defined]
        config = make_config(self.tmp)
        daemon = await self.daemon(config)
        demo = config.account_objects()[0]
        url = f"http://127.0.0.1:{port}/dlr?type=%d&to=%p&stat=%A&id=%I"
        both = SendRequest(to=("13800138000",), text="x", dlr_url=url, dlr_mask=1 + 8)
        final_only = SendRequest(to=("13900139000",), text="y", dlr_url=url, dlr_mask=1)
        none = SendRequest(to=("13700137000",), text="z", dlr_url=url, dlr_mask=16)
        accepted = await daemon.gateway.accept(demo, "url", [both, final_only, none])
        await wait_for(lambda: count(config, "recipients", "state = 'delivered'") == 3, what="3 delivered")
        await wait_for(lambda: len(receiver.requests) >= 3, what="three report GETs")
        await spin(1.0)
        got = sorted((q["id"][0], q["to"][0], q["type"][0], q["stat"][0])
                     for q in (parse_qs(urlsplit(r["uri"]).query, keep_blank_values=True) for r in receiver.requests))
        ids = [a.id for a in accepted]
        assert got == sorted([(ids[0], "13800138000", "8", ""), (ids[0], "13800138000", "1", "DELIVRD"),
                              (ids[1], "13900139000", "1", "DELIVRD")])
        assert rows(config, "SELECT dlr_mask FROM messages ORDER BY id") == [(9,), (1,), (16,)]

    async def test_a_bad_dlr_url_or_mask_is_refused(self) -> None:
        """Validation names dlr_url and dlr_mask problems."""
        config = make_config(self.tmp)
        daemon = await self.daemon(config)
        demo = config.account_objects()[0]
        with self.assertRaises(RequestRejected) as caught:
            await daemon.gateway.accept(demo, "url", [SendRequest(to=("13800138000",), text="x",
                                                                  dlr_url="ftp://x", dlr_mask=64)])
        assert sorted(p.code for p in caught.exception.problems) == ["bad_dlr_mask", "bad_dlr_url"]
