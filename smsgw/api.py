"""The daemon's REST API on twisted.web (docs/rest-api.md; schema at /api/v1/openapi.json).

Thin glue: one leaf resource routes on the raw path, authenticates, parses the
body once into `SendRequest`s (smsgw._api_codec) and talks to the gateway only
through `GatewayApi`. Every answer, errors included, is JSON; every request logs
one `http_request` line. A POST is answered 202 only after `accept` fires,
which means the messages are committed.
"""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass, replace
from typing import IO, Any, Callable, Mapping, Sequence, cast
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.web import server

from smsgw import review_export
from smsgw._api_codec import (
    ApiError,
    accepted_json,
    decode_json,
    encode,
    message_json,
    mo_page_json,
    parse_mo_query,
    parse_send_body,
    parse_template_body,
    rebase,
    rejected,
    status_json,
    template_json,
)
from smsgw._api_http import (
    ApiRequest,
    ApiSite,
    Exchange,
    GatewayResource,
    peer_address,
    retry_after,
    text,
)
from smsgw._openapi import build_openapi
from smsgw._review_codec import (
    STATES as REVIEW_STATES,
    cancel_json,
    named_reviewer,
    nothing_cancelled,
    parse_action_body,
    parse_cancel_body,
    parse_export_query,
    parse_list_query,
    parse_message_id,
    result_json,
    review_item_json,
    review_page_json,
    reviewer_for,
)
from smsgw.auth import AuthError, AuthFailed, Authenticator, InterfaceDenied, TooManyFailures
from smsgw.model import Account, GatewayApi, RequestRejected
from smsgw.store import ReviewItem, ReviewPage, ReviewQuery, ReviewResult
from smsgw.templates import Template

__all__ = ["ROUTES", "Route", "make_api"]

