"""A small client for smsgw's REST API (docs/python-client.md, docs/rest-api.md).

    from smsgw.client import Client, Message

    with Client("http://127.0.0.1:8080", "demo-key") as api:
        accepted = api.send("13800138000", "您的验证码是 493021", priority="urgent", ref="otp-1")
        view = api.get_message(accepted.id)     # view.state == "completed" once every recipient is final

`Client` is synchronous, uses only the standard library and keeps one HTTP/1.1
connection open between calls. `TwistedClient` (smsgw._client_twisted,
imported on first use so that `Client` never loads Twisted) has the same
methods returning Deferreds. Both build their requests and read the answers
with smsgw._client_codec, so they send the same JSON and raise the same
errors. Nothing here logs, and no message or `repr` shows the API key.
"""

from __future__ import annotations

import datetime
import http.client
import select
import socket
import ssl
import threading
from typing import IO, TYPE_CHECKING, Any, Iterator, Mapping, Sequence, TypeVar

from smsgw._client_codec import (
    Accepted,
    ApiError,
    AuthFailed,
    BadResponse,
    Call,
    ClientError,
    ConnectionFailed,
    Message,
    Target,
    Unavailable,
    request_headers,
    message_call,
    mo_call,
    next_cursor,
    outcome,
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
from smsgw.lifecycle import FINAL
from smsgw.model import GatewayStatus, MessageView, MoPage, MoView, Problem, RecipientView, SegmentView

if TYPE_CHECKING:
    from smsgw._client_twisted import TwistedClient

__all__ = [
    "FINAL_STATES", "Accepted", "ApiError", "AuthFailed", "BadResponse", "Cancelled", "Client", "ClientError",
    "ConnectionFailed", "Export", "GatewayStatus", "Message", "MessageView", "MoPage", "MoView", "Problem",
    "RecipientView", "ReviewFilter", "ReviewMessage", "ReviewOutcome", "ReviewPage", "SegmentView", "Template",
    "TwistedClient", "Unavailable",
]

FINAL_STATES = FINAL
"""Recipient states that close a recipient; a message is "completed" once all its recipients are in one."""

_T = TypeVar("_T")


# -- the synchronous client ---------------------------------------------------------------------

class Client:
    """smsgw's REST API over one kept-alive HTTP connection, standard library only.

    Calls are serialised by a lock, so threads may share a client (but a client
    per thread runs them in parallel). Use it as a context manager, or `close()` it.

    Args:
        base_url: where the daemon's API listens, e.g. "http://127.0.0.1:8080"
            (a path prefix is kept, for a daemon behind a proxy).
        api_key: the account's key; sent as "Authorization: Bearer", never shown.
        timeout: seconds to wait for connecting and for each read.

    Raises:
        ValueError: a malformed base_url or api_key.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self._target = Target.parse(base_url)
        self._headers = request_headers(api_key)
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return self._target.base_url

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept-alive connection (the next call opens a new one)."""
        with self._lock:
            self._drop()

    def send(self, to: str | Sequence[str], text: str = "", *, priority: int | str | None = None,
             send_at: datetime.datetime | float | None = None, ext: str | None = None,
             ref: str | None = None, report: bool = True, template: str | None = None,
             params: Mapping[str, str | int | float] | None = None) -> Accepted:
        """Send one text to one or several numbers (`Message` explains the fields).

        With `template` (a name from `templates()`) and its `params` instead of `text`,
        the gateway makes the text.

        Returns:
            The committed message: its id for `get_message`.

        Raises:
            ApiError: refused; for a 422 `problems` lists every reason ("to[0]", "text", ...).
            AuthFailed: the key is wrong (401) or the account may not use REST (403).
            Unavailable: the gateway is busy, starting or stopping; retry later with the same ref.
            ConnectionFailed: no answer; the message may have been committed: resend with the same ref.
            ValueError: `send_at` is a datetime without a time zone (nothing was sent).
        """
        return self._run(send_call(Message(to, text, priority, send_at, ext, ref, report, template, params)))

    def send_many(self, messages: Sequence[Message], *, origin: str | None = None) -> list[Accepted]:
        """Send several messages in one request: all are committed, or none (a 422 lists every problem).

        `origin="file"` records them as coming from a file import (interface file, which the
        account must be allowed), as `smsgw import` does.

        Returns:
            One `Accepted` per message, in order; `[]` for no messages (nothing is sent).

        Raises:
            The same as `send`; problems read "[1].to[0]" for the second message's first number.
        """
        if not messages:
            return []
        return self._run(send_many_call(messages, origin))

    def get_message(self, message_id: str) -> MessageView:
        """One of this account's messages: its state, and each recipient's state, Stat and segments.

        Raises:
            ApiError: 404 not_found for an unknown id or another account's message.
        """
        return self._run(message_call(message_id))

    def mo(self, cursor: str | None = None, limit: int = 100) -> MoPage:
        """Up to `limit` (1–1000) uplink messages after `cursor`, oldest first.

        Returns:
            The page; pass its `next_cursor` back for what follows. An empty
            page keeps the cursor: store it and ask again later.
        """
        return self._run(mo_call(cursor, limit))

    def mo_iter(self, cursor: str | None = None, *, limit: int = 100) -> Iterator[MoView]:
        """Every uplink message after `cursor`, page by page, until none is left.

        Each item's `id` is the cursor to store once you have handled it.
        """
        while True:
            page = self.mo(cursor, limit)
            yield from page.items
            cursor = next_cursor(page, cursor)
            if cursor is None:
                return

    def status(self) -> GatewayStatus:
        """The gateway's links, queue depths and rates (any account's key may read it)."""
        return self._run(status_call())

    def templates(self) -> list[Template]:
        """Every named template (any REST account may read them)."""
        return self._run(templates_call())

    def template(self, name: str) -> Template:
        """One template; ApiError 404 not_found when there is none of that name."""
        return self._run(template_call(name))

    def put_template(self, name: str, text: str, *, pre_approved: bool = False) -> Template:
        """Add or change a template (the account needs the "templates" permission).

        Raises:
            ApiError: 422 for a bad name or text (`problems` says which); AuthFailed without the permission.
        """
        return self._run(put_template_call(name, text, pre_approved))

    def delete_template(self, name: str) -> None:
        """Delete a template; ApiError 404 not_found when there was none."""
        self._run(delete_template_call(name))

    # -- cancelling and the review queue (docs/review.md) -------------------------------------------

    def cancel(self, message_id: str, *, comment: str | None = None) -> Cancelled:
        """Cancel one of this account's messages as far as it has not gone out (held or queued recipients,
        e.g. one scheduled for later); recipients already handed to the carrier go on.

        Raises:
            ApiError: 404 not_found (no such message of this account); 409 nothing_to_cancel (all of it
                has gone out or is final).
        """
        return self._run(cancel_call(message_id, comment))

    def cancel_batch(self, batch: str, *, comment: str | None = None) -> Cancelled:
        """Cancel what is left of one of this account's batches (`batch` as `Accepted.batch` gives it).

        Raises:
            ApiError: 404 not_found; 409 nothing_to_cancel.
        """
        return self._run(cancel_batch_call(batch, comment))

    def review_list(self, where: ReviewFilter | None = None, *, offset: int = 0, limit: int = 50) -> ReviewPage:
        """A page (`limit` 1–1000) of the review queue, oldest first; the account needs the review permission.

        Raises:
            ApiError: 400 naming a bad filter; AuthFailed 403 without the permission.
        """
        return self._run(review_list_call(where, offset, limit))

    def review_get(self, message_id: str) -> ReviewMessage:
        """One message as the review queue shows it, with every number; ApiError 404 when there is none."""
        return self._run(review_get_call(message_id))

    def review_approve(self, ids: Sequence[str] | None = None, *, batch: str | None = None,
                       where: ReviewFilter | None = None, all_matching: bool = False, comment: str = "",
                       reviewer: str | None = None) -> ReviewOutcome:
        """Approve held messages, chosen by exactly one of `ids`, `batch` or `where`; they go out at once
        (or at their send time).

        `where` must narrow the queue (content, to, account, interface, batch, since, until), or
        `all_matching=True` confirms approving everything waiting. `reviewer` is the configured
        reviewer acting; leave it out when the account acts for exactly one.

        Raises:
            ValueError: the selection is not exactly one, or unbounded without all_matching (nothing sent).
            ApiError: 400 reviewer_required / unknown_reviewer, 422 for a bad body; AuthFailed 403.
        """
        return self._run(review_action_call("approve", ids, batch, where, all_matching, comment, reviewer))

    def review_reject(self, ids: Sequence[str] | None = None, *, batch: str | None = None,
                      where: ReviewFilter | None = None, all_matching: bool = False, comment: str,
                      reviewer: str | None = None) -> ReviewOutcome:
        """Reject held messages (chosen as for `review_approve`) saying why in `comment` (required): their
        recipients reach the final state rejected and the sender is told.

        Raises:
            The same as `review_approve`; ValueError for an empty comment.
        """
        return self._run(review_action_call("reject", ids, batch, where, all_matching, comment, reviewer))

    def review_export(self, path: str, where: ReviewFilter | None = None, *, format: str | None = None) -> Export:
        """Write every message `where` selects to the file `path`: XLSX or CSV, by `format` or else by the
        ending of `path` (.xlsx, .csv, .txt). The file appears whole or not at all.

        Raises:
            ValueError: no format and `path` has no known ending.
            ApiError: 400 naming a bad filter, or export_too_large; AuthFailed 403.
            OSError: the file cannot be written.
        """
        fmt = format or format_for(path)
        call = review_export_call(where, fmt)
        url = self._target.url(call.path)
        with file_in_place(path) as part:
            with self._lock:
                status, retry_after, raw, rows = self._exchange(call, url, part)
            if status != 200:
                outcome(call, url, status, retry_after, raw)  # raises the error the answer means
            size = part.tell()
        return Export.written(path, fmt, size, rows)

    # -- HTTP ----------------------------------------------------------------------------------

    def _run(self, call: Call[_T]) -> _T:
        url = self._target.url(call.path)
        with self._lock:
            status, retry_after, raw, _ = self._exchange(call, url)
        return outcome(call, url, status, retry_after, raw)

    def _exchange(self, call: Call[Any], url: str,
                  sink: IO[bytes] | None = None) -> tuple[int, str | None, bytes, str | None]:
        """(status, Retry-After, body, X-Smsgw-Rows); with `sink` a 200's body is copied there instead."""
        headers = self._headers if call.body is None else {**self._headers, "Content-Type": "application/json"}
        if call.headers:
            headers = {**headers, **dict(call.headers)}
        while True:
            conn, reused = self._connection()
            try:
                conn.request(call.method, self._target.path(call.path), body=call.body, headers=headers)
                response = conn.getresponse()
                if sink is not None and response.status == 200:
                    _copy(response, sink)
                    raw = b""
                else:
                    raw = response.read()
            except _WriteFailed as exc:
                self._drop()
                raise exc.error from None
            except (http.client.HTTPException, OSError) as exc:
                self._drop()
                # A kept-alive connection the server closed just now: a GET may go again on a
                # new one. A POST may not (had the server taken it, the retry would send twice).
                if reused and call.method == "GET" and isinstance(exc, _CLOSED):
                    if sink is not None:
                        sink.seek(0)
                        sink.truncate()
                    continue
                raise ConnectionFailed(url, _reason(exc, self._timeout)) from exc
            if response.will_close:
                self._drop()
            return response.status, response.getheader("Retry-After"), raw, response.getheader("X-Smsgw-Rows")

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """The kept-alive connection if the server has not closed it, else a new one (not yet open)."""
        conn = self._conn
        if conn is not None and conn.sock is not None and not _closed_by_peer(conn.sock):
            return conn, True
        self._drop()
        t = self._target
        if t.scheme == "https":
            self._conn = http.client.HTTPSConnection(t.host, t.port, timeout=self._timeout,
                                                     context=ssl.create_default_context())
        else:
            self._conn = http.client.HTTPConnection(t.host, t.port, timeout=self._timeout)
        return self._conn, False

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class _WriteFailed(Exception):
    """Writing a download to its file failed (the disk's fault, not the connection's)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def _copy(response: http.client.HTTPResponse, sink: IO[bytes]) -> None:
    while chunk := response.read(1 << 16):
        try:
            sink.write(chunk)
        except OSError as exc:
            raise _WriteFailed(exc) from exc


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle kept-alive socket is readable: then the server closed it (or broke HTTP)."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)
    except (OSError, ValueError):
        return True


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the daemon running, and is this its api.port?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    return str(exc) or type(exc).__name__


def __getattr__(name: str) -> Any:
    # TwistedClient lives in its own module so that `import smsgw.client` does not load Twisted.
    if name == "TwistedClient":
        from smsgw._client_twisted import TwistedClient

        return TwistedClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
