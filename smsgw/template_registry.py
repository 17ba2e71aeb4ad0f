"""The gateway's templates: the store's ``templates`` table, kept in memory for rendering.

Rendering happens on every accept, so the registry holds every template in a
dict (the `Validator` reads it directly). Changes go through the store's writer
(one transaction with their audit row) and take effect here once committed.
Several daemons sharing one store see each other's changes within
`refresh_interval` seconds (each reloads the table on that period).
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import Connection, select
from twisted.internet import defer, task
from twisted.python.failure import Failure

from smsgw.store import Store, schema
from smsgw.store._ops import TemplateChange
from smsgw.templates import Template, TemplateError

__all__ = ["TemplateRegistry"]

log = structlog.get_logger("smsgw.templates")


class TemplateRegistry:
    """Every template by name; `templates` is the live mapping the validator renders from."""

    def __init__(self, store: Store, clock: Any, refresh_interval: float = 30.0) -> None:
        self._store = store
        self._clock = clock
        self._interval = refresh_interval
        self.templates: dict[str, Template] = {}
        self._loop: task.LoopingCall | None = None

    def start(self) -> defer.Deferred[None]:
        """Load the table; then reload it every `refresh_interval` seconds."""
        d = self.reload()
        self._loop = task.LoopingCall(self._refresh)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False)
        return d

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def reload(self) -> defer.Deferred[None]:
        return self._store.read(_load).addCallback(self._loaded)

    def _refresh(self) -> defer.Deferred[None]:
        def failed(failure: Failure) -> None:
            log.warning("templates_reload_failed", error=str(failure.value),
                        action="the templates loaded before stay in use")
        return self.reload().addErrback(failed)

    def _loaded(self, found: dict[str, Template]) -> None:
        # Update in place: the validator holds this very dict.
        for name in [n for n in self.templates if n not in found]:
            del self.templates[name]
        self.templates.update(found)

    def get(self, name: str) -> Template | None:
        return self.templates.get(name)

    def put(self, name: str, text: str, pre_approved: bool, actor: str) -> defer.Deferred[tuple[Template, str]]:
        """Add or change a template; fires with it and "added" or "changed" once committed.

        Raises:
            TemplateError: a bad name or text (nothing is stored).
        """
        now = self._clock.seconds()
        template = Template.create(name, text, pre_approved, now, actor)
        d = self._store.write("template", TemplateChange(name, text, template.pre_approved, actor, now))

        def stored(outcome: str) -> tuple[Template, str]:
            self.templates[name] = template
            log.info("template_" + outcome, template=name, actor=actor, params=list(template.params),
                     pre_approved=template.pre_approved)
            return template, outcome
        return d.addCallback(stored)

    def delete(self, name: str, actor: str) -> defer.Deferred[bool]:
        """Delete a template; fires True once committed, False when there was none."""
        d = self._store.write("template", TemplateChange(name, None, False, actor, self._clock.seconds()))

        def deleted(outcome: str) -> bool:
            self.templates.pop(name, None)
            if outcome == "deleted":
                log.info("template_deleted", template=name, actor=actor)
            return outcome == "deleted"
        return d.addCallback(deleted)


def _load(conn: Connection) -> dict[str, Template]:
    out = {}
    for row in conn.execute(select(schema.templates)):
        try:
            out[row.name] = Template.create(row.name, row.content, bool(row.pre_approved), row.updated_at,
                                            row.updated_by)
        except TemplateError as exc:  # edited by hand into something unusable: say so, keep the rest
            log.error("template_unusable", template=row.name, error=str(exc),
                      action="fix it with `smsgw template change`; messages naming it are refused meanwhile")
    return out