INTERFACE = "rest"  # the name accounts list in `interfaces`, and what the gateway records
_AUTH_CHALLENGE = b'Bearer realm="smsgw"'


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: `template` as in the OpenAPI document, `auth` one of rest / account / none."""

    template: str
    method: str
    operation: str  # the OpenAPI operationId
    handler: str  # the _ApiResource method that serves it
    auth: str


ROUTES = (
    Route("/api/v1/messages", "POST", "sendMessages", "send_messages", "rest"),
    Route("/api/v1/messages/{id}", "GET", "getMessage", "get_message", "rest"),
    Route("/api/v1/mo", "GET", "listMo", "list_mo", "rest"),
    Route("/api/v1/templates", "GET", "listTemplates", "list_templates", "rest"),
    Route("/api/v1/templates/{name}", "GET", "getTemplate", "get_template", "rest"),
    Route("/api/v1/templates/{name}", "PUT", "putTemplate", "put_template", "rest"),
    Route("/api/v1/templates/{name}", "DELETE", "deleteTemplate", "delete_template", "rest"),
    Route("/api/v1/messages/{id}/cancel", "POST", "cancelMessage", "cancel_message", "rest"),
    Route("/api/v1/batches/{batch}/cancel", "POST", "cancelBatch", "cancel_batch", "rest"),
    Route("/api/v1/review", "GET", "listReview", "list_review", "rest"),
    Route("/api/v1/review/export", "GET", "exportReview", "export_review", "rest"),
    Route("/api/v1/review/approve", "POST", "approveReview", "approve_review", "rest"),
    Route("/api/v1/review/reject", "POST", "rejectReview", "reject_review", "rest"),
    Route("/api/v1/review/{id}", "GET", "getReviewMessage", "get_review_message", "rest"),
    Route("/api/v1/status", "GET", "getStatus", "get_status", "account"),
    Route("/api/v1/openapi.json", "GET", "getOpenapi", "get_openapi", "none"),
)


def make_api(gateway: GatewayApi, accounts: Sequence[Account], *, max_body_bytes: int = 4 * 1024 * 1024,
             max_batch: int = 1000, request_timeout: float = 30.0,
             clock: IReactorTime | None = None, authenticator: Authenticator | None = None,
             reviewers: Mapping[str, Sequence[str]] | None = None) -> server.Site:
    """The REST API as a twisted.web Site, ready for `listenTCP` or an endpoint.

    Args:
        gateway: where messages go and views come from.
        accounts: who may call (with `api_key_sha256` as a Bearer key, or `name:secret`).
        max_body_bytes: larger bodies get 413 before they are read.
        max_batch: most messages in one POST.
        request_timeout: seconds to wait for the gateway before answering 503.
        clock: the reactor (tests pass a `Clock`); default the global reactor.
        authenticator: the daemon's shared one; default one of its own for `accounts`.
        reviewers: the configured reviewers (review.reviewers): name -> the accounts that act as
            them (empty: any account with the review permission, naming them).

    Raises:
        ValueError: a limit is not positive, or a key hash is malformed or shared.
    """
    if clock is None:
        from twisted.internet import reactor

        clock = cast(IReactorTime, reactor)
    for name, value in (("max_body_bytes", max_body_bytes), ("max_batch", max_batch),
                        ("request_timeout", request_timeout)):
        if not value > 0:
            raise ValueError(f"make_api: {name} must be positive, got {value!r}")
    openapi = encode(build_openapi(max_batch=max_batch, max_body_bytes=max_body_bytes))
    resource = _ApiResource(gateway, accounts, authenticator, max_batch=max_batch,
                            request_timeout=request_timeout, clock=clock, openapi=openapi,
                            reviewers={name: tuple(names) for name, names in (reviewers or {}).items()})
    return ApiSite(resource, max_body_bytes, clock)


class _Exchange(Exchange):
    """One API request in flight, with what its answers and log line need besides."""

    __slots__ = ("messages", "single", "arg")

    def __init__(self, request: ApiRequest, started: float) -> None:
        super().__init__(request, started)
        self.messages: int | None = None
        self.single = True
        self.arg = ""


_Handler = Callable[[_Exchange, bytes], None]
_OnResult = Callable[[_Exchange, Any], tuple[int, bytes]]


class _ApiResource(GatewayResource[_Exchange]):
    """Routes, authenticates and answers every request under /api/v1/."""

    _NOT_TAKING = "the gateway is not taking requests now"

    def __init__(self, gateway: GatewayApi, accounts: Sequence[Account], authenticator: Authenticator | None, *,
                 max_batch: int, request_timeout: float, clock: IReactorTime, openapi: bytes,
                 reviewers: Mapping[str, tuple[str, ...]]) -> None:
        super().__init__(clock, request_timeout, accounts, authenticator)
        self._gateway = gateway
        self._max_batch = max_batch
        self._openapi = openapi
        self._reviewers = reviewers
        # path -> method -> (route, handler); templates with a {x} segment match on the (prefix, suffix) around it
        self._static: dict[bytes, dict[bytes, tuple[Route, _Handler]]] = {}
        self._prefixed: dict[tuple[bytes, bytes], dict[bytes, tuple[Route, _Handler]]] = {}
        for route in ROUTES:
            head, brace, rest = route.template.partition("{")
            entry = (route, getattr(self, route.handler))
            if brace:
                key = (head.encode(), rest.partition("}")[2].encode())
                self._prefixed.setdefault(key, {})[route.method.encode()] = entry
            else:
                self._static.setdefault(head.encode(), {})[route.method.encode()] = entry

    def render(self, request: ApiRequest) -> int:
        ex = _Exchange(request, self._clock.seconds())
        self._guarded(ex, self._serve, ex)
        return server.NOT_DONE_YET

    def _serve(self, ex: _Exchange) -> None:
        route, handler, arg = self._match(ex.request.method, ex.request.path)
        if route.auth == "none":
            handler(ex, arg)
        else:
            d = self._authenticate(ex.request, INTERFACE if route.auth == "rest" else None)
            self._after_auth(d, ex, handler, ex, arg)

    # -- routing and checks -----------------------------------------------------------------

    def _match(self, method: bytes, path: bytes) -> tuple[Route, _Handler, bytes]:
        arg = b""
        methods = self._static.get(path)
        if methods is None:
            for (prefix, suffix), table in self._prefixed.items():
                end = len(path) - len(suffix)
                if end > len(prefix) and path.startswith(prefix) and path.endswith(suffix) \
                        and b"/" not in path[len(prefix):end]:
                    methods, arg = table, path[len(prefix):end]
                    break
            else:
                raise ApiError(404, "not_found", f"no such path {text(path)!r}: the API's paths are listed in "
                               "/api/v1/openapi.json")
        entry = methods.get(method)
        if entry is None:
            allowed = b", ".join(sorted(methods))
            raise ApiError(405, "method_not_allowed", f"{text(method)} is not allowed on {text(path)!r}: use "
                           f"{allowed.decode()}", headers={b"allow": allowed})
        return entry[0], entry[1], arg

    def _authenticate(self, request: ApiRequest, interface: str | None) -> Deferred[Account]:
        """The caller's account from ``Authorization: Bearer KEY`` (KEY an API key or ``name:secret``),
        ``Authorization: Basic`` (name and secret) or ``X-API-Key: KEY``."""
        headers = request.requestHeaders
        peer = peer_address(request)
        authorization = headers.getRawHeaders(b"authorization")
        if authorization is not None:
            scheme, _, value = authorization[0].partition(b" ")
            value = value.strip()
            if scheme.lower() == b"basic" and value:
                name, secret = _basic(value)
                return self._auth.authenticate(name, secret, peer, interface)
            if scheme.lower() != b"bearer" or not value:
                raise _unauthorized("the Authorization header must be \"Bearer <API key>\" (or \"Bearer "
                                    "<name>:<secret>\"), or \"Basic\" with name and secret")
            return self._auth.authenticate_key(value, peer, interface)
        api_key = headers.getRawHeaders(b"x-api-key")
        if api_key is None or not api_key[0].strip():
            raise _unauthorized("no API key: send \"Authorization: Bearer <key>\" or \"X-API-Key: <key>\"")
        return self._auth.authenticate_key(api_key[0].strip(), peer, interface)

    @staticmethod
    def _check_json_type(request: ApiRequest) -> None:
        ctype = request.requestHeaders.getRawHeaders(b"content-type")
        if ctype is not None and (ctype[0] == b"application/json" or _is_json_type(ctype[0])):
            return
        got = f"not {text(ctype[0])!r}" if ctype else "no Content-Type was sent"
        raise ApiError(415, "unsupported_media_type",
                       f"the body must be Content-Type: application/json (charset=utf-8 optional); {got}")

    # -- handlers (named in ROUTES) ---------------------------------------------------------

    def send_messages(self, ex: _Exchange, _: bytes) -> None:
        self._check_json_type(ex.request)
        body = decode_json(ex.request.body.getvalue())
        ex.messages = len(body) if type(body) is list else 1
        requests, ex.single = parse_send_body(body, self._max_batch)
        self._call(ex, self._gateway.accept, (ex.account, _origin(ex.request), requests), _accepted)

    def get_message(self, ex: _Exchange, raw_id: bytes) -> None:
        ex.arg = _path_text(raw_id, "message")
        self._call(ex, self._gateway.get_message, (ex.account, ex.arg), _message_found)

    def list_mo(self, ex: _Exchange, _: bytes) -> None:
        cursor, limit = parse_mo_query(ex.request.args)
        self._call(ex, self._gateway.list_mo, (ex.account, cursor, limit), _mo_page)

    def list_templates(self, ex: _Exchange, _: bytes) -> None:
        self._call(ex, self._gateway.list_templates, (), _templates)

    def get_template(self, ex: _Exchange, raw_name: bytes) -> None:
        ex.arg = _path_text(raw_name, "template")
        self._call(ex, self._gateway.list_templates, (), _template_found)

    def put_template(self, ex: _Exchange, raw_name: bytes) -> None:
        ex.arg = _path_text(raw_name, "template")
        self._may(ex, "templates", "change templates")
        self._check_json_type(ex.request)
        text_, pre_approved = parse_template_body(decode_json(ex.request.body.getvalue()))
        self._call(ex, self._gateway.put_template, (ex.account, ex.arg, text_, pre_approved), _template_put)

    def delete_template(self, ex: _Exchange, raw_name: bytes) -> None:
        ex.arg = _path_text(raw_name, "template")
        self._may(ex, "templates", "change templates")
        self._call(ex, self._gateway.delete_template, (ex.account, ex.arg), _template_deleted)

    @staticmethod
    def _may(ex: _Exchange, permission: str, what: str) -> None:
        """403 unless the account has `permission` (AccountConfig.permissions) for `what` it asks."""
        assert ex.account is not None
        if permission not in ex.account.permissions:
            raise ApiError(403, "forbidden", f"account {ex.account.name!r} may not {what}: the operator "
                           f"can add \"{permission}\" to its permissions")

    # -- cancelling (the sender's own messages) ------------------------------------------------------

    def cancel_message(self, ex: _Exchange, raw_id: bytes) -> None:
        ex.arg = _path_text(raw_id, "message")
        message_id = parse_message_id(ex.arg)
        if message_id is None:
            raise ApiError(404, "not_found", f"no message {ex.arg[:40]!r} for this account")
        comment = parse_cancel_body(_optional_json(ex.request))
        self._call(ex, self._cancel, (ex.account, ReviewQuery(message_ids=(message_id,)), comment), _cancelled)

    def cancel_batch(self, ex: _Exchange, raw_batch: bytes) -> None:
        ex.arg = _path_text(raw_batch, "batch")
        comment = parse_cancel_body(_optional_json(ex.request))
        self._call(ex, self._cancel, (ex.account, ReviewQuery(batch=ex.arg), comment), _cancelled)

    def _cancel(self, account: Account, query: ReviewQuery, comment: str) -> Deferred[Any]:
        """Cancel; when nothing was left to cancel, look whether the account has such messages at all
        (404) or they have all gone out (409)."""
        d = self._gateway.cancel(account, query, comment)

        def cancelled(result: ReviewResult) -> Any:
            if result.messages:
                return result
            seen = self._gateway.review_list(replace(query, account=account.name, review=REVIEW_STATES), 0, 1)
            return seen.addCallback(lambda page: _raise(nothing_cancelled(page.total, account, query)))
        return d.addCallback(cancelled)

    # -- the review queue (docs/review.md) -----------------------------------------------------------

    def list_review(self, ex: _Exchange, _: bytes) -> None:
        self._may(ex, "review", "use the review queue")
        query, offset, limit = parse_list_query(ex.request.args)
        self._call(ex, self._gateway.review_list, (query, offset, limit), _review_page)

    def get_review_message(self, ex: _Exchange, raw_id: bytes) -> None:
        self._may(ex, "review", "use the review queue")
        ex.arg = _path_text(raw_id, "message")
        message_id = parse_message_id(ex.arg)
        if message_id is None:
            raise ApiError(404, "not_found", f"no message {ex.arg[:40]!r}")
        query = ReviewQuery(message_ids=(message_id,), review=REVIEW_STATES)
        self._call(ex, self._gateway.review_rows, (query, 1), _review_message)

    def approve_review(self, ex: _Exchange, _: bytes) -> None:
        self._review_action(ex, "approve")

    def reject_review(self, ex: _Exchange, _: bytes) -> None:
        self._review_action(ex, "reject")

    def _review_action(self, ex: _Exchange, action: str) -> None:
        assert ex.account is not None
        self._may(ex, "review", "use the review queue")
        raw = ex.request.body.getvalue()
        if not raw.strip():
            raise ApiError(400, "bad_request", f"the body is empty: send which messages to {action}, e.g. "
                           '{"ids": ["7165432109876543210"], "comment": "ok"}')
        self._check_json_type(ex.request)
        asked = parse_action_body(decode_json(raw), action)
        named = named_reviewer(ex.request.requestHeaders.getRawHeaders(b"x-smsgw-reviewer"), asked.reviewer)
        reviewer = reviewer_for(ex.account, named, self._reviewers)
        self._call(ex, self._gateway.review_act, (reviewer, action, asked.query, asked.comment),
                   functools.partial(_acted, reviewer=reviewer, ids=asked.ids))

    def export_review(self, ex: _Exchange, _: bytes) -> None:
        """The whole result as a file. Not bound by request_timeout: a large export takes its time."""
        self._may(ex, "review", "use the review queue")
        query, fmt = parse_export_query(ex.request.args)
        d = maybeDeferred(self._gateway.review_list, query, 0, 1)
        d.addCallback(self._export_rows, query)
        d.addCallback(lambda items: self._in_thread(review_export.write_temporary, items, fmt))
        d.addCallbacks(self._send_export, self._gateway_failed, callbackArgs=(ex, fmt), errbackArgs=(ex,))

    def _export_rows(self, page: ReviewPage, query: ReviewQuery) -> Deferred[list[ReviewItem]]:
        if page.total > review_export.EXPORT_MAX_ROWS:
            raise ApiError(400, "export_too_large", f"the query selects {page.total} messages, more than the "
                           f"{review_export.EXPORT_MAX_ROWS} one export holds: narrow it (since and until, "
                           "state, batch) and export it in parts")
        return self._gateway.review_rows(query, review_export.EXPORT_MAX_ROWS)

    def _send_export(self, written: tuple[IO[bytes], int, int], ex: _Exchange, fmt: str) -> None:
        file, size, ex.messages = written
        name = review_export.filename(fmt, self._clock.seconds())
        headers = {b"content-disposition": f'attachment; filename="{name}"'.encode(),
                   b"x-smsgw-rows": b"%d" % ex.messages}
        self._guarded(ex, self._respond_file, ex, review_export.CONTENT_TYPES[fmt].encode(), file, size, headers)

    def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """`fn(*args)` on the reactor's thread pool (CPU-heavy work); at once under a test clock."""
        if IReactorThreads.providedBy(self._clock) and IReactorFromThreads.providedBy(self._clock):
            reactor = cast(Any, self._clock)
            return deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)
        return maybeDeferred(fn, *args)

    def get_status(self, ex: _Exchange, _: bytes) -> None:
        self._call(ex, self._gateway.status, (), _status)

    def get_openapi(self, ex: _Exchange, _: bytes) -> None:
        self._respond(ex, 200, self._openapi)

    # -- GatewayResource's hooks -------------------------------------------------------------

    def _log_fields(self, ex: _Exchange) -> dict[str, Any]:
        return {"messages": ex.messages}

    def _rejected(self, exc: RequestRejected, ex: _Exchange) -> ApiError:
        return rejected(rebase(exc.problems, ex.single))

    def _auth_refused(self, exc: AuthError) -> ApiError:
        """Wrong credentials look alike, whatever the reason (the log has it)."""
        if isinstance(exc, TooManyFailures):
            return ApiError(429, "too_many_requests", str(exc),
                            headers={b"retry-after": retry_after(exc.retry_after)})
        if isinstance(exc, InterfaceDenied):
            return ApiError(403, "forbidden", str(exc))
        assert isinstance(exc, AuthFailed)
        return _unauthorized("the API key is not known, or the name and secret are wrong, or the account may not "
                             "connect from this address: check them, or ask the operator (the gateway's log says "
                             "which)", b', error="invalid_token"')

    def _internal_error(self, incident: str) -> ApiError:
        return ApiError(500, "internal_error", f"an internal error occurred; incident {incident} has the details "
                        "in the gateway's log")

    def _timeout_message(self, ex: _Exchange) -> str:
        if ex.messages is None:
            return f"the gateway did not answer within {self._timeout:g} s: retry later"
        return (f"the gateway did not answer within {self._timeout:g} s; the messages may still have been "
                "committed: resend them with the same ref to find out without sending twice")


