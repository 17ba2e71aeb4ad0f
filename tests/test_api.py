"""The REST API over real HTTP on 127.0.0.1, against the in-memory gateway.

Every response a test receives is also checked against the OpenAPI document
(tests/openapi_check.py), so the document and the implementation cannot drift.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.iweb import IResponse
from twisted.web.server import Site
from twisted.web.http_headers import Headers

from fake_gateway import SECRET_IN_ERROR, FakeGateway, segments_of
from openapi_check import check_response, unsupported_keywords, validate
from smsgw._api_codec import SEND_FIELDS
from smsgw._openapi import build_openapi
from smsgw.api import ROUTES, make_api
from smsgw.model import Account, GatewayApi, SendRequest

R: Any = reactor
MOBILE = "13800138000"
TEXT_ZH = "【政务服务】您申请的居住证已制作完成，请携带本人身份证原件到派出所户政窗口领取。"


def account(name: str, key: str, **options: Any) -> Account:
    return Account(name, hashlib.sha256(key.encode()).hexdigest(), **options)


ACCOUNTS = [
    account("demo", "demo-key", mo_consumers=("tax-hotline",)),
    account("other", "other-key"),
    account("soap-only", "soap-key", interfaces=("soap", "db")),
    account("limited", "limited-key", interfaces=("rest",), max_priority=5),
]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names, first value
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = self.json["error"]
        return error


def parse_replies(data: bytes) -> list[Reply]:
    """Complete HTTP/1.1 responses in `data` (every response of this API has a Content-Length)."""
    replies = []
    while (end := data.find(b"\r\n\r\n")) >= 0:
        head = data[:end].decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        length = int(headers["content-length"])
        if len(data) < end + 4 + length:
            break
        replies.append(Reply(int(head[0].split()[1]), headers, data[end + 4:end + 4 + length]))
        data = data[end + 4 + length:]
    return replies


async def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Spin the reactor until `predicate()` holds (tests must not sleep blindly)."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await deferLater(R, 0.01, lambda: None)
        waited += 0.01


class _Connections(WrappingFactory):
    """Wraps the Site to count connections and to wait, in cleanup, until the server closed them."""

    made = 0

    def registerProtocol(self, p: ProtocolWrapper) -> None:
        self.made += 1
        super().registerProtocol(p)


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)


class _Body(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone):
            self.done.callback(self.data)
        else:
            self.done.errback(reason)


def _read_body(response: IResponse) -> defer.Deferred[bytes]:
    """readBody without its warning about the keep-alive transport lacking abortConnection."""
    body = _Body()
    response.deliverBody(body)
    return body.done


class ApiCase(TestCase):
    """Serves the API on an ephemeral port; an Agent with a keep-alive pool calls it."""

    timeout = 30

    def start(self, **options: Any) -> FakeGateway:
        self.gateway = FakeGateway()
        options.setdefault("clock", R)
        self.doc = build_openapi(max_batch=options.get("max_batch", 1000),
                                 max_body_bytes=options.get("max_body_bytes", 4 * 1024 * 1024))
        self.connections = _Connections(make_api(self.gateway, ACCOUNTS, **options))
        port = self.listening = R.listenTCP(0, self.connections, interface="127.0.0.1")
        self.port = port.getHost().port
        pool = HTTPConnectionPool(R, persistent=True)
        self.agent = Agent(R, pool=pool)

        async def stop() -> None:
            await pool.closeCachedConnections()
            await defer.maybeDeferred(port.stopListening)  # a test may have stopped it already
            await wait_for(lambda: not self.connections.protocols, what="the server to close its connections")

        self.addCleanup(lambda: defer.ensureDeferred(stop()))
        return self.gateway

    async def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                   key: str | None = "demo-key", style: str = "bearer",
                   content_type: str | None = "application/json", extra: dict[str, str] | None = None) -> Reply:
        """One request; the reply is checked against the OpenAPI document before it is returned."""
        headers = Headers({name.encode(): [value.encode()] for name, value in (extra or {}).items()})
        if key is not None:
            if style == "bearer":
                headers.addRawHeader(b"authorization", b"Bearer " + key.encode())
            else:
                headers.addRawHeader(b"x-api-key", key.encode())
        data = raw if raw is not None else None if body is None else json.dumps(body, ensure_ascii=False).encode()
        if data is not None and content_type is not None:
            headers.addRawHeader(b"content-type", content_type.encode())
        producer = FileBodyProducer(BytesIO(data)) if data is not None else None
        response = await self.agent.request(method.encode(), f"http://127.0.0.1:{self.port}{path}".encode(),
                                            headers, producer)
        reply = Reply(response.code, {name.decode().lower(): values[0].decode()
                                      for name, values in response.headers.getAllRawHeaders()},
                      await _read_body(response))
        check_response(self.doc, method, path, reply.status, reply.headers, reply.body)
        return reply

    async def connect(self) -> _Collect:
        proto = _Collect()
        await connectProtocol(TCP4ClientEndpoint(R, "127.0.0.1", self.port), proto)
        return proto

    async def raw(self, payload: bytes, replies: int = 1, *, until_closed: bool = False) -> tuple[list[Reply], bool]:
        """Send bytes on a new connection; returns the replies and whether the server closed it."""
        proto = await self.connect()
        assert proto.transport is not None
        proto.transport.write(payload)
        if until_closed:
            await wait_for(lambda: proto.closed.called, what="the server to close the connection")
        else:
            await wait_for(lambda: len(parse_replies(proto.data)) >= replies or proto.closed.called,
                           what=f"{replies} replies")
        closed_by_server = proto.closed.called
        proto.transport.loseConnection()
        await proto.closed
        return parse_replies(proto.data), closed_by_server

    async def send(self, body: Any, **options: Any) -> Reply:
        return await self.call("POST", "/api/v1/messages", body, **options)


def post(body: bytes, content_type: bytes = b"application/json", extra: bytes = b"") -> bytes:
    return (b"POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer demo-key\r\nContent-Type: "
            + content_type + b"\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body)


# -- sending --------------------------------------------------------------------------------------

class SendTests(ApiCase):
    async def test_single_message_is_accepted_with_its_id(self) -> None:
        """A single object gets 202 with one id once the gateway has committed it."""
        gateway = self.start()
        reply = await self.send({"to": MOBILE, "text": "Your code is 493021", "ref": "otp-1"})
        assert reply.status == 202
        [message] = reply.json["messages"]
        assert message == {"id": message["id"], "ref": "otp-1", "recipients": 1, "segments": 1,
                           "dropped_duplicates": [], "repeated": False, "held": False, "batch": None}
        assert reply.headers["server"] == "smsgw" and reply.headers["date"].endswith(" GMT")
        assert gateway.accepted_requests == [("demo", "rest", (SendRequest((MOBILE,), "Your code is 493021",
                                                                           ref="otp-1"),))]

    async def test_a_file_import_labels_its_messages_with_the_file_interface(self) -> None:
        """X-Smsgw-Origin: file records interface file (smsgw import); any other origin is a 400."""
        gateway = self.start()
        body = {"to": MOBILE, "text": "x"}
        reply = await self.call("POST", "/api/v1/messages", body, extra={"X-Smsgw-Origin": "file"})
        assert reply.status == 202 and gateway.accepted_requests[-1][1] == "file"
        for bad in ("soap", "rest", "FILE"):
            reply = await self.call("POST", "/api/v1/messages", body, extra={"X-Smsgw-Origin": bad})
            assert reply.status == 400 and "X-Smsgw-Origin may only be" in reply.json["error"]["message"]
        assert len(gateway.accepted_requests) == 1

    async def test_batch_is_accepted_in_order(self) -> None:
        """An array gets one id per message, in the order sent, with duplicates reported."""
        gateway = self.start()
        reply = await self.send([{"to": [MOBILE, "13900139000", MOBILE], "text": "a", "ref": "r1"},
                                 {"to": "+8613700137000", "text": TEXT_ZH * 2, "priority": "bulk"},
                                 {"to": MOBILE, "text": "c", "report": False, "ext": "01"}])
        assert reply.status == 202
        messages = reply.json["messages"]
        assert [m["ref"] for m in messages] == ["r1", None, None]
        assert len({m["id"] for m in messages}) == 3
        assert messages[0]["recipients"] == 2 and messages[0]["dropped_duplicates"] == [MOBILE]
        assert messages[1]["segments"] == segments_of(TEXT_ZH * 2) > 1
        sent = gateway.accepted_requests[0][2]
        assert [r.priority for r in sent] == [5, 0, 5]
        assert sent[2].report is False and sent[2].ext == "01"

    async def test_charset_parameter_and_escaped_text_are_accepted(self) -> None:
        """Content-Type with charset=UTF-8 is JSON too, and \\u escapes decode to the same text."""
        gateway = self.start()
        body = json.dumps({"to": MOBILE, "text": TEXT_ZH}, ensure_ascii=True).encode()
        reply = await self.send(None, raw=body, content_type="application/json; charset=UTF-8")
        assert reply.status == 202
        assert gateway.accepted_requests[0][2][0].text == TEXT_ZH

    async def test_priority_names_and_numbers(self) -> None:
        """Priority names map to 9, 5 and 0; numbers pass through; above 9 is refused."""
        gateway = self.start()
        reply = await self.send([{"to": MOBILE, "text": "x", "priority": p} for p in ("urgent", "normal", "bulk", 7)])
        assert reply.status == 202
        assert [r.priority for r in gateway.accepted_requests[0][2]] == [9, 5, 0, 7]
        reply = await self.send({"to": MOBILE, "text": "x", "priority": 10})
        assert reply.error["details"] == [{"where": "priority", "code": "out_of_range",
                                           "message": "priority must be from 0 (bulk) to 9 (urgent), not 10"}]

    async def test_send_at_accepts_offsets_and_epoch_and_refuses_naive_times(self) -> None:
        """send_at takes ISO-8601 with an offset or Z, or epoch seconds; a time without offset is refused."""
        gateway = self.start()
        forms = ["2030-01-01T08:00:00+08:00", "2030-01-01T00:00:00Z", 1893456000, 1893456000.0, None]
        reply = await self.send([{"to": MOBILE, "text": "x", "send_at": f} for f in forms])
        assert reply.status == 202
        assert [r.send_at for r in gateway.accepted_requests[0][2]] == [1893456000.0] * 4 + [None]
        reply = await self.send([{"to": MOBILE, "text": "x", "send_at": f}
                                 for f in ("2030-01-01T08:00:00", "2030-01-01", "tomorrow", True, -1)])
        assert reply.status == 422
        details = reply.error["details"]
        assert [(d["where"], d["code"]) for d in details] == [
            ("[0].send_at", "bad_time"), ("[1].send_at", "bad_time"), ("[2].send_at", "bad_time"),
            ("[3].send_at", "wrong_type"), ("[4].send_at", "out_of_range")]
        assert "has no UTC offset" in details[0]["message"] and "+08:00" in details[0]["message"]

    async def test_every_validation_problem_is_listed_with_its_place(self) -> None:
        """Type problems in every message come back together, each with a path into the body."""
        gateway = self.start()
        reply = await self.send([
            {"to": MOBILE, "text": "fine"},
            {"to": [MOBILE, 13900139000, None], "text": 5, "priorty": 9, "colour": "red"},
            "not an object",
            {"text": "no recipient", "report": "yes", "ref": 7},
        ])
        assert reply.status == 422
        assert reply.error["code"] == "validation_failed"
        problems = {(d["where"], d["code"]) for d in reply.error["details"]}
        assert problems == {
            ("[1].to[1]", "wrong_type"), ("[1].to[2]", "wrong_type"), ("[1].text", "wrong_type"),
            ("[1].priorty", "unknown_field"), ("[1].colour", "unknown_field"), ("[2]", "wrong_type"),
            ("[3].to", "required"), ("[3].report", "wrong_type"), ("[3].ref", "wrong_type"),
        }
        messages = {d["where"]: d["message"] for d in reply.error["details"]}
        assert 'did you mean "priority"?' in messages["[1].priorty"]
        assert messages["[1].to[1]"] == 'to[1] must be a string like "13800138000", not a number'
        assert gateway.accepted_requests == []

    async def test_floods_of_problems_are_summarised(self) -> None:
        """Thousands of bad items name the first 20 of a kind and the answer lists at most 200 problems."""
        self.start()
        reply = await self.send({"to": list(range(5000)), "text": "x", **{f"k{i:03d}": 1 for i in range(300)}})
        details = reply.error["details"]
        assert len(details) == 42
        assert details[20] == {"where": "", "code": "unknown_field", "message": "and 280 more unknown fields"}
        assert details[-1]["message"] == "and 4980 more items of to are not strings"
        reply = await self.send([{"to": 1, "text": 2, "ref": 3}] * 100)
        assert len(reply.error["details"]) == 200
        assert reply.error["message"].endswith("300 problems, the first 200 listed in details")

    async def test_gateway_problems_are_located_in_the_body_sent(self) -> None:
        """The gateway's "[i]." locations lose the "[0]" for a single object and keep it in an array."""
        self.start()
        reply = await self.send({"to": [MOBILE, "12345"], "text": ""})
        assert reply.status == 422
        assert [(d["where"], d["code"]) for d in reply.error["details"]] == [("to[1]", "bad_number"),
                                                                              ("text", "empty_text")]
        reply = await self.send([{"to": MOBILE, "text": "ok"}, {"to": "12345", "text": "x"}])
        assert [d["where"] for d in reply.error["details"]] == ["[1].to[0]"]
        reply = await self.send({"to": MOBILE, "text": "x", "priority": "urgent"}, key="limited-key")
        assert [d["code"] for d in reply.error["details"]] == ["not_allowed"]

    async def test_shape_errors_of_the_whole_body(self) -> None:
        """An empty array, too many messages, or a body that is no object or array is a 422 at ""."""
        self.start(max_batch=2)
        for body, code in (([], "no_messages"), ([{"to": MOBILE, "text": "x"}] * 3, "too_many_messages"),
                           ("text", "wrong_type"), (42, "wrong_type"), ({"to": [], "text": "x"}, "no_recipients")):
            reply = await self.send(body)
            assert reply.status == 422, body
            [detail] = reply.error["details"]
            assert detail["code"] == code
        reply = await self.send(None, raw=b'{"to": "13800138000", "text": "x", "ref": "\\ud800"}')
        assert reply.error["details"][0]["code"] == "unencodable_text"

    async def test_malformed_json_is_400_with_line_and_column(self) -> None:
        """Broken JSON is a 400 that says where it broke."""
        self.start()
        reply = await self.send(None, raw=b'{\n  "to": "13800138000",\n  "text": "x",,\n}')
        assert reply.status == 400
        assert reply.error["code"] == "bad_request"
        assert "line 3 column 15" in reply.error["message"]
        for raw in (b"", b"   ", b'{"to": NaN}', b"[" * 100_000, b"1" * 5000):
            reply = await self.send(None, raw=raw)
            assert reply.status == 400, raw[:20]

    async def test_body_that_is_not_utf8_is_400(self) -> None:
        """A body in GBK is refused with the offset of the first byte that is not UTF-8."""
        self.start()
        reply = await self.send(None, raw=json.dumps({"to": MOBILE, "text": "你好"}, ensure_ascii=False).encode("gbk"))
        assert reply.status == 400
        assert "is not valid UTF-8" in reply.error["message"] and "offset 31" in reply.error["message"]

    async def test_wrong_content_type_is_415(self) -> None:
        """Only application/json (optionally charset=utf-8) is taken."""
        self.start()
        body = json.dumps({"to": MOBILE, "text": "x"}).encode()
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/json; charset=gbk",
                             "application/jsonx", None):
            reply = await self.send(None, raw=body, content_type=content_type)
            assert reply.status == 415, content_type
            assert reply.error["code"] == "unsupported_media_type"

    async def test_body_over_the_limit_is_refused_before_it_is_read(self) -> None:
        """A Content-Length over the limit gets 413 and a close without the body (and no 100 Continue)."""
        self.start(max_body_bytes=1000)
        head = (b"POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Expect: 100-continue\r\nContent-Length: 1001\r\n\r\n")
        with capture_logs() as logs:
            replies, closed_by_server = await self.raw(head, until_closed=True)
        [reply] = replies
        assert reply.status == 413 and closed_by_server
        assert reply.error["code"] == "payload_too_large" and "1001 bytes" in reply.error["message"]
        assert reply.headers["connection"] == "close"
        check_response(self.doc, "POST", "/api/v1/messages", reply.status, reply.headers, reply.body)
        assert [e["status"] for e in logs if e["event"] == "http_request"] == [413]
        replies, _ = await self.raw(post(b" " * 990 + b'{"to": "13800138000", "text": "x"}'[:10]))
        assert replies[0].status == 400  # at the limit is fine (and then not JSON)

    async def test_streamed_body_over_the_limit_is_refused_while_it_arrives(self) -> None:
        """A chunked body is cut off with 413 as soon as it passes the limit."""
        self.start(max_body_bytes=1000)
        chunk = b"a" * 600
        payload = (b"POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer demo-key\r\n"
                   b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 2)
        [reply], closed_by_server = await self.raw(payload, until_closed=True)
        assert reply.status == 413 and closed_by_server
        small = json.dumps({"to": MOBILE, "text": "chunked"}).encode()
        payload = (b"POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer demo-key\r\n"
                   b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small))
        [reply], _ = await self.raw(payload)
        assert reply.status == 202

    async def test_service_unavailable_is_503_with_retry_after(self) -> None:
        """A draining gateway's refusal is a 503 that says when to retry."""
        gateway = self.start()
        gateway.mode = "unavailable"
        reply = await self.send({"to": MOBILE, "text": "x"})
        assert reply.status == 503
        assert reply.headers["retry-after"] == "5"
        assert reply.error["code"] == "unavailable" and "draining" in reply.error["message"]

    async def test_gateway_error_is_500_with_an_incident_id_and_no_details(self) -> None:
        """An unexpected gateway exception is logged in full; the client only gets an incident id."""
        gateway = self.start()
        gateway.mode = "broken"
        with capture_logs() as logs:
            reply = await self.send({"to": MOBILE, "text": "x"})
            status = await self.call("GET", "/api/v1/status")
        assert reply.status == status.status == 500
        assert reply.error["code"] == "internal_error"
        match = re.search(r"incident ([0-9a-f]{12})", reply.error["message"])
        assert match is not None
        for text in (b"Traceback", b"RuntimeError", SECRET_IN_ERROR.encode(), b"fake_gateway", b"File "):
            assert text not in reply.body and text not in status.body
        [entry, _] = [e for e in logs if e["event"] == "http_internal_error"]
        assert entry["incident"] == match.group(1) and entry["log_level"] == "error"
        assert isinstance(entry["exc_info"][1], RuntimeError)
        assert SECRET_IN_ERROR in str(entry["exc_info"][1])

    async def test_gateway_timeout_is_503_and_the_late_commit_is_logged(self) -> None:
        """No answer within request_timeout is a 503 saying the message may be committed; the same ref finds it."""
        clock = Clock()
        gateway = self.start(clock=clock, request_timeout=30)
        gateway.mode = "hold"
        body = {"to": MOBILE, "text": "x", "ref": "order-7"}
        with capture_logs() as logs:
            pending = defer.ensureDeferred(self.send(body))
            await wait_for(lambda: gateway.held, what="the accept to reach the gateway")
            clock.advance(29)
            assert [e for e in logs if e["event"] == "http_request"] == []
            clock.advance(1)
            reply = await pending
            [(_, [held])] = gateway.held
            gateway.release()
        assert reply.status == 503 and reply.headers["retry-after"] == "5"
        assert "may still have been committed" in reply.error["message"]
        assert "same ref" in reply.error["message"]
        events = {e["event"]: e for e in logs}
        assert events["http_gateway_timeout"]["log_level"] == "warning"
        assert events["http_request"]["status"] == 503 and events["http_request"]["duration_ms"] == 30000.0
        assert events["http_late_answer"]["result"] == [held.id]
        gateway.mode = "normal"
        again = await self.send(body)
        assert again.status == 202 and again.json["messages"][0]["id"] == held.id

    async def test_each_waiting_request_times_out_on_its_own_deadline(self) -> None:
        """Requests that started 10 s apart get their 503s 10 s apart, and a read says to retry later."""
        clock = Clock()
        gateway = self.start(clock=clock, request_timeout=30)
        gateway.mode = "hold"
        first = defer.ensureDeferred(self.call("GET", "/api/v1/messages/m1"))
        await wait_for(lambda: gateway.held_reads == ["m1"], what="the first request to reach the gateway")
        clock.advance(10)
        second = defer.ensureDeferred(self.call("GET", "/api/v1/messages/m2"))
        await wait_for(lambda: gateway.held_reads == ["m1", "m2"], what="the second request to reach the gateway")
        clock.advance(20)
        reply = await first
        assert reply.status == 503 and reply.error["message"].endswith("retry later")
        assert not second.called
        clock.advance(10)
        assert (await second).status == 503

    async def test_stopping_the_site_cancels_the_timeout_timer(self) -> None:
        """Once the port stops listening, no API timer is left in the reactor."""
        gateway = self.start(request_timeout=30)
        gateway.mode = "hold"
        pending = defer.ensureDeferred(self.send({"to": MOBILE, "text": "x"}))
        await wait_for(lambda: gateway.held, what="the accept to reach the gateway")
        gateway.release()
        assert (await pending).status == 202
        assert [c for c in R.getDelayedCalls() if c.func.__name__ == "_sweep"]
        await self.listening.stopListening()
        assert [c for c in R.getDelayedCalls() if c.func.__name__ == "_sweep"] == []

    async def test_each_request_logs_one_line_without_the_key(self) -> None:
        """Every request logs one http_request line with method, path, status, account, duration and count;
        a refused key adds the authenticator's auth_failed line."""
        self.start()
        with capture_logs() as logs:
            await self.send([{"to": MOBILE, "text": "x"}] * 2)
            await self.call("GET", "/api/v1/status", style="x-api-key")
            await self.call("GET", "/api/v1/status", key="wrong-key")
        lines = [e for e in logs if e["event"] == "http_request"]
        assert len(lines) == 3
        assert [e for e in logs if e["event"] != "http_request"] == [
            {"event": "auth_failed", "log_level": "warning", "account": None, "peer": "127.0.0.1",
             "interface": None, "reason": "unknown_key"}]
        for line in lines:
            assert line.pop("duration_ms") >= 0
        assert lines == [
            {"event": "http_request", "log_level": "info", "method": "POST", "path": "/api/v1/messages",
             "account": "demo", "status": 202, "messages": 2},
            {"event": "http_request", "log_level": "info", "method": "GET", "path": "/api/v1/status",
             "account": "demo", "status": 200, "messages": None},
            {"event": "http_request", "log_level": "info", "method": "GET", "path": "/api/v1/status",
             "account": None, "status": 401, "messages": None},
        ]
        assert "demo-key" not in repr(logs) and "wrong-key" not in repr(logs)


