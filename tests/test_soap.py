"""The SOAP WebService: zeep as the real client against the daemon and against the listener alone; the parser fuzzed."""

from __future__ import annotations

import datetime
import os
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

import pytest
import requests
import zeep
import zeep.exceptions
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from structlog.testing import capture_logs
from zeep.transports import Transport
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from daemon_helpers import DaemonCase, R, account, count, key_hash, make_config, rows, spin, wait_for
from fake_gateway import SECRET_IN_ERROR, FakeGateway, _assert_well_typed
from ports import free_port
from smsgw.adapters.soap._codec import SOAP_ENV, SoapFault, read_envelope
from smsgw.adapters.soap._operations import FetchMo, QuerySms, SendSms, read_call
from smsgw.adapters.soap._wsdl import NAMESPACE, wsdl
from smsgw.adapters.soap.service import SoapInterface
from smsgw.app import Daemon
from smsgw.config import Config
from smsgw.model import AcceptedMessage, Account, SendRequest

SMS = f"{{{NAMESPACE}}}"
Answer = tuple[int, dict[str, str], bytes]


def _http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
          method: str | None = None) -> Answer:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def _raw_exchange(address: str, data: bytes) -> bytes:
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def envelope(call: str, body: str, ns: str = NAMESPACE, env: str = SOAP_ENV) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{env}" xmlns:sms="{ns}">'
            f"<soap:Body><sms:{call}>{body}</sms:{call}></soap:Body></soap:Envelope>").encode()


DEMO = "<sms:account>demo</sms:account><sms:password>demo-key</sms:password>"


def fault_of(body: bytes) -> dict[str, Any]:
    """faultcode, faultstring, the smsFault code and its problems (where, code, message) of a fault envelope."""
    fault = etree.fromstring(body).find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    assert fault is not None, body
    info = fault.find(f"detail/{SMS}smsFault")
    assert info is not None, body
    return {"faultcode": fault.findtext("faultcode"), "faultstring": fault.findtext("faultstring"),
            "code": info.findtext(f"{SMS}code"), "incident": info.findtext(f"{SMS}incident"),
            "retry_after": info.findtext(f"{SMS}retryAfter"),
            "problems": [(p.findtext(f"{SMS}where"), p.findtext(f"{SMS}code"), p.findtext(f"{SMS}message"))
                         for p in info.findall(f"{SMS}problem")]}


def schema() -> etree.XMLSchema:
    """The XSD embedded in the WSDL, as lxml's validator."""
    document = etree.fromstring(wsdl("http://h/ws/sms"))
    xsd = document.find("{http://schemas.xmlsoap.org/wsdl/}types/{http://www.w3.org/2001/XMLSchema}schema")
    assert xsd is not None
    return etree.XMLSchema(xsd)


def body_child(answer: bytes) -> etree._Element:
    body = etree.fromstring(answer).find(f"{{{SOAP_ENV}}}Body")
    assert body is not None and len(body) == 1
    return body[0]


class Zeep:
    """A zeep client made from the service's own WSDL, called on a thread (zeep is synchronous)."""

    def __init__(self, client: zeep.Client) -> None:
        self.client = client

    @classmethod
    async def connect(cls, address: str) -> Zeep:
        """A client for the service at `address`, one connection per call.

        Keep-alive would leave a connection open past the test (trial fails on that),
        and closing zeep's session does not close one whose fault is still referenced.
        """
        session = requests.Session()
        session.headers["Connection"] = "close"
        transport = Transport(session=session)  # type: ignore[no-untyped-call]
        client: zeep.Client = await deferToThread(zeep.Client, f"http://{address}/ws/sms?wsdl", transport=transport)
        return cls(client)

    async def call(self, operation: str, **kwargs: Any) -> Any:
        kwargs.setdefault("account", "demo")
        kwargs.setdefault("password", "demo-key")
        return await deferToThread(getattr(self.client.service, operation), **kwargs)

    async def fault(self, operation: str, **kwargs: Any) -> zeep.exceptions.Fault:
        try:
            await self.call(operation, **kwargs)
        except zeep.exceptions.Fault as fault:
            return fault
        raise AssertionError(f"{operation} answered without a fault")


def problems_of(fault: zeep.exceptions.Fault) -> list[tuple[str, str]]:
    return [(p.findtext(f"{SMS}where"), p.findtext(f"{SMS}code")) for p in fault.detail.iter(f"{SMS}problem")]


