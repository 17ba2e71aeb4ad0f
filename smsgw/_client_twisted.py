"""`TwistedClient`: smsgw.client's calls as Deferreds, on twisted.web's Agent.

Imported by `smsgw.client` on first use (`from smsgw.client import
TwistedClient`), so that programs using only the synchronous client never load
Twisted. The requests and the reading of answers are smsgw._client_codec's,
shared with `Client`.
"""

from __future__ import annotations

import datetime
from typing import Any, AsyncIterator, Mapping, Sequence, TypeVar

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeout, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from smsgw._client_codec import (
    Accepted,
    Call,
    ConnectionFailed,
    Message,
    Target,
    message_call,
    mo_call,
    next_cursor,
    outcome,
    request_headers,
    send_call,
    send_many_call,
    status_call,
    delete_template_call,
    put_template_call,
    template_call,
    templates_call,
)
from smsgw._client_review import (
    Cancelled,
    Export,
    ReviewFilter,
    ReviewMessage,
    ReviewOutcome,
    ReviewPage,
    cancel_batch_call,
    cancel_call,
    file_in_place,
    review_action_call,
    review_export_call,
    review_get_call,
    review_list_call,
)
from smsgw.review_export import format_for
from smsgw.templates import Template
from smsgw._twisted_http import BytesBody, read_body
from smsgw.model import GatewayStatus, MessageView, MoPage, MoView

__all__ = ["TwistedClient"]

_T = TypeVar("_T")

# What a request that got no (whole) answer fails with. Everything else (ApiError and the
# like from `outcome`, or a bug) passes through unchanged.
_NO_ANSWER = (net_error.ConnectError, net_error.ConnectionLost, net_error.ConnectionDone,
              net_error.DNSLookupError, DeferredTimeout)


