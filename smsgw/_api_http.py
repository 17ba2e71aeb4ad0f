"""The HTTP plumbing under the REST API and the URL interface: the Site, requests that police the
body size, and `GatewayResource`, the answering of requests the gateway answers later.

Kept apart from smsgw.api (routing and the gateway calls): everything here is about
twisted.web's request life cycle, not about messages.
"""

from __future__ import annotations

import math
import secrets
import time
from io import BytesIO
from typing import IO, Any, Callable, Generic, Mapping, Protocol, Sequence, TypeVar, cast

import structlog
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime, ITransport
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import Resource

from smsgw._api_codec import ApiError, error_body
from smsgw._listen import TlsFiles, listen_http
from smsgw.auth import AuthError, Authenticator
from smsgw.model import Account, LimitExceeded, RequestRejected, ServiceUnavailable

_SERVER = [b"smsgw"]
_log = structlog.get_logger()


class Api(Protocol):
    """What the Site hands every request to: smsgw.api's resource."""

    def render(self, request: ApiRequest) -> int:
        """Answer now or later; never raise."""

    def stop(self) -> None:
        """Drop timers: the Site stopped listening."""


class HttpChannel(http.HTTPChannel):
    """Twisted's HTTP/1.1 channel, answering a header line longer than it reads (16 kB) instead of
    dropping the connection without a word (a block of many headers past that size gets its 400)."""

    def lineLengthExceeded(self, line: bytes) -> None:
        cast(ITransport, self.transport).write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.loseConnection()


class ApiSite(server.Site):
    """A Site whose requests enforce the body limit while the body arrives.

    Its channels are plain HTTP/1.1 (`HttpChannel`): no HTTP/2 negotiation, which
    none of the interfaces offers. `request_factory` is an `ApiRequest` subclass when an
    interface answers the 413 in its own format.
    """

    protocol = HttpChannel  # type: ignore[assignment]  # Twisted types it as its HTTP/2-capable wrapper

    def __init__(self, resource: Api, max_body_bytes: int, clock: IReactorTime,
                 request_factory: type[ApiRequest] | None = None) -> None:
        super().__init__(resource, requestFactory=request_factory or ApiRequest, parsePOSTFormSubmission=False,
                         reactor=clock)
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


def peer_address(request: http.Request) -> str | None:
    """The IP address the request came from (the TCP peer: X-Forwarded-For is not trusted), or None."""
    return getattr(request.getClientAddress(), "host", None)


def retry_after(seconds: float) -> bytes:
    """A Retry-After value: whole seconds, rounded up, at least 1."""
    return b"%d" % max(1, math.ceil(seconds))


def content_charset(request: http.Request, strip: bytes) -> str | None:
    """The first non-empty charset parameter of the request's Content-Type, stripped of the bytes in `strip`
    (None without one)."""
    ctype = request.requestHeaders.getRawHeaders(b"content-type")
    for option in (ctype[0] if ctype else b"").split(b";")[1:]:
        key, _, value = option.strip().partition(b"=")
        value = value.strip(strip)
        if key.lower() == b"charset" and value:
            return value.decode("ascii", "replace")
    return None


# --- what both HTTP interfaces (REST, URL) do with a request the gateway answers later -------------

RETRY_AFTER_S = 5
JSON_TYPE = [b"application/json"]
REASONS = {413: b"Content Too Large", 422: b"Unprocessable Content", 429: b"Too Many Requests"}  # Twisted lacks these
#: LimitExceeded.kind -> the error code of the 429 answer
LIMIT_CODES = {"rate_limit": "rate_limited", "daily_quota": "quota_exceeded"}


class Exchange:
    """One request in flight: what its log line and its late answer need."""

    __slots__ = ("request", "started", "account", "done")

    def __init__(self, request: ApiRequest, started: float) -> None:
        self.request = request
        self.started = started
        self.account: Account | None = None
        self.done = False


E = TypeVar("E", bound=Exchange)


