"""Reading the filters' list files again when they change, without a restart (docs/filters.md).

Every `filters.reload_interval` seconds (and at once on SIGHUP, `FilterReloader.reload`)
each blacklist file and sensitive-word file is looked at on a thread: a file whose
modification time, size or inode changed is read and parsed there, and the new list
replaces the old on the reactor thread (one `filter_reloaded` line with its size).

A file that is missing, unreadable or has a bad line leaves the list loaded before in
use, with one alarm line naming the file and the line; nothing else is logged for it
until it changes again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from twisted.application.service import Service
from twisted.internet import defer, threads

from smsgw.adapter import Poller
from smsgw.filters import Filters, ListFileError, Signature, read_numbers, read_words, signature

__all__ = ["FilterReloader"]

log = structlog.get_logger("smsgw.filters")


@dataclass(frozen=True, slots=True)
class _Read:
    """What one look at a file found: new contents (`entries`), or why it is not usable (`error`)."""

    kind: str  # blacklist, sensitive_words
    name: str
    path: str
    signature: Signature | None
    entries: tuple[Any, ...] = ()
    error: ListFileError | None = None


class FilterReloader(Poller):
    """Watches the list files of `filters` and swaps in what changed."""

    name = "filter-reloader"

    def __init__(self, filters: Filters, reactor: Any, interval: float) -> None:
        super().__init__(reactor)
        self._filters = filters
        self._interval = interval
        self._failed: dict[str, Signature | None] = {}  # path -> the state an alarm was logged for
        self._forced = False

    def startService(self) -> None:
        Service.startService(self)
        self._schedule(self._interval)

    def stopService(self) -> defer.Deferred[None]:
        d = self.stop_polling()
        Service.stopService(self)
        return d

    def reload(self) -> None:
        """Read every file again now, changed or not (SIGHUP); on the reactor thread."""
        self._forced = True
        if self.running and self._round is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._tick()

    def _poll(self) -> defer.Deferred[Any]:
        forced, self._forced = self._forced, False
        files = self._filters.files()
        known = dict(self._filters.signatures)
        d: defer.Deferred[list[_Read]] = threads.deferToThreadPool(
            self._clock, self._clock.getThreadPool(), self._look, files, known, dict(self._failed), forced)
        d.addCallback(self._apply)
        d.addErrback(lambda f: log.error("alarm", alarm="filter_reload_failed", error=f.getErrorMessage()))
        d.addBoth(lambda _: self._schedule(self._interval))
        return d

    @staticmethod
    def _look(files: list[tuple[str, str, str]], known: dict[str, Signature], failed: dict[str, Signature | None],
              forced: bool) -> list[_Read]:
        """On a thread: read the files that changed (all of them when `forced`)."""
        out = []
        for kind, name, path in files:
            try:
                sig: Signature | None = signature(path)
            except OSError as exc:
                if path not in failed or failed[path] is not None:
                    out.append(_Read(kind, name, path, None,
                                     error=ListFileError(path, 0, f"cannot be read: {exc.strerror or exc}")))
                continue
            if not forced and (known.get(path) == sig or (path in failed and failed[path] == sig)):
                continue
            try:
                if kind == "blacklist":
                    numbers, prefixes, sig = read_numbers(path)
                    out.append(_Read(kind, name, path, sig, (numbers, prefixes)))
                else:
                    words, sig = read_words(path)
                    out.append(_Read(kind, name, path, sig, (words,)))
            except ListFileError as exc:
                out.append(_Read(kind, name, path, sig, error=exc))
        return out

    def _apply(self, found: list[_Read]) -> None:
        """On the reactor thread: swap in the new lists, log the broken files."""
        for read in found:
            if read.error is not None:
                self._failed[read.path] = read.signature
                log.error("alarm", alarm="filter_file_unusable", filter=read.kind, name=read.name, file=read.path,
                          line=read.error.line or None, error=read.error.what,
                          action="the list loaded before stays in use: correct the file (it is read again once it "
                                 "changes)")
                continue
            self._failed.pop(read.path, None)
            assert read.signature is not None
            self._filters.signatures[read.path] = read.signature
            if read.kind == "blacklist":
                numbers, prefixes = read.entries
                blacklist = self._filters.replace_blacklist(read.name, numbers, prefixes)
                log.info("filter_reloaded", filter="blacklist", name=read.name, file=read.path,
                         numbers=len(blacklist.numbers), prefixes=len(blacklist.prefixes))
            else:
                (words,) = read.entries
                rule = self._filters.replace_words(read.name, words)
                log.info("filter_reloaded", filter="sensitive_words", name=read.name, file=read.path,
                         words=len(rule.words))