# --- the whole daemon ---------------------------------------------------------------------------

class SoapDaemonCase(DaemonCase):
    tmp_prefix = "smsgw-soap-"

    async def soap_daemon(self, **overrides: Any) -> tuple[Daemon, Config]:
        embedded = overrides.pop("embedded_simulator", True)
        config = make_config(self.tmp, {"soap_interface": {"enabled": True, "port": free_port()}, **overrides},
                             embedded_simulator=embedded)
        daemon = await self.daemon(config)
        [soap] = [a for a in daemon.adapters if isinstance(a, SoapInterface)]
        address = soap.address()
        assert address is not None
        self.address = address
        self.zeep = await Zeep.connect(address)
        return daemon, config


class DaemonTests(SoapDaemonCase):
    async def test_send_to_several_numbers_then_query_until_delivered(self) -> None:
        """sendSms to three numbers is stored with interface soap; querySms shows each delivered with its Msg_Id."""
        _, config = await self.soap_daemon()
        numbers = ["13800138000", "13900139000", "13700137000"]
        result = await self.zeep.call("sendSms", mobile=[*numbers, numbers[0]], content="您好，SOAP", ref="wo-1",
                                      ext="5", priority=7, report=True)
        assert (result.recipients, result.segments, result.ref, result.repeated) == (3, 1, "wo-1", False)
        assert result.droppedDuplicate == [numbers[0]]
        assert rows(config, "SELECT id, content, interface, ext, priority, recipients FROM messages") == [
            (int(result.messageId), "您好，SOAP", "soap", "5", 7, 3)]

        deadline = time.monotonic() + 20
        while True:
            answer = await self.zeep.call("querySms", messageId=result.messageId)
            if all(r.state == "delivered" for r in answer.recipient):
                break
            assert time.monotonic() < deadline, answer
            await spin(0.1)
        assert (answer.messageId, answer.ref, answer.content, answer.priority) == (
            result.messageId, "wo-1", "您好，SOAP", 7)
        assert sorted(r.mobile for r in answer.recipient) == sorted(numbers)
        for r in answer.recipient:
            assert (r.state, r.stat, r.error, r.attempts) == ("delivered", "DELIVRD", None, 1)
            assert len(r.msgId) == 1 and len(r.msgId[0]) == 16
            assert r.submittedTime <= r.reportedTime and r.reportedTime.tzinfo is not None
        again = await self.zeep.call("sendSms", mobile=numbers, content="您好，SOAP", ref="wo-1")
        assert (again.messageId, again.repeated) == (result.messageId, True)
        assert count(config, "messages") == 1

    async def test_a_template_is_rendered_by_the_gateway(self) -> None:
        """sendSms naming a template sends its rendered text; a missing parameter is a fault naming param."""
        daemon, config = await self.soap_daemon()
        await daemon.gateway.templates.put("verify", "您的验证码是{code}，{分钟}分钟内有效", False, "ops")
        result = await self.zeep.call("sendSms", mobile=["13800138000"], template="verify",
                                      param=[{"name": "code", "value": "4321"}, {"name": "分钟", "value": "5"}])
        assert rows(config, "SELECT id, content, template FROM messages") == [
            (int(result.messageId), "您的验证码是4321，5分钟内有效", "verify")]
        fault = await self.zeep.fault("sendSms", mobile=["13800138000"], template="verify",
                                 param=[{"name": "code", "value": "1"}])
        assert problems_of(fault) == [("param", "missing_params")]

    async def test_fetch_mo_pages_through_uplink_messages(self) -> None:
        """MO from the simulator routed to the account come back from fetchMo in order, page by page."""
        _, config = await self.soap_daemon(mo={"default_consumer": "demo"}, embedded_simulator=False)
        sim = self.simulator(config, mo_rate=30.0, mo_long_ratio=0.0, mo_dest=config.carriers[0].service_code + "01")
        await wait_for(lambda: count(config, "mo_messages") >= 5, what="5 MO stored")
        await sim.stopService()
        await spin(0.3)  # the last MO's commit
        stored = rows(config, "SELECT id, src, dest, ext, content FROM mo_messages ORDER BY id")
        seen: list[Any] = []
        cursor = None
        while True:
            page = await self.zeep.call("fetchMo", cursor=cursor, limit=2)
            if not page.message:
                assert page.nextCursor == cursor
                break
            assert len(page.message) <= 2
            seen.extend(page.message)
            cursor = page.nextCursor
        assert [(int(m.id), m.mobile, m.destination, m.ext, m.content) for m in seen] == stored
        assert all(m.receivedTime.tzinfo is not None for m in seen)

    async def test_refusals_are_client_faults_naming_the_problem(self) -> None:
        """Wrong password, a number the validator refuses, a foreign message and an account without soap are faults."""
        _, config = await self.soap_daemon(accounts=[account("demo", "demo-key"),
                                                 account("restonly", "r-key", interfaces=["rest"])])
        fault = await self.zeep.fault("sendSms", password="wrong", mobile=["13800138000"], content="x")
        assert (fault.code, fault.detail.findtext(f".//{SMS}code")) == ("soap:Client", "authentication_failed")
        assert "demo-key" not in fault.message
        fault = await self.zeep.fault("sendSms", account="restonly", password="r-key", mobile=["13800138000"],
                                      content="x")
        assert fault.detail.findtext(f".//{SMS}code") == "interface_not_allowed"
        fault = await self.zeep.fault("sendSms", mobile=["13800138000", "12345", "abc"], content="x")
        assert fault.code == "soap:Client"
        assert [w for w, _ in problems_of(fault)] == ["mobile[1]", "mobile[2]"]
        assert "mobile[1]: " in fault.message and "12345" in fault.message
        fault = await self.zeep.fault("querySms", messageId="123456789")
        assert (fault.code, fault.detail.findtext(f".//{SMS}code")) == ("soap:Client", "not_found")
        assert count(config, "messages") == 0

    async def test_every_call_logs_one_http_request_line(self) -> None:
        """A call logs one http_request line with interface, operation, account and status; never the password."""
        await self.soap_daemon()
        with capture_logs() as logs:
            result = await self.zeep.call("sendSms", mobile=["13800138000"], content="x")
            await self.zeep.fault("sendSms", password="wrong-key", mobile=["13800138000"], content="x")
        lines = [e for e in logs if e["event"] == "http_request"]
        assert [(e["interface"], e["operation"], e["account"], e["status"]) for e in lines] == [
            ("soap", "sendSms", "demo", 200), ("soap", "sendSms", None, 500)]
        assert lines[0]["message_id"] == result.messageId
        assert "wrong-key" not in repr(logs) and "demo-key" not in repr(logs)


