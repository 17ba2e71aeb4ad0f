"""Accounts and security (docs/security.md): the shared Authenticator, allow lists, TLS, hardened listeners.

The Authenticator is tested alone with a Clock and a synchronous "thread", then behind
the real REST API and URL interface on loopback (with a FakeGateway), then in the real
daemon for TLS. Argon2 hashes here use small costs so the suite stays quick; the cost
parameters are read from the hash, so the code paths are those of production hashes.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import ipaddress
import json
import pathlib
import re
import ssl
import subprocess
import sys
from typing import Any, Callable

import bcrypt
import pytest
from argon2 import PasswordHasher
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from daemon_helpers import R, DaemonCase, account, make_config, rows, write_config
from fake_gateway import FakeGateway
from ports import free_port
from smsgw._listen import TlsFiles, tls_problems
from smsgw.adapters.soap.service import SoapInterface
from smsgw.adapters.url.service import UrlInterface
from smsgw.api import make_api
from smsgw.auth import (
    AuthFailed,
    Authenticator,
    InterfaceDenied,
    TooManyFailures,
    address_allowed,
    parse_networks,
    secret_hash_problem,
    verify_secret,
)
from smsgw.config import check_config
from smsgw.model import Account, RateLimit

FAST_ARGON2 = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
ERP_SECRET = "correct-horse-battery-staple"
ERP_HASH = FAST_ARGON2.hash(ERP_SECRET)
OPS_SECRET = "ops-passw0rd"
OPS_BCRYPT = bcrypt.hashpw(OPS_SECRET.encode(), bcrypt.gensalt(rounds=4)).decode()
KEY_HASH = hashlib.sha256(b"machine-key-0123456789abcdef").hexdigest()

ACCOUNTS = [
    Account("erp", secret_hash=ERP_HASH, interfaces=("rest", "url")),
    Account("ops", secret_hash=OPS_BCRYPT.replace("$2b$", "$2y$")),  # PHP's prefix, the same algorithm
    Account("machine", api_key_sha256=KEY_HASH),
    Account("office", secret_hash=ERP_HASH, allow_from=("127.0.0.1/32", "2001:db8::/64")),
    Account("soaponly", secret_hash=ERP_HASH, interfaces=("soap",)),
]


class Result:
    """What a Deferred fired with (tests drive everything synchronously)."""

    def __init__(self, d: defer.Deferred[Account]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        d.addCallbacks(self._ok, self._failed)

    def _ok(self, value: Any) -> None:
        self.value = value

    def _failed(self, failure: Any) -> None:
        self.error = failure.value


def sync_auth(accounts: list[Account] = ACCOUNTS, clock: Clock | None = None, **options: Any) -> Authenticator:
    """An Authenticator whose "thread" runs at once (verification is still the real argon2/bcrypt)."""
    return Authenticator(accounts, clock or Clock(), run_blocking=lambda fn: defer.succeed(fn()), **options)


def login(auth: Authenticator, name: str, secret: str, peer: str = "127.0.0.1",
          interface: str | None = "url") -> Result:
    return Result(auth.authenticate(name, secret, peer, interface))


# --- hashes -----------------------------------------------------------------------------------------

def test_argon2_and_bcrypt_hashes_verify_their_secret_only() -> None:
    """argon2id, bcrypt $2b$ and $2y$ hashes accept their secret and refuse any other, and longer than 72 bytes."""
    assert verify_secret(ERP_HASH, ERP_SECRET.encode()) and not verify_secret(ERP_HASH, b"wrong")
    for prefix in ("$2b$", "$2y$"):
        hashed = OPS_BCRYPT.replace("$2b$", prefix)
        assert verify_secret(hashed, OPS_SECRET.encode()) and not verify_secret(hashed, b"ops-passw0rD")
    assert not verify_secret(OPS_BCRYPT, b"x" * 100)


def test_malformed_hashes_are_named_without_showing_the_value() -> None:
    """A pasted secret, a truncated argon2 or bcrypt hash each get their own reason; good hashes none."""
    assert secret_hash_problem(ERP_HASH) is None and secret_hash_problem(OPS_BCRYPT) is None
    assert "neither" in (secret_hash_problem("hunter2") or "")
    assert "argon2" in (secret_hash_problem(ERP_HASH[:30]) or "")
    assert "bcrypt" in (secret_hash_problem(OPS_BCRYPT[:40]) or "")
    assert "hunter2" not in (secret_hash_problem("hunter2") or "")


@given(st.text(max_size=120))
def test_any_secret_hash_text_is_judged_without_raising(value: str) -> None:
    """Whatever is written as secret_hash, the check answers a reason or None and never raises."""
    problem = secret_hash_problem(value)
    assert problem is None or isinstance(problem, str)
    if problem is None:
        assert not verify_secret(value, b"a secret nobody chose")


def test_hash_secret_command_prints_an_argon2id_hash_of_stdin() -> None:
    """`smsgw hash-secret` reads the secret from stdin and prints a verifying argon2id hash, not the secret."""
    out = subprocess.run([sys.executable, "-m", "smsgw", "hash-secret"], input="s3cret-from-stdin\n",
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    hashed = out.stdout.strip()
    assert hashed.startswith("$argon2id$") and "s3cret" not in hashed
    assert verify_secret(hashed, b"s3cret-from-stdin") and secret_hash_problem(hashed) is None
    empty = subprocess.run([sys.executable, "-m", "smsgw", "hash-secret"], input="\n", capture_output=True,
                           text=True, timeout=60, cwd="/")
    assert empty.returncode == 2 and "empty secret" in empty.stderr


# --- the authenticator --------------------------------------------------------------------------------

def test_the_right_secret_logs_in_and_a_wrong_one_is_refused_and_logged() -> None:
    """Name and secret give the account; a wrong secret or name fails with the reason logged, not the secret."""
    auth = sync_auth()
    assert login(auth, "erp", ERP_SECRET).value == ACCOUNTS[0]
    assert login(auth, "ops", OPS_SECRET, interface="soap").value == ACCOUNTS[1]
    with capture_logs() as logs:
        wrong = login(auth, "erp", "guess")
        unknown = login(auth, "nobody", ERP_SECRET)
    assert isinstance(wrong.error, AuthFailed) and wrong.error.reason == "wrong_secret"
    assert isinstance(unknown.error, AuthFailed) and unknown.error.reason == "unknown_account"
    assert logs == [
        {"event": "auth_failed", "log_level": "warning", "account": "erp", "peer": "127.0.0.1", "interface": "url",
         "reason": "wrong_secret"},
        {"event": "auth_failed", "log_level": "warning", "account": "nobody", "peer": "127.0.0.1",
         "interface": "url", "reason": "unknown_account"}]
    assert ERP_SECRET not in repr(logs) and "guess" not in repr(logs)


def test_an_unknown_name_costs_a_hash_like_a_known_one() -> None:
    """Timing does not tell which names exist: an unknown name is hashed (against a configured hash) too."""
    auth = sync_auth()
    login(auth, "nobody", "x")
    assert auth.hashes == 1


def test_a_verified_secret_is_remembered_until_its_ttl() -> None:
    """The second login with the same name and secret does not hash again; after cache_ttl it does."""
    clock = Clock()
    auth = sync_auth(clock=clock, cache_ttl=300.0)
    for _ in range(5):
        assert login(auth, "erp", ERP_SECRET).value is not None
    assert auth.hashes == 1
    assert login(auth, "erp", "another secret").error is not None  # a different secret is not in the cache
    assert auth.hashes == 2
    clock.advance(301)
    assert login(auth, "erp", ERP_SECRET).value is not None
    assert auth.hashes == 3


def test_the_cache_is_bounded_and_keyed_by_name_and_secret() -> None:
    """Beyond cache_size the oldest login is forgotten; the same secret under another name is another entry."""
    auth = sync_auth(cache_size=1)
    login(auth, "erp", ERP_SECRET)
    login(auth, "office", ERP_SECRET)  # the same hash and secret, another account
    assert auth.hashes == 2
    login(auth, "erp", ERP_SECRET)
    assert auth.hashes == 3


def test_simultaneous_logins_with_one_secret_share_one_hash() -> None:
    """Requests arriving together with the same credentials wait for one verification, not one each."""
    started: list[tuple[Callable[[], bool], defer.Deferred[bool]]] = []

    def later(fn: Callable[[], bool]) -> defer.Deferred[bool]:
        d: defer.Deferred[bool] = defer.Deferred()
        started.append((fn, d))
        return d
    auth = Authenticator(ACCOUNTS, Clock(), run_blocking=later)
    results = [login(auth, "erp", ERP_SECRET) for _ in range(20)]
    assert len(started) == 1 and all(r.value is None and r.error is None for r in results)
    fn, d = started[0]
    d.callback(fn())
    assert all(r.value == ACCOUNTS[0] for r in results)


def test_at_most_concurrency_hashes_run_at_once() -> None:
    """Different credentials queue for the hashing threads: no more than `concurrency` run together."""
    started: list[defer.Deferred[bool]] = []

    def later(fn: Callable[[], bool]) -> defer.Deferred[bool]:
        d: defer.Deferred[bool] = defer.Deferred()
        started.append(d)
        return d
    auth = Authenticator(ACCOUNTS, Clock(), run_blocking=later, concurrency=2)
    results = [login(auth, "erp", f"guess-{i}", peer=f"10.0.0.{i}") for i in range(5)]
    assert len(started) == 2
    started[0].callback(False)
    assert len(started) == 3 and isinstance(results[0].error, AuthFailed)


def test_repeated_failures_block_the_address_without_hashing() -> None:
    """After max_failures within the window an address is refused at once (no hash), logged once; other
    addresses and already-verified credentials still pass; the block ends as failures age out."""
    clock = Clock()
    auth = sync_auth(clock=clock, max_failures=3, failure_window=60.0)
    assert login(auth, "erp", ERP_SECRET, peer="10.9.9.9").value is not None  # verified before the attack
    with capture_logs() as logs:
        for i in range(3):
            clock.advance(1)
            assert isinstance(login(auth, "erp", f"guess-{i}", peer="10.9.9.9").error, AuthFailed)
        hashes = auth.hashes
        blocked = login(auth, "erp", ERP_SECRET.upper(), peer="10.9.9.9")
    assert isinstance(blocked.error, TooManyFailures) and auth.hashes == hashes
    assert 57 <= blocked.error.retry_after <= 59 and "10.9.9.9" in str(blocked.error)
    assert [e["event"] for e in logs] == ["auth_failed"] * 3 + ["auth_blocked"]
    assert logs[-1]["peer"] == "10.9.9.9" and logs[-1]["failures"] == 3
    assert login(auth, "erp", ERP_SECRET, peer="10.9.9.9").value is not None  # cached: no hash needed
    assert login(auth, "erp", "guess", peer="10.9.9.8").error.__class__ is AuthFailed  # another address
    clock.advance(59)
    assert isinstance(login(auth, "erp", "guess-again", peer="10.9.9.9").error, AuthFailed)


def test_an_ipv6_attacker_is_counted_per_64() -> None:
    """Addresses in one IPv6 /64 share a failure count (one host usually has the whole /64)."""
    auth = sync_auth(max_failures=2)
    login(auth, "erp", "a", peer="2001:db8:1:2::1")
    login(auth, "erp", "b", peer="2001:db8:1:2::ffff")
    assert isinstance(login(auth, "erp", "c", peer="2001:db8:1:2:abcd::9").error, TooManyFailures)
    assert isinstance(login(auth, "erp", "c", peer="2001:db8:1:3::1").error, AuthFailed)


def test_allow_from_is_checked_before_the_secret_and_answers_like_a_wrong_one() -> None:
    """A refused address fails as a wrong secret would (reason in the log), without hashing; IPv4, IPv6,
    IPv4-mapped and unknown peers are handled."""
    auth = sync_auth()
    for peer in ("127.0.0.1", "::ffff:127.0.0.1", "2001:db8::42"):
        assert login(auth, "office", ERP_SECRET, peer=peer).value is not None, peer
    hashes = auth.hashes
    with capture_logs() as logs:
        for peer in ("127.0.0.2", "2001:db8:0:1::1", "not-an-address"):
            refused = login(auth, "office", ERP_SECRET, peer=peer)
            assert isinstance(refused.error, AuthFailed), peer
    assert auth.hashes == hashes
    assert {e["reason"] for e in logs} == {"address_not_allowed"}


def test_an_account_may_be_limited_to_some_interfaces() -> None:
    """The right secret on an interface the account may not use is InterfaceDenied naming what it may use."""
    auth = sync_auth()
    denied = login(auth, "soaponly", ERP_SECRET, interface="url")
    assert isinstance(denied.error, InterfaceDenied) and "may use: soap" in str(denied.error)
    assert login(auth, "soaponly", ERP_SECRET, interface="soap").value is not None
    assert login(auth, "soaponly", ERP_SECRET, interface=None).value is not None  # e.g. the status page


def test_keys_are_looked_up_by_hash_or_read_as_name_and_secret() -> None:
    """authenticate_key takes a machine key (SHA-256) or name:secret; the key also works as a URL password."""
    auth = sync_auth()
    key = b"machine-key-0123456789abcdef"
    assert Result(auth.authenticate_key(key, "127.0.0.1", "rest")).value.name == "machine"
    assert Result(auth.authenticate_key(b"erp:" + ERP_SECRET.encode(), "127.0.0.1", "rest")).value.name == "erp"
    assert login(auth, "machine", key.decode()).value.name == "machine"
    assert auth.hashes == 1
    unknown = Result(auth.authenticate_key(b"other-key", "127.0.0.1", "rest")).error
    assert isinstance(unknown, AuthFailed) and unknown.reason == "unknown_key"


def test_bad_accounts_are_refused_with_the_account_named() -> None:
    """A malformed secret_hash or allow_from entry is a ValueError naming the account."""
    with pytest.raises(ValueError, match="'x': secret_hash is neither"):
        Authenticator([Account("x", secret_hash="plain")], Clock())
    with pytest.raises(ValueError, match="'y': allow_from"):
        Authenticator([Account("y", allow_from=("10.0.0.300",))], Clock())


@given(st.text(max_size=60), st.lists(st.sampled_from(["10.0.0.0/8", "127.0.0.1", "::1", "2001:db8::/32"]),
                                      max_size=3))
def test_any_peer_text_is_judged_without_raising(peer: str, entries: list[str]) -> None:
    """address_allowed answers for any peer text; an unparseable peer is only allowed by an empty list."""
    networks = parse_networks(entries)
    allowed = address_allowed(networks, peer)
    try:
        ipaddress.ip_address(peer)
    except ValueError:
        assert allowed == (not networks)


# --- behind the REST API and the URL interface ---------------------------------------------------------

Answer = tuple[int, dict[str, str], bytes]


def call(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
         source: str = "127.0.0.1", context: ssl.SSLContext | None = None) -> Answer:
    """One HTTP request from `source` (any 127/8 address is this host on Linux); blocking."""
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                                                      source_address=(source, 0))
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, source_address=(source, 0),
                                           context=context)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def basic(name: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()}


SEND = json.dumps({"to": "13800138000", "text": "hi"}).encode()
JSON = {"Content-Type": "application/json"}


class ListenerTests(TestCase):
    """The REST API and the URL interface in-process on loopback, sharing one Authenticator."""

    timeout = 30

    def setUp(self) -> None:
        self.gateway = FakeGateway()
        self.auth = Authenticator(ACCOUNTS, R, max_failures=4)
        site = make_api(self.gateway, ACCOUNTS, clock=R, authenticator=self.auth)
        api = R.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(api.stopListening)
        self.api = api.getHost().port
        url = UrlInterface(self.gateway, ACCOUNTS, R, port=0, authenticator=self.auth)
        url.startService()
        self.addCleanup(url.stopService)
        self.url = int((url.address() or ":0").rsplit(":", 1)[1])
        soap = SoapInterface(self.gateway, ACCOUNTS, R, port=0, authenticator=self.auth)
        soap.startService()
        self.addCleanup(soap.stopService)
        self.soap = int((soap.address() or ":0").rsplit(":", 1)[1])

    async def rest(self, headers: dict[str, str], source: str = "127.0.0.1") -> Answer:
        answer: Answer = await deferToThread(call, self.api, "POST", "/api/v1/messages", {**JSON, **headers}, SEND,
                                             source)
        return answer

    async def sendsms(self, query: str, source: str = "127.0.0.1") -> Answer:
        answer: Answer = await deferToThread(call, self.url, "GET", f"/cgi-bin/sendsms?{query}&to=13800138000&text=x",
                                             None, None, source)
        return answer

    async def soap_call(self, name: str, secret: str, source: str = "127.0.0.1") -> tuple[int, str | None]:
        """fetchMo as `name`: the HTTP status and the smsFault code (None when it succeeded)."""
        body = (f'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
                f'xmlns:sms="http://smsgw.org/ws/sms/1"><soap:Body><sms:fetchMo><sms:account>{name}</sms:account>'
                f"<sms:password>{secret}</sms:password></sms:fetchMo></soap:Body></soap:Envelope>").encode()
        status, _, answer = await deferToThread(call, self.soap, "POST", "/ws/sms",
                                                {"Content-Type": "text/xml; charset=utf-8"}, body, source)
        code = re.search(rb"<(?:\w+:)?code>(\w+)</", answer)
        return status, code.group(1).decode() if code else None

    async def test_soap_uses_the_same_secrets_allow_lists_and_cache(self) -> None:
        """SOAP logs in with a secret_hash (bcrypt here), refuses wrong secrets and denied addresses alike, and
        shares the verification cache with the other interfaces."""
        assert await self.soap_call("ops", OPS_SECRET) == (200, None)
        assert await self.soap_call("ops", "wrong") == (500, "authentication_failed")
        assert await self.soap_call("office", ERP_SECRET, source="127.0.0.2") == (500, "authentication_failed")
        assert await self.soap_call("office", ERP_SECRET) == (200, None)
        hashes = self.auth.hashes
        assert (await self.sendsms(f"username=office&password={ERP_SECRET}"))[0] == 202
        assert self.auth.hashes == hashes

    async def test_rest_takes_basic_and_bearer_name_secret_and_refuses_wrong_ones(self) -> None:
        """REST accepts Basic and Bearer name:secret for a secret_hash account, and a machine key; wrong: 401."""
        assert (await self.rest(basic("erp", ERP_SECRET)))[0] == 202
        assert (await self.rest({"Authorization": f"Bearer erp:{ERP_SECRET}"}))[0] == 202
        assert (await self.rest({"X-API-Key": "machine-key-0123456789abcdef"}))[0] == 202
        status, headers, body = await self.rest(basic("erp", "not-the-secret-42"))
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert json.loads(body)["error"]["code"] == "unauthorized" and b"not-the-secret" not in body
        status, _, body = await self.rest({"Authorization": "Basic !!!"})
        assert status == 401 and b"curl -u name:secret" in body
        assert [name for name, _, _ in self.gateway.accepted_requests] == ["erp", "erp", "machine"]

    async def test_url_wrong_credentials_get_kannels_403(self) -> None:
        """A wrong password or unknown user is Kannel's plain 403, whatever the reason."""
        for query in ("username=erp&password=nope", f"username=nobody&password={ERP_SECRET}", "username=erp"):
            assert (await self.sendsms(query))[::2] == (403, b"Authorization failed for sendsms"), query
        assert not self.gateway.accepted_requests

    async def test_url_logins_are_hashed_once_per_client(self) -> None:
        """Ten sendsms requests with one account's password verify its argon2 hash once."""
        for _ in range(10):
            assert (await self.sendsms(f"username=erp&password={ERP_SECRET}"))[0] == 202
        assert self.auth.hashes == 1
        assert (await self.rest(basic("erp", ERP_SECRET)))[0] == 202  # the REST API shares the cache
        assert self.auth.hashes == 1

    async def test_a_denied_address_is_refused_on_both_interfaces(self) -> None:
        """An account allowing 127.0.0.1/32 only is refused from 127.0.0.2 (REST 401, URL 403), served from .1."""
        secret = ERP_SECRET.replace(" ", "+")
        assert (await self.sendsms(f"username=office&password={secret}", source="127.0.0.2"))[0] == 403
        assert (await self.rest(basic("office", ERP_SECRET), source="127.0.0.2"))[0] == 401
        assert (await self.sendsms(f"username=office&password={secret}", source="127.0.0.1"))[0] == 202
        assert (await self.rest(basic("office", ERP_SECRET), source="127.0.0.1"))[0] == 202

    async def test_brute_force_guard_answers_429_with_retry_after(self) -> None:
        """After max_failures wrong logins from one address both interfaces answer 429 with Retry-After."""
        for i in range(4):
            await self.sendsms(f"username=erp&password=guess{i}", source="127.0.0.3")
        status, headers, body = await self.sendsms("username=erp&password=x", source="127.0.0.3")
        assert status == 429 and int(headers["retry-after"]) > 200
        assert body.startswith(b"Authorization failed for sendsms: too many failed logins from 127.0.0.3")
        status, headers, body = await self.rest(basic("erp", ERP_SECRET), source="127.0.0.3")
        assert (status, json.loads(body)["error"]["code"]) == (429, "too_many_requests")
        assert (await self.rest(basic("erp", ERP_SECRET), source="127.0.0.4"))[0] == 202

    async def test_interfaces_are_enforced_for_name_and_secret_logins(self) -> None:
        """A soap-only account's right secret is a 403 naming its interfaces, on REST and URL."""
        status, _, body = await self.rest(basic("soaponly", ERP_SECRET))
        assert status == 403 and "may use: soap" in json.loads(body)["error"]["message"]
        status, _, body = await self.sendsms(f"username=soaponly&password={ERP_SECRET}")
        assert status == 403 and b"may not use the URL interface" in body


