"""smsgw.client against a real daemon: Client (on a reactor thread) and TwistedClient, over loopback.

The daemon runs on the real reactor with its embedded simulator (or a
standalone one for MO), as in test_daemon_e2e.py. The synchronous client blocks,
so its calls run under `deferToThread` while the reactor keeps serving them. A
small twisted.web stub stands in for what a healthy daemon does not answer:
503, a proxy's HTML page, and connections closed while idle.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any, Awaitable, Callable, ParamSpec, TypeVar

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.web import server
from twisted.web.resource import Resource

from daemon_helpers import (
    DaemonCase,
    DEMO_KEY,
    R,
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
from smsgw.client import (
    FINAL_STATES,
    ApiError,
    AuthFailed,
    BadResponse,
    Client,
    ConnectionFailed,
    Message,
    MessageView,
    Problem,
    TwistedClient,
    Unavailable,
)
from smsgw.config import Config, load_config
from test_cli import smsgw

_P = ParamSpec("_P")
_R = TypeVar("_R")
_E = TypeVar("_E", bound=BaseException)

CHINESE = "【市民服务】您好，您的验证码是 493021，五分钟内有效；请勿泄露给他人。"
LONG_CHINESE = ("尊敬的市民您好，您预约的社保卡补办业务已受理完成，新卡已制作完毕，请于本月三十日前"
                "携带本人有效身份证件原件前往所选网点领取。逾期未领取的，卡片将退回制卡中心，届时需重新预约。")[:100]


async def blocking(f: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """Run a synchronous client call on a reactor thread, so the daemon keeps answering."""
    return await deferToThread(f, *args, **kwargs)


async def raises(kind: type[_E], d: Awaitable[Any]) -> _E:
    """The exception `d` fails with, which must be a `kind`."""
    try:
        result = await d
    except kind as exc:
        return exc
    raise AssertionError(f"expected {kind.__name__}, got the result {result!r}")


class ClientCase(DaemonCase):
    """A temporary directory per test; daemons and clients made here are closed afterwards."""

    tmp_prefix = "smsgw-client-"

    async def api_daemon(self, config: Config) -> str:
        """Start a daemon on `config` and return its API's base URL."""
        daemon = await self.daemon(config)
        return f"http://{daemon.api_address()}"

    def client(self, base_url: str, key: str = DEMO_KEY) -> Client:
        client = Client(base_url, key, timeout=10)
        # Cleanups run last-in first-out: the client closes (and the server sees it go) before the daemon stops.
        self.addCleanup(lambda: defer.ensureDeferred(self._closed(client.close)))
        return client

    def twisted_client(self, base_url: str, key: str = DEMO_KEY) -> TwistedClient:
        client = TwistedClient(base_url, key, R, timeout=10)
        self.addCleanup(lambda: defer.ensureDeferred(self._closed(client.close)))
        return client

    @staticmethod
    async def _closed(close: Callable[[], Any]) -> None:
        result = close()
        if isinstance(result, defer.Deferred):
            await result
        await spin(0.05)

    async def completed(self, client: Client | TwistedClient, message_id: str) -> MessageView:
        """Poll get_message (a Client's on a thread) until the message is completed; return that view."""
        deadline = time.monotonic() + 20
        while True:
            if isinstance(client, Client):
                view = await blocking(client.get_message, message_id)
            else:
                view = await client.get_message(message_id)
            if view.state == "completed":
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"message {message_id} not completed after 20 s: {view}")
            await spin(0.05)


