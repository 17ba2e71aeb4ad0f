"""HTTP callbacks: delivery reports and MO messages pushed to the account's URLs.

An account with ``callbacks:`` (see docs/callbacks.md) gets, for each of its
messages' recipients, an event when the recipient reaches a final state (and,
if asked, when it is submitted), and for each MO routed to its name an event
with the message. Events are outbox rows (`smsgw.outbox`), committed with the
state change they report, so a receiver that is down loses nothing and never
holds up sending: each event is retried with back-off until it is acknowledged
by any 2xx answer or `retry_for` seconds have passed (then it is dead, with an
alarm line).

At least once: an event can arrive twice (a 2xx that was lost, a restart);
`event_id` is stable, so receivers drop repeats.

Two formats:

- ``json``: ``POST`` with a JSON body (below), ``Content-Type: application/json``,
  ``X-Smsgw-Event-Id`` and, with a secret, ``X-Smsgw-Signature: t=<unix time>,v1=<hex>``
  where hex is HMAC-SHA256(secret, "<t>.<body>").
- ``kannel``: ``GET`` of the URL with Kannel's %-escapes replaced (URL-encoded):
  ``%d`` DLR type (1 delivered, 2 undeliverable, 8 submitted, 16 rejected),
  ``%p`` the recipient (MO: the sender), ``%P`` the extension the message was
  sent with (MO: the full number it was sent to), ``%A`` the Stat, ``%I`` smsgw's message id (MO: the MO id),
  ``%a`` the MO text, ``%k`` its keyword, ``%T`` unix time, ``%t`` local time,
  ``%F`` the final state, ``%r`` the message's ref, ``%%`` a percent sign.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence
from urllib.parse import quote

import structlog
from sqlalchemy import Connection, select
from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from smsgw._twisted_http import BytesBody, read_body
from smsgw.outbox import Outcome, Refused
from smsgw.store import OutboxEvent, Store, chunks, schema

log = structlog.get_logger("smsgw.callbacks")

#: Kannel's DLR types, by the recipient's state. Rejected in review and cancelled by the sender never reached
#: the carrier: 16, as Kannel reports a message the SMSC did not take (without it a dlr-mask never asked for them).
KANNEL_DLR = {"delivered": 1, "undeliverable": 2, "expired": 2, "failed": 16, "sent": 8, "submitted": 8,
              "rejected": 16, "cancelled": 16}
#: a Kannel escape: % and one character (%% is a literal %; an unknown one and a trailing % stay as written)
_KANNEL_ESCAPE = re.compile(r"%(.)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class CallbackSettings:
    account: str
    dlr_url: str | None
    mo_url: str | None
    format: str  # json | kannel
    secret: str | None
    timeout: float
    submitted: bool  # also an event when a recipient is submitted
    per_message: bool = False  # the URL and mask are the message's own (Kannel dlr-url / dlr-mask)


def iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def load_events(conn: Connection, recipient_ids: list[int], mo_ids: list[int]) -> tuple[dict[int, dict[str, Any]],
                                                                                         dict[int, dict[str, Any]]]:
    """What the callbacks tell, read from the store (a reader thread)."""
    r, m = schema.recipients.c, schema.messages.c
    recips: dict[int, dict[str, Any]] = {}
    for chunk in chunks(recipient_ids, 500):
        result = conn.execute(
            select(r.id, r.message_id, r.phone, r.state, r.stat, r.error, r.attempts, r.submitted_at, r.final_at,
                   m.ref, m.account, m.ext, m.dlr_url, m.dlr_mask)
            .join(schema.messages, m.id == r.message_id).where(r.id.in_(chunk)))
        for row in result:
            recips[row.id] = {"recipient_id": row.id, "message_id": row.message_id, "to": row.phone,
                              "state": row.state, "stat": row.stat, "error": row.error, "attempt": row.attempts,
                              "submitted_at": row.submitted_at, "final_at": row.final_at, "ref": row.ref,
                              "account": row.account, "ext": row.ext, "msg_ids": [], "dlr_url": row.dlr_url,
                              "dlr_mask": row.dlr_mask or 0}
    msg_ids = Store.current_msg_ids(conn, {rid: data["attempt"] for rid, data in recips.items()})
    for rid, data in recips.items():
        data["msg_ids"] = msg_ids.get(rid, [])
    mos = {mo_id: {"mo_id": row.id, "from": row.src, "to": row.dest, "ext": row.ext, "text": row.content,
                   "keyword": row.keyword, "consumer": row.consumer, "received_at": row.received_at, "link": row.link}
           for mo_id, row in Store.mo_rows(conn, mo_ids).items()}
    return recips, mos


def json_body(event: OutboxEvent, data: dict[str, Any]) -> dict[str, Any]:
    if event.event == "mo":
        return {"event_id": str(event.id), "type": "mo", "mo_id": str(data["mo_id"]), "from": data["from"],
                "to": data["to"], "ext": data["ext"], "text": data["text"], "keyword": data["keyword"],
                "consumer": data["consumer"], "received_at": iso(data["received_at"])}
    return {"event_id": str(event.id), "type": "dlr", "message_id": str(data["message_id"]), "ref": data["ref"],
            "to": data["to"], "state": data["state"], "stat": data["stat"], "error": data["error"],
            "msg_ids": data["msg_ids"], "submitted_at": iso(data["submitted_at"]), "done_at": iso(data["final_at"]),
            "account": data["account"]}


def kannel_url(template: str, event: OutboxEvent, data: dict[str, Any], now: float) -> str:
    """The URL with Kannel's escapes replaced by URL-encoded values."""
    if event.event == "mo":
        values = {"p": data["from"], "P": data["to"], "I": str(data["mo_id"]), "a": data["text"],
                  "k": data["keyword"] or "", "A": "", "d": "", "F": "", "r": ""}
    else:
        values = {"p": data["to"], "P": data["ext"], "I": str(data["message_id"]), "a": "", "k": "",
                  "A": data["stat"] or "", "d": str(KANNEL_DLR.get(data["state"], 0)), "F": data["state"],
                  "r": data["ref"] or ""}
    values["T"] = str(int(now))
    values["t"] = datetime.fromtimestamp(now).strftime("%Y-%m-%d %H:%M:%S")

    def replace(m: re.Match[str]) -> str:
        code = m[1]
        if code == "%":
            return "%"
        return quote(values[code], safe="") if code in values else m[0]
    return _KANNEL_ESCAPE.sub(replace, template)