# --- hardening: what arrives never shows a traceback ------------------------------------------------------

def _feed(site: Site, raw: bytes) -> bytes:
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert channel is not None
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    answer: bytes = transport.value()
    return answer


_REST_SITE = make_api(FakeGateway(), ACCOUNTS, clock=Clock(),
                      authenticator=Authenticator(ACCOUNTS, Clock(), run_blocking=lambda fn: defer.succeed(fn()),
                                                  max_failures=10**9))
_URL = UrlInterface(FakeGateway(), ACCOUNTS, Clock(), authenticator=Authenticator(
    ACCOUNTS, Clock(), run_blocking=lambda fn: defer.succeed(fn()), max_failures=10**9))


def _status_lines(answer: bytes) -> list[int]:
    return [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


_HEADERS = st.sampled_from([b"Authorization: Basic ", b"Authorization: Bearer ", b"X-API-Key: ", b"Content-Type: ",
                            b"Content-Length: ", b"Transfer-Encoding: ", b"Host: "])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"GET", b"POST", b"PUT", b"G\x00T"]),
       st.sampled_from([b"/api/v1/messages", b"/api/v1/status", b"/cgi-bin/sendsms", b"/api/v1/mo"]),
       st.binary(max_size=40), st.lists(st.tuples(_HEADERS, st.binary(max_size=30)), max_size=3),
       st.binary(max_size=60))
