"""The Kannel-compatible URL interface: the real daemon on loopback, called with a real HTTP client."""

from __future__ import annotations

import datetime
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import parse_qs, quote, quote_from_bytes, urlencode, urlsplit

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web import server

from daemon_helpers import DaemonCase, R, account, count, key_hash, make_config, rows, wait_for
from fake_gateway import SECRET_IN_ERROR, FakeGateway
from ports import free_port
from smsgw.adapters.url._sendsms import KANNEL_PRIORITY, SendsmsError, parse_form, send_request
from smsgw.adapters.url.service import UrlInterface
from smsgw.app import Daemon
from smsgw.config import Config
from smsgw.model import Account
from test_callbacks import Receiver

ACCEPTED = b"0: Accepted for delivery"
AUTH = "username=demo&password=demo-key"
SERVICE_CODE = "1069000100"  # conf/smsgw.yaml's carrier


Answer = tuple[int, dict[str, str], bytes]


def _http(url: str, data: bytes | None, headers: dict[str, str], method: str | None) -> Answer:
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


class UrlCase(DaemonCase):
    tmp_prefix = "smsgw-url-"

    async def url_daemon(self, **overrides: Any) -> tuple[Daemon, Config]:
        config = make_config(self.tmp, {"url_interface": {"enabled": True, "port": free_port()}, **overrides})
        daemon = await self.daemon(config)
        [url] = [a for a in daemon.adapters if isinstance(a, UrlInterface)]
        self.base = f"http://{url.address()}"
        return daemon, config

    async def get(self, query: str, path: str = "/cgi-bin/sendsms", method: str | None = None) -> Answer:
        answer: Answer = await deferToThread(_http, f"{self.base}{path}?{query}", None, {}, method)
        return answer

    async def post(self, body: bytes, query: str = "",
                   ctype: str = "application/x-www-form-urlencoded") -> Answer:
        url = f"{self.base}/cgi-bin/sendsms" + (f"?{query}" if query else "")
        answer: Answer = await deferToThread(_http, url, body, {"Content-Type": ctype}, "POST")
        return answer


