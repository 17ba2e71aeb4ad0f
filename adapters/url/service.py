"""The sendsms listener: twisted.web glue around `_sendsms` and the gateway (docs/url-interface.md).

One leaf resource answers `GET`/`POST /cgi-bin/sendsms`: it parses the parameters
(smsgw.adapters.url._sendsms), checks the account's name and password with the daemon's
`smsgw.auth.Authenticator` (as every interface does), and
answers 202 ``0: Accepted for delivery`` only once `Gateway.accept` fired, that is
once the message is committed. Every request logs one `http_request` line (never
the query string: it holds the password).
"""

from __future__ import annotations

from typing import Any, Sequence

import structlog
from twisted.internet.interfaces import IReactorTime
from twisted.web import server

from smsgw._listen import TlsFiles
from smsgw._api_codec import ApiError, accepted_json, encode, rebase, rejected
from smsgw._api_http import (
    JSON_TYPE,
    ApiRequest,
    ApiSite,
    Exchange,
    GatewayResource,
    HttpListener,
    content_charset,
    peer_address,
    retry_after,
    text,
)
from smsgw.adapters.url._sendsms import Params, SendsmsError, one, parse_form, send_request, utf8, wants_json
from smsgw.auth import AuthError, Authenticator, InterfaceDenied, TooManyFailures
from smsgw.model import Account, GatewayApi, LimitExceeded, RequestRejected

__all__ = ["ACCEPTED", "INTERFACE", "SENDSMS_PATH", "SendsmsResource", "UrlInterface"]

INTERFACE = "url"
SENDSMS_PATH = b"/cgi-bin/sendsms"
ACCEPTED = b"0: Accepted for delivery"
_AUTH_FAILED = "Authorization failed for sendsms"
_FORM = b"application/x-www-form-urlencoded"
_TEXT = [b"text/plain; charset=utf-8"]
_TEXT_PROBLEMS = 20  # a text answer names the first few; format=json lists up to the REST API's cap
_log = structlog.get_logger()


class UrlInterface(HttpListener):
    """Listens for sendsms requests while running; `stop_polling` stops listening and waits for answers."""

    name = INTERFACE
    resource: SendsmsResource

    def __init__(self, gateway: GatewayApi, accounts: Sequence[Account], reactor: Any, *, listen: str = "127.0.0.1",
                 port: int = 13013, max_body_bytes: int = 64 * 1024, request_timeout: float = 30.0,
                 service_codes: Sequence[str] = (), authenticator: Authenticator | None = None,
                 tls: TlsFiles | None = None) -> None:
        resource = SendsmsResource(gateway, accounts, clock=reactor, request_timeout=request_timeout,
                                   service_codes=service_codes, authenticator=authenticator)
        super().__init__(reactor, resource, ApiSite(resource, max_body_bytes, reactor, UrlRequest), listen=listen,
                         port=port, tls=tls)

    def _listening(self) -> None:
        _log.info("url_interface_listening", address=self.address(), tls=self._tls is not None)


class UrlRequest(ApiRequest):
    """A request whose 413 answer is plain text, as every sendsms answer."""

    def refusal(self, message: str) -> tuple[bytes, bytes]:
        site: ApiSite = self.channel.site  # type: ignore[attr-defined]
        return _TEXT[0], b"Request body too large, rejected: at most %d bytes" % site.max_body_bytes


class _Exchange(Exchange):
    """One sendsms request in flight; `json`: answer in JSON (format=json)."""

    __slots__ = ("json",)

    def __init__(self, request: ApiRequest, started: float) -> None:
        super().__init__(request, started)
        self.json = False