class SendTests(ClientCase):
    async def test_a_chinese_message_is_sent_and_followed_to_delivery(self) -> None:
        """send returns the committed message, and get_message shows it delivered with its text intact."""
        client = self.client(await self.api_daemon(make_config(self.tmp)))
        accepted = await blocking(client.send, "13800138000", LONG_CHINESE, priority="urgent", ref="otp-1")
        assert (accepted.ref, accepted.recipients, accepted.segments, accepted.dropped_duplicates) == (
            "otp-1", 1, 2, ())
        view = await self.completed(client, accepted.id)
        assert (view.id, view.text, view.ref, view.priority, view.account) == (
            accepted.id, LONG_CHINESE, "otp-1", 9, "demo")
        [r] = view.recipients
        assert (r.to, r.state, r.stat, r.link) == ("13800138000", "delivered", "DELIVRD", "sim")
        assert r.state in FINAL_STATES
        assert [(s.number, s.total, s.state) for s in r.segments] == [(1, 2, "delivered"), (2, 2, "delivered")]
        assert all(s.msg_id is not None and len(s.msg_id) == 16 for s in r.segments)
        assert abs(view.created_at - time.time()) < 30 and view.send_at is None

    async def test_send_many_commits_every_message_in_order(self) -> None:
        """send_many answers one Accepted per message, in order, with duplicates and an aware send_at kept."""
        config = make_config(self.tmp)
        client = self.client(await self.api_daemon(config))
        soon = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))) + datetime.timedelta(seconds=0.5)
        first, second = await blocking(client.send_many, [
            Message(["13800138000", "13900139000", "13800138000"], CHINESE, ref="batch-1"),
            Message("13700137000", "工单 WO-7781 已派单。", send_at=soon, ext="01", ref="batch-2", report=False),
        ])
        assert (first.ref, first.recipients, first.dropped_duplicates) == ("batch-1", 2, ("13800138000",))
        assert (second.ref, second.recipients) == ("batch-2", 1) and first.id != second.id
        view = await self.completed(client, second.id)
        assert view.send_at is not None and abs(view.send_at - soon.timestamp()) < 0.002
        assert [r.state for r in view.recipients] == ["sent"]  # no report wanted
        view = await self.completed(client, first.id)
        assert sorted((r.to, r.state) for r in view.recipients) == [("13800138000", "delivered"),
                                                                     ("13900139000", "delivered")]
        assert await blocking(client.send_many, []) == []
        assert count(config, "messages") == 2


class ErrorTests(ClientCase):
    async def test_refusals_name_every_problem_where_it_is(self) -> None:
        """A 422 gives ApiError with each problem's where and code, for one message and for a batch."""
        config = make_config(self.tmp)
        client = self.client(await self.api_daemon(config))
        exc = await raises(ApiError, blocking(client.send, ["12345", "13800138000"], "  "))
        assert (exc.status, exc.code, type(exc)) == (422, "validation_failed", ApiError)
        assert {(p.where, p.code) for p in exc.problems} == {("to[0]", "wrong_length"), ("text", "empty_text")}
        assert "to[0]: wrong_length" in str(exc) and str(exc).startswith("422 validation_failed:")
        assert exc.body["error"]["code"] == "validation_failed" and not exc.retryable

        exc = await raises(ApiError, blocking(client.send_many, [Message("13800138000", "好"),
                                                                 Message(["138"], "", priority="bulk")]))
        assert {(p.where, p.code) for p in exc.problems} == {("[1].to[0]", "wrong_length"),
                                                             ("[1].text", "empty_text")}
        assert all(isinstance(p, Problem) and p.message for p in exc.problems)
        assert count(config, "messages") == 0

        exc = await raises(ApiError, blocking(client.get_message, "no/such id"))
        assert (exc.status, exc.code, exc.problems) == (404, "not_found", ())
        exc = await raises(ApiError, blocking(client.mo, limit=0))
        assert [(p.where, p.code) for p in exc.problems] == [("limit", "out_of_range")]
        naive = await raises(ValueError, blocking(client.send, "13800138000", "定时",
                                                   send_at=datetime.datetime(2030, 1, 1, 8)))
        assert "no time zone" in str(naive) and count(config, "messages") == 0

    async def test_a_wrong_key_or_interface_is_refused_without_showing_the_key(self) -> None:
        """A wrong key gives 401 AuthFailed, a db-only account 403 on send but its status; no error shows a key."""
        accounts = {"accounts": [account("demo", DEMO_KEY), account("erp", "erp-secret-key", interfaces=["db"])]}
        base = await self.api_daemon(make_config(self.tmp, accounts))
        wrong = self.client(base, "wrong-secret-key")
        exc = await raises(AuthFailed, blocking(wrong.status))
        assert (exc.status, exc.code) == (401, "unauthorized") and "API key is not known" in str(exc)
        assert "wrong-secret-key" not in f"{exc} {exc!r} {exc.body} {wrong!r}"

        erp = self.client(base, "erp-secret-key")
        exc = await raises(AuthFailed, blocking(erp.send, "13800138000", "好"))
        assert (exc.status, exc.code) == (403, "forbidden") and "REST" in str(exc)
        status = await blocking(erp.status)
        assert status.accepting and [link["name"] for link in status.links] == ["sim"]
        with self.assertRaisesRegex(ValueError, "api_key") as refused:
            Client(base, "has\nnewline")
        assert "newline" not in str(refused.exception)

    async def test_a_closed_port_is_connection_failed_with_the_url(self) -> None:
        """Nothing listening gives ConnectionFailed naming the URL, from both clients."""
        base = f"http://127.0.0.1:{free_port()}"
        exc = await raises(ConnectionFailed, blocking(self.client(base).status))
        assert exc.url == f"{base}/api/v1/status" and exc.url in str(exc) and "refused" in exc.reason
        assert exc.retryable
        exc = await raises(ConnectionFailed, self.twisted_client(base).get_message("7"))
        assert exc.url == f"{base}/api/v1/messages/7" and "refused" in exc.reason