# --- the listener alone, in front of a FakeGateway ---------------------------------------------

class RecordingGateway(FakeGateway):
    """A FakeGateway that also keeps every request it is handed, those it refuses too."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[SendRequest] = []

    def accept(self, account: Account, interface: str,
               requests: Sequence[SendRequest]) -> Deferred[list[AcceptedMessage]]:
        self.handed.extend(requests)
        return super().accept(account, interface, requests)


class ListenerCase(TestCase):
    timeout = 30

    async def start(self, mode: str = "normal", request_timeout: float = 10.0, max_body_bytes: int = 64 * 1024,
                    accounts: tuple[Account, ...] = ()) -> RecordingGateway:
        self.gateway = RecordingGateway()
        self.gateway.mode = mode
        service = SoapInterface(self.gateway, accounts or (Account("demo", key_hash("demo-key")),), R, port=0,
                                request_timeout=request_timeout, max_body_bytes=max_body_bytes)
        service.startService()
        self.addCleanup(service.stopService)
        address = service.address()
        assert address is not None
        self.address = address
        self.url = f"http://{address}/ws/sms"
        return self.gateway

    async def post(self, body: bytes, ctype: str = "text/xml; charset=utf-8", path: str = "/ws/sms") -> Answer:
        answer: Answer = await deferToThread(_http, f"http://{self.address}{path}", body, {"Content-Type": ctype},
                                             "POST")
        return answer

    async def client_fault(self, body: bytes, **kwargs: Any) -> dict[str, Any]:
        status, headers, answer = await self.post(body, **kwargs)
        assert (status, headers["content-type"]) == (500, "text/xml; charset=utf-8"), answer
        fault = fault_of(answer)
        assert fault["faultcode"] == "soap:Client", fault
        return fault


class WsdlTests(ListenerCase):
    async def test_the_wsdl_loads_in_zeep_with_the_address_the_client_used(self) -> None:
        """GET ?wsdl gives a WSDL zeep loads, with three operations, whose soap:address is the Host header's."""
        await self.start()
        client = await Zeep.connect(self.address)
        [service] = client.client.wsdl.services.values()
        [port] = service.ports.values()
        assert sorted(port.binding._operations) == ["fetchMo", "querySms", "sendSms"]
        assert port.binding_options["address"] == self.url
        status, headers, body = await deferToThread(_http, self.url + "?WSDL", None, {"Host": "gw.example:8088"})
        assert (status, headers["content-type"]) == (200, "text/xml; charset=utf-8")
        assert b'location="http://gw.example:8088/ws/sms"' in body
        _, _, body = await deferToThread(_http, self.url + "?wsdl", None, {"Host": 'x"/><evil a="'})
        assert f'location="{self.url}"'.encode() in body and b"evil" not in body

    def test_the_embedded_schema_is_valid_xsd(self) -> None:
        """The WSDL is well-formed and its schema compiles (lxml's XMLSchema is strict about XSD)."""
        assert schema() is not None


