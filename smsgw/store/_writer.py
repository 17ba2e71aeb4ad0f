"""One writer thread per store: batched transactions without making callers wait.

Callers on the reactor thread enqueue operations and get a Deferred. The
writer takes whatever is queued (up to `batch_max`), runs it in ONE
transaction and commits, then fires all the Deferreds in one reactor call.
Under light load a batch is a single operation and waits for nothing; under
load, many operations share a commit (and its fsync).

Within a batch, operations run grouped by kind in `order`, each group in one
handler call (executemany), so a SUBMIT_RESP's Msg_Ids recorded just before
a report in the same batch are there when the report is matched.

Failure isolation: when a batch fails, it is rolled back and each operation
is retried in a transaction of its own, so one bad operation fails alone. A
lost connection is different: operations of `durable` kinds (the results of
work already done on the carrier side) are retried until the store is back,
with an alarm line each time; the others fail fast with StoreUnavailable.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads

from smsgw.store._engine import StoreUnavailable

log = structlog.get_logger("smsgw.store")

Handler = Callable[[Connection, list[Any]], Sequence[Any]]


@dataclass(slots=True)
class _Op:
    kind: str
    args: Any
    deferred: defer.Deferred[Any]


class Writer:
    """Runs `handlers[kind](conn, [args, ...]) -> [result, ...]` in batched transactions."""

    def __init__(self, engine: Engine, reactor: IReactorFromThreads, handlers: dict[str, Handler],
                 order: Sequence[str], durable: frozenset[str], *, batch_max: int = 1000,
                 retry_delay: float = 1.0) -> None:
        self._engine = engine
        self._reactor = reactor
        self._handlers = handlers
        self._rank = {kind: i for i, kind in enumerate(order)}
        self._durable = durable
        self._batch_max = batch_max
        self._retry_delay = retry_delay
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.batches = 0
        self.ops = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="smsgw-store-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the thread (blocking: call from a thread or at exit)."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()

    def submit(self, kind: str, args: Any) -> defer.Deferred[Any]:
        if kind not in self._handlers:
            raise KeyError(f"no store operation {kind!r}")
        d: defer.Deferred[Any] = defer.Deferred()
        self._queue.put(_Op(kind, args, d))
        return d

    def alive(self) -> bool:
        """Whether the writer thread is running (the systemd watchdog asks)."""
        return self._thread is not None and self._thread.is_alive()

    def queued(self) -> int:
        return self._queue.qsize()

    # --- the thread ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            done = False
            while len(batch) < self._batch_max:
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    done = True
                    break
                batch.append(op)
            self._process(batch)
            if done:
                return

    def _process(self, batch: list[_Op]) -> None:
        fired: list[tuple[defer.Deferred[Any], bool, Any]] = []
        try:
            results = self._transaction(batch)
        except Exception as exc:  # noqa: BLE001 - isolate per operation below
            if not _is_disconnect(exc):
                log.warning("store_batch_failed", ops=len(batch), error=_short(exc))
            fired = self._one_by_one(batch)
        else:
            fired = [(op.deferred, True, result) for op, result in zip(batch, results)]
        self.batches += 1
        self.ops += len(batch)
        self._reactor.callFromThread(_fire_all, fired)

    def _transaction(self, batch: list[_Op]) -> list[Any]:
        groups: dict[str, list[int]] = {}
        for index, op in enumerate(batch):
            groups.setdefault(op.kind, []).append(index)
        results: list[Any] = [None] * len(batch)
        with self._engine.begin() as conn:
            for kind in sorted(groups, key=self._rank.__getitem__):
                indices = groups[kind]
                out = self._handlers[kind](conn, [batch[i].args for i in indices])
                for i, result in zip(indices, out):
                    results[i] = result
        return results

    def _one_by_one(self, batch: list[_Op]) -> list[tuple[defer.Deferred[Any], bool, Any]]:
        fired: list[tuple[defer.Deferred[Any], bool, Any]] = []
        for op in batch:
            while True:
                try:
                    result = self._transaction([op])[0]
                except Exception as exc:  # noqa: BLE001 - reported to the caller
                    if _is_disconnect(exc) and op.kind in self._durable and not self._stopping.is_set():
                        log.error("alarm", alarm="store_unreachable", op=op.kind, error=_short(exc),
                                  action=f"retrying in {self._retry_delay:g}s; nothing is dropped")
                        time.sleep(self._retry_delay)
                        continue
                    if _is_disconnect(exc):
                        fired.append((op.deferred, False, StoreUnavailable(f"store unreachable: {_short(exc)}")))
                    else:
                        log.error("store_op_failed", op=op.kind, error=_short(exc))
                        fired.append((op.deferred, False, exc))
                else:
                    fired.append((op.deferred, True, result))
                break
        return fired


def _fire_all(fired: list[tuple[defer.Deferred[Any], bool, Any]]) -> None:
    for d, ok, value in fired:
        if ok:
            d.callback(value)
        else:
            d.errback(value)


def _is_disconnect(exc: Exception) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        # SQLite's "database is locked" is contention, not loss, but waiting it out is right too.
        return True
    return False


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