class GatewayResource(Resource, Generic[E]):
    """A leaf resource whose answers wait for the gateway.

    It keeps the requests waiting for the gateway, oldest first: every request has
    the same timeout, so insertion order is deadline order and one timer serves them
    all (a callLater and a cancel per request cost more than the rest of the routing).
    A gateway failure becomes the subclass's error; an unexpected one is logged in
    full and the client gets only an incident id; an answer that comes after the
    request was answered is logged. Every request ends in one `http_request` line.

    Raises:
        ValueError: `request_timeout` is not positive, or `authenticator` is None and
            Authenticator refuses `accounts`.
    """

    isLeaf = True
    #: the reason a ServiceUnavailable without a message of its own gives
    _NOT_TAKING = "the gateway is not taking messages now"

    def __init__(self, clock: IReactorTime, request_timeout: float, accounts: Sequence[Account],
                 authenticator: Authenticator | None) -> None:
        if not request_timeout > 0:
            raise ValueError(f"request_timeout must be positive, got {request_timeout!r}")
        super().__init__()
        self._clock = clock
        self._timeout = request_timeout
        self._auth = authenticator if authenticator is not None else Authenticator(accounts, clock)
        self._waiting: dict[E, None] = {}
        self._sweeper: IDelayedCall | None = None
        self._idle: list[Deferred[None]] = []

    def stop(self) -> None:
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        self._sweeper = None

    def drained(self) -> Deferred[None]:
        """Fires once no request waits for the gateway (at once if none does)."""
        if not self._waiting:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    # -- running request code -----------------------------------------------------------------

    def _guarded(self, ex: E, fn: Callable[..., None], *args: Any) -> None:
        """`fn(*args)`, answering an ApiError it raises as that error and anything else as an incident."""
        try:
            fn(*args)
        except ApiError as e:
            self._fail(ex, e)
        except Exception:
            self._crash(ex, Failure())

    def _after_auth(self, d: Deferred[Account], ex: E, then: Callable[..., None], *args: Any) -> None:
        """Once `d` gives the caller's account, set it on `ex` and run `then(*args)` guarded; a refused
        login is answered with `_auth_refused`."""
        d.addCallbacks(self._logged_in, self._auth_failed, callbackArgs=(ex, then, *args), errbackArgs=(ex,))

    def _logged_in(self, account: Account, ex: E, then: Callable[..., None], *args: Any) -> None:
        ex.account = account
        self._guarded(ex, then, *args)

    def _auth_failed(self, failure: Failure, ex: E) -> None:
        exc = failure.value
        if isinstance(exc, AuthError):
            self._fail(ex, self._auth_refused(exc))
        else:
            self._crash(ex, failure)

    # -- calling the gateway ------------------------------------------------------------------

    def _call(self, ex: E, method: Callable[..., Deferred[Any]], args: tuple[Any, ...],
              on_result: Callable[[E, Any], tuple[int, bytes]]) -> None:
        """Call the gateway and answer with `on_result(ex, result)` (status, body) when it fires."""
        try:
            d = method(*args)
        except Exception:  # a gateway that raises instead of failing its Deferred
            self._gateway_failed(Failure(), ex)
            return
        d.addCallbacks(self._answered, self._gateway_failed, callbackArgs=(ex, on_result), errbackArgs=(ex,))
        self._wait(ex)

    def _answered(self, result: Any, ex: E, on_result: Callable[[E, Any], tuple[int, bytes]]) -> None:
        if ex.done:
            _log.info("http_late_answer", **self._where(ex), outcome="answered", result=_summary(result))
            return
        self._guarded(ex, self._answer, ex, on_result, result)

    def _answer(self, ex: E, on_result: Callable[[E, Any], tuple[int, bytes]], result: Any) -> None:
        self._respond(ex, *on_result(ex, result))

    # -- hooks ------------------------------------------------------------------------------

    def _where(self, ex: E) -> dict[str, Any]:
        """The fields that name a request in its log lines."""
        request = ex.request
        return {"method": text(request.method), "path": text(request.path),
                "account": ex.account.name if ex.account else None}

    def _log_fields(self, ex: E) -> dict[str, Any]:
        """More fields for the request's `http_request` line."""
        return {}

    def _content_type(self, ex: E) -> list[bytes]:
        return JSON_TYPE

    def _error_body(self, ex: E, error: ApiError) -> bytes:
        return error_body(error.code, error.message, error.details)

    def _rejected(self, exc: RequestRejected, ex: E) -> ApiError:
        raise NotImplementedError

    def _auth_refused(self, exc: AuthError) -> ApiError:
        """The answer to a refused login (AuthFailed, InterfaceDenied, TooManyFailures)."""
        raise NotImplementedError

    def _unavailable(self, exc: ServiceUnavailable) -> ApiError:
        """503 with Retry-After: the gateway cannot take requests now (draining, store down)."""
        reason = str(exc) or self._NOT_TAKING
        return self._unavailable_error(f"{reason}: retry in {RETRY_AFTER_S} s")

    def _unavailable_error(self, message: str) -> ApiError:
        """The interface's 503 saying `message`, for `_unavailable` and timeouts."""
        return ApiError(503, "unavailable", message, headers={b"retry-after": retry_after(RETRY_AFTER_S)})

    def _limited(self, exc: LimitExceeded) -> ApiError:
        """429 with Retry-After: the account's rate limit or daily quota (the message says which and when)."""
        return ApiError(429, LIMIT_CODES.get(exc.kind, "too_many_requests"), str(exc),
                        headers={b"retry-after": retry_after(exc.retry_after)})

    def _internal_error(self, incident: str) -> ApiError:
        raise NotImplementedError

    def _timed_out(self, ex: E) -> None:
        _log.warning("http_gateway_timeout", **self._where(ex), waited_s=self._timeout)
        self._fail(ex, self._unavailable_error(self._timeout_message(ex)))

    def _timeout_message(self, ex: E) -> str:
        """What the 503 of a request the gateway did not answer in time says (and whether to resend)."""
        raise NotImplementedError

    # -- waiting for the gateway ------------------------------------------------------------------

    def _wait(self, ex: E) -> None:
        """`ex` waits for the gateway's answer (unless it came at once), at most request_timeout."""
        if not ex.done:
            self._waiting[ex] = None
            if self._sweeper is None:
                self._sweeper = self._clock.callLater(self._timeout, self._sweep)

    def _sweep(self) -> None:
        """Time out every request that has waited `request_timeout`; re-arm for the next one."""
        self._sweeper = None
        now = self._clock.seconds()
        while self._waiting:
            ex = next(iter(self._waiting))
            if ex.started + self._timeout > now:
                self._sweeper = self._clock.callLater(ex.started + self._timeout - now, self._sweep)
                return
            del self._waiting[ex]
            self._timed_out(ex)

    def _gateway_failed(self, failure: Failure, ex: E) -> None:
        exc = failure.value
        if ex.done:
            if isinstance(exc, (RequestRejected, ServiceUnavailable, LimitExceeded)):
                _log.info("http_late_answer", **self._where(ex), outcome=type(exc).__name__)
            else:
                _log.error("http_late_answer", **self._where(ex), outcome="error", exc_info=exc_info(failure))
        elif isinstance(exc, RequestRejected):
            self._fail(ex, self._rejected(exc, ex))
        elif isinstance(exc, ServiceUnavailable):
            self._fail(ex, self._unavailable(exc))
        elif isinstance(exc, LimitExceeded):
            self._fail(ex, self._limited(exc))
        elif isinstance(exc, ApiError):  # raised by a step the handler chained after the gateway's answer
            self._fail(ex, exc)
        else:
            self._crash(ex, failure)

    # -- answering --------------------------------------------------------------------------

    def _fail(self, ex: E, error: ApiError) -> None:
        self._respond(ex, error.status, self._error_body(ex, error), error.headers)

    def _crash(self, ex: E, failure: Failure) -> None:
        """A bug or an unexpected gateway error: log it in full, tell the client only an incident id."""
        incident = secrets.token_hex(6)
        _log.error("http_internal_error", **self._where(ex), incident=incident, exc_info=exc_info(failure))
        if not ex.done:
            self._fail(ex, self._internal_error(incident))

    def _respond(self, ex: E, status: int, body: bytes, headers: Mapping[bytes, bytes] | None = None) -> None:
        self._done(ex)
        request = ex.request
        if not request.lost:
            request.setResponseCode(status, REASONS.get(status))
            out = request.responseHeaders
            out.setRawHeaders(b"content-type", self._content_type(ex))
            out.setRawHeaders(b"content-length", [b"%d" % len(body)])
            for name, value in (headers or {}).items():
                out.setRawHeaders(name, [value])
            request.write(body)
            request.finish()
        self._log_request(ex, status)

    def _respond_file(self, ex: E, content_type: bytes, file: IO[bytes], size: int,
                      headers: Mapping[bytes, bytes]) -> None:
        """Answer 200 with the `size` bytes of `file`, streamed from its start; `file` is closed once they are
        sent or the client is gone."""
        self._done(ex)
        request = ex.request
        if request.lost:
            file.close()
            self._log_request(ex, 200)
            return
        request.setResponseCode(200)
        out = request.responseHeaders
        out.setRawHeaders(b"content-type", [content_type])
        out.setRawHeaders(b"content-length", [b"%d" % size])
        for name, value in headers.items():
            out.setRawHeaders(name, [value])
        file.seek(0)

        def sent(result: object) -> None:
            file.close()
            if not request.lost:
                request.finish()
            self._log_request(ex, 200)

        FileSender().beginFileTransfer(file, request).addBoth(sent)

    def _done(self, ex: E) -> None:
        """`ex` is answered: it no longer waits, and whoever waits for no request waiting is told."""
        ex.done = True
        self._waiting.pop(ex, None)
        if not self._waiting and self._idle:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def _log_request(self, ex: E, status: int) -> None:
        fields = self._where(ex)
        if ex.request.lost:
            fields["client_gone"] = True
        _log.info("http_request", **fields, status=status,
                  duration_ms=round((self._clock.seconds() - ex.started) * 1000, 2), **self._log_fields(ex))