class CallTests(ListenerCase):
    async def test_send_sms_passes_every_field_to_the_gateway(self) -> None:
        """mobiles, content, sendTime (naive: local time), ext, ref, priority and report reach the SendRequest."""
        gateway = await self.start()
        client = await Zeep.connect(self.address)
        local = datetime.datetime(2031, 5, 6, 7, 8, 9)
        result = await client.call("sendSms", mobile=["13800138000", "+8613900139000"], content="hi", ext="12",
                                   ref="r1", priority=9, report=False, sendTime=local)
        assert (result.messageId, result.recipients, result.repeated) == ("m00000001", 2, False)
        [(name, interface, (request,))] = gateway.accepted_requests
        assert (name, interface) == ("demo", "soap")
        assert (request.to, request.text, request.ext, request.ref, request.priority, request.report) == (
            ("13800138000", "+8613900139000"), "hi", "12", "r1", 9, False)
        assert request.send_at == local.timestamp()
        aware = datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=datetime.timezone(datetime.timedelta(hours=8)))
        await client.call("sendSms", mobile=["13800138000"], content="x", sendTime=aware)
        assert gateway.accepted_requests[-1][2][0].send_at == aware.timestamp()

    async def test_a_template_and_its_params_are_passed_through(self) -> None:
        """template with param name/value pairs becomes SendRequest(text="", template, params)."""
        gateway = await self.start()
        status, _, body = await self.post(envelope("sendSms", DEMO + (
            "<sms:mobile>13800138000</sms:mobile><sms:template>verify</sms:template>"
            "<sms:param><sms:name>code</sms:name><sms:value>1234</sms:value></sms:param>"
            "<sms:param><sms:name>分钟</sms:name><sms:value> 5 </sms:value></sms:param>")))
        # the fake gateway knows no template "verify": what counts is what it was handed
        assert status == 500 and fault_of(body)["problems"][0][:2] == ("template", "unknown_template")
        [request] = gateway.handed
        assert (request.text, request.template, request.params) == ("", "verify", {"code": "1234", "分钟": " 5 "})
        for extra, where in (("<sms:content>x</sms:content>", "template"),
                             ("<sms:param><sms:name>code</sms:name><sms:value>2</sms:value></sms:param>",
                              "param[1].name")):
            fault = await self.client_fault(envelope("sendSms", DEMO + (
                "<sms:mobile>13800138000</sms:mobile><sms:template>verify</sms:template>"
                "<sms:param><sms:name>code</sms:name><sms:value>1</sms:value></sms:param>" + extra)))
            assert [p[0] for p in fault["problems"]] == [where]
        fault = await self.client_fault(envelope("sendSms", DEMO + (
            "<sms:mobile>13800138000</sms:mobile><sms:content>x</sms:content>"
            "<sms:param><sms:name>code</sms:name><sms:value>1</sms:value></sms:param>")))
        assert [p[:2] for p in fault["problems"]] == [("param[0]", "not_allowed")]

    async def test_query_sms_answers_the_accounts_own_message_with_every_recipient(self) -> None:
        """querySms lists each recipient with state, stat, msgIds and times; another account's id is not found."""
        gateway = await self.start(accounts=(Account("demo", key_hash("demo-key")), Account("b", key_hash("b-key"))))
        client = await Zeep.connect(self.address)
        sent = await client.call("sendSms", mobile=["13800138000", "13900139000"], content="x" * 200)
        gateway.deliver(sent.messageId)
        answer = await client.call("querySms", messageId=sent.messageId)
        assert (answer.state, answer.content, [r.mobile for r in answer.recipient]) == (
            "done", "x" * 200, ["13800138000", "13900139000"])
        first = answer.recipient[0]
        assert (first.state, first.stat, len(first.msgId)) == ("delivered", "DELIVRD", 2)
        assert first.reportedTime - first.submittedTime == datetime.timedelta(seconds=1.5)
        fault = await client.fault("querySms", account="b", password="b-key", messageId=sent.messageId)
        assert fault.detail.findtext(f".//{SMS}code") == "not_found"

    async def test_fetch_mo_answers_pages_and_refuses_a_bad_limit_or_cursor(self) -> None:
        """fetchMo pages the account's MO by cursor; limit 0 or 1001 and a foreign cursor are Client faults."""
        gateway = await self.start()
        for text in ("a", "b", "c\x01d"):
            gateway.add_mo(text, consumer="demo")
        gateway.add_mo("not mine", consumer="other")
        client = await Zeep.connect(self.address)
        page = await client.call("fetchMo", limit=2)
        assert [m.content for m in page.message] == ["a", "b"] and page.nextCursor == "000000000002"
        page = await client.call("fetchMo", cursor=page.nextCursor)
        assert [m.content for m in page.message] == ["c\ufffdd"]  # a control character XML cannot carry
        for limit in (0, 1001):
            fault = await client.fault("fetchMo", limit=limit)
            assert problems_of(fault) == [("limit", "out_of_range")]

    async def test_answers_validate_against_the_wsdls_schema(self) -> None:
        """Every operation's answer element and a fault's detail are valid by the embedded XSD."""
        gateway = await self.start()
        xsd = schema()
        _, _, body = await self.post(envelope("sendSms", DEMO + "<sms:mobile>13800138000</sms:mobile>"
                                              "<sms:mobile>13800138000</sms:mobile><sms:content>x</sms:content>"))
        sent = body_child(body)
        xsd.assertValid(sent)
        message_id = sent.findtext(f"{SMS}result/{SMS}messageId")
        assert message_id is not None
        gateway.deliver(message_id)
        gateway.add_mo("hello", consumer="demo")
        for call, extra in (("querySms", f"<sms:messageId>{message_id}</sms:messageId>"), ("fetchMo", "")):
            status, _, body = await self.post(envelope(call, DEMO + extra))
            assert status == 200, body
            xsd.assertValid(body_child(body))
        _, _, body = await self.post(envelope("sendSms", DEMO + "<sms:mobile>1</sms:mobile><sms:content/>"))
        detail = body_child(body).find(f"detail/{SMS}smsFault")
        assert detail is not None
        xsd.assertValid(detail)


