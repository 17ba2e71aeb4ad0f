"""The review queue in the REST API (docs/review.md): query strings and bodies in, review items out.

No Twisted and no I/O: whatever a client sends passes through these functions, which return
`ReviewQuery`s (smsgw.store) or raise `ApiError` and nothing else (the hypothesis tests hold
them to it). Query strings that are wrong answer 400 naming the parameter; JSON bodies that
are wrong answer 422 listing every problem, as every other body of the API does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from smsgw._api_codec import (
    ApiError,
    MAX_EPOCH,
    PER_FIELD_MAX,
    _encodable,
    _kind,
    _safe,
    _show,
    at,
    iso_utc,
    parse_time,
    rejected,
)
from smsgw.lifecycle import Review
from smsgw.review import is_interface
from smsgw.review_export import FORMATS
from smsgw.model import Account, Problem
from smsgw.store import ReviewItem, ReviewPage, ReviewQuery, ReviewResult
from smsgw.validation import NumberError, normalise_number

__all__ = [
    "ACTION_FIELDS", "EXPORT_PARAMS", "FILTERS", "LIST_PARAMS", "REVIEW_LIMIT_DEFAULT",
    "REVIEW_LIMIT_MAX", "STATES", "ActionRequest", "cancel_json", "named_reviewer", "nothing_cancelled",
    "parse_action_body", "parse_cancel_body", "parse_export_query", "parse_list_query", "parse_message_id",
    "result_json", "review_item_json", "review_page_json", "reviewer_for",
]

REVIEW_LIMIT_DEFAULT, REVIEW_LIMIT_MAX = 50, 1000
OFFSET_MAX = 1_000_000_000
IDS_MAX = 10_000  # ids in one approve or reject (larger selections: a batch or a filter)
COMMENT_MAX = 500  # as stored (messages.review_comment)
TEXT_MAX = 1000  # a content filter longer than any message is a mistake
NAME_MAX = 64  # accounts, batches, reviewers, interfaces as stored
#: Review states a query may ask for; "any" means all of them, "passed" (no rule held it) included.
STATES = Review.ALL
FILTERS = ("content", "to", "account", "interface", "state", "batch", "since", "until")
#: Filters that narrow which messages an approve or reject touches (state alone does not: the
#: action only ever touches pending ones).
NARROWING = ("content", "to", "account", "interface", "batch", "since", "until")
LIST_PARAMS = (*FILTERS, "offset", "limit")
EXPORT_PARAMS = (*FILTERS, "format")
ACTION_FIELDS = ("ids", "batch", "filter", "all", "comment", "reviewer")
CANCEL_FIELDS = ("comment",)
_EPOCH = re.compile(r"\d{1,12}(?:\.\d{1,9})?")
_QUERY_NUMBERS = ("1",)  # a query matches stored numbers: any 11 digits from 1 normalise, no segment check


# -- query strings ------------------------------------------------------------------------------

def parse_list_query(args: Mapping[bytes, Sequence[bytes]]) -> tuple[ReviewQuery, int, int]:
    """The filters, offset and limit of `GET /api/v1/review`.

    Raises:
        ApiError: 400 naming every unknown, repeated or invalid parameter.
    """
    problems: list[Problem] = []
    values = _query_values(args, LIST_PARAMS, problems)
    query = _filters(values, "", problems)
    offset = _whole(values, "offset", 0, 0, OFFSET_MAX, problems)
    limit = _whole(values, "limit", REVIEW_LIMIT_DEFAULT, 1, REVIEW_LIMIT_MAX, problems)
    if problems:
        raise _bad_query(problems)
    return query, offset, limit


def parse_export_query(args: Mapping[bytes, Sequence[bytes]]) -> tuple[ReviewQuery, str]:
    """The filters and format (xlsx, the default, or csv) of `GET /api/v1/review/export`.

    Raises:
        ApiError: 400 naming every unknown, repeated or invalid parameter.
    """
    problems: list[Problem] = []
    values = _query_values(args, EXPORT_PARAMS, problems, paging=True)
    query = _filters(values, "", problems)
    fmt = values.get("format", "xlsx")
    if fmt not in FORMATS:
        problems.append(Problem("format", "bad_value", f"format {_show(fmt)} is not one the export writes: "
                                "xlsx (Excel) or csv (UTF-8 text)"))
    if problems:
        raise _bad_query(problems)
    return query, fmt


def parse_message_id(raw: str) -> int | None:
    """A message id from a path, or None when it cannot be one (the caller answers 404)."""
    if raw.isascii() and raw.isdigit() and 0 < len(raw) <= 19 and int(raw) < 2**63:
        return int(raw)
    return None


def _query_values(args: Mapping[bytes, Sequence[bytes]], allowed: Sequence[str], problems: list[Problem],
                  paging: bool = False) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw, given in args.items():
        name = raw.decode("utf-8", "replace")
        if name not in allowed:
            if paging and name in ("offset", "limit"):
                hint = "an export holds the whole result: leave out offset and limit"
            else:
                hint = "the parameters are " + ", ".join(allowed)
            problems.append(Problem(_safe(name)[:64], "unknown_parameter",
                                    f"unknown query parameter {_show(name)}: {hint}"))
        elif len(given) != 1:
            more = ": several states go in one, comma-separated (state=pending,approved)" if name == "state" else ""
            problems.append(Problem(name, "repeated", f"{name} is given {len(given)} times: give it once{more}"))
        else:
            try:
                values[name] = given[0].decode("utf-8")
            except UnicodeDecodeError:
                problems.append(Problem(name, "bad_encoding", f"{name} is not UTF-8 text: percent-encode the "
                                        "UTF-8 bytes of the value"))
    return values


def _whole(values: Mapping[str, str], name: str, default: int, low: int, high: int,
           problems: list[Problem]) -> int:
    text = values.get(name)
    if text is None:
        return default
    if text.isascii() and text.isdigit() and low <= int(text) <= high:
        return int(text)
    problems.append(Problem(name, "out_of_range", f"{name} must be a whole number from {low} to {high}, "
                            f"not {_show(text)}"))
    return default


def _bad_query(problems: list[Problem]) -> ApiError:
    shown = [p.message for p in problems[:5]]
    if len(problems) == 1:
        message = shown[0]
    else:
        more = f" (and {len(problems) - 5} more, listed in details)" if len(problems) > 5 else ""
        message = f"{len(problems)} problems with the query parameters: " + "; ".join(shown) + more
    return ApiError(400, "bad_request", message, [p.as_dict() for p in problems[:PER_FIELD_MAX * 10]])


# -- filters (the query string's and the JSON body's) --------------------------------------------

def _filters(values: Mapping[str, Any], prefix: str, problems: list[Problem]) -> ReviewQuery:
    """A `ReviewQuery` from filter values: strings from a query string, JSON values from a body."""
    before = len(problems)
    content = _text(values, "content", prefix, TEXT_MAX, problems, strip=False)
    to = _number(values, prefix, problems)
    account = _text(values, "account", prefix, NAME_MAX, problems)
    interface = _interface(values, prefix, problems)
    states = _states(values, prefix, problems)
    batch = _text(values, "batch", prefix, NAME_MAX, problems)
    since = _time(values, "since", prefix, problems)
    until = _time(values, "until", prefix, problems)
    if since is not None and until is not None and until <= since:
        problems.append(Problem(at(prefix, "until"), "empty_range", "until must be later than since: the range "
                                "takes messages created at or after since and before until"))
    if len(problems) > before:
        return ReviewQuery()
    return ReviewQuery(review=states, content=content, to=to, account=account, interface=interface, batch=batch,
                       since=since, until=until)


def _text(values: Mapping[str, Any], name: str, prefix: str, most: int, problems: list[Problem], *,
          strip: bool = True) -> str | None:
    value = values.get(name)
    if value is None:
        return None
    where = at(prefix, name)
    if type(value) is not str or not _encodable(value):
        problems.append(Problem(where, "wrong_type", f"{name} must be text, not {_kind(value)}"))
        return None
    if not (value.strip() if strip else value) or len(value) > most:
        problems.append(Problem(where, "bad_value", f"{name} {_show(value)} must be 1 to {most} characters: "
                                "leave it out to not filter by it"))
        return None
    return value.strip() if strip else value


def _number(values: Mapping[str, Any], prefix: str, problems: list[Problem]) -> str | None:
    value = _text(values, "to", prefix, 40, problems)
    if value is None:
        return None
    try:
        return normalise_number(value, _QUERY_NUMBERS, allow_other=True)
    except NumberError as exc:
        problems.append(Problem(at(prefix, "to"), "bad_number", f"to: {exc.message}"))
        return None


def _interface(values: Mapping[str, Any], prefix: str, problems: list[Problem]) -> str | None:
    value = _text(values, "interface", prefix, NAME_MAX, problems)
    if value is None:
        return None
    if not is_interface(value):
        problems.append(Problem(at(prefix, "interface"), "bad_value", f"interface {_show(value)} is not one: "
                                "rest, url, soap, file, auto_reply, db (every legacy-database source) or "
                                "db:<source>"))
        return None
    return value


def _states(values: Mapping[str, Any], prefix: str, problems: list[Problem]) -> tuple[str, ...]:
    value = values.get("state")
    if value is None:
        return ()
    where = at(prefix, "state")
    if type(value) is str:
        items: list[Any] = value.split(",")
    elif type(value) is list:
        items = value
    else:
        problems.append(Problem(where, "wrong_type", f"state must be text like \"pending,approved\", not "
                                f"{_kind(value)}"))
        return ()
    wanted: dict[str, None] = {}
    for item in items[:PER_FIELD_MAX]:
        name = item.strip() if type(item) is str else item
        if name == "any":
            wanted.update(dict.fromkeys(STATES))
        elif name in STATES:
            wanted[name] = None
        else:
            problems.append(Problem(where, "bad_value", f"state {_show(name)} is not a review state: "
                                    f"{', '.join(STATES)} or any (several comma-separated)"))
            return ()
    if len(items) > PER_FIELD_MAX or not wanted:
        problems.append(Problem(where, "bad_value", f"state must name 1 to {len(STATES)} review states: "
                                f"{', '.join(STATES)} or any"))
        return ()
    return tuple(wanted)


def _time(values: Mapping[str, Any], name: str, prefix: str, problems: list[Problem]) -> float | None:
    value = values.get(name)
    if value is None:
        return None
    where = at(prefix, name)
    if type(value) in (int, float):
        if 0 <= value <= MAX_EPOCH:
            return float(value)
    elif type(value) is str and _encodable(value):
        text = value.strip()
        if _EPOCH.fullmatch(text):
            if float(text) <= MAX_EPOCH:
                return float(text)
        else:
            return parse_time(text, where, problems)
    else:
        problems.append(Problem(where, "wrong_type", f"{name} must be an ISO-8601 time with a UTC offset or "
                                f"epoch seconds, not {_kind(value)}"))
        return None
    problems.append(Problem(where, "bad_time", f"{name} {_show(value)} is outside the years 1970 to 9999"))
    return None


# -- approve and reject bodies ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ActionRequest:
    """An approve or reject as the client asked for it."""

    query: ReviewQuery
    comment: str
    reviewer: str | None
    ids: tuple[int, ...] = ()  # the ids named, when the selector was ids


def parse_action_body(value: Any, action: str) -> ActionRequest:
    """The body of `POST /api/v1/review/approve` or `/reject`: exactly one selector (ids, batch or filter;
    a filter narrowing nothing needs "all": true), a comment (required to reject) and the reviewer.

    Raises:
        ApiError: 422 listing every problem.
    """
    if type(value) is not dict:
        raise rejected([Problem("", "wrong_type", 'the body must be an object like {"ids": ["123"], '
                                f'"comment": "ok"}}, not {_kind(value)}')])
    problems: list[Problem] = []
    for name in sorted(value.keys() - set(ACTION_FIELDS))[:PER_FIELD_MAX]:
        problems.append(Problem(_safe(name)[:64], "unknown_field", f"unknown field {_show(name)}: the fields are "
                                + ", ".join(ACTION_FIELDS)))
    chosen = [name for name in ("ids", "batch", "filter") if value.get(name) is not None]
    query = ReviewQuery()
    ids: tuple[int, ...] = ()
    if not chosen:
        problems.append(Problem("", "no_selector", f"say which messages to {action}: \"ids\" (a list of message "
                                "ids), \"batch\" (a batch as stored) or \"filter\" (the list's filters)"))
    elif len(chosen) > 1:
        problems.append(Problem("", "several_selectors", f"give one of {', '.join(chosen)}, not several: each "
                                "selects the messages on its own"))
    elif chosen == ["ids"]:
        ids = _ids(value["ids"], problems)
        query = ReviewQuery(message_ids=ids)
    elif chosen == ["batch"]:
        batch = _text(value, "batch", "", NAME_MAX, problems)
        query = ReviewQuery(batch=batch)
    else:
        query = _action_filter(value, action, problems)
    everything = value.get("all", False)
    if type(everything) is not bool:
        problems.append(Problem("all", "wrong_type", f"all must be true or false, not {_kind(everything)}"))
    elif everything and chosen != ["filter"]:
        problems.append(Problem("all", "bad_value", "all only goes with filter (it confirms a filter that "
                                "narrows nothing): leave it out"))
    comment = _comment(value, action == "reject", problems)
    reviewer = None
    if value.get("reviewer") is not None:
        reviewer = _text(value, "reviewer", "", NAME_MAX, problems)
    if problems:
        raise rejected(problems)
    return ActionRequest(query, comment, reviewer, ids)


def _ids(value: Any, problems: list[Problem]) -> tuple[int, ...]:
    if type(value) is not list or not value or len(value) > IDS_MAX:
        got = _kind(value) if type(value) is not list else "an empty list" if not value else f"{len(value)} ids"
        problems.append(Problem("ids", "wrong_type", f"ids must be a list of 1 to {IDS_MAX} message ids like "
                                f"[\"7165432109876543210\"], not {got}"))
        return ()
    out: dict[int, None] = {}
    bad = 0
    for i, item in enumerate(value):
        parsed = parse_message_id(item) if type(item) is str else (
            item if type(item) is int and 0 < item < 2**63 else None)
        if parsed is None:
            bad += 1
            if bad <= PER_FIELD_MAX:
                problems.append(Problem(f"ids[{i}]", "bad_id", f"{_show(item)} is not a message id: the id as the "
                                        "send answer or the review list gives it, e.g. \"7165432109876543210\""))
        else:
            out[parsed] = None
    return tuple(out)


def _action_filter(value: Mapping[str, Any], action: str, problems: list[Problem]) -> ReviewQuery:
    given = value["filter"]
    if type(given) is not dict:
        problems.append(Problem("filter", "wrong_type", f"filter must be an object like {{\"content\": \"停水\"}}, "
                                f"not {_kind(given)}"))
        return ReviewQuery()
    for name in sorted(given.keys() - set(FILTERS))[:PER_FIELD_MAX]:
        problems.append(Problem(at("filter", _safe(name)[:64]), "unknown_field", f"unknown filter {_show(name)}: "
                                "the filters are " + ", ".join(FILTERS)))
    if not any(given.get(name) is not None for name in NARROWING) and value.get("all") is not True:
        problems.append(Problem("filter", "unbounded", f"this filter selects every message waiting for review: "
                                f"to {action} them all, send \"all\": true with it; otherwise narrow it "
                                f"({', '.join(NARROWING)})"))
    return _filters({k: v for k, v in given.items() if v is not None}, "filter", problems)


def _comment(value: Mapping[str, Any], required: bool, problems: list[Problem]) -> str:
    comment = value.get("comment")
    if comment is None:
        if required:
            problems.append(Problem("comment", "required", "comment is required to reject: say why, the sender "
                                    "is told (e.g. \"wrong date in the text\")"))
        return ""
    if type(comment) is not str or not _encodable(comment):
        problems.append(Problem("comment", "wrong_type", f"comment must be text, not {_kind(comment)}"))
        return ""
    if len(comment) > COMMENT_MAX:
        problems.append(Problem("comment", "too_long", f"comment has {len(comment)} characters, at most "
                                f"{COMMENT_MAX} are kept: shorten it"))
    elif required and not comment.strip():
        problems.append(Problem("comment", "required", "comment is empty: say why it is rejected"))
    return comment.strip()


def parse_cancel_body(value: Any) -> str:
    """The optional body of a cancel: {"comment": "..."}; returns the comment ("" without one).

    Raises:
        ApiError: 422 listing every problem.
    """
    if value is None:
        return ""
    if type(value) is not dict:
        raise rejected([Problem("", "wrong_type", f'the body must be an object like {{"comment": "sent by '
                                f'mistake"}}, or empty, not {_kind(value)}')])
    problems = [Problem(_safe(name)[:64], "unknown_field", f"unknown field {_show(name)}: the only field is comment")
                for name in sorted(value.keys() - set(CANCEL_FIELDS))[:PER_FIELD_MAX]]
    comment = _comment(value, False, problems)
    if problems:
        raise rejected(problems)
    return comment


# -- who acts ---------------------------------------------------------------------------------

def named_reviewer(header: Sequence[bytes] | None, in_body: str | None) -> str | None:
    """The reviewer named by the X-Smsgw-Reviewer header (its values) or the body; both: they must agree.

    Raises:
        ApiError: 400 for a header that is repeated, empty or not UTF-8, or names someone else.
    """
    if header is None:
        return in_body
    try:
        named = header[0].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "X-Smsgw-Reviewer is not UTF-8: send a reviewer's name") from None
    if len(header) > 1 or not named:
        raise ApiError(400, "bad_request", "X-Smsgw-Reviewer must be given once, with a reviewer's name")
    if in_body is not None and in_body != named:
        raise ApiError(400, "bad_request", f"the body names reviewer {_show(in_body)} and X-Smsgw-Reviewer "
                       f"{_show(named)}: name one")
    return named


def reviewer_for(account: Account, named: str | None, reviewers: Mapping[str, Sequence[str]]) -> str:
    """The configured reviewer `account` acts as: the one named (body or header), or the only one
    listing the account.

    Raises:
        ApiError: 400 reviewer_required (none named and none or several list the account),
            400 unknown_reviewer, 403 forbidden (the reviewer lists accounts, not this one).
    """
    how = "name it with \"reviewer\" in the body or the X-Smsgw-Reviewer header (smsgw review ... --as NAME)"
    known = ", ".join(sorted(reviewers)) or "none is configured"
    if named is not None:
        if named not in reviewers:
            raise ApiError(400, "unknown_reviewer", f"{_show(named)} is not a reviewer: review.reviewers in the "
                           f"gateway's configuration names them ({known})")
        allowed = reviewers[named]
        if allowed and account.name not in allowed:
            raise ApiError(403, "forbidden", f"account {account.name!r} may not act as reviewer {named!r}, who "
                           f"acts through {', '.join(allowed)}: the operator can add the account to that "
                           "reviewer's accounts")
        return named
    mine = sorted(name for name, accounts in reviewers.items() if account.name in accounts)
    if len(mine) == 1:
        return mine[0]
    if not reviewers:
        why = "no reviewer is configured: the operator adds them under review.reviewers"
    elif mine:
        why = f"account {account.name!r} acts for several reviewers ({', '.join(mine)}): {how}"
    else:
        why = f"say which reviewer you are: {how}; the reviewers are {known}"
    raise ApiError(400, "reviewer_required", why)


# -- answers ------------------------------------------------------------------------------------

def review_item_json(item: ReviewItem) -> dict[str, Any]:
    return {"id": str(item.id), "account": item.account, "interface": item.interface, "batch": item.batch,
            "ref": item.ref, "text": item.content, "template": item.template, "recipients": item.recipients,
            "numbers": list(item.phones), "priority": item.priority, "send_at": iso_utc(item.send_at),
            "created_at": iso_utc(item.created_at), "state": item.state, "review": item.review,
            "rule": item.rule, "deadline": iso_utc(item.deadline), "reviewed_by": item.reviewed_by,
            "reviewed_at": iso_utc(item.reviewed_at), "comment": item.comment}


def review_page_json(page: ReviewPage) -> dict[str, Any]:
    return {"items": [review_item_json(item) for item in page.items], "total": page.total,
            "total_recipients": page.recipients, "offset": page.offset, "limit": page.limit}


def result_json(result: ReviewResult, reviewer: str, ids: Sequence[int] = ()) -> dict[str, Any]:
    """What an approve or reject changed; `unchanged` lists the ids named that it did not change."""
    changed = set(result.messages)
    return {"action": result.action, "reviewer": reviewer, "messages": [str(i) for i in result.messages],
            "recipients": result.recipients, "unchanged": [str(i) for i in ids if i not in changed]}


def cancel_json(result: ReviewResult) -> dict[str, Any]:
    return {"messages": [str(i) for i in result.messages], "recipients": result.recipients}


def nothing_cancelled(found: int, account: Account, query: ReviewQuery) -> ApiError:
    """The answer to a cancel that changed nothing: 404 when the account has no such message or batch
    (`found` is how many it has), else 409 (all of it has gone out or is final)."""
    if query.batch is not None:
        what, look = f"batch {query.batch[:64]!r}", "GET /api/v1/messages/{id} shows each message's recipients"
        missing = f"no batch {query.batch[:64]!r} of account {account.name!r}"
        if ":" not in query.batch and not query.batch.isdigit():
            missing += f": batches are named as stored, e.g. {account.name + ':' + query.batch[:48]!r}"
    else:
        what, look = f"message {query.message_ids[0]}", f"GET /api/v1/messages/{query.message_ids[0]} shows them"
        missing = f"no message {query.message_ids[0]} of account {account.name!r}"
    if not found:
        return ApiError(404, "not_found", missing)
    return ApiError(409, "nothing_to_cancel", f"{what} has nothing left to cancel: its recipients have gone to the "
                    f"carrier or reached a final state ({look})")
