"""An in-memory `GatewayApi` for interface tests: real rules, real state, no store or carrier.

It checks requests the way a gateway must (numbers, empty text, priority over
the account's limit, extension digits), reports every problem at once with
`where` relative to the request list ("[i].to[j]"), dedupes recipients and
refs, and keeps messages and uplink messages in dicts. `mode` makes it fail
the ways a real gateway can: "unavailable" (draining), "broken" (a bug or a
driver error) or "hold" (commits hang until `release()`).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import replace
from typing import Callable, Sequence

from twisted.internet.defer import Deferred, fail, succeed

from smsgw.store import ReviewItem, ReviewPage, ReviewQuery, ReviewResult
from smsgw.templates import Template, TemplateError, render
from smsgw.model import (
    Account,
    AcceptedMessage,
    GatewayStatus,
    MessageView,
    MoPage,
    MoView,
    Problem,
    RecipientView,
    RequestRejected,
    SegmentView,
    SendRequest,
    ServiceUnavailable,
)

_MOBILE = re.compile(r"(?:\+?86)?1[3-9]\d{9}")
SECRET_IN_ERROR = "password=hunter2 dsn=oracle://10.0.0.5"  # must never reach a client


def segments_of(text: str) -> int:
    """GSM-free estimate: 70 UCS-2 characters fit one SMS, 67 per part beyond (140 ASCII, 134)."""
    single, part = (140, 134) if text.isascii() else (70, 67)
    return 1 if len(text) <= single else math.ceil(len(text) / part)


class FakeGateway:
    """`GatewayApi` in memory; answers synchronously unless `mode` is "hold"."""

    def __init__(self, node: str = "test-node", now: float = 1_700_000_000.0, *, retain: bool = True) -> None:
        self.node = node
        self.now = now
        self.retain = retain  # False: keep nothing (benchmarks), so memory and GC stay flat
        self.mode = "normal"
        self.accepted_requests: list[tuple[str, str, tuple[SendRequest, ...]]] = []
        self.held: list[tuple[Deferred[list[AcceptedMessage]], list[AcceptedMessage]]] = []
        self.held_reads: list[str] = []  # ids asked for while holding (those never answer)
        self._messages: dict[str, MessageView] = {}
        self._by_ref: dict[tuple[str, str], AcceptedMessage] = {}
        self._mo: list[MoView] = []
        self._ids = itertools.count(1)
        self.templates: dict[str, Template] = {}
        self.review_items: list[ReviewItem] = []  # the review queue (tests add to it)
        self.reviewers: frozenset[str] = frozenset({"zhang.wei"})

    # -- GatewayApi -------------------------------------------------------------------------

    def accept(self, account: Account, interface: str,
               requests: Sequence[SendRequest]) -> Deferred[list[AcceptedMessage]]:
        """Validate and commit; fires once every message is committed."""
        if self.mode == "broken":
            return fail(RuntimeError(f"store exploded: {SECRET_IN_ERROR}"))
        if self.mode == "unavailable":
            return fail(ServiceUnavailable("draining for shutdown"))
        for request in requests:
            _assert_well_typed(request)
        problems = [p for i, r in enumerate(requests) for p in self._check(account, i, r)]
        if problems:
            return fail(RequestRejected(problems))
        if self.retain:
            self.accepted_requests.append((account.name, interface, tuple(requests)))
        accepted = [self._commit(account, interface, r) for r in requests]
        if self.mode == "hold":
            d: Deferred[list[AcceptedMessage]] = Deferred()
            self.held.append((d, accepted))
            return d
        return succeed(accepted)

    def get_message(self, account: Account, message_id: str) -> Deferred[MessageView | None]:
        """One of the account's own messages, or None (unknown id or someone else's)."""
        if self.mode == "hold":
            self.held_reads.append(message_id)
            return Deferred()
        view = self._messages.get(message_id)
        return succeed(view if view is not None and view.account == account.name else None)

    def list_mo(self, account: Account, cursor: str | None, limit: int) -> Deferred[MoPage]:
        """Uplink messages routed to the account's consumers, oldest first, after `cursor`."""
        consumers = {account.name, *account.mo_consumers}
        mine = [m for m in self._mo if m.consumer in consumers and (cursor is None or m.id > cursor)]
        items = tuple(mine[:limit])
        return succeed(MoPage(items, items[-1].id if items else cursor))

    def status(self) -> Deferred[GatewayStatus]:
        """Links, queue depths and rates."""
        if self.mode == "broken":
            return fail(ZeroDivisionError("rate over an empty window"))
        queued = sum(len(m.recipients) for m in self._messages.values() if m.state == "queued")
        return succeed(GatewayStatus(
            self.node, self.mode != "unavailable",
            links=({"name": "cmcc", "live_connections": 2, "connections": 2, "pending": 0, "state": "up"},),
            queues={"queued": queued}, rates={"accepted": 12.5, "submitted": 12.0, "reported": 11.0}))

    def list_templates(self) -> Deferred[list[Template]]:
        """Every named template, by name."""
        return succeed(sorted(self.templates.values(), key=lambda t: t.name))

    def put_template(self, account: Account, name: str, text: str,
                     pre_approved: bool) -> Deferred[tuple[Template, str]]:
        """Add or change a template (fires with it and "added" or "changed" once committed)."""
        if self.mode == "unavailable":
            return fail(ServiceUnavailable("draining for shutdown"))
        try:
            template = Template.create(name, text, pre_approved, self.now, account.name)
        except TemplateError as exc:
            return fail(RequestRejected([Problem("text", "bad_template_text", str(exc))]))
        outcome = "changed" if name in self.templates else "added"
        self.templates[name] = template
        return succeed((template, outcome))

    def delete_template(self, account: Account, name: str) -> Deferred[bool]:
        """Delete a template: True once committed, False when there was none."""
        return succeed(self.templates.pop(name, None) is not None)

    def review_list(self, query: ReviewQuery, offset: int = 0, limit: int = 50) -> Deferred[ReviewPage]:
        """A page of the messages the review query selects, oldest first (docs/review.md)."""
        found = [i for i in self.review_items if _review_matches(i, query)]
        page = tuple(replace(i, phones=i.phones[:5]) for i in found[offset:offset + limit])
        return succeed(ReviewPage(page, len(found), offset, limit, sum(i.recipients for i in found)))

    def review_rows(self, query: ReviewQuery, limit: int = 1_000_000) -> Deferred[list[ReviewItem]]:
        """Every message the query selects (at most `limit`), with all its numbers: for exports."""
        return succeed([i for i in self.review_items if _review_matches(i, query)][:limit])

    def review_act(self, reviewer: str, action: str, query: ReviewQuery,
                   comment: str = "") -> Deferred[ReviewResult]:
        """Approve or reject the held messages the query selects, as a configured reviewer."""
        if reviewer not in self.reviewers:
            return fail(RequestRejected([Problem("reviewer", "unknown_reviewer", f"{reviewer!r} is not a reviewer")]))
        review = {"approve": "approved", "reject": "rejected"}[action]
        return succeed(self._change(query, lambda i: i.review == "pending", action, review, reviewer, comment))

    def cancel(self, account: Account, query: ReviewQuery, comment: str = "") -> Deferred[ReviewResult]:
        """Cancel the account's own messages the query selects, as far as they have not gone out."""
        own = replace(query, account=account.name, review=query.review or _REVIEW_STATES)
        return succeed(self._change(own, lambda i: i.state in ("pending_review", "accepted"), "cancel",
                                    "cancelled", account.name, comment))

    def _change(self, query: ReviewQuery, eligible: Callable[[ReviewItem], bool], action: str, review: str,
                actor: str, comment: str) -> ReviewResult:
        changed, moved = [], 0
        for k, item in enumerate(self.review_items):
            if _review_matches(item, query) and eligible(item):
                final = review != "approved"
                self.review_items[k] = replace(
                    item, review=review if item.review == "pending" else item.review,
                    state="completed" if final else "accepted", reviewed_by=actor, comment=comment or None)
                changed.append(item.id)
                moved += item.recipients
        return ReviewResult(action, tuple(changed), moved)

    # -- test controls ----------------------------------------------------------------------

    def release(self) -> None:
        """Fire every held accept (the commit finally completes)."""
        held, self.held = self.held, []
        for d, accepted in held:
            d.callback(accepted)

    def deliver(self, message_id: str, stat: str = "DELIVRD") -> None:
        """Mark every segment of every recipient submitted and reported with `stat`."""
        view = self._messages[message_id]
        recipients = []
        for r in view.recipients:
            total = segments_of(view.text)
            segs = tuple(SegmentView(k, total, f"{next(self._ids):016x}", "delivered", stat,
                                     self.now + 1, self.now + 2.5) for k in range(1, total + 1))
            recipients.append(replace(r, state="delivered", link="cmcc", attempts=1, stat=stat,
                                      updated_at=self.now + 2.5, segments=segs))
        self._messages[message_id] = replace(view, state="done", updated_at=self.now + 2.5,
                                             recipients=tuple(recipients))

    def add_mo(self, text: str, *, consumer: str | None, ext: str = "01", src: str = "13800138000") -> MoView:
        mo = MoView(f"{len(self._mo) + 1:012d}", "cmcc", src, "10690001" + ext, ext, text, consumer,
                    self.now + len(self._mo))
        self._mo.append(mo)
        return mo

    # -- inside -----------------------------------------------------------------------------

    def _check(self, account: Account, i: int, request: SendRequest) -> list[Problem]:
        problems = [Problem(f"[{i}].to[{j}]", "bad_number", f"{n!r} is not a mainland mobile number "
                            "(11 digits starting with 1, optionally +86)")
                    for j, n in enumerate(request.to) if not _MOBILE.fullmatch(n)]
        text = self._text(i, request, problems)
        if text is not None and not text:
            problems.append(Problem(f"[{i}].text", "empty_text", "text is empty"))
        if request.priority > account.max_priority:
            problems.append(Problem(f"[{i}].priority", "not_allowed", f"priority {request.priority} is above "
                                    f"this account's maximum, {account.max_priority}"))
        if request.ext is not None and not request.ext.isdigit():
            problems.append(Problem(f"[{i}].ext", "bad_ext", f"ext {request.ext!r} must be digits"))
        return problems

    def _text(self, i: int, request: SendRequest, problems: list[Problem]) -> str | None:
        if request.template is None:
            return request.text
        template = self.templates.get(request.template)
        if template is None:
            problems.append(Problem(f"[{i}].template", "unknown_template", f"no template {request.template!r}"))
            return None
        rendered = render(template, request.params, f"[{i}]")
        if isinstance(rendered, list):
            problems.extend(rendered)
            return None
        return rendered

    def _commit(self, account: Account, interface: str, request: SendRequest) -> AcceptedMessage:
        if request.template is not None:
            request = replace(request, text=str(render(self.templates[request.template], request.params)))
        if request.ref is not None and (account.name, request.ref) in self._by_ref:
            return self._by_ref[account.name, request.ref]
        unique = tuple(dict.fromkeys(request.to))
        dropped = tuple(n for j, n in enumerate(request.to) if n in request.to[:j])
        message_id = f"m{next(self._ids):08d}"
        accepted = AcceptedMessage(message_id, request.ref, len(unique), segments_of(request.text), dropped)
        if not self.retain:
            return accepted
        self._messages[message_id] = MessageView(
            message_id, account.name, interface, request.ref, request.text, request.priority, request.send_at,
            "queued", self.now, self.now,
            tuple(RecipientView(n, "queued", None, 0, None, None, self.now) for n in unique))
        if request.ref is not None:
            self._by_ref[account.name, request.ref] = accepted
        return accepted


