"""Per-account rate limits and daily quotas (smsgw.limits), alone and in the running daemon.

The daemon tests send through the REST API and the URL interface and poll a legacy
SQLite table, so the limits are seen where the gateway enforces them for every
interface: 429 with Retry-After and a precise message, the quota surviving a
restart, and a database poller that leaves rows pending instead of failing them.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, insert, text
from structlog.testing import capture_logs
from twisted.internet.threads import deferToThread

from daemon_helpers import ApiClient, DaemonCase, account, count, make_config, rows, spin, start_daemon, stop_daemon
from daemon_helpers import wait_for
from ports import free_port
from smsgw.adapters.db import interface
from smsgw.limits import Limits, TokenBucket, day_start, next_midnight
from smsgw.model import Account, LimitExceeded, RateLimit

NOON = dt.datetime(2026, 3, 5, 12, 0).timestamp()  # local time, as the quota counts days


def limited(**fields: Any) -> Account:
    return Account("erp", **fields)


def refused(limits: Limits, account: Account, n: int, now: float) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as info:
        limits.reserve(account, n, now)
    return info.value


# --- the token bucket and the quota, alone --------------------------------------------------------

def test_the_burst_passes_then_the_rate_holds() -> None:
    """`burst` recipients pass at once; the next waits 1/rate per recipient missing, then passes."""
    limits, erp = Limits(), limited(rate_limit=RateLimit(2.0, 5))
    limits.reserve(erp, 5, NOON)
    error = refused(limits, erp, 1, NOON)
    assert (error.kind, error.retry_after, error.allowed) == ("rate_limit", 0.5, 0)
    assert str(error) == "rate limit of 2 recipients/s (burst 5) exceeded: this request has 1; retry in 0.5 s"
    limits.reserve(erp, 1, NOON + 0.5)
    assert refused(limits, erp, 2, NOON + 1.0).retry_after == pytest.approx(0.5)


def test_a_request_larger_than_the_burst_passes_on_a_full_bucket_and_is_paid_for() -> None:
    """A full bucket lets a request bigger than the burst through; the debt then holds the next one back."""
    limits, erp = Limits(), limited(rate_limit=RateLimit(10.0, 100))
    limits.reserve(erp, 1000, NOON)
    error = refused(limits, erp, 1, NOON)
    assert error.retry_after == pytest.approx(90.1)  # 900 owed, then 1 token
    limits.reserve(erp, 1, NOON + 90.11)


def test_the_quota_message_names_the_count_the_request_and_the_reset() -> None:
    """Over the quota: the exact words, retry_after until local midnight, and how many still fit."""
    limits, erp = Limits(), limited(daily_quota=10000)
    limits.reserve(erp, 9990, NOON)
    error = refused(limits, erp, 20, NOON)
    assert str(error) == ("daily quota of 10000 recipients used up: 9990 sent today, this request has 20; "
                          "resets at 00:00")
    assert (error.kind, error.allowed) == ("daily_quota", 10)
    assert error.retry_after == pytest.approx(12 * 3600)
    limits.reserve(erp, 10, NOON)
    assert refused(limits, erp, 1, NOON).allowed == 0


def test_the_quota_resets_at_local_midnight() -> None:
    """The count starts again at the next local midnight, not 24 hours after the first message."""
    limits, erp = Limits(), limited(daily_quota=3)
    limits.reserve(erp, 3, NOON)
    refused(limits, erp, 1, next_midnight(NOON) - 0.001)
    limits.reserve(erp, 3, next_midnight(NOON))
    assert limits.used_today("erp", next_midnight(NOON)) == 3


def test_released_recipients_are_given_back() -> None:
    """What the store did not take goes back to the quota and the bucket."""
    limits, erp = Limits(), limited(daily_quota=5, rate_limit=RateLimit(1.0, 5))
    limits.reserve(erp, 5, NOON)
    limits.release(erp, 5, NOON)
    limits.reserve(erp, 5, NOON)
    assert limits.used_today("erp", NOON) == 5


def test_loaded_counts_apply_only_to_the_day_they_were_read_for() -> None:
    """Counts read from the store count for today; read for yesterday (across midnight) they are dropped."""
    limits, erp = Limits(("erp",)), limited(daily_quota=10)
    limits.load({"erp": 9}, day_start(NOON), NOON)
    assert refused(limits, erp, 2, NOON).allowed == 1
    limits.load({"erp": 9}, day_start(NOON), next_midnight(NOON) + 1)
    limits.reserve(erp, 10, next_midnight(NOON) + 1)


def test_an_account_without_limits_is_never_counted() -> None:
    """No rate limit and no quota: any request passes and nothing is kept."""
    limits = Limits()
    for _ in range(3):
        limits.reserve(Account("free"), 10**6, NOON)
    assert limits.used_today("free", NOON) == 0


@given(st.floats(0.5, 50.0), st.integers(1, 50), st.integers(1, 500),
       st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(1, 80), st.booleans()), max_size=60))
def test_limits_hold_for_any_sequence_of_requests(rate: float, burst: int, quota: int,
                                                 steps: list[tuple[float, int, bool]]) -> None:
    """Whatever arrives: the quota is never exceeded, and what passed by time T is at most
    burst + rate*T + the largest request (the bucket's debt rule); a refusal names a wait > 0."""
    limits, erp = Limits(), limited(rate_limit=RateLimit(rate, burst), daily_quota=quota)
    start = now = NOON
    passed, largest = 0, 0
    for gap, n, give_back in steps:
        now += gap
        try:
            limits.reserve(erp, n, now)
        except LimitExceeded as exc:
            assert exc.retry_after > 0 and 0 <= exc.allowed <= quota
            continue
        if give_back:
            limits.release(erp, n, now)
            continue
        passed += n
        largest = max(largest, n)
        assert passed <= quota
        assert passed <= burst + rate * (now - start) + largest + 1e-6
    assert limits.used_today("erp", now) == passed


def test_a_bucket_refills_to_its_burst_only() -> None:
    """An idle bucket holds at most `burst` tokens, however long it waited."""
    bucket = TokenBucket(RateLimit(100.0, 7), NOON)
    assert bucket.tokens(NOON + 3600) == 7


# --- in the daemon ---------------------------------------------------------------------------------

def _sendsms(port: int, query: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/cgi-bin/sendsms?{query}", timeout=30) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


def seconds_to_midnight() -> float:
    return next_midnight(time.time()) - time.time()


class LimitTests(DaemonCase):
    tmp_prefix = "smsgw-limits-"
    timeout = 90

    async def test_rate_limit_gives_429_with_retry_after_on_rest_and_url(self) -> None:
        """Past the burst, REST answers 429 rate_limited and the URL interface a text 429, both with Retry-After;
        nothing over the limit is stored."""
        url_port = free_port()
        config = make_config(self.tmp, {"url_interface": {"enabled": True, "port": url_port},
                                        "accounts": [account("demo", "demo-key",
                                                             rate_limit={"per_second": 0.1, "burst": 3})]})
        daemon = await self.daemon(config)
        api = ApiClient.for_daemon(daemon)
        await api.send({"to": ["13800138000", "13800138001", "13800138002"], "text": "three"})
        status, body = await api.post("/api/v1/messages", {"to": "13800138003", "text": "one too many"})
        assert status == 429 and body["error"]["code"] == "rate_limited", body
        assert body["error"]["message"].startswith("rate limit of 0.1 recipients/s (burst 3) exceeded: this request "
                                                   "has 1; retry in ")
        status, headers, answer = await deferToThread(_sendsms, url_port,
                                                      "username=demo&password=demo-key&to=13800138004&text=x")
        assert status == 429 and 5 <= int(headers["Retry-After"]) <= 10
        assert answer.startswith(b"Sending failed. rate limit of 0.1 recipients/s")
        assert count(config, "recipients") == 3

    async def test_soap_answers_a_limit_with_a_server_fault_and_retry_after(self) -> None:
        """Over the rate limit sendSms is a soap:Server fault rate_limited with retryAfter and Retry-After."""
        soap_port = free_port()
        config = make_config(self.tmp, {"soap_interface": {"enabled": True, "port": soap_port},
                                        "accounts": [account("demo", "demo-key",
                                                             rate_limit={"per_second": 0.1, "burst": 1})]})
        await self.daemon(config)
        body = ('<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
                'xmlns:sms="http://smsgw.org/ws/sms/1"><soap:Body><sms:sendSms><sms:account>demo</sms:account>'
                '<sms:password>demo-key</sms:password><sms:mobile>13800138000</sms:mobile>'
                '<sms:content>hi</sms:content></sms:sendSms></soap:Body></soap:Envelope>').encode()

        def post() -> tuple[int, dict[str, str], bytes]:
            request = urllib.request.Request(f"http://127.0.0.1:{soap_port}/ws/sms", data=body,
                                             headers={"Content-Type": "text/xml; charset=utf-8"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, dict(response.headers.items()), response.read()
            except urllib.error.HTTPError as error:
                return error.code, dict(error.headers.items()), error.read()
        assert (await deferToThread(post))[0] == 200
        status, headers, answer = await deferToThread(post)
        assert status == 500 and headers["Retry-After"] == "10", answer
        assert b"soap:Server" in answer and b">rate_limited<" in answer and b"retryAfter>10<" in answer
        assert count(config, "messages") == 1

    async def test_quota_is_exact_and_survives_a_restart(self) -> None:
        """Over the daily quota REST answers 429 quota_exceeded with the count; after a restart the count read
        back from the store still holds; a request bigger than the whole quota is a 422."""
        config = make_config(self.tmp, {"accounts": [account("demo", "demo-key", daily_quota=4)]})
        first = await start_daemon(config)
        try:
            api = ApiClient.for_daemon(first)
            await api.send({"to": ["13800138000", "13800138001", "13800138002"], "text": "x"})
            status, body = await api.post("/api/v1/messages", {"to": ["13900139000", "13900139001"], "text": "y"})
            assert (status, body["error"]["code"]) == (429, "quota_exceeded")
            assert body["error"]["message"] == ("daily quota of 4 recipients used up: 3 sent today, this request "
                                                "has 2; resets at 00:00")
        finally:
            await stop_daemon(first)
        second = await self.daemon(config)
        api = ApiClient.for_daemon(second)
        status, body = await api.post("/api/v1/messages", {"to": ["13900139000", "13900139001"], "text": "y"})
        assert status == 429 and "3 sent today" in body["error"]["message"], body
        await api.send({"to": "13900139000", "text": "the last one"})
        status, body = await api.post("/api/v1/messages", {"to": [f"1370013700{i}" for i in range(5)], "text": "z"})
        assert (status, body["error"]["details"][0]["code"]) == (422, "over_daily_quota")
        assert rows(config, "SELECT sum(recipients) FROM messages") == [(4,)]

    async def test_a_repeated_ref_does_not_use_up_the_quota(self) -> None:
        """Resending with the same ref (a safe retry) answers the stored message and costs no quota."""
        config = make_config(self.tmp, {"accounts": [account("demo", "demo-key", daily_quota=2)]})
        api = ApiClient.for_daemon(await self.daemon(config))
        for _ in range(3):
            status, body = await api.post("/api/v1/messages", {"to": "13800138000", "text": "x", "ref": "r-1"})
            assert status == 202, body
        await api.send({"to": "13800138001", "text": "second"})

    async def test_the_db_poller_leaves_rows_over_the_quota_pending(self) -> None:
        """A legacy table with 5 rows and an account quota of 3: 3 rows are taken, 2 stay new, untouched, with
        one db_rows_held line; a row with more numbers than the quota is rejected with the reason."""
        url = f"sqlite:///{self.tmp}/legacy.db"
        engine = create_engine(url)
        self.addCleanup(engine.dispose)
        interface.create(engine)
        with engine.begin() as conn:
            conn.execute(insert(interface.outbox), [{"mobiles": f"1380013800{i}", "content": f"row {i}"}
                                                    for i in range(5)])
            conn.execute(insert(interface.outbox), [{"mobiles": ",".join(f"1390013900{i}" for i in range(4)),
                                                     "content": "too many numbers for the quota"}])
        config = make_config(self.tmp, {
            "accounts": [account("demo", "demo-key"), {"name": "erp", "daily_quota": 3, "interfaces": ["db"]}],
            "db_sources": [{"name": "erp", "url": url, "poll_interval": 0.1, "account": "erp"}]})

        def states() -> dict[str, int]:
            with engine.connect() as conn:
                return dict(conn.execute(text("SELECT state, count(*) FROM sms_outbox GROUP BY state")).all())
        with capture_logs() as logs:
            await self.daemon(config)
            await wait_for(lambda: states().get("new") == 2 and "rejected" in states(), what="3 taken, 1 rejected")
            await spin(0.5)  # several more polls
        assert states().get("new") == 2 and states()["rejected"] == 1
        held = [e for e in logs if e["event"] == "db_rows_held"]
        assert len(held) == 1 and held[0]["limit"] == "daily_quota" and held[0]["held"] == 2
        assert rows(config, "SELECT account, interface, sum(recipients) FROM messages GROUP BY account, interface") == [
            ("erp", "db:erp", 3)]
        with engine.connect() as conn:
            [error] = conn.execute(text("SELECT error FROM sms_outbox WHERE state = 'rejected'")).scalars().all()
        assert "more than account 'erp''s daily quota of 3" in error
        assert not [e for e in logs if e["event"] == "alarm"]
