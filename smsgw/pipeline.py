"""The gateway core: accept → validate → persist → route; reports and MO in; sweeps.

`Gateway` is what business-side interfaces call (`smsgw.model.GatewayApi`).
It validates a request completely, commits it, and only then answers; the
dispatchers (`smsgw.dispatch`) take it from the store to the carrier links.
Status reports and MO messages from the links are committed before their
DELIVER is acknowledged (the link waits for the Deferred returned here).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Sequence

import structlog
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from smsgw.carrier import CarrierLink, LinkReport, MoMessage, MoPart
from smsgw.dispatch import Dispatcher
from smsgw.filters import Duplicates, FilterProblem
from smsgw.lifecycle import Review, first_due
from smsgw.limits import Limits, day_start
from smsgw.protocol.cmpp import msg_id_to_text
from smsgw.model import (
    PRIORITY_NORMAL,
    Account,
    AcceptedMessage,
    GatewayStatus,
    LimitExceeded,
    MessageView,
    MoPage,
    Problem,
    RequestRejected,
    SendRequest,
    ServiceUnavailable,
)
from smsgw.store import MoArgs, MoPartArgs, NewMessage, ReportArgs, ReportOutcome, Store, StoreUnavailable, SweepArgs, SweepResult
from smsgw.review import ReviewPolicy
from smsgw.store import ExpiryArgs, ExpiryResult, ReviewAction, ReviewItem, ReviewPage, ReviewQuery, ReviewResult
from smsgw.template_registry import TemplateRegistry
from smsgw.templates import Template, TemplateError, check_name
from smsgw.validation import PreparedMessage, Router, Validator

log = structlog.get_logger("smsgw.pipeline")

AUTO_REPLY_ACCOUNT = Account(name="auto_reply")
#: The outbox kind of messages that name their own report URL (Kannel's dlr-url).
DLR_URL_KIND = "dlr-url"


@dataclass(frozen=True, slots=True)
class MoRule:
    consumer: str
    ext: str | None = None  # prefix of the extension after the service code
    keyword: str | None = None  # first word, case-insensitive


@dataclass(frozen=True, slots=True)
class AutoReplyRule:
    keyword: str
    text: str
    ext: str | None = None


@dataclass(frozen=True, slots=True)
class Timing:
    report_timeout: float = 259_200.0
    orphan_keep: float = 600.0
    sweep_interval: float = 5.0
    lease_seconds: float = 60.0
    outbox_keep: float = 86_400.0  # delivered notifications are kept this long (for looking into), then deleted


class Gateway:
    """Accepts messages, answers queries, and takes reports and MO from the links."""

    def __init__(self, store: Store, validator: Validator, router: Router, links: dict[str, CarrierLink],
                 dispatchers: dict[str, Dispatcher], clock: IReactorTime, *, node: str,
                 mo_rules: Sequence[MoRule] = (), mo_default: str | None = None,
                 auto_replies: Sequence[AutoReplyRule] = (), timing: Timing = Timing(),
                 mo_sinks: dict[str, str] | None = None, notify: dict[str, str] | None = None,
                 templates: TemplateRegistry | None = None, limits: Limits | None = None,
                 review: ReviewPolicy | None = None, reviewers: Sequence[str] = (),
                 due: Callable[[float, int], float] | None = None) -> None:
        self._store = store
        # The named templates; the validator renders from the registry's live dict.
        self.templates = templates if templates is not None else TemplateRegistry(store, clock)
        validator.templates = self.templates.templates
        self._validator = validator
        self._router = router
        self._links = links
        self._dispatchers = dispatchers
        self._clock = clock
        self._node = node
        self._mo_rules = tuple(mo_rules)
        self._mo_default = mo_default
        self._auto = {rule.keyword.upper(): rule for rule in auto_replies}
        self._timing = timing
        self._mo_sinks = dict(mo_sinks or {})  # consumer -> outbox kind that delivers its MO (e.g. "db:erp")
        self._notify = dict(notify or {})  # account -> outbox kind owed its messages' states (callbacks)
        self.limits = limits or Limits()  # rate limits and daily quotas, checked in accept_prepared
        self.review_policy = review or ReviewPolicy()  # decides, for every message accepted, whether it is held
        self.reviewers = frozenset(reviewers)  # who may approve and reject (smsgw review --as, REST reviewer)
        # (due, priority) -> when a message may go out: quiet hours and holidays move non-urgent ones (smsgw.schedule)
        self.due = due
        # Called whenever an accept holds messages for review: the reviewer notifier listens here.
        self.on_held: list[Callable[[], None]] = []
        self.accepting = False
        self._sweeper: IDelayedCall | None = None
        self._sweeping = False
        self._counts = {"accepted": 0, "reported": 0}
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=64)

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Load the templates and today's quota counts, requeue what this node had in flight when it last
        stopped, then start the dispatchers."""
        d: defer.Deferred[Any] = self.templates.start()
        since = day_start(self._clock.seconds())
        d.addCallback(lambda _: self._store.read(Store.recipients_since, list(self.limits.quota_accounts), since))
        d.addCallback(lambda counts: self.limits.load(counts, since, self._clock.seconds()))
        d.addCallback(lambda _: self._store.write("release", self._store.owner))

        def started(released: int) -> None:
            if released:
                log.warning("inflight_requeued", count=released,
                            reason="in flight without SUBMIT_RESP when this node last stopped: resent")
            self.accepting = True
            for dispatcher in self._dispatchers.values():
                dispatcher.start([])
            self._sweeper = self._clock.callLater(0, self._sweep)
            self._discover_origins()
        return d.addCallback(started)

    def _discover_origins(self) -> None:
        """Wake each dispatcher for every origin with queued work (left from before a restart, or
        queued by another node or an adapter)."""
        for name, dispatcher in self._dispatchers.items():
            d = self._store.read(Store.queued_origins, name)
            d.addCallbacks(lambda origins, disp=dispatcher: [disp.wake(o) for o in origins],
                           lambda f: log.error("alarm", alarm="store_read_failed", error=f.getErrorMessage()))

    def stop_accepting(self) -> None:
        self.accepting = False

    def stop(self) -> defer.Deferred[Any]:
        """Stop sweeping and claiming; fires when the dispatchers' in-flight work has outcomes."""
        self.accepting = False
        self.templates.stop()
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        self._sweeper = None
        return defer.DeferredList([d.stop() for d in self._dispatchers.values()], consumeErrors=True)

    # --- GatewayApi ----------------------------------------------------------------

    def accept(self, account: Account, interface: str,
               requests: Sequence[SendRequest]) -> defer.Deferred[list[AcceptedMessage]]:
        if not self.accepting:
            return defer.fail(ServiceUnavailable("the gateway is not accepting messages (starting or draining)"))
        if account.interfaces and interface.split(":")[0] not in account.interfaces:
            return defer.fail(RequestRejected([Problem("", "interface_not_allowed",
                                                       f"account {account.name!r} may not use {interface!r}")]))
        now = self._clock.seconds()
        try:
            prepared = self._validator.prepare(account, requests, now, interface=interface)
        except RequestRejected as exc:
            self._log_filtered(account, interface, exc.problems)
            return defer.fail(exc)
        total = sum(len(m.to) for m in prepared)
        if (over := account.over_daily_quota(total)) is not None:
            return defer.fail(RequestRejected([Problem("", "over_daily_quota", (
                f"the request has {over}: split it over several days, or ask the operator for a larger quota"))]))
        return self.accept_prepared(account, interface, prepared, now, notify=self._notify.get(account.name))

    def accept_prepared(self, account: Account, interface: str, prepared: Sequence[PreparedMessage],
                        now: float, notify: str | None = None,
                        sources: Sequence[tuple[str, str]] | None = None) -> defer.Deferred[list[AcceptedMessage]]:
        """Persist already-validated messages (adapters that validate row by row call this).

        `notify`: the outbox kind owed submit and final states; `sources`: per message, the
        (source, row key) it was taken from, stored once: a repeat answers with the stored message.
        Fails with LimitExceeded, storing nothing, when the account's rate limit or daily quota
        does not allow the recipients now; with RequestRejected naming each duplicate ("[i].to[j]")
        when the duplicates filter refuses some.
        """
        # The administrator's filters (smsgw.filters): the validator checked lists, words and segments;
        # duplicates are checked here, just before the commit, and remembered once committed.
        filters = self._validator.filters
        duplicates = filters.duplicates if filters is not None else None
        tags: list[object | None] = []
        if duplicates is not None:
            tags = _tags(prepared, sources)
            problems = duplicates.check(account.name, interface, prepared, tags, now)
            if problems:
                self._log_filtered(account, interface, problems)
                return defer.fail(RequestRejected(list(problems)))
        recipients = sum(len(m.to) for m in prepared)
        try:
            self.limits.reserve(account, recipients, now)
        except LimitExceeded as exc:
            log.info("limit_exceeded", account=account.name, interface=interface, limit=exc.kind,
                     recipients=recipients, retry_after=round(exc.retry_after, 1))
            return defer.fail(exc)
        items = []
        default_batch: str | None = None
        for i, message in enumerate(prepared):
            links = [self._router.route(phone) for phone in message.to]
            message_id = self._store.ids.next()
            if default_batch is None:
                default_batch = str(message_id)  # a request's messages are one batch unless the caller names it
            counted = max(recipients, message.batch_size or 0)
            if message.hold is not None:  # a sensitive-word rule holds it, whatever the review rules say
                decision = message.hold.decision(now)
            else:
                decision = self.review_policy.decide(account, interface, message.text, counted,
                                                     message.pre_approved, now)
            due = first_due(message.send_at, now)
            items.append(NewMessage(message_id, account.name, interface, message, links,
                                    self._store.ids.many(len(message.to)), now,
                                    needs_review=account.needs_review,
                                    notify=DLR_URL_KIND if message.dlr_url else notify,
                                    source=sources[i] if sources is not None else None,
                                    review=decision,
                                    batch=f"{account.name}:{message.batch}" if message.batch else default_batch,
                                    due_at=self.due(due, message.priority) if self.due is not None else None))
        d = self._store.write("accept", items)  # one request: all its messages in one transaction
        return d.addCallbacks(lambda ids: self._accepted(account, interface, items, ids, duplicates, tags),
                              lambda f: self._accept_failed(f, account, recipients))

    def _accepted(self, account: Account, interface: str, items: list[NewMessage], ids: list[int],
                  duplicates: Duplicates | None, tags: Sequence[object | None]) -> list[AcceptedMessage]:
        out = []
        held = False
        for i, (item, stored_id) in enumerate(zip(items, ids)):
            m = item.message
            if stored_id != item.id:  # stored before: answered with the stored message, not sent again
                if item.source is not None:
                    log.info("db_row_reconciled", message_id=str(stored_id), source=item.source[0],
                             key=item.source[1],
                             reason="taken before, but the legacy database did not commit it: not sent again")
                else:
                    log.info("message_ref_repeated", message_id=str(stored_id), account=account.name, ref=m.ref,
                             reason="this ref was accepted before: answered with the stored message, not sent again")
                out.append(AcceptedMessage(str(stored_id), m.ref, len(m.to), m.segments, m.duplicates, repeated=True))
                continue
            # Committed: from now on the same text to the same numbers is a duplicate.
            if duplicates is not None and duplicates.record(account.name, interface, m, tags[i], item.now):
                log.error("alarm", alarm="duplicates_memory_full", max_entries=duplicates.max_entries,
                          action="the oldest are forgotten before their window ends: raise "
                                 "filters.duplicates.max_entries (about 150 bytes each) or shorten the window")
            decision = item.review
            # Moved out of quiet hours or a holiday (smsgw.schedule); a held message is placed when approved.
            deferred = item.due_at if item.due_at is not None and item.due_at > max(m.send_at or 0.0, item.now) \
                and not (decision and decision.held) else None
            log.info("message_accepted", message_id=str(item.id), account=account.name, interface=interface,
                     recipients=len(m.to), segments=m.segments, priority=m.priority, ref=m.ref,
                     send_at=m.send_at, deferred_to=deferred, batch=item.batch,
                     review=decision.review if decision else "passed", rule=decision.rule if decision else None,
                     text=m.text)
            out.append(AcceptedMessage(str(item.id), m.ref, len(m.to), m.segments, m.duplicates,
                                       held=bool(decision and decision.held), batch=item.batch))
            if decision is not None and decision.held:
                held = True
                log.info("message_held", message_id=str(item.id), account=account.name, interface=interface,
                         rule=decision.rule, word=decision.word, batch=item.batch, recipients=len(m.to),
                         deadline=decision.deadline, on_expiry=decision.on_expiry)
                continue
            self._wake((link, account.name) for link in set(item.links))
        if held:
            for listener in self.on_held:
                listener()
        stored = sum(len(item.message.to) for item, i in zip(items, ids) if i == item.id)
        self._counts["accepted"] += stored
        # Repeats were counted by reserve but not stored again: they do not use up the limits.
        self.limits.release(account, sum(len(item.message.to) for item in items) - stored, self._clock.seconds())
        return out

    @staticmethod
    def _log_filtered(account: Account, interface: str, problems: Sequence[Problem]) -> None:
        """One line per filter rule that refused part of a request (validation's own refusals are only the
        caller's answer): how many recipients or texts, where the first ten are, the first reason."""
        by_rule: dict[str, list[FilterProblem]] = {}
        for p in problems:
            if isinstance(p, FilterProblem):
                by_rule.setdefault(p.rule, []).append(p)
        for rule, found in by_rule.items():
            log.info("message_filtered", account=account.name, interface=interface, rule=rule, code=found[0].code,
                     count=len(found), where=[p.where for p in found[:10]], reason=found[0].message)

    def _accept_failed(self, failure: Failure, account: Account, recipients: int) -> Failure:
        self.limits.release(account, recipients, self._clock.seconds())
        error = failure.value
        if isinstance(error, StoreUnavailable):
            log.error("alarm", alarm="store_unreachable", action="refusing new messages until it is back",
                      account=account.name, error=str(error))
            return Failure(ServiceUnavailable("the message store is unreachable; nothing was accepted"))
        return failure

    def get_message(self, account: Account, message_id: str) -> defer.Deferred[MessageView | None]:
        if not message_id.isdigit() or len(message_id) > 19:
            return defer.succeed(None)
        d: defer.Deferred[MessageView | None] = self._store.read(Store.message_view, account.name, int(message_id))
        return d

    def list_mo(self, account: Account, cursor: str | None, limit: int) -> defer.Deferred[MoPage]:
        if cursor is not None and (not cursor.isdigit() or len(cursor) > 19):
            return defer.fail(RequestRejected([Problem("cursor", "bad_cursor",
                                                       "cursor must be the next_cursor of an earlier page")]))
        consumers = (account.name, *account.mo_consumers)
        d: defer.Deferred[MoPage] = self._store.read(Store.mo_page, consumers, int(cursor or 0), limit)
        return d

    def status(self) -> defer.Deferred[GatewayStatus]:
        links = tuple({"name": name, "live_connections": link.live_connections,
                       "connections": link.config.connections, "pending": link.pending,
                       "inflight": self._dispatchers[name].inflight if name in self._dispatchers else 0,
                       "state": "up" if link.live_connections else "down"} for name, link in self._links.items())
        d: defer.Deferred[dict[str, int]] = self._store.read(Store.queue_counts)
        return d.addCallback(lambda queues: GatewayStatus(self._node, self.accepting, links, queues, self.rates()))

    def list_templates(self) -> defer.Deferred[list[Template]]:
        return defer.succeed(sorted(self.templates.templates.values(), key=lambda t: t.name))

    def put_template(self, account: Account, name: str, text: str,
                     pre_approved: bool) -> defer.Deferred[tuple[Template, str]]:
        try:
            d = self.templates.put(name, text, pre_approved, account.name)
        except TemplateError as exc:
            where = "name" if check_name(name) else "text"
            return defer.fail(RequestRejected([Problem(where, f"bad_template_{where}", str(exc))]))
        return d.addErrback(self._store_failed)

    def delete_template(self, account: Account, name: str) -> defer.Deferred[bool]:
        return self.templates.delete(name, account.name).addErrback(self._store_failed)

    # --- review queue (smsgw.review; docs/review.md) ---------------------------------

    def review_list(self, query: ReviewQuery, offset: int = 0, limit: int = 50) -> defer.Deferred[ReviewPage]:
        """A page of the messages the query selects, oldest first."""
        d: defer.Deferred[ReviewPage] = self._store.read(Store.review_page, query, offset, limit)
        return d.addErrback(self._store_failed)

    def review_rows(self, query: ReviewQuery, limit: int = 1_000_000) -> defer.Deferred[list[ReviewItem]]:
        """Every message the query selects (at most `limit`), with all its numbers: for exports."""
        d: defer.Deferred[list[ReviewItem]] = self._store.read(Store.review_rows, query, limit)
        return d.addErrback(self._store_failed)

    def review_act(self, reviewer: str, action: str, query: ReviewQuery,
                   comment: str = "") -> defer.Deferred[ReviewResult]:
        """Approve or reject the held messages `query` selects, as `reviewer` (a configured reviewer).

        Fails with RequestRejected when `reviewer` is not configured in review.reviewers or the
        action is unknown. Approved messages are queued at once (or at their send time); rejected
        ones reach their final state `rejected` and their origin is told.
        """
        if action not in ("approve", "reject"):
            return defer.fail(RequestRejected([Problem("action", "bad_action",
                                                       f"unknown review action {action!r}: approve or reject")]))
        if reviewer not in self.reviewers:
            known = ", ".join(sorted(self.reviewers)) or "none are configured"
            return defer.fail(RequestRejected([Problem("reviewer", "unknown_reviewer", (
                f"{reviewer!r} is not a reviewer: review.reviewers in the configuration names them ({known})"))]))
        return self._act(ReviewAction(action, query, reviewer, comment, self._clock.seconds(), self.due))

    def cancel(self, account: Account, query: ReviewQuery, comment: str = "") -> defer.Deferred[ReviewResult]:
        """Cancel the account's own messages the query selects, as far as they have not gone out yet.

        Held and queued recipients reach the final state `cancelled` (the origin is told); recipients
        already handed to a carrier link go on.
        """
        own = replace(query, account=account.name, review=query.review or Review.ALL)
        return self._act(ReviewAction("cancel", own, account.name, comment, self._clock.seconds(),
                                      audit_action="message_cancel"))

    def _act(self, action: ReviewAction) -> defer.Deferred[ReviewResult]:
        d: defer.Deferred[ReviewResult] = self._store.write("review", action)

        def done(result: ReviewResult) -> ReviewResult:
            log.info(f"review_{action.action}" if action.action != "cancel" else "messages_cancelled",
                     actor=action.actor, messages=len(result.messages), recipients=result.recipients,
                     comment=action.comment or None, filter=action.query.described() or None)
            self._wake(result.wake)
            return result
        return d.addCallbacks(done, self._store_failed)

    def _wake(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Tell each (link, account)'s dispatcher that the account has work queued."""
        for link, account in pairs:
            dispatcher = self._dispatchers.get(link)
            if dispatcher is not None:
                dispatcher.wake(account)

    def _expire_reviews(self, now: float) -> None:
        d = self._store.write("review_expire", ExpiryArgs(now, self.due))

        def done(result: ExpiryResult) -> None:
            for outcome in (result.approved, result.rejected):
                if outcome is not None and outcome.messages:
                    log.warning("review_expired", outcome=outcome.action, messages=len(outcome.messages),
                                recipients=outcome.recipients,
                                message_ids=[str(i) for i in outcome.messages[:20]])
                    self._wake(outcome.wake)
            for message_id, account, rule in result.alarmed:
                log.error("alarm", alarm="review_overdue", message_id=str(message_id), account=account, rule=rule,
                          action="still waiting for a reviewer: approve or reject it (smsgw review list)")
        d.addCallbacks(done, lambda f: log.error("alarm", alarm="review_expiry_failed", error=f.getErrorMessage()))

    @staticmethod
    def _store_failed(failure: Failure) -> Failure:
        if failure.check(StoreUnavailable):
            return Failure(ServiceUnavailable(f"the store is unreachable: {failure.value}"))
        return failure

    def rates(self) -> dict[str, float]:
        now = self._clock.seconds()
        current = self.counters()
        window = [(t, c) for t, c in self._samples if now - t <= 60.0]
        if not window:
            return {key: 0.0 for key in current}
        t0, c0 = window[0]
        span = max(now - t0, 1e-6)
        return {key: round((current[key] - c0.get(key, 0)) / span, 1) for key in current}

    def counters(self) -> dict[str, int]:
        out = dict(self._counts)
        out["submitted"] = sum(d.submitted for d in self._dispatchers.values())
        out["failed"] = sum(d.failed for d in self._dispatchers.values())
        return out

    # --- from the links -------------------------------------------------------------

    def on_report(self, report: LinkReport) -> defer.Deferred[ReportOutcome]:
        """Commit a status report; the link acknowledges the DELIVER once this fires."""
        args = ReportArgs(report.link, msg_id_to_text(report.msg_id), report.stat, report.dest, report.submit_time, report.done_time, self._clock.seconds())
        d: defer.Deferred[ReportOutcome] = self._store.write("report", args)

        def logged(outcome: ReportOutcome) -> ReportOutcome:
            self._counts["reported"] += 1
            log.info("report_received", link=args.link, msg_id=args.msg_id, stat=args.stat,
                     matched=outcome.matched, message_id=_text(outcome.message_id), to=outcome.phone or args.dest)
            if outcome.final_state is not None:
                log.info("recipient_final", message_id=_text(outcome.message_id), to=outcome.phone,
                         state=outcome.final_state, stat=args.stat)
            return outcome
        return d.addCallback(logged)

    def on_mo(self, mo: MoMessage) -> defer.Deferred[int]:
        """Route and commit an uplink message; acknowledged once committed; auto-reply if configured."""
        link = self._links.get(mo.link)
        service_code = link.config.service_code if link is not None else ""
        ext = mo.dest_id[len(service_code):] if service_code and mo.dest_id.startswith(service_code) else ""
        keyword = mo.text.strip().split(maxsplit=1)[0].upper()[:32] if mo.text.strip() else None
        consumer = route_mo(self._mo_rules, self._mo_default, ext, keyword)
        args = MoArgs(mo.link, mo.src, mo.dest_id, ext, mo.text, mo.service_id, keyword, consumer,
                      mo.parts, mo.complete, self._clock.seconds(), mo.part_set or None,
                      notify=self._mo_sinks.get(consumer) if consumer is not None else None)
        d: defer.Deferred[int] = self._store.write("mo", args)

        def stored(mo_id: int) -> int:
            log.info("mo_received", mo_id=str(mo_id), link=mo.link, src=mo.src, dest=mo.dest_id, ext=ext,
                     keyword=keyword, consumer=consumer, parts=mo.parts, complete=mo.complete, text=mo.text)
            if keyword is not None and keyword in self._auto:
                self._auto_reply(self._auto[keyword], mo, ext)
            return mo_id
        return d.addCallback(stored)

    def on_mo_part(self, part: MoPart) -> defer.Deferred[int]:
        """Keep one part of a long MO durable until its set is whole (acknowledged once committed)."""
        return self._store.write("mo_part", MoPartArgs(part.link, part.part_set, part.info.number, part.payload,
                                                       part.msg_fmt, part.received_at))

    def _auto_reply(self, rule: AutoReplyRule, mo: MoMessage, ext: str) -> None:
        request = SendRequest(to=(mo.src,), text=rule.text, priority=PRIORITY_NORMAL,
                              ext=rule.ext if rule.ext is not None else ext)
        d = self.accept(AUTO_REPLY_ACCOUNT, "auto_reply", [request])

        def failed(f: Failure) -> None:
            if f.check(RequestRejected):  # a filter (e.g. the number opted out): no reply, as meant
                log.info("auto_reply_refused", to=mo.src, keyword=rule.keyword, reason=f.getErrorMessage())
            else:
                log.error("auto_reply_failed", to=mo.src, keyword=rule.keyword, error=f.getErrorMessage())
        d.addErrback(failed)

    # --- periodic sweep ----------------------------------------------------------------

    def _sweep(self) -> None:
        self._sweeper = None
        if self._sweeping:
            return
        now = self._clock.seconds()
        self._samples.append((now, self.counters()))
        t = self._timing
        args = SweepArgs(now, self._store.owner, now + t.lease_seconds, now - t.report_timeout,
                         now - t.orphan_keep, outbox_done_before=now - t.outbox_keep)
        self._sweeping = True
        self._expire_reviews(now)
        d = self._store.write("sweep", args)
        d.addCallbacks(self._swept, self._sweep_failed)

    def _swept(self, result: SweepResult) -> None:
        self._sweeping = False
        for rid in result.expired:
            log.warning("recipient_expired", recipient_id=str(rid),
                        reason=f"no status report within {self._timing.report_timeout:g}s")
        for link, msg_id, stat in result.orphans:
            log.warning("report_orphaned", link=link, msg_id=msg_id, stat=stat,
                        reason=f"matched no submitted segment within {self._timing.orphan_keep:g}s")
        if result.requeued:
            log.warning("leases_expired", count=result.requeued, reason="another node stopped renewing them")
        self._discover_origins()
        self._schedule_sweep()

    def _sweep_failed(self, failure: Failure) -> None:
        self._sweeping = False
        log.error("alarm", alarm="sweep_failed", error=failure.getErrorMessage())
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        if self.accepting:
            self._sweeper = self._clock.callLater(self._timing.sweep_interval, self._sweep)


def route_mo(rules: Sequence[MoRule], default: str | None, ext: str, keyword: str | None) -> str | None:
    """The first rule whose ext (prefix) and keyword both match names the consumer."""
    for rule in rules:
        if rule.ext is not None and not ext.startswith(rule.ext):
            continue
        if rule.keyword is not None and (keyword is None or keyword != rule.keyword.upper()):
            continue
        return rule.consumer
    return default


def _tag(message: PreparedMessage, source: tuple[str, str] | None) -> object | None:
    """What makes a message an idempotent repeat (the legacy row, or the caller's ref): not a duplicate."""
    if source is not None:
        return ("row", *source)
    return ("ref", message.ref) if message.ref is not None else None


def _tags(prepared: Sequence[PreparedMessage], sources: Sequence[tuple[str, str]] | None) -> list[object | None]:
    return [_tag(m, sources[i] if sources is not None else None) for i, m in enumerate(prepared)]


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)