class SendsmsResource(GatewayResource[_Exchange]):
    """Answers every request the site hands it: sendsms, or Kannel's "Unknown request"."""

    def __init__(self, gateway: GatewayApi, accounts: Sequence[Account], *, clock: IReactorTime,
                 request_timeout: float = 30.0, service_codes: Sequence[str] = (),
                 authenticator: Authenticator | None = None) -> None:
        super().__init__(clock, request_timeout, accounts, authenticator)
        self._gateway = gateway
        self._service_codes = tuple(service_codes)

    def render(self, request: ApiRequest) -> int:
        ex = _Exchange(request, self._clock.seconds())
        self._guarded(ex, self._sendsms, ex)
        return server.NOT_DONE_YET

    # -- the request ------------------------------------------------------------------------

    def _sendsms(self, ex: _Exchange) -> None:
        request = ex.request
        query = request.uri.partition(b"?")[2]
        body = request.body.getvalue() if request.method == b"POST" else b""
        ex.json = wants_json(query, body)
        if request.path != SENDSMS_PATH:
            raise SendsmsError(404, "not_found", f"Unknown request: the sendsms interface is "
                               f"{SENDSMS_PATH.decode()}")
        if request.method not in (b"GET", b"POST"):
            raise SendsmsError(405, "method_not_allowed", f"Method {text(request.method)} not allowed: use GET "
                               "or POST", headers={b"allow": b"GET, POST"})
        params = parse_form(query, "query string")
        body_charset = None
        if body:
            body_charset = self._form_charset(request)
            parse_form(body, "body", params)
        ex.json = _format(params)
        name = utf8(params, "username", "user")
        password = one(params, "password", "pass")
        d = self._auth.authenticate(name or "", password or b"", peer_address(request), INTERFACE)
        self._after_auth(d, ex, self._send, ex, params, body_charset)

    def _send(self, ex: _Exchange, params: Params, body_charset: str | None) -> None:
        assert ex.account is not None
        send = send_request(params, ex.account, self._clock.seconds(), self._service_codes, body_charset)
        self._call(ex, self._gateway.accept, (ex.account, INTERFACE, [send]), self._accepted)

    @staticmethod
    def _form_charset(request: ApiRequest) -> str | None:
        """The charset parameter of a form body's Content-Type (None without one)."""
        ctype = request.requestHeaders.getRawHeaders(b"content-type")
        media = (ctype[0] if ctype else b"").split(b";", 1)[0]
        if media.strip().lower() != _FORM:
            got = f"got {text(ctype[0])!r}" if ctype else "no Content-Type was sent"
            raise SendsmsError(400, "unsupported_media_type", f"Invalid content-type: POST the parameters as "
                               f"{_FORM.decode()} ({got})")
        return content_charset(request, b'"')

    # -- the gateway's answer -----------------------------------------------------------------

    @staticmethod
    def _accepted(ex: _Exchange, accepted: Any) -> tuple[int, bytes]:
        return 202, encode(accepted_json(accepted)) if ex.json else ACCEPTED

    # -- GatewayResource's hooks -----------------------------------------------------------------

    def _where(self, ex: _Exchange) -> dict[str, Any]:
        return {"interface": INTERFACE, **super()._where(ex)}

    def _content_type(self, ex: _Exchange) -> list[bytes]:
        return JSON_TYPE if ex.json else _TEXT

    def _error_body(self, ex: _Exchange, error: ApiError) -> bytes:
        return super()._error_body(ex, error) if ex.json else error.message.encode("utf-8")

    def _rejected(self, exc: RequestRejected, ex: _Exchange) -> ApiError:
        problems = rebase(exc.problems, True)
        if ex.json:
            return rejected(problems)  # the REST API's 422, details capped as there
        listed = "; ".join(f"{p['where']}: {p['message']}" if p["where"] else p["message"]
                           for p in problems[:_TEXT_PROBLEMS])
        more = f"; and {len(problems) - _TEXT_PROBLEMS} more problems" if len(problems) > _TEXT_PROBLEMS else ""
        return SendsmsError(400, "validation_failed", f"Invalid message, rejected: {listed}{more}")

    def _auth_refused(self, exc: AuthError) -> ApiError:
        """Kannel's 403 for any wrong credential (the log says which); 429 for an address that failed too often."""
        if isinstance(exc, TooManyFailures):
            return SendsmsError(429, "too_many_requests", f"{_AUTH_FAILED}: {exc}",
                                headers={b"retry-after": retry_after(exc.retry_after)})
        if isinstance(exc, InterfaceDenied):
            return SendsmsError(403, "forbidden", f"{_AUTH_FAILED}: {exc}")
        return SendsmsError(403, "forbidden", _AUTH_FAILED)

    def _unavailable_error(self, message: str) -> ApiError:
        error = super()._unavailable_error(message)
        return SendsmsError(503, error.code, f"Sending failed. {message}", headers=error.headers)

    def _limited(self, exc: LimitExceeded) -> ApiError:
        error = super()._limited(exc)
        return SendsmsError(429, error.code, f"Sending failed. {exc}", headers=error.headers)

    def _internal_error(self, incident: str) -> ApiError:
        return SendsmsError(500, "internal_error", f"Sending failed. An internal error occurred; incident "
                            f"{incident} has the details in the gateway's log")

    def _timeout_message(self, ex: _Exchange) -> str:
        return (f"the gateway did not answer within {self._timeout:g} s; the message may still have been "
                "accepted: resend it with the same ref to find out without sending twice")


def _format(params: Params) -> bool:
    value = utf8(params, "format")
    if value is None or value == "text":
        return False
    if value == "json":
        return True
    raise SendsmsError(400, "bad_request", f"Format field misformed, rejected: {value[:20]!r} is not json or text")