class SendTests(UrlCase):
    async def test_get_and_post_are_accepted_and_delivered_to_every_number(self) -> None:
        """GET and form POST answer Kannel's 202; every number (space, +, comma, semicolon separated) is delivered."""
        _, config = await self.url_daemon()
        status, headers, body = await self.get(f"{AUTH}&to=13800138000+13900139000&text=hello")
        assert (status, body) == (202, ACCEPTED)
        assert headers["content-type"].startswith("text/plain")
        form = urlencode({"username": "demo", "password": "demo-key", "to": "13700137000, 13600136000;13500135000",
                          "text": "from a form"}).encode()
        assert (await self.post(form))[::2] == (202, ACCEPTED)
        await wait_for(lambda: count(config, "recipients", "state = 'delivered'") == 5, what="5 delivered")
        assert sorted(rows(config, "SELECT content, recipients, interface FROM messages")) == [
            ("from a form", 3, "url"), ("hello", 2, "url")]

    async def test_chinese_text_arrives_intact_in_utf8_gbk_and_ucs2(self) -> None:
        """Chinese text sent as UTF-8, as GBK bytes with charset=GBK and as UTF-16BE with coding=2 is stored alike."""
        _, config = await self.url_daemon()
        text = "您好，世界！验证码 1234"
        queries = [
            f"{AUTH}&to=13800138000&text={quote(text)}",
            f"{AUTH}&to=13800138001&charset=GBK&text={quote_from_bytes(text.encode('gbk'))}",
            f"{AUTH}&to=13800138002&charset=gb2312&text={quote_from_bytes(text.encode('gb2312'))}",
            f"{AUTH}&to=13800138003&coding=2&text={quote_from_bytes(text.encode('utf-16-be'))}",
        ]
        for query in queries:
            assert (await self.get(query))[::2] == (202, ACCEPTED), query
        gbk_form = f"{AUTH}&to=13800138004&text={quote_from_bytes(text.encode('gbk'))}".encode()
        assert (await self.post(gbk_form, ctype="application/x-www-form-urlencoded; charset=GBK"))[::2] == (
            202, ACCEPTED)
        await wait_for(lambda: count(config, "recipients", "state = 'delivered'") == 5, what="5 delivered")
        assert [r[0] for r in rows(config, "SELECT content FROM messages")] == [text] * 5

    async def test_json_answers_and_native_parameters(self) -> None:
        """format=json answers like the REST API; ref, ext from `from`, Kannel priority and send_at are stored."""
        _, config = await self.url_daemon()
        later = int(time.time()) + 10 * 86400
        status, headers, body = await self.get(
            f"{AUTH}&to=13800138000,13900139000&text=x&format=json&ref=order-7&from={SERVICE_CODE}88"
            f"&priority=3&send_at={later}")
        assert (status, headers["content-type"]) == (202, "application/json")
        [message] = json.loads(body)["messages"]
        assert (message["ref"], message["recipients"], message["segments"]) == ("order-7", 2, 1)
        assert rows(config, "SELECT id, ref, ext, priority, send_at, report FROM messages") == [
            (int(message["id"]), "order-7", "88", 9, float(later), 1)]
        china = datetime.timezone(datetime.timedelta(hours=8))
        iso = datetime.datetime.fromtimestamp(later, china).isoformat()  # 2026-12-02T12:00:00+08:00
        status, _, body = await self.get(f"{AUTH}&to=13800138000&text=y&ext=5&from=7&priority=bulk&report=0"
                                         f"&send_at={quote(iso)}")
        assert status == 202, body
        assert rows(config, "SELECT ext, priority, send_at, report FROM messages WHERE ref IS NULL") == [
            ("5", 0, float(later), 0)]

    async def test_dlr_url_and_mask_are_kept_with_the_message(self) -> None:
        """dlr-url keeps its Kannel %-escapes, is stored with dlr-mask and receives the masked report."""
        receiver = Receiver()
        port = self.listen_receiver(receiver)
        _, config = await self.url_daemon()
        dlr_url = f"http://127.0.0.1:{port}/dlr?type=%d&to=%p&stat=%A"
        status, _, body = await self.get(f"{AUTH}&to=13800138000&text=x&dlr-mask=1&dlr-url={quote(dlr_url, safe='')}")
        assert (status, body) == (202, ACCEPTED)
        columns = {r[1] for r in rows(config, "PRAGMA table_info(messages)")}
        if {"dlr_url", "dlr_mask"} <= columns:  # schema v3
            assert rows(config, "SELECT dlr_url, dlr_mask FROM messages") == [(dlr_url, 1)]
        await wait_for(lambda: len(receiver.requests) >= 1, what="the delivery report")
        query = parse_qs(urlsplit(receiver.requests[0]["uri"]).query)
        assert (query["type"], query["to"], query["stat"]) == (["1"], ["13800138000"], ["DELIVRD"])

    def listen_receiver(self, receiver: Receiver) -> int:
        listening = R.listenTCP(0, server.Site(receiver), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        return int(listening.getHost().port)


class RefusalTests(UrlCase):
    async def test_credentials_and_interfaces_are_checked_like_the_rest_api(self) -> None:
        """Wrong or missing credentials and an account without the url interface get Kannel's 403."""
        _, config = await self.url_daemon(accounts=[account("demo", "demo-key"),
                                                account("restonly", "r-key", interfaces=["rest"]),
                                                account("urlonly", "u-key", interfaces=["url"])])
        for query in ("username=demo&password=wrong", "username=nobody&password=demo-key", "username=demo",
                      "password=demo-key", "username=demo&password="):
            assert (await self.get(f"{query}&to=13800138000&text=x"))[::2] == (
                403, b"Authorization failed for sendsms"), query
        status, _, body = await self.get("username=restonly&password=r-key&to=13800138000&text=x")
        assert status == 403 and body.startswith(b"Authorization failed for sendsms: account 'restonly' may not")
        assert (await self.get("user=urlonly&pass=u-key&to=13800138000&text=x"))[::2] == (202, ACCEPTED)
        assert count(config, "messages") == 1

    async def test_missing_and_invalid_parameters_get_precise_answers(self) -> None:
        """Missing to or text, and a number the validator refuses, are 400s naming the reason; nothing is stored."""
        _, config = await self.url_daemon()
        cases = {
            f"{AUTH}&text=x": b"Missing receiver number, rejected",
            f"{AUTH}&to=&text=x": b"Empty receiver number not allowed, rejected",
            f"{AUTH}&to=+,;&text=x": b"Empty receiver number not allowed, rejected",
            f"{AUTH}&to=13800138000": b"Missing text, rejected",
            f"{AUTH}&to=13800138000&text=x&coding=1": b"Coding field misformed, rejected: coding=1",
            f"{AUTH}&to=13800138000&text=x&priority=7": b"Priority field misformed, rejected",
            f"{AUTH}&to=13800138000&text=x&dlr-url=ftp://x": b"DLR-URL field misformed, rejected",
            f"{AUTH}&to=13800138000&text=x&dlr-mask=64&dlr-url=http://x/": b"DLR-Mask field misformed, rejected",
            f"{AUTH}&to=13800138000&text=x&send_at=tomorrow": b"Send_at field misformed, rejected",
            f"{AUTH}&to=13800138000&text=a&text=b": b"Parameter text is given 2 times, rejected",
        }
        for query, answer in cases.items():
            status, headers, body = await self.get(query)
            assert status == 400 and body.startswith(answer), (query, body)
            assert headers["content-type"].startswith("text/plain")
        status, _, body = await self.get(f"{AUTH}&to=13800138000+12345&text=x")
        assert status == 400 and body.startswith(b"Invalid message, rejected: to[1]: "), body
        assert b"12345" in body
        status, headers, body = await self.get(f"{AUTH}&to=13800138000+12345&text=x&format=json")
        error = json.loads(body)["error"]
        assert (status, headers["content-type"], error["code"]) == (422, "application/json", "validation_failed")
        assert [d["where"] for d in error["details"]] == ["to[1]"]
        status, _, body = await self.get(f"{AUTH}&text=x&format=json")
        assert (status, json.loads(body)["error"]) == (400, {"code": "required", "details": [],
                                                             "message": "Missing receiver number, rejected"})
        assert count(config, "messages") == 0

    async def test_malformed_requests_are_a_precise_400_never_a_trace(self) -> None:
        """Bad escapes, text that is not its charset, unknown charsets, wrong methods and paths get exact answers."""
        _, config = await self.url_daemon()
        cases = {
            f"{AUTH}&to=13800138000&text=100%": b"Malformed query string, rejected: '%' at offset 55 is not "
                                                b"followed by two hex digits (got '%')",
            f"{AUTH}&to=13800138000&text=%zz": b"Malformed query string, rejected: '%' at offset 52 is not "
                                               b"followed by two hex digits (got '%zz')",
            f"{AUTH}&to=13800138000&text=%C4%E3%BA%C3": b"Charset or body misformed, rejected: text is not UTF-8: "
                                                        b"byte 0xc4 at offset 0",
            f"{AUTH}&to=13800138000&text=abc&coding=2": b"Charset or body misformed, rejected: text is not UTF-16BE: "
                                                        b"an odd number of bytes (3)",
            f"{AUTH}&to=13800138000&text=x&charset=EBCDIC": b"Charset or body misformed, rejected: unknown charset "
                                                            b"'EBCDIC'",
            f"{AUTH}&to=13800138000&text=x&ref=%FF": b"Parameter ref is not valid UTF-8",
        }
        for query, answer in cases.items():
            status, _, body = await self.get(query)
            assert status == 400 and body.startswith(answer), (query, body)
        status, headers, body = await self.get(f"{AUTH}&format=json&text=%zz")
        assert (status, headers["content-type"], json.loads(body)["error"]["code"]) == (
            400, "application/json", "malformed_query")
        assert (await self.get(AUTH, path="/cgi-bin/other"))[0] == 404
        status, headers, _ = await self.get(AUTH, method="DELETE")
        assert (status, headers["allow"]) == (405, "GET, POST")
        status, _, body = await self.post(b'{"to": "13800138000"}', query=AUTH, ctype="application/json")
        assert status == 400 and body.startswith(b"Invalid content-type"), body
        status, _, body = await self.post(b"to=13800138000&text=%", query=AUTH)
        assert status == 400 and body.startswith(b"Malformed body, rejected"), body
        assert count(config, "messages") == 0

    async def test_an_oversized_body_is_refused_before_it_is_read(self) -> None:
        """A POST announcing more than max_body_bytes gets a plain-text 413 and the connection closes."""
        await self.url_daemon(url_interface={"enabled": True, "port": free_port(), "max_body_bytes": 1000})
        host, port = self.base.removeprefix("http://").split(":")
        answer: bytes = await deferToThread(_raw_exchange, host, int(port),
                                            b"POST /cgi-bin/sendsms HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                                            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ") and b"Content-Type: text/plain" in head
        assert body == b"Request body too large, rejected: at most 1000 bytes"


class GatewayFailureTests(TestCase):
    """The listener alone, in front of a FakeGateway that fails the ways a real one can."""

    timeout = 30

    async def start(self, mode: str, request_timeout: float = 10.0) -> FakeGateway:
        gateway = FakeGateway()
        gateway.mode = mode
        service = UrlInterface(gateway, [Account("demo", key_hash("demo-key"))], R, port=0,
                               request_timeout=request_timeout)
        service.startService()
        self.addCleanup(service.stopService)
        self.base = f"http://{service.address()}/cgi-bin/sendsms?{AUTH}&to=13800138000&text=x"
        return gateway

    async def get(self, extra: str = "") -> Answer:
        answer: Answer = await deferToThread(_http, self.base + extra, None, {}, None)
        return answer

    async def test_a_broken_gateway_gives_an_incident_id_and_no_details(self) -> None:
        """A gateway error is a 500 "Sending failed." with an incident id; the error itself stays in the log."""
        await self.start("broken")
        status, _, body = await self.get()
        assert status == 500 and body.startswith(b"Sending failed. An internal error occurred; incident ")
        assert SECRET_IN_ERROR.encode() not in body and b"Traceback" not in body
        status, _, body = await self.get("&format=json")
        assert (status, json.loads(body)["error"]["code"]) == (500, "internal_error")

    async def test_a_draining_gateway_and_a_slow_one_get_503_with_retry_after(self) -> None:
        """Unavailable answers 503 at once; a gateway that does not answer in request_timeout, 503 then."""
        await self.start("unavailable")
        status, headers, body = await self.get()
        assert (status, headers["retry-after"]) == (503, "5") and body.startswith(b"Sending failed. ")
        await self.start("hold", request_timeout=0.3)
        status, _, body = await self.get()
        assert status == 503 and b"did not answer within 0.3 s" in body


def _raw_exchange(host: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


# --- the parameters, without a daemon -------------------------------------------------------------

DEMO = Account("demo", "0" * 64, max_priority=7)


def build(query: str, now: float = 1000.0) -> Any:
    return send_request(parse_form(query.encode(), "query string"), DEMO, now, [SERVICE_CODE, "10690"])


def test_plus_is_a_space_and_escaped_plus_a_plus() -> None:
    """'+' in a value decodes to a space (a separator in `to`), %2B to a literal plus."""
    assert parse_form(b"to=1+2&text=a%2Bb+c", "q") == {"to": [b"1 2"], "text": [b"a+b c"]}
    assert build("to=%2B8613800138000+13900139000&text=x").to == ("+8613800138000", "13900139000")


def test_from_names_the_extension_after_the_longest_service_code() -> None:
    """A numeric `from` after a service code gives the rest as ext; short digits are the ext; letters are ignored."""
    assert build(f"to=1&text=x&from={SERVICE_CODE}01").ext == "01"
    assert build(f"to=1&text=x&from={SERVICE_CODE}").ext == ""
    assert build("to=1&text=x&from=1069077").ext == "77"
    assert build("to=1&text=x&from=123").ext == "123"
    assert build("to=1&text=x&from=ACME").ext is None
    assert build("to=1&text=x&from=123&ext=9").ext == "9"


def test_kannel_priority_is_mapped_and_capped_by_the_account() -> None:
    """Kannel 0..3 maps to 5, 6, 7, 9, capped at the account's max_priority; names pass as they are."""
    assert [build(f"to=1&text=x&priority={p}").priority for p in range(4)] == [5, 6, 7, 7]
    assert KANNEL_PRIORITY[3] == 9
    assert build("to=1&text=x&priority=urgent").priority == 9  # the validator refuses it for this account


def test_deferred_minutes_and_dlr_mask_bits() -> None:
    """`deferred` is minutes from now; dlr-mask drops bit 32 and only counts with a dlr-url."""
    assert build("to=1&text=x&deferred=10").send_at == 1600.0
    assert build("to=1&text=x&dlr-mask=33&dlr-url=http://h/").dlr_mask == 1
    assert build("to=1&text=x&dlr-mask=3").dlr_mask == 0


@given(st.binary(max_size=200))
def test_any_query_string_parses_or_is_refused_with_a_400(raw: bytes) -> None:
    """No bytes make the parameter parser raise anything but a SendsmsError."""
    try:
        params = parse_form(raw, "query string")
        send_request(params, DEMO, 0.0)
    except SendsmsError as e:
        assert e.status in (400, 403)