class FaultTests(ListenerCase):
    async def test_malformed_xml_and_non_soap_documents_are_client_faults(self) -> None:
        """Broken XML names line and column; empty, plain XML, SOAP 1.2 and two Bodies are refused."""
        await self.start()
        fault = await self.client_fault(b'<soap:Envelope xmlns:soap="' + SOAP_ENV.encode() + b'"><soap:Body>\n<x>')
        assert fault["code"] == "malformed_xml" and "(line 2, column" in fault["faultstring"]
        cases = {
            b"": "malformed_xml",
            b"<order><mobile>1</mobile></order>": "not_soap",
            envelope("sendSms", DEMO, env="http://www.w3.org/2003/05/soap-envelope"): "version_mismatch",
            f'<e:Envelope xmlns:e="{SOAP_ENV}"><e:Body/><e:Body/></e:Envelope>'.encode(): "not_soap",
            f'<e:Envelope xmlns:e="{SOAP_ENV}"><e:Body/></e:Envelope>'.encode(): "no_operation",
            "<a>\udcff</a>".encode("utf-8", "surrogateescape"): "malformed_xml",
        }
        for body, code in cases.items():
            assert (await self.client_fault(body))["code"] == code, body

    async def test_unknown_operations_and_wrong_namespaces_are_client_faults(self) -> None:
        """An operation that does not exist (with a suggestion) or in another namespace is refused by name."""
        await self.start()
        fault = await self.client_fault(envelope("sendSMS", DEMO))
        assert fault["code"] == "unknown_operation" and "did you mean 'sendSms'?" in fault["faultstring"]
        fault = await self.client_fault(envelope("sendSms", DEMO, ns="http://tempuri.org/"))
        assert fault["code"] == "wrong_namespace" and NAMESPACE in fault["faultstring"]

    async def test_missing_unknown_repeated_and_mistyped_elements_are_all_listed(self) -> None:
        """Every problem of a call is listed in detail at once, with where, code and message."""
        await self.start()
        fault = await self.client_fault(envelope("sendSms", (
            "<sms:acount>demo</sms:acount><sms:content>a</sms:content><sms:content>b</sms:content>"
            "<sms:priority>high</sms:priority><sms:report>yes</sms:report><sms:sendTime>tomorrow</sms:sendTime>"
            '<other:ext xmlns:other="urn:x">1</other:ext><sms:mobile><sms:x/></sms:mobile>')))
        assert fault["code"] == "validation_failed"
        assert [(w, c) for w, c, _ in fault["problems"]] == [
            ("acount", "unknown_element"), ("ext", "wrong_namespace"), ("account", "required"),
            ("password", "required"), ("mobile[0]", "wrong_type"), ("content", "repeated"),
            ("sendTime", "bad_time"), ("priority", "wrong_type"), ("report", "wrong_type")]
        assert "did you mean 'account'?" in fault["problems"][0][2]
        fault = await self.client_fault(envelope("sendSms", DEMO + "<sms:mobile>13800138000</sms:mobile>"))
        assert fault["problems"] == [("content", "required", "content is required: the message's text (or give "
                                      "template and its param elements instead)")]

    async def test_unqualified_elements_and_nil_optionals_are_read(self) -> None:
        """Children without a namespace are accepted, and xsi:nil on an optional element means it is absent."""
        gateway = await self.start()
        status, _, body = await self.post(envelope("sendSms", (
            '<account>demo</account><password>demo-key</password><mobile> 13800138000 </mobile>'
            '<content>x</content><ref xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:nil="true"/>')))
        assert status == 200, body
        assert gateway.accepted_requests[0][2][0].ref is None

    async def test_dtds_are_refused_never_expanded(self) -> None:
        """A billion-laughs or XXE body is refused as a DTD: nothing is expanded or read from disk."""
        await self.start()
        laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                             for i in range(1, 10))
                  + b"]><lolz>&lol9;</lolz>")
        xxe = ('<?xml version="1.0"?><!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
               f'<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:sms="{NAMESPACE}"><soap:Body><sms:sendSms>'
               "<sms:account>&xxe;</sms:account></sms:sendSms></soap:Body></soap:Envelope>").encode()
        for body in (laughs, xxe, xxe.decode().encode("utf-16")):
            status, _, answer = await self.post(body)
            assert status == 500 and fault_of(answer)["code"] == "dtd_refused"
            assert b"root:" not in answer and b"lollol" not in answer

    async def test_must_understand_headers_are_refused_and_others_ignored(self) -> None:
        """A header marked mustUnderstand="1" is a Client fault; other headers are ignored."""
        gateway = await self.start()
        call = envelope("sendSms", DEMO + "<sms:mobile>13800138000</sms:mobile><sms:content>x</sms:content>")
        ignored = call.replace(b"<soap:Body>", b"<soap:Header><t:Trace xmlns:t='urn:t'>1</t:Trace></soap:Header>"
                               b"<soap:Body>")
        assert (await self.post(ignored))[0] == 200
        understood = call.replace(b"<soap:Body>", b"<soap:Header><t:Auth xmlns:t='urn:t' soap:mustUnderstand='1'/>"
                                  b"</soap:Header><soap:Body>")
        assert (await self.client_fault(understood))["code"] == "must_understand"
        assert len(gateway.accepted_requests) == 1

    async def test_gbk_bodies_are_read_by_declaration_or_content_type(self) -> None:
        """Chinese text in GBK arrives intact whether the XML declaration or the Content-Type names the charset."""
        gateway = await self.start()
        call = envelope("sendSms", DEMO + "<sms:mobile>13800138000</sms:mobile><sms:content>您好</sms:content>")
        declared = call.decode().replace('encoding="UTF-8"', 'encoding="GBK"').encode("gbk")
        assert (await self.post(declared, ctype="text/xml"))[0] == 200
        undeclared = call.decode().split("?>", 1)[1].encode("gbk")
        assert (await self.post(undeclared, ctype="text/xml; charset=GBK"))[0] == 200
        assert [r[2][0].text for r in gateway.accepted_requests] == ["您好", "您好"]
        assert (await self.client_fault(undeclared, ctype="text/xml; charset=x-nothing"))["code"] == "bad_charset"

    async def test_an_oversized_body_is_refused_with_413_and_a_fault(self) -> None:
        """A body over max_body_bytes is answered 413 with a Client fault before it is read."""
        await self.start(max_body_bytes=1000)
        answer: bytes = await deferToThread(_raw_exchange, self.address,
                                            b"POST /ws/sms HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                                            b"Content-Type: text/xml\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ") and b"Content-Type: text/xml" in head
        fault = fault_of(body)
        assert (fault["faultcode"], fault["code"]) == ("soap:Client", "too_large")
        assert "at most 1000" in fault["faultstring"]

    async def test_other_paths_and_methods_are_refused(self) -> None:
        """Another path is 404, PUT and a GET without ?wsdl are 405 with Allow: all SOAP faults."""
        await self.start()
        status, _, body = await self.post(envelope("sendSms", DEMO), path="/ws/other")
        assert (status, fault_of(body)["code"]) == (404, "not_found")
        for method in ("GET", "PUT"):
            status, headers, body = await deferToThread(_http, self.url, None, {}, method)
            assert (status, headers["allow"], fault_of(body)["code"]) == (405, "GET, POST", "method_not_allowed")


class GatewayFailureTests(ListenerCase):
    async def test_a_broken_gateway_gives_a_server_fault_with_an_incident_id_in_the_log(self) -> None:
        """An unexpected gateway error is a soap:Server fault naming an incident id that the log has in full."""
        await self.start("broken")
        client = await Zeep.connect(self.address)
        with capture_logs() as logs:
            fault = await client.fault("sendSms", mobile=["13800138000"], content="x")
        assert fault.code == "soap:Server" and SECRET_IN_ERROR not in fault.message
        incident = fault.detail.findtext(f".//{SMS}incident")
        assert incident and incident in fault.message
        [error] = [e for e in logs if e["event"] == "http_internal_error"]
        assert error["incident"] == incident and SECRET_IN_ERROR in str(error["exc_info"][1])

    async def test_unavailable_and_slow_gateways_give_server_faults_with_a_retry_hint(self) -> None:
        """Draining is a Server fault with retryAfter and Retry-After at once; a silent gateway, after the timeout."""
        await self.start("unavailable")
        call = envelope("sendSms", DEMO + "<sms:mobile>13800138000</sms:mobile><sms:content>x</sms:content>")
        status, headers, body = await self.post(call)
        fault = fault_of(body)
        assert (status, headers["retry-after"], fault["faultcode"], fault["code"], fault["retry_after"]) == (
            500, "5", "soap:Server", "unavailable", "5")
        await self.start("hold", request_timeout=0.3)
        status, _, body = await self.post(call)
        fault = fault_of(body)
        assert fault["faultcode"] == "soap:Server" and "did not answer within 0.3 s" in fault["faultstring"]
        assert "same ref" in fault["faultstring"]


# --- the parser, without a listener --------------------------------------------------------------

def parse(body: bytes, charset: str | None = None) -> Any:
    operation, element = read_envelope(body, charset)
    return read_call(operation, element)


def test_datetimes_follow_xs_datetime() -> None:
    """Offsets, Z, fractions and 24:00:00 are read; a naive time is the daemon's local time."""
    def send_at(value: str) -> float | None:
        call = parse(envelope("sendSms", DEMO + f"<sms:mobile>1</sms:mobile><sms:content>x</sms:content>"
                                                f"<sms:sendTime>{value}</sms:sendTime>"))
        assert isinstance(call, SendSms)
        return call.request.send_at
    assert send_at("2030-01-02T03:04:05Z") == 1893553445.0
    assert send_at(" 2030-01-02T11:04:05.250+08:00 ") == 1893553445.25
    assert send_at("2030-01-01T24:00:00Z") == send_at("2030-01-02T00:00:00Z")
    with _time_zone("Asia/Shanghai"):
        assert send_at("2030-01-02T11:04:05") == 1893553445.0
    for bad in ("2030-01-02", "2030-02-30T00:00:00Z", "2030-01-01T24:00:01Z", "1960-01-01T00:00:00Z",
                "2030-01-02T03:04:05+15:00", "02/01/2030 03:04"):
        with pytest.raises(SoapFault) as info:
            send_at(bad)
        assert [d["code"] for d in info.value.details] == ["bad_time"], bad


def test_each_operation_reads_into_its_call() -> None:
    """querySms and fetchMo read into typed calls with their defaults; credentials never show in repr."""
    call = parse(envelope("querySms", DEMO + "<sms:messageId> 42 </sms:messageId>"))
    assert isinstance(call, QuerySms) and call.message_id == "42" and "demo-key" not in repr(call)
    call = parse(envelope("fetchMo", DEMO))
    assert isinstance(call, FetchMo) and (call.cursor, call.limit) == (None, 100)


class _time_zone:
    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        self.old = os.environ.get("TZ")
        os.environ["TZ"] = self.name
        time.tzset()

    def __exit__(self, *exc: object) -> None:
        if self.old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = self.old
        time.tzset()


def _client_fault_or_call(body: bytes) -> None:
    try:
        call = parse(body)
    except SoapFault as fault:
        assert fault.faultcode == "soap:Client" and fault.status == 500
        return
    if isinstance(call, SendSms):
        _assert_well_typed(call.request)


@given(st.binary(max_size=300))
def test_random_bytes_are_a_client_fault(raw: bytes) -> None:
    """No bytes make the request parser raise anything but a Client fault."""
    _client_fault_or_call(raw)
    _client_fault_or_call(b'<?xml version="1.0"?>' + raw)


_NAMES = st.sampled_from(["Envelope", "Body", "Header", "sendSms", "querySms", "fetchMo", "account", "password",
                          "mobile", "content", "template", "param", "name", "value", "sendTime", "ext", "ref",
                          "priority", "report", "messageId", "cursor", "limit", "x"])
_NAMESPACES = st.sampled_from([SOAP_ENV, NAMESPACE, None, "urn:other", "http://www.w3.org/2003/05/soap-envelope"])
_XML_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn")), max_size=12)
_VALUES = st.one_of(_XML_TEXT, st.sampled_from(["13800138000", "true", "0", "9", "-3", "2030-01-02T03:04:05",
                                                "demo", "demo-key", "2030-01-01T24:00:00Z", ""]))


def _trees() -> st.SearchStrategy[etree._Element]:
    def leaf(args: tuple[str | None, str, str, bool]) -> etree._Element:
        namespace, name, text, nil = args
        element = etree.Element(f"{{{namespace}}}{name}" if namespace else name)
        element.text = text
        if nil:
            element.set("{http://www.w3.org/2001/XMLSchema-instance}nil", "true")
        return element

    def node(args: tuple[str | None, str, list[etree._Element]]) -> etree._Element:
        namespace, name, children = args
        element = etree.Element(f"{{{namespace}}}{name}" if namespace else name)
        element.extend(children)
        return element

    leaves = st.tuples(_NAMESPACES, _NAMES, _VALUES, st.booleans()).map(leaf)
    return st.recursive(leaves, lambda inner: st.tuples(_NAMESPACES, _NAMES, st.lists(inner, max_size=5)).map(node),
                        max_leaves=25)


@given(_trees())
def test_random_xml_is_a_call_or_a_client_fault(tree: etree._Element) -> None:
    """Random documents (SOAP-ish names and namespaces) give a well-typed call or a Client fault, nothing else."""
    _client_fault_or_call(etree.tostring(tree))
    envelope_ = etree.Element(f"{{{SOAP_ENV}}}Envelope")
    etree.SubElement(envelope_, f"{{{SOAP_ENV}}}Body").append(tree)
    _client_fault_or_call(etree.tostring(envelope_))


@given(mobiles=st.lists(st.text("0123456789+", min_size=1, max_size=14), min_size=1, max_size=4),
       content=_XML_TEXT, ref=st.none() | _XML_TEXT.filter(bool),
       priority=st.integers(0, 9), report=st.booleans())
def test_a_written_send_sms_reads_back_unchanged(mobiles: list[str], content: str, ref: str | None, priority: int,
                                                 report: bool) -> None:
    """A sendSms envelope written from values reads back as a SendRequest holding exactly those values."""
    wrapper = etree.Element(f"{SMS}sendSms")
    for name, value in (("account", "demo"), ("password", "p"), *(("mobile", m) for m in mobiles),
                        ("content", content), ("ref", ref), ("priority", str(priority)),
                        ("report", "true" if report else "false")):
        if value is not None:
            etree.SubElement(wrapper, SMS + name).text = value
    root = etree.Element(f"{{{SOAP_ENV}}}Envelope")
    etree.SubElement(root, f"{{{SOAP_ENV}}}Body").append(wrapper)
    call = parse(etree.tostring(root, encoding="utf-8"))
    assert isinstance(call, SendSms)
    r = call.request
    assert (r.to, r.text, r.ref, r.priority, r.report) == (tuple(mobiles), content, ref or None, priority, report)
