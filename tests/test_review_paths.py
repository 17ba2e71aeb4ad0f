"""No path bypasses review: with a rule that holds everything, a message from REST (and `smsgw import`'s
file origin), the URL interface, SOAP, a legacy database row, a watched folder and an MO auto-reply is held,
and nothing reaches the carrier until a reviewer approves it; then everything is delivered."""

from __future__ import annotations

import pathlib
import urllib.parse
import urllib.request

from sqlalchemy import create_engine, insert, text
from twisted.internet.threads import deferToThread

from daemon_helpers import ApiClient, DaemonCase, account, make_config, rows, spin, wait_for
from smsgw.adapters.db import interface
from smsgw.carrier import MoMessage
from smsgw.lifecycle import Review
from smsgw.store import ReviewQuery
from ports import free_port

SOAP = ('<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sms="http://smsgw.org/ws/sms/1"><soap:Body><sms:sendSms><sms:account>demo</sms:account>'
        '<sms:password>demo-key</sms:password><sms:mobile>13800000003</sms:mobile>'
        '<sms:content>来自SOAP</sms:content></sms:sendSms></soap:Body></soap:Envelope>').encode()


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        return int(response.status)


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "text/xml; charset=utf-8"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


class NoBypassTests(DaemonCase):
    tmp_prefix = "smsgw-review-paths-"
    timeout = 120

    async def test_every_interface_is_held_until_approved(self) -> None:
        url_port, soap_port = free_port(), free_port()
        legacy = f"sqlite:///{self.tmp}/legacy.db"
        engine = create_engine(legacy)
        self.addCleanup(engine.dispose)
        interface.create(engine)
        inbox = self.tmp / "inbox"
        inbox.mkdir()
        config = make_config(self.tmp, {
            "url_interface": {"enabled": True, "port": url_port},
            "soap_interface": {"enabled": True, "port": soap_port},
            "accounts": [account("demo", "demo-key"), {"name": "erp", "interfaces": ["db"]}],
            "db_sources": [{"name": "erp", "url": legacy, "poll_interval": 0.1, "account": "erp"}],
            "file_import": {"inboxes": [{"dir": str(inbox), "account": "demo", "poll_interval": 0.1}]},
            "mo": {"auto_replies": [{"keyword": "HELP", "text": "自动回复"}]},
            "review": {"rules": [{"name": "everything", "action": "review"}],
                       "reviewers": [{"name": "li"}], "notify": {"enabled": False}}})
        daemon = await self.daemon(config)
        api = ApiClient.for_daemon(daemon)

        await api.send({"to": "13800000001", "text": "来自REST"})
        status, body = await api.call("POST", "/api/v1/messages", {"to": "13800000001", "text": "x"})
        assert status == 202 and body["messages"][0]["held"] is True
        query = urllib.parse.urlencode({"username": "demo", "password": "demo-key", "to": "13800000002",
                                        "text": "来自URL"})
        assert await deferToThread(_get, f"http://127.0.0.1:{url_port}/cgi-bin/sendsms?{query}") == 202
        assert await deferToThread(_post, f"http://127.0.0.1:{soap_port}/ws/sms", SOAP) == 200
        with engine.begin() as conn:
            conn.execute(insert(interface.outbox), [{"mobiles": "13800000004", "content": "来自数据库"}])
        pathlib.Path(inbox / "notice.csv").write_text("13800000005,来自文件\n", encoding="utf-8")
        link = next(iter(daemon.links))  # an MO as the carrier link hands it over: the auto-reply is held too
        await daemon.gateway.on_mo(MoMessage(link, "13800000006", config.carriers[0].service_code, "HELP", "", ""))

        interfaces = {"rest", "url", "soap", "db:erp", "file", "auto_reply"}

        def stored() -> set[str]:
            return {i for (i,) in rows(config, "SELECT DISTINCT interface FROM messages")}
        await wait_for(lambda: stored() == interfaces, what=f"a message from each of {sorted(interfaces)}")
        await spin(1.0)  # dispatchers and pollers run on; nothing may be submitted
        assert rows(config, "SELECT DISTINCT review, review_rule FROM messages") == [("pending", "everything")]
        assert rows(config, "SELECT DISTINCT state FROM recipients") == [("held",)]
        assert rows(config, "SELECT count(*) FROM segments") == [(0,)]
        assert sum(d.submitted for d in daemon.dispatchers.values()) == 0
        with engine.connect() as conn:
            assert conn.execute(text("SELECT state FROM sms_outbox")).scalar_one() == "accepted"

        result = await daemon.gateway.review_act("li", "approve", ReviewQuery(review=(Review.PENDING,)), "ok")
        assert len(result.messages) == 7
        await wait_for(lambda: rows(config, "SELECT DISTINCT state FROM recipients") == [("delivered",)],
                       what="every approved message delivered")

        def legacy_state() -> str:
            with engine.connect() as conn:
                return str(conn.execute(text("SELECT state FROM sms_outbox")).scalar_one())
        await wait_for(lambda: legacy_state() == "delivered", what="the legacy row written back as delivered")
