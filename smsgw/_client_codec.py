"""Requests and answers of smsgw's REST API for the clients in smsgw.client (no I/O here).

`Client` and `TwistedClient` differ only in how bytes travel: each builds a
`Call` here (method, path, body, the status that means success and how to read
its JSON) and hands the server's answer to `outcome`, which returns the result
or raises the exception it means. So both clients build the same requests and
raise the same errors. The public names are re-exported by smsgw.client.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from smsgw import __version__
from smsgw.model import GatewayStatus, MessageView, MoPage, MoView, Problem, RecipientView, SegmentView
from smsgw.templates import Template

_T = TypeVar("_T")
_RETRYABLE_STATUS = frozenset({502, 503, 504})


# -- what goes in and comes out -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Message:
    """One message for `send_many`: one text for one or several recipients.

    `priority` is 0–9 or "urgent", "normal", "bulk"; `send_at` an aware
    `datetime` or epoch seconds (None: now); `ext` digits appended to the
    service number; `ref` your own reference, which makes a resend after a
    timeout safe (docs/rest-api.md#retrying-safely). None leaves a field to
    the server's default.
    """

    to: str | Sequence[str]
    text: str
    priority: int | str | None = None
    send_at: datetime.datetime | float | None = None
    ext: str | None = None
    ref: str | None = None
    report: bool = True
    template: str | None = None  # a named template instead of text (text stays "")
    params: Mapping[str, str | int | float] | None = None  # the template's parameters
    batch: str | None = None  # your name for the batch it belongs to (reviewed and cancelled as a unit)
    batch_size: int | None = None  # recipients in the whole batch (review rules for mass sends count them)

    def __post_init__(self) -> None:
        if not isinstance(self.to, str):
            object.__setattr__(self, "to", tuple(self.to))  # frozen means immutable: no list inside
        if self.params is not None:
            object.__setattr__(self, "params", dict(self.params))


@dataclass(frozen=True, slots=True)
class Accepted:
    """A message the gateway committed: its id, your ref, distinct recipients, segments per recipient."""

    id: str
    ref: str | None
    recipients: int
    segments: int
    dropped_duplicates: tuple[str, ...] = ()  # numbers given twice; each recipient gets the message once
    repeated: bool = False  # the gateway held this ref already: the stored message, not sent again
    held: bool = False  # a review rule holds it until a reviewer approves it
    batch: str | None = None  # the batch it belongs to (as stored: "<account>:<your batch>", or an id)


# -- errors ------------------------------------------------------------------------------------

class ClientError(Exception):
    """Abstract: a call did not get the answer it wanted. Use a subclass."""

    retryable = False  # whether the same call may succeed later (POSTs: only safely with a ref)


class ConnectionFailed(ClientError):
    """No answer from the server: refused, unreachable, reset, or no answer within the timeout.

    After a POST the messages may still have been committed: resend with the same refs.
    """

    retryable = True

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


class BadResponse(ClientError):
    """The server answered, but not as smsgw's API does (a proxy's page, a different service)."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        super().__init__(f"{url} answered {status} with {reason}: is this smsgw's API?")
        self.url = url
        self.status = status
        self.reason = reason


