"""The daemon's service tree, built from one Config (STYLE.md §6).

Start order: store → embedded simulator (if configured) → carrier links →
gateway (requeues this node's unfinished work, starts the dispatchers) →
outbox worker (write-backs, callbacks) → adapters (legacy database pollers)
→ REST API → READY=1 to systemd.

Stop order (SIGTERM) is the reverse, one step after another: the API stops
listening and the adapters stop taking rows (nothing new is accepted), the
outbox worker records what it was delivering, the dispatchers stop claiming and wait
up to `shutdown.drain_timeout` for the answers to what they sent, the links
close with TERMINATE, and the store commits what is queued and stops.
Anything still unanswered stays leased to this node and is resent when it
starts again (at-least-once).
"""

from __future__ import annotations

from typing import Any

import structlog
from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure

from smsgw import sdnotify
from smsgw._listen import listen_http
from smsgw.adapter import AdapterContext, AdapterService, load_factories
from smsgw.api import make_api
from smsgw.auth import Authenticator
from smsgw.callbacks import CallbackSettings, HttpCallbacks
from smsgw.carrier import CarrierLink, LinkReport, MoMessage, MoPart
from smsgw.config import Config
from smsgw.dispatch import Dispatcher
from smsgw.filter_reload import FilterReloader
from smsgw.limits import Limits
from smsgw.outbox import OutboxWorker
from smsgw.pipeline import DLR_URL_KIND, AutoReplyRule, Gateway, MoRule, Timing
from smsgw.review_notice import ReviewNotifier, notice_settings
from smsgw.simulator import IsmgSimulator
from smsgw.store import Store

log = structlog.get_logger("smsgw.app")


