"""The SOAP listener: twisted.web glue around `_codec`, `_operations` and the gateway (docs/soap.md).

One leaf resource answers ``/ws/sms``: ``GET ?wsdl`` gives the WSDL with the
address the client used, ``POST`` a SOAP 1.1 call. A call is parsed in full
(every problem in one Client fault), authenticated, then handed to the gateway;
the answer goes out once the gateway's Deferred fires (for sendSms: once the
message is committed). The body limit, the request timeout, the incident ids of
internal errors and the one `http_request` log line per request are
GatewayResource's, as for the REST API and the URL interface.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import structlog
from lxml import etree
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.web import server

from smsgw._api_codec import ApiError, rebase
from smsgw._api_http import (
    RETRY_AFTER_S,
    ApiRequest,
    ApiSite,
    Exchange,
    GatewayResource,
    HttpListener,
    content_charset,
    peer_address,
    text,
)
from smsgw._listen import TlsFiles
from smsgw.adapters.soap._codec import CONTENT_TYPE, SoapFault, envelope, fault_envelope, read_envelope, rejected
from smsgw.adapters.soap._operations import (
    Call,
    FetchMo,
    QuerySms,
    SendSms,
    fetch_mo_response,
    not_found,
    query_sms_response,
    read_call,
    send_sms_response,
    soap_where,
)
from smsgw.adapters.soap._wsdl import wsdl
from smsgw.auth import AuthError, Authenticator, InterfaceDenied, TooManyFailures
from smsgw.model import Account, GatewayApi, LimitExceeded, RequestRejected

__all__ = ["INTERFACE", "SERVICE_PATH", "SoapInterface", "SoapResource"]

INTERFACE = "soap"
SERVICE_PATH = b"/ws/sms"
_CONTENT_TYPE = [CONTENT_TYPE]
_AUTH_FAILED = ("authentication failed: the account or its password is wrong, or the account may not connect from "
                "this address (the gateway's log says which)")
# A Host header is echoed into the WSDL: only a host name or address and a port may pass.
_HOST = re.compile(rb"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
_log = structlog.get_logger()


class SoapInterface(HttpListener):
    """Listens for SOAP calls while running; `stop_polling` stops listening and waits for answers."""

    name = INTERFACE
    resource: SoapResource

    def __init__(self, gateway: GatewayApi, accounts: Sequence[Account], reactor: Any, *, listen: str = "127.0.0.1",
                 port: int = 8088, max_body_bytes: int = 256 * 1024, request_timeout: float = 30.0,
                 authenticator: Authenticator | None = None, tls: TlsFiles | None = None) -> None:
        resource = SoapResource(gateway, accounts, clock=reactor, request_timeout=request_timeout,
                                authenticator=authenticator)
        super().__init__(reactor, resource, ApiSite(resource, max_body_bytes, reactor, SoapRequest), listen=listen,
                         port=port, tls=tls)

    def _listening(self) -> None:
        scheme = "https" if self._tls is not None else "http"
        _log.info("soap_interface_listening", address=self.address(), wsdl=f"{scheme}://{self.address()}/ws/sms?wsdl")


class SoapRequest(ApiRequest):
    """A request whose 413 answer is a SOAP fault, as every answer but the WSDL."""

    def refusal(self, message: str) -> tuple[bytes, bytes]:
        return CONTENT_TYPE, fault_envelope(SoapFault("too_large", f"request refused: {message}", status=413))


class _Exchange(Exchange):
    """One SOAP request in flight; `operation` names the call (None until the envelope is read)."""

    __slots__ = ("operation", "message_id")

    def __init__(self, request: ApiRequest, started: float) -> None:
        super().__init__(request, started)
        self.operation: str | None = None
        self.message_id: str | None = None  # the message accepted or queried, for the log line


_OnResult = Callable[[_Exchange, Any], etree._Element]


class SoapResource(GatewayResource[_Exchange]):
    """Answers every request the site hands it: the WSDL, a SOAP call, or a fault."""

    def __init__(self, gateway: GatewayApi, accounts: Sequence[Account], *, clock: IReactorTime,
                 request_timeout: float = 30.0, authenticator: Authenticator | None = None) -> None:
        super().__init__(clock, request_timeout, accounts, authenticator)
        self._gateway = gateway

    def render(self, request: ApiRequest) -> int:
        ex = _Exchange(request, self._clock.seconds())
        self._guarded(ex, self._serve, ex)
        return server.NOT_DONE_YET

    # -- the request ------------------------------------------------------------------------

    def _serve(self, ex: _Exchange) -> None:
        request = ex.request
        if request.path != SERVICE_PATH:
            raise SoapFault("not_found", f"there is no service at {text(request.path)!r}: the SMS service is "
                            f"{SERVICE_PATH.decode()} (its WSDL: {SERVICE_PATH.decode()}?wsdl)", status=404)
        if request.method == b"GET" and _asks_for_wsdl(request.uri):
            ex.operation = "wsdl"
            self._respond(ex, 200, wsdl(self._address(request)))
            return
        if request.method != b"POST":
            raise SoapFault("method_not_allowed", f"{text(request.method)} is not a SOAP call: POST a SOAP 1.1 "
                            f"envelope to {SERVICE_PATH.decode()}, or GET {SERVICE_PATH.decode()}?wsdl for the "
                            "WSDL", status=405, headers={b"allow": b"GET, POST"})
        ex.operation, element = read_envelope(request.body.getvalue(), content_charset(request, b'" '))
        call = read_call(ex.operation, element)
        d = self._auth.authenticate(call.credentials.account, call.credentials.password, peer_address(request),
                                    INTERFACE)
        self._after_auth(d, ex, self._dispatch, ex, call)

    def _dispatch(self, ex: _Exchange, call: Call) -> None:
        assert ex.account is not None
        if isinstance(call, SendSms):
            self._call_soap(ex, self._gateway.accept, (ex.account, INTERFACE, [call.request]), _sent)
        elif isinstance(call, QuerySms):
            ex.message_id = call.message_id
            self._call_soap(ex, self._gateway.get_message, (ex.account, call.message_id), _queried)
        elif isinstance(call, FetchMo):
            self._call_soap(ex, self._gateway.list_mo, (ex.account, call.cursor, call.limit), _fetched)

    @staticmethod
    def _address(request: ApiRequest) -> str:
        """This service's URL as the client reached it: its Host header, else the address it connected to."""
        raw = request.getHeader(b"host") or b""
        if not _HOST.fullmatch(raw):
            local = request.getHost()
            raw = f"{local.host}:{local.port}".encode()
        scheme = "https" if request.isSecure() else "http"
        return f"{scheme}://{raw.decode('ascii')}{SERVICE_PATH.decode()}"

    # -- the gateway's answer -----------------------------------------------------------------

    def _call_soap(self, ex: _Exchange, method: Callable[..., defer.Deferred[Any]], args: tuple[Any, ...],
                   on_result: _OnResult) -> None:
        """Call the gateway; answer 200 with the envelope of `on_result`'s element."""
        self._call(ex, method, args, lambda ex_, result: (200, envelope(on_result(ex_, result))))

    # -- GatewayResource's hooks -----------------------------------------------------------------

    def _where(self, ex: _Exchange) -> dict[str, Any]:
        return {"interface": INTERFACE, **super()._where(ex), "operation": ex.operation}

    def _log_fields(self, ex: _Exchange) -> dict[str, Any]:
        return {"message_id": ex.message_id} if ex.message_id is not None else {}

    def _content_type(self, ex: _Exchange) -> list[bytes]:
        return _CONTENT_TYPE

    def _error_body(self, ex: _Exchange, error: ApiError) -> bytes:
        if not isinstance(error, SoapFault):
            error = SoapFault(error.code, error.message, error.details, server=error.status >= 500)
        return fault_envelope(error)

    def _rejected(self, exc: RequestRejected, ex: _Exchange) -> ApiError:
        problems = [{**p, "where": soap_where(p["where"])} for p in rebase(exc.problems, True)]
        return rejected(ex.operation or "the call", problems)

    def _auth_refused(self, exc: AuthError) -> ApiError:
        """A Client fault, the same for an unknown account, a wrong password and a refused address (the
        shared `smsgw.auth.Authenticator` logs which); a Server fault with a retry hint for an address
        that failed too often."""
        if isinstance(exc, TooManyFailures):
            return SoapFault("too_many_failures", str(exc), server=True, retry_after=exc.retry_after)
        if isinstance(exc, InterfaceDenied):
            return SoapFault("interface_not_allowed", str(exc))
        return SoapFault("authentication_failed", _AUTH_FAILED)

    def _unavailable_error(self, message: str) -> ApiError:
        return SoapFault("unavailable", message, server=True, retry_after=RETRY_AFTER_S)

    def _limited(self, exc: LimitExceeded) -> ApiError:
        """The account's rate limit or daily quota: a Server fault (retry later) with retryAfter."""
        error = super()._limited(exc)
        return SoapFault(error.code, error.message, server=True, retry_after=exc.retry_after)

    def _internal_error(self, incident: str) -> ApiError:
        return SoapFault("internal_error", f"an internal error occurred; incident {incident} has the details in "
                         "the gateway's log", server=True, incident=incident)

    def _timeout_message(self, ex: _Exchange) -> str:
        if ex.operation == "sendSms":
            return (f"the gateway did not answer within {self._timeout:g} s; the message may still have been "
                    "accepted: call sendSms again with the same ref to find out without sending twice")
        return f"the gateway did not answer within {self._timeout:g} s: retry in {RETRY_AFTER_S} s"


def _sent(ex: _Exchange, accepted: Any) -> etree._Element:
    ex.message_id = accepted[0].id
    return send_sms_response(accepted[0])


def _queried(ex: _Exchange, view: Any) -> etree._Element:
    if view is None:
        raise not_found(ex.message_id or "")
    return query_sms_response(view)


def _fetched(ex: _Exchange, page: Any) -> etree._Element:
    return fetch_mo_response(page)


def _asks_for_wsdl(uri: bytes) -> bool:
    """?wsdl, ?WSDL, ?wsdl=... (what wsimport, svcutil, zeep and browsers send)."""
    query = uri.partition(b"?")[2]
    return any(part.partition(b"=")[0].lower() == b"wsdl" for part in query.split(b"&"))