class MoTests(ClientCase):
    timeout = 90

    async def test_mo_pages_follow_cursors_to_the_end(self) -> None:
        """mo pages by cursor, an empty page keeps the cursor, and both mo_iters read every message once."""
        config = make_config(self.tmp, {"mo": {"default_consumer": "demo"}}, embedded_simulator=False)
        base = await self.api_daemon(config)
        sim = start_simulator(config, mo_rate=40.0, mo_long_ratio=0.3)
        self.addCleanup(lambda: sim.stopService() if sim.running else None)
        await wait_for(lambda: count(config, "mo_messages") >= 9, what="9 MO messages")
        await sim.stopService()
        await spin(0.2)  # the last MO's commit
        expected = [str(i) for (i,) in rows(config, "SELECT id FROM mo_messages WHERE consumer = 'demo' ORDER BY id")]
        assert len(expected) == count(config, "mo_messages") >= 9

        client = self.client(base)
        seen: list[str] = []
        cursor = None
        while True:
            page = await blocking(client.mo, cursor, 4)
            if not page.items:
                assert page.next_cursor == cursor == expected[-1]
                break
            assert len(page.items) <= 4 and page.next_cursor == page.items[-1].id
            assert all(m.consumer == "demo" and m.text and m.complete for m in page.items)
            seen += [m.id for m in page.items]
            cursor = page.next_cursor
        assert seen == expected
        assert [m.id for m in await blocking(lambda: list(client.mo_iter(limit=3)))] == expected
        assert [m.id for m in await blocking(lambda: list(client.mo_iter(expected[4])))] == expected[5:]

        twisted_client = self.twisted_client(base)
        assert [m.id async for m in twisted_client.mo_iter(limit=5)] == expected


class TwistedClientTests(ClientCase):
    async def test_send_follow_and_refusal_as_deferreds(self) -> None:
        """TwistedClient sends, follows to delivery and fails with ApiError, on one kept-alive pool."""
        base = await self.api_daemon(make_config(self.tmp))
        client = self.twisted_client(base)
        accepted = await client.send("13800138000", CHINESE, ref="tw-1")
        [other] = await client.send_many([Message("13900139000", "第二条")])
        view = await self.completed(client, accepted.id)
        assert (view.text, view.ref, view.recipients[0].state) == (CHINESE, "tw-1", "delivered")
        assert (await self.completed(client, other.id)).recipients[0].to == "13900139000"
        exc = await raises(ApiError, client.send("1380013800x", CHINESE))
        assert (exc.status, [(p.where, p.code) for p in exc.problems]) == (422, [("to[0]", "bad_characters")])
        status = await client.status()
        assert status.accepting and status.queues.get("queued") == 0
        assert (await raises(AuthFailed, self.twisted_client(base, "wrong-key").status())).status == 401