def _origin(request: ApiRequest) -> str:
    """The interface messages are recorded with: rest, or file for `smsgw import` (X-Smsgw-Origin: file).

    The gateway checks that the account may use it, so a label can only make a request subject to
    the file interface's rules (e.g. review), never lift them.
    """
    origin = request.requestHeaders.getRawHeaders(b"x-smsgw-origin")
    if origin is None:
        return INTERFACE
    if origin != [b"file"]:
        raise ApiError(400, "bad_request", "X-Smsgw-Origin may only be \"file\" (messages from a file import); "
                       "leave it out for REST")
    return "file"


def _raise(error: Exception) -> None:
    raise error


def _optional_json(request: ApiRequest) -> Any:
    """The JSON body of a request whose body may be left out (None then)."""
    raw = request.body.getvalue()
    if not raw.strip():
        return None
    _ApiResource._check_json_type(request)
    return decode_json(raw)


def _path_text(raw: bytes, what: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(404, "not_found", f"no such {what}: the name in the path is not UTF-8") from None


def _templates(ex: _Exchange, found: list[Template]) -> tuple[int, bytes]:
    return 200, encode({"templates": [template_json(t) for t in found]})


def _template_found(ex: _Exchange, found: list[Template]) -> tuple[int, bytes]:
    for template in found:
        if template.name == ex.arg:
            return 200, encode(template_json(template))
    raise ApiError(404, "not_found", f"no template named {ex.arg[:64]!r}: GET /api/v1/templates lists them")


def _template_put(ex: _Exchange, result: tuple[Template, str]) -> tuple[int, bytes]:
    template, outcome = result
    return (201 if outcome == "added" else 200), encode(template_json(template))


def _template_deleted(ex: _Exchange, deleted: bool) -> tuple[int, bytes]:
    if not deleted:
        raise ApiError(404, "not_found", f"no template named {ex.arg[:64]!r}: nothing was deleted")
    return 200, encode({"deleted": ex.arg})


def _unauthorized(message: str, extra: bytes = b"") -> ApiError:
    return ApiError(401, "unauthorized", message, headers={b"www-authenticate": _AUTH_CHALLENGE + extra})


def _basic(value: bytes) -> tuple[str, bytes]:
    """(name, secret) of a Basic credential (base64 of ``name:secret``)."""
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    name, colon, secret = decoded.partition(b":")
    if not colon or not name:
        raise _unauthorized("the Basic credentials must be the base64 of \"<name>:<secret>\" (curl -u name:secret "
                            "makes them); or send \"Bearer <API key>\"")
    return name.decode("utf-8", "replace"), secret


def _is_json_type(value: bytes) -> bool:
    """application/json, any case, with nothing but an optional charset=utf-8 parameter."""
    media, *params = value.lower().split(b";")
    if media.strip() != b"application/json":
        return False
    return all(p.replace(b" ", b"") in (b"charset=utf-8", b'charset="utf-8"') for p in params)


def _accepted(ex: _Exchange, accepted: Any) -> tuple[int, bytes]:
    return 202, encode(accepted_json(accepted))


def _message_found(ex: _Exchange, view: Any) -> tuple[int, bytes]:
    if view is None:
        raise ApiError(404, "not_found", f"no message {ex.arg!r} for this account")
    return 200, encode(message_json(view))


def _mo_page(ex: _Exchange, page: Any) -> tuple[int, bytes]:
    return 200, encode(mo_page_json(page))


def _review_page(ex: _Exchange, page: ReviewPage) -> tuple[int, bytes]:
    ex.messages = len(page.items)
    return 200, encode(review_page_json(page))


def _review_message(ex: _Exchange, items: list[ReviewItem]) -> tuple[int, bytes]:
    if not items:
        raise ApiError(404, "not_found", f"no message {ex.arg[:40]!r}")
    return 200, encode(review_item_json(items[0]))


def _acted(ex: _Exchange, result: ReviewResult, *, reviewer: str, ids: Sequence[int]) -> tuple[int, bytes]:
    ex.messages = len(result.messages)
    return 200, encode(result_json(result, reviewer, ids))


def _cancelled(ex: _Exchange, result: ReviewResult) -> tuple[int, bytes]:
    ex.messages = len(result.messages)
    return 200, encode(cancel_json(result))


def _status(ex: _Exchange, status: Any) -> tuple[int, bytes]:
    return 200, encode(status_json(status))