def wanted(event: OutboxEvent, data: dict[str, Any]) -> bool:
    """Whether a message's dlr-mask asks for this event (Kannel's bits)."""
    bit = 8 if event.event == "recipient_submitted" else KANNEL_DLR.get(data["state"], 0)
    return bool(data["dlr_mask"] & bit)


def signature(secret: str, body: bytes, now: float) -> str:
    t = str(int(now))
    mac = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


class HttpCallbacks:
    """The outbox handler of one account's callbacks."""

    def __init__(self, settings: CallbackSettings, store: Store, reactor: Any, *, concurrency: int = 16) -> None:
        self.settings = settings
        self._store = store
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = concurrency
        self._agent = Agent(reactor, pool=self._pool, connectTimeout=settings.timeout)
        self._concurrency = concurrency

    def close(self) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = self._pool.closeCachedConnections()
        return d

    def deliver(self, events: Sequence[OutboxEvent]) -> defer.Deferred[list[Outcome]]:
        rids = sorted({e.recipient_id for e in events if e.recipient_id is not None and e.event != "mo"})
        mo_ids = sorted({int(e.data["mo_id"]) for e in events if e.event == "mo"})
        d: defer.Deferred[Any] = self._store.read(load_events, rids, mo_ids)
        d.addCallback(self._send_all, list(events))
        return d

    def _send_all(self, loaded: tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]],
                  events: list[OutboxEvent]) -> defer.Deferred[list[Outcome]]:
        recips, mos = loaded
        sem = defer.DeferredSemaphore(self._concurrency)
        calls: list[defer.Deferred[Outcome]] = []
        last: dict[tuple[str, int], defer.Deferred[Any]] = {}  # events of one recipient go out one after another
        for e in events:
            if e.event == "recipient_submitted" and not self.settings.submitted:
                calls.append(defer.succeed(None))  # not asked for
                continue
            if e.event == "mo":
                data = mos.get(int(e.data["mo_id"]))
                url = self.settings.mo_url
            else:
                data = recips.get(e.recipient_id or 0)
                url = self.settings.dlr_url
                if self.settings.per_message:
                    url = None if data is None or not wanted(e, data) else data["dlr_url"]
            done: Outcome = None  # no URL for this kind of event (any more): nothing owed
            if url is not None and data is None:
                done = Refused("no longer in the store")
            if url is None or data is None:
                calls.append(defer.succeed(done))
                continue
            if e.event == "recipient_submitted":  # it tells of the submit, whatever happened since
                data = {**data, "state": "submitted", "stat": None, "final_at": None}
            key = ("mo", e.id) if e.event == "mo" else ("r", e.recipient_id or 0)
            calls.append(self._after(last.get(key), sem, e, data, url))
            last[key] = calls[-1]
        gathered: defer.Deferred[list[Outcome]] = defer.gatherResults(calls, consumeErrors=True)
        return gathered

    def _after(self, previous: defer.Deferred[Any] | None, sem: defer.DeferredSemaphore, event: OutboxEvent,
               data: dict[str, Any], url: str) -> defer.Deferred[Outcome]:
        if previous is None:
            return sem.run(self._send, event, data, url)
        follow: defer.Deferred[Outcome] = defer.Deferred()

        def go(result: Any) -> Any:
            sem.run(self._send, event, data, url).chainDeferred(follow)
            return result
        previous.addBoth(go)
        return follow

    def _send(self, event: OutboxEvent, data: dict[str, Any], url: str) -> defer.Deferred[Outcome]:
        now = self._reactor.seconds()
        headers = Headers({b"User-Agent": [b"smsgw"], b"X-Smsgw-Event-Id": [str(event.id).encode()]})
        if self.settings.format == "kannel":
            target = kannel_url(url, event, data, now)
            d = self._agent.request(b"GET", target.encode(), headers)
        else:
            body = json.dumps(json_body(event, data), ensure_ascii=False).encode()
            headers.addRawHeader(b"Content-Type", b"application/json; charset=utf-8")
            if self.settings.secret:
                headers.addRawHeader(b"X-Smsgw-Signature", signature(self.settings.secret, body, now).encode())
            d = self._agent.request(b"POST", url.encode(), headers, BytesBody(body))
        d.addTimeout(self.settings.timeout, self._reactor)
        started = time.monotonic()

        def answered(response: Any) -> Any:
            code = response.code
            body_d = read_body(response)

            def judged(body: bytes) -> Outcome:
                if 200 <= code < 300:
                    return None
                return Refused(f"HTTP {code} from {_shown(url)}: {body[:120].decode('utf-8', 'replace')}")
            return body_d.addCallback(judged)

        def failed(failure: Any) -> Outcome:
            reason = failure.getErrorMessage() or failure.type.__name__
            if failure.check(defer.TimeoutError, defer.CancelledError):
                reason = f"no answer within {self.settings.timeout:g}s"
            return Refused(f"{_shown(url)}: {reason} (after {time.monotonic() - started:.1f}s)")
        out: defer.Deferred[Outcome] = d.addCallbacks(answered, failed)
        return out


def _shown(url: str) -> str:
    """The URL without its query (which may hold credentials or personal data)."""
    return url.split("?", 1)[0]