class TwistedClient:
    """smsgw's REST API for Twisted programs: `Client`'s methods, each returning a Deferred.

    Requests go through a `twisted.web.client.Agent` with a persistent
    `HTTPConnectionPool`, so connections are kept alive and reused (an idle GET
    that finds its connection closed is retried once; a POST never is). Errors
    are the exceptions `Client` raises, delivered as failures.

    Args:
        base_url: where the daemon's API listens, e.g. "http://127.0.0.1:8080".
        api_key: the account's key; never shown.
        reactor: the reactor to run on (`from twisted.internet import reactor`).
        timeout: seconds for a whole call (connecting, sending, reading the answer).
        pool: a pool to share with other agents; by default the client makes
            its own, which `close()` closes.

    Raises:
        ValueError: a malformed base_url or api_key.
    """

    def __init__(self, base_url: str, api_key: str, reactor: Any, *, timeout: float = 30.0,
                 pool: HTTPConnectionPool | None = None) -> None:
        self._target = Target.parse(base_url)
        self._headers = {name.encode("ascii"): [value.encode("ascii")]
                         for name, value in request_headers(api_key).items()}
        self._reactor: IReactorTime = reactor
        self._timeout = timeout
        self._own_pool = pool is None
        self._pool = HTTPConnectionPool(reactor, persistent=True) if pool is None else pool
        self._agent = Agent(reactor, connectTimeout=timeout, pool=self._pool)

    def __repr__(self) -> str:
        return f"TwistedClient({self._target.base_url!r})"

    def close(self) -> Deferred[None]:
        """Close the pool's idle connections (if the pool is the client's own); fires when they are closed."""
        if not self._own_pool:
            return succeed(None)
        d: Deferred[None] = self._pool.closeCachedConnections()
        return d

    def send(self, to: str | Sequence[str], text: str = "", *, priority: int | str | None = None,
             send_at: datetime.datetime | float | None = None, ext: str | None = None,
             ref: str | None = None, report: bool = True, template: str | None = None,
             params: Mapping[str, str | int | float] | None = None) -> Deferred[Accepted]:
        """Like `Client.send`."""
        return self._run(send_call(Message(to, text, priority, send_at, ext, ref, report, template, params)))

    def send_many(self, messages: Sequence[Message], *, origin: str | None = None) -> Deferred[list[Accepted]]:
        """Like `Client.send_many`."""
        if not messages:
            return succeed([])
        return self._run(send_many_call(messages, origin))

    def get_message(self, message_id: str) -> Deferred[MessageView]:
        """Like `Client.get_message`."""
        return self._run(message_call(message_id))

    def mo(self, cursor: str | None = None, limit: int = 100) -> Deferred[MoPage]:
        """Like `Client.mo`."""
        return self._run(mo_call(cursor, limit))

    async def mo_iter(self, cursor: str | None = None, *, limit: int = 100) -> AsyncIterator[MoView]:
        """Like `Client.mo_iter`, for `async for` in a coroutine run by `Deferred.fromCoroutine`."""
        while True:
            page = await self.mo(cursor, limit)
            for item in page.items:
                yield item
            cursor = next_cursor(page, cursor)
            if cursor is None:
                return

    def status(self) -> Deferred[GatewayStatus]:
        """Like `Client.status`."""
        return self._run(status_call())

    def templates(self) -> Deferred[list[Template]]:
        """Like `Client.templates`."""
        return self._run(templates_call())

    def template(self, name: str) -> Deferred[Template]:
        """Like `Client.template`."""
        return self._run(template_call(name))

    def put_template(self, name: str, text: str, *, pre_approved: bool = False) -> Deferred[Template]:
        """Like `Client.put_template`."""
        return self._run(put_template_call(name, text, pre_approved))

    def delete_template(self, name: str) -> Deferred[None]:
        """Like `Client.delete_template`."""
        return self._run(delete_template_call(name))

    def cancel(self, message_id: str, *, comment: str | None = None) -> Deferred[Cancelled]:
        """Like `Client.cancel`."""
        return self._run(cancel_call(message_id, comment))

    def cancel_batch(self, batch: str, *, comment: str | None = None) -> Deferred[Cancelled]:
        """Like `Client.cancel_batch`."""
        return self._run(cancel_batch_call(batch, comment))

    def review_list(self, where: ReviewFilter | None = None, *, offset: int = 0,
                    limit: int = 50) -> Deferred[ReviewPage]:
        """Like `Client.review_list`."""
        return self._run(review_list_call(where, offset, limit))

    def review_get(self, message_id: str) -> Deferred[ReviewMessage]:
        """Like `Client.review_get`."""
        return self._run(review_get_call(message_id))

    def review_approve(self, ids: Sequence[str] | None = None, *, batch: str | None = None,
                       where: ReviewFilter | None = None, all_matching: bool = False, comment: str = "",
                       reviewer: str | None = None) -> Deferred[ReviewOutcome]:
        """Like `Client.review_approve` (a bad selection raises ValueError at once)."""
        return self._run(review_action_call("approve", ids, batch, where, all_matching, comment, reviewer))

    def review_reject(self, ids: Sequence[str] | None = None, *, batch: str | None = None,
                      where: ReviewFilter | None = None, all_matching: bool = False, comment: str,
                      reviewer: str | None = None) -> Deferred[ReviewOutcome]:
        """Like `Client.review_reject`."""
        return self._run(review_action_call("reject", ids, batch, where, all_matching, comment, reviewer))

    def review_export(self, path: str, where: ReviewFilter | None = None, *,
                      format: str | None = None) -> Deferred[Export]:
        """Like `Client.review_export`; the answer is held in memory, then written on a pool thread."""
        fmt = format or format_for(path)
        call = review_export_call(where, fmt)
        url = self._target.url(call.path)
        d = self._request(call, url)

        def got(answer: tuple[int, str | None, bytes, str | None]) -> Deferred[Export]:
            status, retry_after, raw, rows = answer
            if status != 200:
                outcome(call, url, status, retry_after, raw)  # raises the error the answer means
            reactor: Any = self._reactor
            written: Deferred[Export] = deferToThreadPool(reactor, reactor.getThreadPool(), _write_file, path,
                                                          raw, fmt, rows)
            return written
        return d.addCallback(got)

    # -- HTTP ----------------------------------------------------------------------------------

    def _run(self, call: Call[_T]) -> Deferred[_T]:
        url = self._target.url(call.path)
        d = self._request(call, url)
        return d.addCallback(lambda got: outcome(call, url, *got[:3]))

    def _request(self, call: Call[Any], url: str) -> Deferred[tuple[int, str | None, bytes, str | None]]:
        """(status, Retry-After, body, X-Smsgw-Rows) of one request; no answer fails with ConnectionFailed."""
        headers = Headers(self._headers)
        for name, value in call.headers:
            headers.setRawHeaders(name.encode("ascii"), [value.encode("ascii")])
        body = None
        if call.body is not None:
            headers.setRawHeaders(b"content-type", [b"application/json"])
            body = BytesBody(call.body)
        d = self._agent.request(call.method.encode("ascii"), url.encode("ascii"), headers, body)
        answer = d.addCallback(_read)
        answer.addTimeout(self._timeout, self._reactor)
        return answer.addErrback(self._failed, url)

    def _failed(self, failure: Failure, url: str) -> Failure:
        exc = failure.value
        if exc is None:
            return failure
        if isinstance(exc, DeferredTimeout):
            raise ConnectionFailed(url, f"no answer within {self._timeout:g} s")
        reasons = getattr(exc, "reasons", None)  # ResponseFailed and friends wrap the real causes
        if isinstance(exc, _NO_ANSWER) or reasons is not None:
            cause = reasons[0].value if reasons else None
            raise ConnectionFailed(url, _reason(cause if isinstance(cause, BaseException) else exc))
        return failure


def _read(response: IResponse) -> Deferred[tuple[int, str | None, bytes, str | None]]:
    retry_after = response.headers.getRawHeaders(b"retry-after")
    value = retry_after[0].decode("latin-1") if retry_after else None
    counted = response.headers.getRawHeaders(b"x-smsgw-rows")
    rows = counted[0].decode("latin-1") if counted else None

    def done(raw: bytes) -> tuple[int, str | None, bytes, str | None]:
        return response.code, value, raw, rows

    return read_body(response).addCallback(done)


def _write_file(path: str, data: bytes, fmt: str, rows: str | None) -> Export:
    """Write a download next to `path` and move it there (a reader never sees half a file)."""
    with file_in_place(path) as part:
        part.write(data)
    return Export.written(path, fmt, len(data), rows)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, net_error.ConnectionRefusedError):
        return "connection refused (is the daemon running, and is this its api.port?)"
    if isinstance(exc, net_error.DNSLookupError):
        return "cannot resolve the host name"
    if isinstance(exc, net_error.TimeoutError):
        return "connecting timed out"
    if isinstance(exc, (net_error.ConnectionDone, net_error.ConnectionLost)):
        return "the server closed the connection without answering"
    return str(exc) or type(exc).__name__