class ApiError(ClientError):
    """The API refused the call: `status`, the error `code` and `message`, and every problem.

    `problems` lists what was wrong with a refused request (400/422), each with
    `where` (a path into what was sent: "to[0]", "[1].text"), `code` and
    `message`. `body` is the decoded error document as the server sent it.
    """

    def __init__(self, url: str, status: int, code: str, message: str, problems: Sequence[Problem] = (), *,
                 body: Any = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.code = code
        self.message = message
        self.problems = tuple(problems)
        self.body = body
        self.retry_after = retry_after  # seconds, from Retry-After

    def __str__(self) -> str:
        head = f"{self.status} {self.code}: {self.message}" if self.code else f"{self.status}: {self.message}"
        lines = [head] + [f"  {p.where or '(body)'}: {p.code}: {p.message}" for p in self.problems]
        return "\n".join(lines)


class AuthFailed(ApiError):
    """401: no key or an unknown one; 403: the account may not use the REST interface."""


class Unavailable(ApiError):
    """503 (or a proxy's 502/504): the gateway cannot take the call now; retry after `retry_after`.

    A 503 after a timeout may follow a commit: resend POSTs with the same refs.
    """

    retryable = True


# -- requests and answers, shared by both clients -----------------------------------------------

@dataclass(frozen=True, slots=True)
class Target:
    """Where the API is: scheme, host, port and a path prefix (for a server behind a proxy)."""

    scheme: str
    host: str
    port: int
    netloc: str
    prefix: str

    @classmethod
    def parse(cls, base_url: str) -> Target:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must look like http://127.0.0.1:8080, not {base_url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("base_url must not hold credentials: give the key as api_key")
        if parts.query or parts.fragment:
            raise ValueError(f"base_url must not have a query or fragment: {base_url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"base_url has a bad port: {base_url!r}") from None
        return cls(parts.scheme, parts.hostname, port, parts.netloc, parts.path.rstrip("/"))

    @property
    def base_url(self) -> str:
        """The base URL as given, without a trailing slash (what the clients show)."""
        return f"{self.scheme}://{self.netloc}{self.prefix}"

    def path(self, call_path: str) -> str:
        return f"{self.prefix}/api/v1{call_path}"

    def url(self, call_path: str) -> str:
        return f"{self.scheme}://{self.netloc}{self.path(call_path)}"


@dataclass(frozen=True, slots=True)
class Call(Generic[_T]):
    """One API call: what to send, which status means success, and how to read its JSON."""

    method: str
    path: str  # under /api/v1, query string included
    body: bytes | None
    expect: int
    decode: Callable[[Any], _T]
    headers: tuple[tuple[str, str], ...] = ()  # besides the client's own


def _check_key(api_key: str) -> str:
    if not isinstance(api_key, str) or not api_key or not (api_key.isascii() and api_key.isprintable()) \
            or api_key != api_key.strip():
        # Never echo the key: it may be a real one with a stray character.
        raise ValueError("api_key must be a non-empty string of printable ASCII without surrounding spaces")
    return api_key


def request_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {_check_key(api_key)}", "Accept": "application/json",
            "User-Agent": f"smsgw-client/{__version__}"}


def _encode(body: Any) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: let the server name the field (unencodable_text)
        return json.dumps(body, separators=(",", ":")).encode("ascii")


def _when(value: datetime.datetime | float) -> str | float:
    if isinstance(value, datetime.datetime):
        if value.utcoffset() is None:
            raise ValueError(f"send_at {value.isoformat()} has no time zone, so the server cannot tell which "
                             "clock it means: give tzinfo (e.g. ZoneInfo('Asia/Shanghai')) or epoch seconds")
        return value.isoformat()
    return value


def _message_json(m: Message) -> dict[str, Any]:
    body: dict[str, Any] = {"to": m.to if isinstance(m.to, str) else list(m.to)}
    if m.template is None or m.text:
        body["text"] = m.text
    if m.template is not None:
        body["template"] = m.template
    if m.params is not None:
        body["params"] = dict(m.params)
    if m.priority is not None:
        body["priority"] = m.priority
    if m.send_at is not None:
        body["send_at"] = _when(m.send_at)
    if m.ext is not None:
        body["ext"] = m.ext
    if m.ref is not None:
        body["ref"] = m.ref
    if not m.report:
        body["report"] = False
    if m.batch is not None:
        body["batch"] = m.batch
    if m.batch_size is not None:
        body["batch_size"] = m.batch_size
    return body


def send_call(message: Message) -> Call[Accepted]:
    """POST one message as a single object (problems then read "to[0]", not "[0].to[0]")."""
    return Call("POST", "/messages", _encode(_message_json(message)), 202, lambda a: _accepted(a)[0])


ORIGINS = ("file",)


def send_many_call(messages: Sequence[Message], origin: str | None = None) -> Call[list[Accepted]]:
    """`origin` "file": the messages come from a file import and are recorded with interface file."""
    if origin is not None and origin not in ORIGINS:
        raise ValueError(f"origin must be one of {', '.join(ORIGINS)} or None, not {origin!r}")
    headers = (("X-Smsgw-Origin", origin),) if origin else ()
    return Call("POST", "/messages", _encode([_message_json(m) for m in messages]), 202, _accepted, headers)


def message_call(message_id: str) -> Call[MessageView]:
    return Call("GET", f"/messages/{quote(str(message_id), safe='')}", None, 200, _view)


def mo_call(cursor: str | None, limit: int) -> Call[MoPage]:
    query = {"limit": str(limit)} if cursor is None else {"cursor": cursor, "limit": str(limit)}
    return Call("GET", f"/mo?{urlencode(query)}", None, 200, _mo_page)


def templates_call() -> Call[list[Template]]:
    return Call("GET", "/templates", None, 200, lambda a: [_template(t) for t in a["templates"]])


def template_call(name: str) -> Call[Template]:
    return Call("GET", f"/templates/{quote(name, safe='')}", None, 200, _template)


def put_template_call(name: str, text: str, pre_approved: bool) -> Call[Template]:
    body = _encode({"text": text, "pre_approved": bool(pre_approved)})
    return Call("PUT", f"/templates/{quote(name, safe='')}", body, 0, _template)  # 200 changed, 201 added


def delete_template_call(name: str) -> Call[None]:
    return Call("DELETE", f"/templates/{quote(name, safe='')}", None, 200, lambda a: None)


def _template(t: Any) -> Template:
    return Template(t["name"], t["text"], bool(t["pre_approved"]), tuple(t["params"]),
                    _required_time(t["updated_at"]), t["updated_by"])


def status_call() -> Call[GatewayStatus]:
    return Call("GET", "/status", None, 200, _status)


def outcome(call: Call[_T], url: str, status: int, retry_after: str | None, raw: bytes) -> _T:
    """The result of `call` from the server's answer, or the exception it means.

    Raises:
        ApiError: (or AuthFailed, Unavailable) the API answered with an error.
        BadResponse: the answer is not what the API sends.
    """
    if status == call.expect or (call.expect == 0 and status in (200, 201)):
        try:
            return call.decode(json.loads(raw))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BadResponse(url, status, f"a body the client cannot read ({type(exc).__name__}: {exc})") from exc
    raise _api_error(url, status, retry_after, raw)


def _api_error(url: str, status: int, retry_after: str | None, raw: bytes) -> ApiError:
    """The exception for an error answer: the API's JSON error, or whatever text a proxy sent."""
    body: Any = None
    try:
        body = json.loads(raw)
        error = body["error"]
        code, message = str(error["code"]), str(error["message"])
        problems = [Problem(str(d["where"]), str(d["code"]), str(d["message"])) for d in error.get("details", ())]
    except (ValueError, KeyError, TypeError, AttributeError):
        text = raw.decode("utf-8", "replace").strip()
        body = body if body is not None else text
        code, message, problems = "", (text[:200] or "(empty body)"), []
    kind = Unavailable if status in _RETRYABLE_STATUS else AuthFailed if status in (401, 403) else ApiError
    return kind(url, status, code, message, problems, body=body, retry_after=_seconds(retry_after))


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: smsgw never sends one


def _time(value: Any) -> float | None:
    return None if value is None else datetime.datetime.fromisoformat(value).timestamp()


def _required_time(value: Any) -> float:
    when = _time(value)
    if when is None:
        raise ValueError("a time the API always gives is null")
    return when


def _accepted(answer: Any) -> list[Accepted]:
    return [Accepted(str(m["id"]), m["ref"], int(m["recipients"]), int(m["segments"]),
                     tuple(m.get("dropped_duplicates", ())), bool(m.get("repeated", False)),
                     bool(m.get("held", False)), m.get("batch"))
            for m in answer["messages"]]


def _segment(s: Any) -> SegmentView:
    return SegmentView(int(s["number"]), int(s["total"]), s["msg_id"], s["state"], s["stat"],
                       _time(s["submitted_at"]), _time(s["reported_at"]))


def _recipient(r: Any) -> RecipientView:
    return RecipientView(r["to"], r["state"], r["link"], int(r["attempts"]), r["error"], r["stat"],
                         _required_time(r["updated_at"]), tuple(_segment(s) for s in r["segments"]))


def _view(v: Any) -> MessageView:
    return MessageView(str(v["id"]), v["account"], v["interface"], v["ref"], v["text"], int(v["priority"]),
                       _time(v["send_at"]), v["state"], _required_time(v["created_at"]),
                       _required_time(v["updated_at"]), tuple(_recipient(r) for r in v["recipients"]))


def _mo_page(page: Any) -> MoPage:
    items = tuple(MoView(str(m["id"]), m["link"], m["src"], m["dest"], m["ext"], m["text"], m["consumer"],
                         _required_time(m["received_at"]), int(m["parts"]), bool(m["complete"]))
                  for m in page["items"])
    return MoPage(items, page["next_cursor"])


def _status(s: Any) -> GatewayStatus:
    return GatewayStatus(s["node"], bool(s["accepting"]), tuple(dict(link) for link in s["links"]),
                         dict(s["queues"]), dict(s["rates"]))


def next_cursor(page: MoPage, cursor: str | None) -> str | None:
    """Where `mo_iter` goes after `page`; None once it has read everything there is."""
    if not page.items or page.next_cursor is None or page.next_cursor == cursor:
        return None
    return page.next_cursor