class Daemon(Service):
    """Everything one `smsgw run` keeps alive."""

    name = "smsgw"

    def __init__(self, config: Config, reactor: Any, *, notifier: sdnotify.Notifier | None = None) -> None:
        self.config = config
        self._reactor = reactor
        self._notifier = notifier or sdnotify.Notifier(None)
        self._accounts = config.account_objects()
        self.store = Store(config.store_url(), reactor, node_id=config.node.id, owner=config.node.name,
                           batch_max=config.store.batch_max, readers=config.store.readers,
                           busy_timeout=config.store.busy_timeout, quiet_submits=self._quiet_submits(config),
                           writer=config.store.writer)
        self.simulator: IsmgSimulator | None = None
        if config.simulator.enabled:
            self.simulator = IsmgSimulator(config.simulator_config(), reactor,
                                           listen=(config.simulator.host, config.simulator.port))
        self.links: dict[str, CarrierLink] = {}
        for link_config in config.link_configs():
            self.links[link_config.name] = CarrierLink(link_config, reactor, on_report=self._on_report,
                                                       on_mo=self._on_mo, on_mo_part=self._on_mo_part)
        d = config.dispatch
        self.window = config.schedule.window()  # quiet hours and holidays (smsgw.schedule)
        self.dispatchers = {
            name: Dispatcher(link, self.store, reactor, claim_batch=d.claim_batch, max_attempts=d.max_attempts,
                             retry_initial=d.retry_initial, retry_max=d.retry_max,
                             lease_seconds=config.store.lease_seconds, window=self.window)
            for name, link in self.links.items()}
        validator = config.validator()  # with the filters: reads their list files
        router = config.router()
        # One authenticator for every interface: one cache of verified secrets, one brute-force guard.
        self.authenticator = Authenticator(self._accounts, reactor, max_failures=config.auth.max_failures,
                                           failure_window=config.auth.failure_window,
                                           cache_ttl=config.auth.cache_ttl)
        self.gateway = Gateway(
            self.store, validator, router, self.links, self.dispatchers, reactor, node=config.node.name,
            mo_rules=[MoRule(r.consumer, r.ext, r.keyword) for r in config.mo.routes],
            mo_default=config.mo.default_consumer,
            auto_replies=[AutoReplyRule(r.keyword, r.text, r.ext) for r in config.mo.auto_replies],
            timing=Timing(d.report_timeout, d.orphan_keep, d.sweep_interval, config.store.lease_seconds),
            mo_sinks=self._mo_sinks(config),
            notify={a.name: kind for a in config.accounts if (kind := a.callback_kind()) and a.callbacks
                    and a.callbacks.dlr_url},
            limits=Limits(tuple(a.name for a in config.accounts if a.daily_quota is not None)),
            review=config.review.policy(), reviewers=[r.name for r in config.review.reviewers],
            due=None if self.window.empty else self.window.due)
        notices = notice_settings(config)
        self.review_notices = ReviewNotifier(self.gateway, reactor, notices) if notices is not None else None
        # The filters' list files are read again when they change (and on SIGHUP).
        self.filter_reloader: FilterReloader | None = None
        if validator.filters is not None and validator.filters.files():
            self.filter_reloader = FilterReloader(validator.filters, reactor, config.filters.reload_interval)
        # Notifications a receiver refused back off like refused submits (dispatch.retry_*).
        self.outbox = OutboxWorker(self.store, reactor, owner=config.node.name,
                                   lease_seconds=config.store.lease_seconds, retry_initial=d.retry_initial,
                                   retry_max=d.retry_max)
        self.callbacks: list[HttpCallbacks] = []
        for a in config.accounts:
            if a.callbacks is None:
                continue
            cb = a.callbacks
            handler = HttpCallbacks(CallbackSettings(
                a.name, cb.dlr_url, cb.mo_url, cb.format, cb.secret.get_secret_value() if cb.secret else None,
                cb.timeout, cb.submitted), self.store, reactor)
            self.outbox.add(f"http:{a.name}", handler, retry_for=cb.retry_for)
            self.callbacks.append(handler)
        # Messages that name their own report URL (Kannel's dlr-url): Kannel-style GETs, as their mask asks.
        per_message = HttpCallbacks(CallbackSettings(DLR_URL_KIND, None, None, "kannel", None, 10.0, True,
                                                     per_message=True), self.store, reactor)
        self.outbox.add(DLR_URL_KIND, per_message, retry_for=21_600.0)
        self.callbacks.append(per_message)
        context = AdapterContext(config, self.gateway, self.store, self.outbox, validator,
                                 {a.name: a for a in self._accounts}, reactor,
                                 authenticator=self.authenticator)
        self.adapters: list[AdapterService] = [
            service for _, factory in load_factories() for service in factory(context)]
        served = {a.name for a in self.adapters}
        missing = [s.name for s in config.db_sources if f"db:{s.name}" not in served]
        if missing:  # never leave configured sources silently unpolled
            raise RuntimeError(f"db_sources {', '.join(missing)} are configured but no adapter serves them: "
                               "the entry point 'db' of group smsgw.adapters is missing (reinstall smsgw)")
        self.api_port: IListeningPort | None = None
        self._watchdog: sdnotify.WatchdogService | None = None

    @staticmethod
    def _quiet_submits(config: Config) -> frozenset[str]:
        """Outbox kinds that do nothing when a recipient is submitted: callbacks without `submitted`, and
        db sources whose mapping has no submitted write-back (the standard tables have one)."""
        return frozenset([*(f"http:{a.name}" for a in config.accounts if a.callbacks is not None
                            and not a.callbacks.submitted),
                          *(s.interface() for s in config.db_sources if s.mapping is not None
                            and s.mapping.submitted is None)])

    @staticmethod
    def _mo_sinks(config: Config) -> dict[str, str]:
        """MO consumer -> the outbox kind that delivers its messages: an account's mo_url, a db source's inbox."""
        sinks: dict[str, str] = {}
        for a in config.accounts:
            if a.callbacks is not None and a.callbacks.mo_url:
                for consumer in (a.name, *a.mo_consumers):
                    sinks.setdefault(consumer, f"http:{a.name}")
        sinks.update({s.name: s.interface() for s in config.db_sources if s.inbox or s.mo_inbox})
        return sinks

    # --- callbacks the links hold (bound late: the gateway owns the logic) -----------

    def _on_report(self, report: LinkReport) -> Any:
        return self.gateway.on_report(report)

    def _on_mo(self, mo: MoMessage) -> Any:
        return self.gateway.on_mo(mo)

    def _on_mo_part(self, part: MoPart) -> Any:
        return self.gateway.on_mo_part(part)

    def _restore_mo_parts(self, kept: list[tuple[str, str, int, bytes, int, float]]) -> None:
        """Long MO parts committed before a restart go back into their link's reassembler."""
        for row in kept:
            part = MoPart.kept(*row)
            link = self.links.get(part.link)
            if link is None:
                log.warning("mo_part_orphaned", link=part.link, part_set=part.part_set,
                            reason="link no longer configured")
                continue
            link.restore_mo_part(part)
        if kept:
            log.info("mo_parts_restored", parts=len(kept))

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Start everything; fails (the caller then stops what did start) if a part cannot start."""
        d: defer.Deferred[None] = self._start()
        return d.addErrback(self._start_failed)

    def _start_failed(self, failure: Failure) -> Failure:
        log.error("daemon_start_failed", error=failure.getErrorMessage())
        return failure

    @defer.inlineCallbacks
    def _start(self) -> Any:
        Service.startService(self)
        self.store.start()
        self._restore_mo_parts((yield self.store.read(Store.mo_parts_kept)))
        if self.simulator is not None:
            self.simulator.startService()
        for link in self.links.values():
            link.startService()
        yield self.gateway.start()
        if self.filter_reloader is not None:
            self.filter_reloader.startService()
        if self.review_notices is not None:
            self.review_notices.start()  # announces what is already waiting; failures are logged, not fatal
        self.outbox.start()
        for adapter in self.adapters:
            adapter.startService()
        api = self.config.api
        if api.enabled:
            site = make_api(self.gateway, self._accounts, max_body_bytes=api.max_body_bytes,
                            max_batch=api.max_batch, request_timeout=api.request_timeout, clock=self._reactor,
                            authenticator=self.authenticator,
                            reviewers={r.name: r.accounts for r in self.config.review.reviewers})
            self.api_port = listen_http(self._reactor, api.port, site, interface=api.listen,
                                        tls=api.tls.files() if api.tls is not None else None)
        interval = sdnotify.watchdog_interval()
        if interval is not None and self._notifier.enabled:
            self._watchdog = sdnotify.WatchdogService(self._notifier, self._reactor, interval, self.healthy)
            self._watchdog.startService()
        self._notifier.notify(ready=True, status=self._status_line())
        log.info("daemon_started", node=self.config.node.name, store=self.config.store_url(hide_password=True),
                 links=list(self.links), api=self.api_address(), simulator=self.simulator is not None,
                 adapters=[a.name for a in self.adapters])

    def startService(self) -> None:
        self.start()

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        if not self.running:
            return
        Service.stopService(self)
        self._notifier.notify(stopping=True, status="draining")
        log.info("daemon_stopping", drain_timeout=self.config.shutdown.drain_timeout)
        self.gateway.stop_accepting()
        if self.review_notices is not None:
            self.review_notices.stop()
        if self.api_port is not None:
            yield self.api_port.stopListening()
        yield defer.DeferredList([a.stop_polling() for a in self.adapters], consumeErrors=True)
        if self.filter_reloader is not None:
            yield self.filter_reloader.stopService()
        yield self.outbox.stop()
        budget = self.config.shutdown.drain_timeout
        started = self._reactor.seconds()
        drained = self.gateway.stop()
        drained.addTimeout(budget, self._reactor)
        try:
            yield drained
        except defer.TimeoutError:
            left = sum(d.inflight for d in self.dispatchers.values())
            log.warning("drain_timeout", inflight=left,
                        action="left leased to this node: resent when it starts again")
        # The links get what is left of the budget (at least 2 s): TERMINATE, then abort.
        left = max(2.0, budget - (self._reactor.seconds() - started))
        yield defer.DeferredList([link.stop(left) for link in self.links.values()])
        yield defer.DeferredList([defer.maybeDeferred(a.stopService) for a in self.adapters], consumeErrors=True)
        yield defer.DeferredList([c.close() for c in self.callbacks], consumeErrors=True)
        if self.simulator is not None:
            yield defer.maybeDeferred(self.simulator.stopService)
        if self._watchdog is not None:
            self._watchdog.stopService()
        yield threads.deferToThread(self.store.stop)
        log.info("daemon_stopped")

    def reload_filters(self) -> None:
        """Read the filters' list files again now (SIGHUP; they are also read whenever they change)."""
        if self.filter_reloader is not None:
            self.filter_reloader.reload()

    def healthy(self) -> bool:
        """For the systemd watchdog: the store's writer thread is alive."""
        return self.store.writer.alive()

    def api_address(self) -> str | None:
        if self.api_port is None:
            return None
        host = self.api_port.getHost()
        return f"{host.host}:{host.port}"  # type: ignore[attr-defined]

    def _status_line(self) -> str:
        return f"{len(self.links)} link(s); api {self.api_address() or 'off'}"