# -- auth, routing, keep-alive ------------------------------------------------------------------

class AccessTests(ApiCase):
    async def test_both_key_headers_authenticate(self) -> None:
        """Authorization: Bearer and X-API-Key both identify the account."""
        gateway = self.start()
        for style in ("bearer", "x-api-key"):
            reply = await self.send({"to": MOBILE, "text": style}, style=style, key="other-key")
            assert reply.status == 202
        assert [name for name, _, _ in gateway.accepted_requests] == ["other", "other"]

    async def test_missing_or_unknown_key_is_401_with_a_challenge(self) -> None:
        """No key, an unknown key (either header) or a non-Bearer scheme is 401 with WWW-Authenticate."""
        self.start()
        reply = await self.send({"to": MOBILE, "text": "x"}, key=None)
        assert reply.status == 401 and reply.headers["www-authenticate"] == 'Bearer realm="smsgw"'
        assert "X-API-Key" in reply.error["message"]
        for style in ("bearer", "x-api-key"):
            reply = await self.call("GET", "/api/v1/status", key="Demo-Key", style=style)
            assert reply.status == 401 and reply.error["code"] == "unauthorized"
            assert 'error="invalid_token"' in reply.headers["www-authenticate"]
        replies, _ = await self.raw(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ZGVtbw==\r\n\r\n")
        assert replies[0].status == 401 and "Bearer <API key>" in replies[0].error["message"]

    async def test_account_without_the_rest_interface_is_403_but_may_read_status(self) -> None:
        """An account limited to other interfaces cannot send over REST, yet may read the status."""
        self.start()
        reply = await self.send({"to": MOBILE, "text": "x"}, key="soap-key")
        assert reply.status == 403 and reply.error["code"] == "forbidden"
        assert "'soap-only'" in reply.error["message"] and "soap, db" in reply.error["message"]
        assert (await self.call("GET", "/api/v1/mo", key="soap-key")).status == 403
        assert (await self.call("GET", "/api/v1/status", key="soap-key")).status == 200

    async def test_unknown_path_is_404_and_wrong_method_is_405(self) -> None:
        """Paths outside the API are 404; a known path with another method is 405 with Allow."""
        self.start()
        for path in ("/", "/api/v1/message", "/api/v1/messages/", "/api/v1/messages/a/b", "/api/v2/status"):
            reply = await self.call("GET", path)
            assert reply.status == 404 and reply.error["code"] == "not_found", path
        reply = await self.call("DELETE", "/api/v1/messages/m1")
        assert reply.status == 405 and reply.headers["allow"] == "GET"
        reply = await self.call("GET", "/api/v1/messages")
        assert reply.status == 405 and reply.headers["allow"] == "POST"
        assert reply.error["code"] == "method_not_allowed"

    async def test_keep_alive_serves_many_requests_on_one_connection(self) -> None:
        """Sequential calls reuse one connection, and pipelined requests are answered in order."""
        self.start()
        for _ in range(3):
            assert (await self.call("GET", "/api/v1/status")).status == 200
        assert self.connections.made == 1
        request = b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-API-Key: demo-key\r\n\r\n"
        replies, closed_by_server = await self.raw(request + post(b'{"to": "13800138000", "text": "x"}') + request,
                                                   replies=3)
        assert [r.status for r in replies] == [200, 202, 200] and not closed_by_server


# -- reading ---------------------------------------------------------------------------------------

class ReadTests(ApiCase):
    async def test_message_view_has_recipients_segments_and_utc_times(self) -> None:
        """A delivered long Chinese message shows each recipient's segments with Stat codes and UTC times."""
        gateway = self.start()
        text = TEXT_ZH * 2
        reply = await self.send({"to": [MOBILE, "13900139000"], "text": text, "ref": "wo-1", "priority": "urgent",
                                 "send_at": "2030-01-01T08:00:00+08:00"})
        message_id = reply.json["messages"][0]["id"]
        gateway.deliver(message_id)
        view = (await self.call("GET", f"/api/v1/messages/{message_id}")).json
        assert (view["id"], view["account"], view["interface"], view["ref"]) == (message_id, "demo", "rest", "wo-1")
        assert view["text"] == text and view["priority"] == 9
        assert view["send_at"] == "2030-01-01T00:00:00.000Z"
        assert view["created_at"] == "2023-11-14T22:13:20.000Z" and view["updated_at"] == "2023-11-14T22:13:22.500Z"
        assert [r["to"] for r in view["recipients"]] == [MOBILE, "13900139000"]
        recipient = view["recipients"][0]
        assert recipient["stat"] == "DELIVRD" and recipient["state"] == "delivered"
        segments = recipient["segments"]
        assert [s["number"] for s in segments] == list(range(1, segments_of(text) + 1))
        assert {s["total"] for s in segments} == {len(segments)} and segments[0]["stat"] == "DELIVRD"
        assert segments[0]["submitted_at"] == "2023-11-14T22:13:21.000Z"
        assert re.fullmatch("[0-9a-f]{16}", segments[0]["msg_id"])

    async def test_unknown_or_foreign_message_is_404(self) -> None:
        """Another account's message and an unknown id are both simply not found."""
        self.start()
        message_id = (await self.send({"to": MOBILE, "text": "x"})).json["messages"][0]["id"]
        assert (await self.call("GET", f"/api/v1/messages/{message_id}")).status == 200
        reply = await self.call("GET", f"/api/v1/messages/{message_id}", key="other-key")
        assert reply.status == 404 and reply.error["code"] == "not_found"
        assert (await self.call("GET", "/api/v1/messages/m99999999")).status == 404
        assert (await self.call("GET", "/api/v1/messages/%E4%B8%AD")).status == 404
        assert (await self.call("GET", "/api/v1/messages/%FF")).status == 404

    async def test_mo_pages_follow_the_cursor(self) -> None:
        """MO messages for the account's consumers come oldest first, a page at a time; an empty page keeps the cursor."""
        gateway = self.start()
        for i in range(5):
            gateway.add_mo(f"回复{i}", consumer="tax-hotline" if i % 2 else "demo")
        gateway.add_mo("someone else's", consumer="other")
        texts, cursor, pages = [], None, 0
        while True:
            query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
            page = (await self.call("GET", "/api/v1/mo" + query)).json
            pages += 1
            if not page["items"]:
                assert page["next_cursor"] == cursor
                break
            texts += [item["text"] for item in page["items"]]
            assert page["next_cursor"] == page["items"][-1]["id"]
            cursor = page["next_cursor"]
        assert texts == [f"回复{i}" for i in range(5)] and pages == 4
        everything = (await self.call("GET", "/api/v1/mo")).json
        assert len(everything["items"]) == 5
        assert everything["items"][0]["received_at"] == "2023-11-14T22:13:20.000Z"
        other = (await self.call("GET", "/api/v1/mo", key="other-key")).json
        assert [item["text"] for item in other["items"]] == ["someone else's"]

    async def test_mo_query_problems_are_422(self) -> None:
        """A limit outside 1..1000, an unknown or repeated parameter is a 422 naming it."""
        self.start()
        for query, where, code in (("limit=0", "limit", "out_of_range"), ("limit=1001", "limit", "out_of_range"),
                                   ("limit=ten", "limit", "out_of_range"), ("curser=5", "curser", "unknown_field"),
                                   ("limit=1&limit=2", "limit", "repeated")):
            reply = await self.call("GET", "/api/v1/mo?" + query)
            assert reply.status == 422, query
            assert [(d["where"], d["code"]) for d in reply.error["details"]] == [(where, code)]

    async def test_status_shows_links_queues_and_rates(self) -> None:
        """The status endpoint returns the gateway's status as JSON."""
        self.start()
        await self.send({"to": [MOBILE, "13900139000"], "text": "x"})
        status = (await self.call("GET", "/api/v1/status", key="other-key")).json
        assert status["node"] == "test-node" and status["accepting"] is True
        assert status["links"][0]["name"] == "cmcc" and status["queues"] == {"queued": 2}
        assert status["rates"]["accepted"] == 12.5

    async def test_openapi_is_served_without_a_key(self) -> None:
        """The OpenAPI document needs no key and is the one build_openapi makes."""
        self.start(max_batch=50)
        reply = await self.call("GET", "/api/v1/openapi.json", key=None)
        assert reply.status == 200
        assert reply.json == build_openapi(max_batch=50, max_body_bytes=4 * 1024 * 1024)
        assert reply.json["openapi"] == "3.1.0"
        assert reply.json["components"]["schemas"]["SendBody"]["anyOf"][1]["maxItems"] == 50

    async def test_client_that_leaves_while_waiting_is_logged(self) -> None:
        """A client that disconnects before the gateway answers gets nothing; the line says it left."""
        clock = Clock()
        gateway = self.start(clock=clock)
        gateway.mode = "hold"
        with capture_logs() as logs:
            proto = await self.connect()
            assert proto.transport is not None
            proto.transport.write(post(b'{"to": "13800138000", "text": "x"}'))
            await wait_for(lambda: gateway.held, what="the accept to reach the gateway")
            proto.transport.loseConnection()
            await wait_for(lambda: not self.connections.protocols, what="the server to see the close")
            gateway.release()
        [line] = [e for e in logs if e["event"] == "http_request"]
        assert line["status"] == 202 and line["client_gone"] is True
        assert proto.data == b""


# -- the document and the router --------------------------------------------------------------------

DOC = build_openapi(max_batch=3, max_body_bytes=4 * 1024 * 1024)


def test_router_and_document_list_the_same_operations() -> None:
    """Every route the API serves is in the OpenAPI document, and every operation there is served."""
    served = {(r.template, r.method.lower(), r.operation) for r in ROUTES}
    documented = {(path, method, op["operationId"]) for path, item in DOC["paths"].items()
                  for method, op in item.items()}
    assert served == documented
    public = {r.template for r in ROUTES if r.auth == "none"}
    assert public == {path for path, item in DOC["paths"].items() for op in item.values() if op.get("security") == []}


def test_document_uses_only_what_the_checker_understands() -> None:
    """Every schema in the document is checkable (no keyword the checker ignores) and the checker catches errors."""
    assert unsupported_keywords(DOC) == []
    error = {"$ref": "#/components/schemas/Error"}
    assert validate(DOC, error, {"error": {"code": "not_found", "message": "m", "details": []}}) == []
    assert validate(DOC, error, {"error": {"code": "oops", "message": "m", "details": [], "x": 1}}) != []
    body = {"$ref": "#/components/schemas/SendBody"}
    assert validate(DOC, body, [{"to": MOBILE, "text": "x"}] * 3) == []
    assert validate(DOC, body, [{"to": MOBILE, "text": "x"}] * 4) != []
    assert validate(DOC, body, {"to": MOBILE, "text": "x", "priority": True}) != []


def test_fake_gateway_has_the_signatures_of_gateway_api() -> None:
    """The fake's methods take and return exactly what GatewayApi declares."""
    names = [n for n in vars(GatewayApi) if not n.startswith("_") and callable(getattr(GatewayApi, n))]
    assert names == ["accept", "get_message", "list_mo", "status", "list_templates", "put_template",
                     "delete_template", "review_list", "review_rows", "review_act", "cancel"]
    for name in names:
        assert inspect.signature(getattr(FakeGateway, name)) == inspect.signature(getattr(GatewayApi, name)), name
    gateway: GatewayApi = FakeGateway()  # and mypy checks it structurally
    assert gateway is not None


def test_make_api_refuses_bad_key_hashes_and_limits() -> None:
    """A malformed or shared key hash and a non-positive limit are refused with the account named."""
    with pytest.raises(ValueError, match="'x': api_key_sha256 must be 64 hex digits"):
        make_api(FakeGateway(), [Account("x", "abc")])
    with pytest.raises(ValueError, match="'a' and 'b' have the same API key"):
        make_api(FakeGateway(), [account("a", "k"), account("b", "k")])
    with pytest.raises(ValueError, match="max_batch must be positive"):
        make_api(FakeGateway(), ACCOUNTS, max_batch=0)


# -- hypothesis: whatever arrives, never a 500 -------------------------------------------------------

@functools.cache
def _in_process_site() -> Site:
    return make_api(FakeGateway(), ACCOUNTS, max_batch=3, clock=Clock())


def in_process(raw: bytes) -> list[Reply]:
    """Feed raw HTTP to the real Site over an in-memory transport (the fake answers at once)."""
    channel = _in_process_site().buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    return parse_replies(transport.value())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_cause_a_500(body: bytes) -> None:
    """Any bytes as a POST body are answered 202, 400 or 422 with the error shape, never 500."""
    [reply] = in_process(post(body))
    assert reply.status in (202, 400, 422)
    check_response(DOC, "POST", "/api/v1/messages", reply.status, reply.headers, reply.body)


_SCALARS = (st.none() | st.booleans() | st.integers(-10**15, 10**15) | st.floats() | st.text(max_size=12)
            | st.sampled_from([MOBILE, "urgent", "bulk", "2030-01-01T08:00:00+08:00", "2030-01-01T08:00:00", "",
                               "01", 1893456000]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
_FIELDS = st.sampled_from(SEND_FIELDS + ("priorty", "To"))
_MESSAGE = (st.dictionaries(_FIELDS, _VALUES, max_size=8)
            | st.fixed_dictionaries({"to": st.sampled_from([MOBILE, [MOBILE, "13900139000"]]),
                                     "text": st.text(max_size=30)},
                                    optional={"priority": st.integers(0, 9) | st.sampled_from(["urgent", "x"]),
                                              "send_at": st.integers(0, 2**31) | _SCALARS,
                                              "ext": st.sampled_from(["01", "x", None]), "ref": _SCALARS,
                                              "report": st.booleans() | _SCALARS}))
_SCHEMA_CODES = {"wrong_type", "unknown_field", "required", "no_messages", "no_recipients", "too_many_messages",
                 "out_of_range"}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MESSAGE | st.lists(_MESSAGE, max_size=4) | _VALUES, st.booleans())
@example({"to": ""}, False)  # no text and no template: the schema says so too (found by a clean-clone run)
def test_json_bodies_agree_with_the_schema(body: Any, ascii_only: bool) -> None:
    """Any JSON body gets 202, 400 or 422; 202 only if the schema allows it, schema-type problems only if not."""
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    [reply] = in_process(post(raw))
    assert reply.status in (202, 400, 422), reply.body
    check_response(DOC, "POST", "/api/v1/messages", reply.status, reply.headers, reply.body)
    conforms = not validate(DOC, {"$ref": "#/components/schemas/SendBody"}, json.loads(raw))
    if reply.status == 202:
        assert conforms
    if reply.status == 422 and {d["code"] for d in reply.error["details"]} & _SCHEMA_CODES:
        assert not conforms, reply.error["details"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_arbitrary_mo_queries_never_cause_a_500(query: bytes) -> None:
    """Any percent-encoded query string on GET /api/v1/mo is answered 200 or 422."""
    from urllib.parse import quote_from_bytes

    target = b"/api/v1/mo?" + quote_from_bytes(query, safe="=&").encode()
    [reply] = in_process(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nX-API-Key: demo-key\r\n\r\n")
    assert reply.status in (200, 422)
    check_response(DOC, "GET", target.decode(), reply.status, reply.headers, reply.body)
