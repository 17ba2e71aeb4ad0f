"""The HTTP plumbing under the REST API: the Site, and requests that police the body size.

Kept apart from smsgw.api (routing and the gateway calls): everything here is about
twisted.web's request life cycle, not about messages.
"""

from __future__ import annotations

import time
from io import BytesIO
from typing import Protocol, cast

import structlog
from twisted.internet.interfaces import IReactorTime, ITransport
from twisted.python.failure import Failure
from twisted.web import http, server

from smsgw._api_codec import error_body

_SERVER = [b"smsgw"]
_log = structlog.get_logger()


class Api(Protocol):
    """What the Site hands every request to: smsgw.api's resource."""

    def render(self, request: ApiRequest) -> int:
        """Answer now or later; never raise."""

    def stop(self) -> None:
        """Drop timers: the Site stopped listening."""


class ApiSite(server.Site):
    """A Site whose requests enforce the body limit while the body arrives."""

    def __init__(self, resource: Api, max_body_bytes: int, clock: IReactorTime) -> None:
        super().__init__(resource, requestFactory=ApiRequest, parsePOSTFormSubmission=False, reactor=clock)
        self.api = resource
        self.max_body_bytes = max_body_bytes
        self.displayTracebacks = False

    def log(self, request: http.Request) -> None:
        """No Combined Log Format line: the API logs one structured line per request."""

    def stopFactory(self) -> None:
        self.api.stop()
        super().stopFactory()


class ApiRequest(server.Request):
    """A request that refuses an oversized body as soon as it can tell (Content-Length or streaming)."""

    refused = False
    lost = False
    body: BytesIO  # set by gotLength, which Twisted calls once the headers are in
    _received = 0

    def gotLength(self, length: int | None) -> None:
        # Our limit bounds the body, so it always goes to memory (Twisted would
        # spool bodies of unknown or 100 kB+ length to a temporary file).
        self.content = self.body = BytesIO()
        limit = self._limit()
        if length is not None and length > limit:
            self._refuse(f"the body is {length} bytes; at most {limit} are accepted: send fewer messages "
                         "per request")

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self._received += len(data)
        limit = self._limit()
        if self._received > limit:
            self._refuse(f"the body is more than {limit} bytes, the most accepted: send fewer messages "
                         "per request")
        else:
            self.body.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self.refused:  # the rest of a refused body arrived before the connection closed
            super().requestReceived(command, path, version)

    def process(self) -> None:
        """Hand the request straight to the API resource.

        Twisted's version splits and unquotes the path for resource traversal and
        formats the Date header anew for every request; the API routes on the raw
        path itself and never raises, so this skips both (about 7 µs a request).
        """
        site: ApiSite = self.channel.site  # type: ignore[attr-defined]
        self.site = site
        headers = self.responseHeaders
        headers.setRawHeaders(b"date", [_http_date()])
        headers.setRawHeaders(b"server", _SERVER)
        site.api.render(self)

    def connectionLost(self, reason: Failure) -> None:
        self.lost = True
        super().connectionLost(reason)

    def _limit(self) -> int:
        site: ApiSite = self.channel.site  # type: ignore[attr-defined]
        return site.max_body_bytes

    def refusal(self, message: str) -> tuple[bytes, bytes]:
        """The Content-Type and body of the 413 answer (interfaces that answer in text override it)."""
        return b"application/json", error_body("payload_too_large", message)

    def _refuse(self, message: str) -> None:
        """Answer 413 before reading the body, and close: HTTP cannot skip an unread body."""
        self.refused = True
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the answer
        channel = self.channel
        ctype, body = self.refusal(message)
        cast(ITransport, channel.transport).write(
            b"HTTP/1.1 413 Content Too Large\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Connection: close\r\nServer: smsgw\r\n\r\n%s" % (ctype, len(body), body))
        channel.loseConnection()
        # The request line is parsed but not yet handed to the request object.
        method = getattr(channel, "_command", b"?")
        path = getattr(channel, "_path", b"?").split(b"?", 1)[0]
        _log.info("http_request", method=text(method), path=text(path), status=413, account=None,
                  duration_ms=0.0, messages=None)


class _DateHeader:
    """The Date header's value, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, http.datetimeToString(now)
        return self._value


_http_date = _DateHeader()


def text(raw: bytes, limit: int = 200) -> str:
    """Request bytes (method, path) for a log line or a message: decoded, never raising, bounded."""
    return raw[:limit].decode("utf-8", "replace")
