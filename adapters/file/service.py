"""Watched folders: files dropped into a folder are imported once they stop changing (docs/file-import.md).

One `FileInbox` per ``file_import.inboxes`` entry. Each poll (polls never overlap, and every
file-system call runs on a thread, never on the reactor):

1. List the folder: regular files, except dotfiles, ``*.tmp``, ``*.part``, Excel's ``~$`` lock
   files and result files.
2. A file whose size and mtime are what the previous poll saw is complete (stable); stable
   files are taken one at a time, oldest first.
3. Read and plan it on a thread (`smsgw.adapters.file.build_plan`), then accept its messages
   through the gateway (interface ``file``) in batches, on the reactor.
4. Write ``<file>.result.csv`` into the folder the file goes to, then move the file there:
   ``done/``, or ``failed/`` when it cannot be read, nothing in it is valid or the gateway
   refused it as a whole.

Crash safety: every message carries a stable ref (``imp-<file's sha256>-<row>``), so a file
taken again after a crash, or after a stop half-way through, is answered with the stored
messages for what was accepted before and only the rest is sent: nothing twice. The file is
moved only after its result file is written; a stop in between means it is taken again.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import structlog
from twisted.application.service import Service
from twisted.internet import defer, task, threads
from twisted.python.failure import Failure

from smsgw._config_file import FileInboxConfig
from smsgw.adapter import Poller
from smsgw.adapters.file._plan import ImportOptions, Plan, build_plan, chunks
from smsgw.adapters.file._read import FileImportError
from smsgw.adapters.file._report import ImportAborted, Outcomes, failure_csv, result_csv
from smsgw.model import Account, LimitExceeded, RequestRejected, ServiceUnavailable
from smsgw.validation import Validator

__all__ = ["INTERFACE", "MAX_FILE_BYTES", "FileInbox", "InboxUnusable", "scan"]

log = structlog.get_logger("smsgw.adapters.file")

INTERFACE = "file"  # what accounts list in `interfaces`, and what the gateway records
MAX_FILE_BYTES = 200 * 1024 * 1024
_SKIPPED_ENDINGS = (".tmp", ".part", ".crdownload", ".swp", ".result.csv")


class InboxUnusable(Exception):
    """The watched folder (or its done/failed folder) cannot be used; `action` says what to do."""

    def __init__(self, what: str, action: str) -> None:
        super().__init__(what)
        self.action = action


def _candidate(name: str) -> bool:
    """Whether a name in the folder is a file to import (not hidden, partial, a lock file or a result)."""
    return not name.startswith((".", "~$")) and not name.lower().endswith(_SKIPPED_ENDINGS)


def scan(cfg: FileInboxConfig) -> dict[str, tuple[int, int]]:
    """The files waiting in the folder: name -> (size, mtime in ns). Creates done/ and failed/ if missing.

    Raises:
        InboxUnusable: the folder is missing or not a folder, or a folder is not writable.
    """
    path = cfg.path()
    if not os.path.isdir(path):
        raise InboxUnusable(f"{path} does not exist or is not a folder",
                            "create it (writable by the daemon's user), or fix file_import.inboxes[].dir")
    for folder in (cfg.done_path(), cfg.failed_path()):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise InboxUnusable(f"cannot create {folder}: {exc.strerror}",
                                "create it writable by the daemon's user, or set done_dir / failed_dir") from None
    for folder in (path, cfg.done_path(), cfg.failed_path()):
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            raise InboxUnusable(f"{folder} is not readable and writable by the daemon's user",
                                f"give the daemon's user read and write permission on {folder}")
    found: dict[str, tuple[int, int]] = {}
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if _candidate(entry.name) and entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    found[entry.name] = (st.st_size, st.st_mtime_ns)
    except OSError as exc:
        raise InboxUnusable(f"cannot list {path}: {exc.strerror}", "check the folder's permissions") from None
    return found


def _load(path: str, options: ImportOptions, validator: Validator, account: Account, now: float) -> Plan:
    """Read and plan one file (on a thread)."""
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise FileImportError(f"is {size // 2**20} MiB, more than the {MAX_FILE_BYTES // 2**20} MiB allowed: "
                              "split it into several files")
    with open(path, "rb") as fh:
        data = fh.read()
    return build_plan(os.path.basename(path), data, options, validator, account, now)


def _finish(path: str, folder: str, result: bytes) -> str:
    """Write the result file into `folder`, then move the file there (on a thread); its new path.

    A file of the same name already there (the same name dropped twice) gets "-2", "-3", ...
    before its extension; a result file without its input (a stop between the two steps) is
    overwritten.
    """
    name = os.path.basename(path)
    stem, ext = os.path.splitext(name)
    target, n = os.path.join(folder, name), 1
    while os.path.lexists(target):
        n += 1
        target = os.path.join(folder, f"{stem}-{n}{ext}")
    result_path = f"{target}.result.csv"
    with open(result_path + ".tmp", "wb") as fh:
        fh.write(result)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(result_path + ".tmp", result_path)
    shutil.move(path, target)
    return target


class FileInbox(Poller):
    """Imports the files dropped into one folder, as one account.

    `stop_polling` fires once the batch under way is answered: a round checks `running` between
    files and between batches, and the rest of the file stays for next time.
    """

    def __init__(self, cfg: FileInboxConfig, gateway: Any, validator: Validator, account: Account, reactor: Any,
                 *, batch: int = 1000) -> None:
        super().__init__(reactor)
        self.cfg = cfg
        self.name: str = f"file:{cfg.path()}"
        self._gateway = gateway
        self._validator = validator
        self._account = account
        self._reactor = reactor
        self._batch = batch
        self._seen: dict[str, tuple[int, int]] = {}
        self._stuck: dict[str, tuple[int, int]] = {}  # files that could not be moved: left until they change
        self._held: dict[str, float] = {}  # files stopped by the daily quota: not taken before this time
        self._last_error: str | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        log.info("file_inbox_started", dir=self.cfg.path(), account=self._account.name,
                 poll_interval=self.cfg.poll_interval, done=self.cfg.done_path(), failed=self.cfg.failed_path())
        self._schedule(0.0)

    def stopService(self) -> defer.Deferred[None]:
        d = self.stop_polling()

        def stopped(_: object) -> None:
            Service.stopService(self)
        return d.addBoth(stopped)

    # --- polling ---------------------------------------------------------------------------

    def _poll(self) -> defer.Deferred[None] | None:
        if not self._gateway.accepting:
            self._schedule(self.cfg.poll_interval)
            return None
        d = defer.ensureDeferred(self._poll_once())
        d.addErrback(self._poll_failed)
        return d.addBoth(self._polled)

    def _polled(self, _: object) -> None:
        self._schedule(self.cfg.poll_interval)

    def _poll_failed(self, failure: Failure) -> None:
        log.error("alarm", alarm="file_import_failed", dir=self.cfg.path(), error=failure.getErrorMessage(),
                  error_type=failure.type.__name__ if failure.type else None,
                  action="the file stays in the folder and is taken again at the next poll")

    async def _poll_once(self) -> None:
        try:
            found = await self._in_thread(scan, self.cfg)
        except InboxUnusable as exc:
            if str(exc) != self._last_error:
                log.error("alarm", alarm="file_inbox_unusable", dir=self.cfg.path(), error=str(exc),
                          action=exc.action)
            self._last_error = str(exc)
            return
        if self._last_error is not None:
            log.info("file_inbox_recovered", dir=self.cfg.path(), after=self._last_error)
            self._last_error = None
        now = self._reactor.seconds()
        stable = sorted((state[1], name) for name, state in found.items()
                        if self._seen.get(name) == state and self._stuck.get(name) != state
                        and self._held.get(name, 0.0) <= now)
        self._seen = found
        for _, name in stable:
            if not self.running:
                return
            try:
                await self._import(name)
            except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the folder
                self._stuck[name] = found[name]
                log.error("alarm", alarm="file_import_failed", dir=self.cfg.path(), file=name,
                          error=f"{type(exc).__name__}: {exc}", exc_info=True,
                          action="the file stays in the folder and is taken again once it changes (or at the "
                                 "next start); rows already accepted are not sent twice")

    def _in_thread(self, f: Any, *args: Any) -> defer.Deferred[Any]:
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)

    # --- one file --------------------------------------------------------------------------

    def _options(self) -> ImportOptions:
        cfg = self.cfg
        template = None
        if cfg.template is not None:
            template = self._validator.templates.get(cfg.template)  # the gateway's live registry
            if template is None:
                raise FileImportError(f"cannot be imported: template {cfg.template!r} is not defined on this "
                                      "gateway; define it, or fix file_import.inboxes[].template")
        return ImportOptions(cfg.text, template, cfg.priority, None, cfg.report)

    async def _import(self, name: str) -> None:
        path = os.path.join(self.cfg.path(), name)
        started = self._reactor.seconds()
        try:
            plan: Plan = await self._in_thread(_load, path, self._options(), self._validator, self._account,
                                               started)
        except FileImportError as exc:
            await self._move(name, self.cfg.failed_path(), failure_csv(f"{name} {exc}"), started, reason=str(exc))
            return
        except OSError as exc:  # gone or unreadable since the scan: looked at again next time
            log.warning("file_import_unreadable", dir=self.cfg.path(), file=name, error=exc.strerror or str(exc))
            return
        outcomes = Outcomes(plan)
        planned = self._reactor.seconds() - started
        try:
            stopped = await self._send(name, plan, outcomes)
        except ImportAborted as exc:
            reason = f"the gateway refused the file's messages: {exc}"
            await self._move(name, self.cfg.failed_path(), result_csv(outcomes, f"not sent: {reason}"), started,
                             plan, outcomes, planned, reason=reason)
            return
        if stopped is not None:
            log.warning("file_import_interrupted", dir=self.cfg.path(), file=name, reason=stopped,
                        accepted=outcomes.accepted + outcomes.repeated, left=outcomes.not_sent,
                        action="left in the folder and taken again at the next poll: rows already accepted are "
                               "not sent twice")
            return
        ok = outcomes.accepted + outcomes.repeated > 0
        await self._move(name, self.cfg.done_path() if ok else self.cfg.failed_path(), result_csv(outcomes),
                         started, plan, outcomes, planned, reason=None if ok else "no row is valid: see the result file")

    async def _send(self, name: str, plan: Plan, outcomes: Outcomes) -> str | None:
        """Accept the plan's messages batch by batch; why it stopped early, or None when all were answered.

        The account's rate limit is waited out; its daily quota stops the file, which is not taken
        again before the quota resets.

        Raises:
            ImportAborted: the gateway refused a batch as a whole.
        """
        for chunk in chunks(plan.messages, self._batch):
            while chunk:
                if not self.running:
                    return "the daemon is stopping"
                try:
                    accepted = await self._gateway.accept(self._account, INTERFACE,
                                                          [m.request(plan.options, plan.batch, plan.valid)
                                                           for m in chunk])
                except RequestRejected as exc:
                    chunk = outcomes.refuse(chunk, exc.problems)
                    continue
                except ServiceUnavailable as exc:
                    return str(exc)
                except LimitExceeded as exc:
                    if exc.kind != "rate_limit":  # the daily quota: the rest waits for the next day
                        self._held[name] = self._reactor.seconds() + exc.retry_after
                        return str(exc)
                    # Waits a second at most before trying again, so that a stop is not held up.
                    await task.deferLater(self._reactor, min(exc.retry_after, 1.0), lambda: None)
                    continue
                for message, answer in zip(chunk, accepted):
                    outcomes.record(message, answer.id, answer.repeated, answer.held, answer.batch)
                chunk = []
        return None

    async def _move(self, name: str, folder: str, result: bytes, started: float, plan: Plan | None = None,
                    outcomes: Outcomes | None = None, planned: float | None = None, *,
                    reason: str | None = None) -> None:
        path = os.path.join(self.cfg.path(), name)
        try:
            target = await self._in_thread(_finish, path, folder, result)
        except OSError as exc:
            state = self._seen.get(name)
            if state is not None:
                self._stuck[name] = state
            log.error("alarm", alarm="file_inbox_unusable", dir=self.cfg.path(), file=name,
                      error=f"cannot write the result or move the file to {folder}: {exc.strerror or exc}",
                      action=f"give the daemon's user write permission on {folder} and the folder; the file is "
                             "taken again once it changes (touch it)")
            return
        self._stuck.pop(name, None)
        fields: dict[str, Any] = {"dir": self.cfg.path(), "file": name, "moved_to": target,
                                  "outcome": "failed" if reason else "done",
                                  "seconds": round(self._reactor.seconds() - started, 3)}
        if plan is not None and outcomes is not None:
            fields.update(kind=plan.kind, encoding=plan.encoding, layout=plan.layout, sha256=plan.digest,
                          rows=plan.read, accepted=outcomes.accepted, repeated=outcomes.repeated,
                          invalid=plan.invalid + outcomes.refused, duplicates=plan.duplicates,
                          not_sent=outcomes.not_sent, messages=outcomes.messages, segments=plan.segments,
                          held_for_review=outcomes.held, batch=",".join(sorted(outcomes.batches)) or None,
                          plan_seconds=round(planned or 0.0, 3))
        if reason is None:
            log.info("file_import_done", **fields)
        else:
            log.warning("file_import_done", reason=reason, **fields)