def test_no_request_is_answered_with_a_traceback_or_a_500(method: bytes, path: bytes, query: bytes,
                                                           headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Garbage request lines, query strings, credentials, headers and bodies never crash either listener."""
    head = b"".join(name + value.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n" for name, value in headers)
    raw = method + b" " + path + b"?" + query.replace(b" ", b"+") + b" HTTP/1.1\r\n" + head + b"\r\n" + body
    for site in (_REST_SITE, _URL._site):
        answer = _feed(site, raw)
        assert b"Traceback" not in answer and b"File \"" not in answer
        assert all(status != 500 for status in _status_lines(answer)), answer[:300]


def test_oversized_headers_are_refused_without_details() -> None:
    """A header block beyond Twisted's limit is a plain 400 and the connection closes; too many headers too."""
    for site in (_REST_SITE, _URL._site):
        big = _feed(site, b"GET /api/v1/status HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        many = _feed(site, b"GET /api/v1/status HTTP/1.1\r\n" + b"X-A: b\r\n" * 600 + b"\r\n")
        for answer in (big, many):
            assert answer.startswith(b"HTTP/1.1 400 ") or answer.startswith(b"HTTP/1.1 431 "), answer[:100]
            assert b"Traceback" not in answer


def test_oversized_bodies_are_refused_before_they_are_read() -> None:
    """A Content-Length over the limit gets 413 on either listener before any body byte arrives."""
    for site, path in ((_REST_SITE, b"/api/v1/messages"), (_URL._site, b"/cgi-bin/sendsms")):
        answer = _feed(site, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
        assert _status_lines(answer) == [413] and b"Connection: close" in answer, answer[:200]


def test_malformed_json_and_query_strings_get_precise_400s() -> None:
    """Broken JSON names line and column; a bad %-escape names its offset; neither shows internals."""
    auth = b"Authorization: Bearer erp:" + ERP_SECRET.encode() + b"\r\n"
    body = b'{"to": [1,}'
    answer = _feed(_REST_SITE, b"POST /api/v1/messages HTTP/1.1\r\nHost: x\r\n" + auth
                   + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert _status_lines(answer) == [400] and b"line 1 column" in answer
    answer = _feed(_URL._site, b"GET /cgi-bin/sendsms?username=erp&text=%G1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _status_lines(answer) == [400] and b"Malformed query string, rejected: '%' at offset" in answer


# --- TLS ------------------------------------------------------------------------------------------------

def self_signed(directory: pathlib.Path, name: str = "server") -> TlsFiles:
    """A fresh self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smsgw test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return TlsFiles(str(cert_path), str(key_path))


def test_tls_problems_name_the_file_and_the_fix(tmp_path: pathlib.Path) -> None:
    """Missing, unparseable and mismatched files are each reported with the key to fix; good files are fine."""
    good = self_signed(tmp_path, "a")
    other = self_signed(tmp_path, "b")
    assert tls_problems(good) == []
    [(key, what, fix)] = tls_problems(TlsFiles(str(tmp_path / "none.pem"), good.key))
    assert key == "cert" and "none.pem: cannot read it: No such file or directory" in what and "PEM" in fix
    (tmp_path / "junk.pem").write_text("not a certificate")
    assert tls_problems(TlsFiles(str(tmp_path / "junk.pem"), good.key))[0][:1] == ("cert",)
    assert tls_problems(TlsFiles(good.cert, good.cert))[0][0] == "key"
    [(key, what, _)] = tls_problems(TlsFiles(good.cert, other.key))
    assert key == "key" and "not the key of the certificate" in what


def test_check_config_reports_tls_files_at_their_yaml_path(tmp_path: pathlib.Path) -> None:
    """check-config names api.tls.cert and url_interface.tls.key with the problem and a fix."""
    good = self_signed(tmp_path)
    path = write_config(tmp_path, {"api": {"tls": {"cert": f"{tmp_path}/missing.crt", "key": good.key}},
                                   "url_interface": {"enabled": True, "tls": {"cert": good.cert, "key": good.cert}}})
    problems = check_config(str(path), {})
    assert any("api.tls.cert:" in p and "missing.crt: cannot read it" in p and "fix:" in p for p in problems), problems
    assert any("url_interface.tls.key:" in p and "not an unencrypted PEM private key" in p for p in problems), problems


class TlsDaemonTests(DaemonCase):
    tmp_prefix = "smsgw-tls-"

    async def test_rest_and_url_listeners_speak_tls_and_refuse_plain_http(self) -> None:
        """With tls configured both listeners answer HTTPS (a client verifying the certificate) and not HTTP;
        the stored messages record account and interface."""
        files = self_signed(self.tmp)
        tls = {"cert": files.cert, "key": files.key}
        config = make_config(self.tmp, {"api": {"tls": tls}, "url_interface": {"enabled": True, "port": free_port(),
                                                                                "tls": tls},
                                        "accounts": [account("demo", "demo-key"),
                                                     {"name": "erp", "secret_hash": ERP_HASH}]})
        daemon = await self.daemon(config)
        api_port = int((daemon.api_address() or ":0").rsplit(":", 1)[1])
        context = ssl.create_default_context(cafile=files.cert)
        status, _, body = await deferToThread(call, api_port, "POST", "/api/v1/messages",
                                              {**JSON, **basic("erp", ERP_SECRET)}, SEND, "127.0.0.1", context)
        assert status == 202, body
        query = "/cgi-bin/sendsms?username=demo&password=demo-key&to=13900139000&text=x"
        status, _, body = await deferToThread(call, config.url_interface.port, "GET", query, None, None,
                                              "127.0.0.1", context)
        assert (status, body) == (202, b"0: Accepted for delivery")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)):
            await deferToThread(call, api_port, "GET", "/api/v1/status", {"X-API-Key": "demo-key"})
        with pytest.raises(ssl.SSLCertVerificationError):
            await deferToThread(call, api_port, "GET", "/api/v1/status", {}, None, "127.0.0.1",
                                ssl.create_default_context())
        assert sorted(rows(config, "SELECT account, interface FROM messages")) == [("demo", "url"), ("erp", "rest")]



# --- configuration ------------------------------------------------------------------------------------

def test_check_config_names_bad_account_security_keys(tmp_path: pathlib.Path) -> None:
    """A pasted secret as secret_hash, a bad allow_from entry and a zero rate or quota are each reported at
    their path with a fix, without showing the secret."""
    path = write_config(tmp_path, {"accounts": [
        {"name": "demo", "secret_hash": "my-password-123", "allow_from": ["10.0.0.0/8", "10.1.2.300"],
         "rate_limit": {"per_second": 0}, "daily_quota": 0}]})
    problems = "\n".join(check_config(str(path), {}))
    assert "accounts[0].secret_hash: is neither an argon2 hash" in problems and "smsgw hash-secret" in problems
    assert "accounts[0].allow_from[1]: '10.1.2.300' is not an IP address or CIDR" in problems
    assert "accounts[0].rate_limit.per_second:" in problems and "accounts[0].daily_quota:" in problems
    assert "my-password-123" not in problems


def test_account_security_keys_become_the_model_account(tmp_path: pathlib.Path) -> None:
    """secret_hash, allow_from, rate_limit (burst defaulting to a second's worth) and daily_quota reach Account."""
    config = make_config(tmp_path, {"accounts": [
        {"name": "erp", "secret_hash": ERP_HASH, "allow_from": ["10.8.0.0/16", "2001:db8::/64"],
         "rate_limit": {"per_second": 20}, "daily_quota": 5000},
        {"name": "ops", "secret_hash": OPS_BCRYPT, "rate_limit": {"per_second": 0.5, "burst": 3}}]})
    erp, ops = config.account_objects()
    assert (erp.secret_hash, erp.api_key_sha256, erp.allow_from) == (ERP_HASH, "", ("10.8.0.0/16", "2001:db8::/64"))
    assert (erp.rate_limit, erp.daily_quota) == (RateLimit(20.0, 20), 5000)
    assert (ops.rate_limit, ops.daily_quota) == (RateLimit(0.5, 3), None)
    assert (config.auth.max_failures, config.auth.failure_window, config.auth.cache_ttl) == (10, 300.0, 300.0)