_REVIEW_STATES = ("pending", "approved", "rejected", "cancelled", "passed")


def _review_matches(item: ReviewItem, q: ReviewQuery) -> bool:
    """What smsgw.store._review.where selects, in memory."""
    interface = q.interface
    return (item.review in (q.review or _REVIEW_STATES[:4]) and (not q.message_ids or item.id in q.message_ids)
            and q.account in (None, item.account) and q.batch in (None, item.batch)
            and (interface is None or item.interface == interface
                 or (":" not in interface and item.interface.startswith(interface + ":")))
            and (q.since is None or item.created_at >= q.since) and (q.until is None or item.created_at < q.until)
            and (not q.content or q.content in item.content) and (q.to is None or q.to in item.phones))


def _assert_well_typed(request: SendRequest) -> None:
    """What the gateway may take for granted from an interface; a TypeError here is an interface bug."""
    ok = (type(request.to) is tuple and request.to and all(type(n) is str for n in request.to)
          and type(request.text) is str and type(request.priority) is int and 0 <= request.priority <= 9
          and (request.send_at is None or type(request.send_at) is float)
          and all(v is None or type(v) is str for v in (request.ext, request.ref))
          and type(request.report) is bool
          and (request.template is None or type(request.template) is str)
          and (request.params is None or type(request.params) is dict))
    if not ok:
        raise TypeError(f"ill-typed SendRequest from the interface: {request!r}")