def exc_info(failure: Failure) -> tuple[Any, ...]:
    return (failure.type, failure.value, failure.getTracebackObject())


class HttpListener(Service):
    """An adapter's HTTP listener (URL, SOAP): listens while running; `stop_polling` stops listening and
    waits for the answers still owed; `stopService` also drops the resource's timers."""

    def __init__(self, reactor: Any, resource: GatewayResource[Any], site: ApiSite, *, listen: str, port: int,
                 tls: TlsFiles | None) -> None:
        self._reactor = reactor
        self._listen = listen
        self._port_number = port
        self._tls = tls
        self.resource = resource
        self._site = site
        self._port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        self._port = listen_http(self._reactor, self._port_number, self._site, interface=self._listen, tls=self._tls)
        self._listening()

    def _listening(self) -> None:
        """Log that it listens (each interface says what its users need: the address, the WSDL's URL)."""

    def stop_polling(self) -> Deferred[Any]:
        d = self._stop_listening()
        d.addCallback(lambda _: self.resource.drained())
        return d

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        d = self._stop_listening()
        d.addBoth(self._stopped)
        return d

    def _stopped(self, result: Any) -> Any:
        self.resource.stop()
        return result

    def address(self) -> str | None:
        """host:port it listens on, or None when stopped."""
        if self._port is None:
            return None
        host = self._port.getHost()
        return f"{host.host}:{host.port}"  # type: ignore[attr-defined]

    def _stop_listening(self) -> Deferred[Any]:
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)


def _summary(result: Any) -> Any:
    """What a late answer held, for its log line: the ids of a list, else the type's name."""
    if isinstance(result, list):
        return [getattr(item, "id", "?") for item in result]
    return type(result).__name__