class CommandLineTests(ClientCase):
    timeout = 90

    async def test_smsgw_send_and_status_use_the_client(self) -> None:
        """`smsgw send` prints the accepted id, a refusal exits 1 with the error, `smsgw status` prints JSON."""
        path = write_config(self.tmp)
        config = load_config(str(path), {})
        client = self.client(await self.api_daemon(config))
        sent, refused, status, denied = await defer.gatherResults([
            defer.ensureDeferred(blocking(smsgw, "send", "-c", str(path), "--key", DEMO_KEY,
                                          "--to", "13800138000,13900139000", "--text", CHINESE, "--ref", "cli-1")),
            defer.ensureDeferred(blocking(smsgw, "send", "-c", str(path), "--key", DEMO_KEY,
                                          "--to", "12345", "--text", "好")),
            defer.ensureDeferred(blocking(smsgw, "status", "-c", str(path), "--key", DEMO_KEY)),
            defer.ensureDeferred(blocking(smsgw, "status", "-c", str(path), "--key", "wrong-key")),
        ])
        assert sent.returncode == 0, sent.stderr
        [(message_id,)] = rows(config, "SELECT id FROM messages WHERE ref = 'cli-1'")
        assert sent.stdout == f"accepted: id {message_id} (2 recipient(s), 1 segment(s) each)\n"
        assert (await self.completed(client, str(message_id))).text == CHINESE

        assert refused.returncode == 1 and refused.stderr.startswith("smsgw send: refused (422): {")
        assert json.loads(refused.stderr.split(": ", 2)[2])["error"]["details"][0]["where"] == "to[0]"

        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert list(shown) == ["node", "accepting", "links", "queues", "rates"] and shown["accepting"] is True
        assert denied.returncode == 1 and json.loads(denied.stdout)["error"]["code"] == "unauthorized"

        closed = await blocking(smsgw, "status", "-c", str(write_config(self.tmp, name="closed.yaml")),
                                "--key", DEMO_KEY)
        assert closed.returncode == 1 and "cannot reach the daemon at http://127.0.0.1:" in closed.stderr


# -- what a healthy daemon does not answer: a stub --------------------------------------------------

class _Stub(Resource):
    """Answers like a daemon behind a proxy on a bad day; notes the client address of each request."""

    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)  # not super(): mypy's untyped_calls_exclude covers only direct calls
        self.peers: set[str] = set()  # one client address (host and port) per connection

    def render(self, request: server.Request) -> bytes:
        self.peers.add(str(request.getClientAddress()))
        path = request.path
        if request.method == b"POST":
            request.setResponseCode(202)
            return b'{"messages":[{"id":"1","ref":null,"recipients":1,"segments":1,"dropped_duplicates":[]}]}'
        if path == b"/api/v1/status":
            request.setResponseCode(503)
            request.setHeader(b"retry-after", b"5")
            return b'{"error":{"code":"unavailable","message":"draining: retry in 5 s","details":[]}}'
        if path.startswith(b"/api/v1/mo"):
            request.setResponseCode(502)
            request.setHeader(b"content-type", b"text/html")
            return b"<html><body>502 Bad Gateway</body></html>"
        return b"this is not JSON"


class StubTests(ClientCase):
    def stub(self, idle_timeout: float) -> tuple[_Stub, str]:
        stub = _Stub()
        port = R.listenTCP(0, server.Site(stub, timeout=idle_timeout), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return stub, f"http://127.0.0.1:{port.getHost().port}/"

    async def test_503_and_a_proxys_page_are_unavailable_and_junk_is_a_bad_response(self) -> None:
        """503 and 502 are Unavailable with Retry-After and the page's text; a 200 that is not JSON is BadResponse."""
        _, base = self.stub(idle_timeout=30)
        client = self.client(base)
        exc = await raises(Unavailable, blocking(client.status))
        assert (exc.status, exc.code, exc.retry_after, exc.retryable) == (503, "unavailable", 5.0, True)
        exc = await raises(Unavailable, blocking(client.mo))
        assert (exc.status, exc.code, exc.message) == (502, "", "<html><body>502 Bad Gateway</body></html>")
        junk = await raises(BadResponse, blocking(client.get_message, "1"))
        assert junk.status == 200 and junk.url == base + "api/v1/messages/1"
        twisted_exc = await raises(Unavailable, self.twisted_client(base).status())
        assert (twisted_exc.status, twisted_exc.retry_after) == (503, 5.0)

    async def test_the_connection_is_kept_alive_and_replaced_once_the_server_closes_it(self) -> None:
        """Calls share one connection; after the server closes it while idle, a POST goes out on a new one."""
        stub, base = self.stub(idle_timeout=0.3)
        client = self.client(base)
        for _ in range(3):
            assert (await blocking(client.send, "13800138000", "好")).id == "1"
        assert len(stub.peers) == 1
        await spin(0.6)  # the server times the idle connection out
        assert (await blocking(client.send, "13800138000", "好")).id == "1"  # not ConnectionFailed
        assert len(stub.peers) == 2
