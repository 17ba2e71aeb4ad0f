"""The store's writer: batched transactions without making callers wait.

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

Two writers share that logic (`Transactions`):

- `Writer` runs it on a thread of the daemon's process.
- `ProcessWriter` runs it in a child process of its own (`store.writer: process`,
  the default for a store in a file or on a server). The daemon's thread then
  only moves batches: it pickles one batch to the child, waits for its results
  and fires the Deferreds. The transactions' Python work and every return from
  the database's C code no longer wait for the reactor thread's GIL, and the
  two run on two cores. One batch is in the child at a time, as on a thread,
  so the order of transactions is the order of batches. When the child dies,
  every operation not yet answered fails with StoreUnavailable (none of them
  was acknowledged), and `alive()` turns false for the systemd watchdog.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import select
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any, Callable, Iterable, Sequence

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads

from smsgw.store._engine import StoreUnavailable

log = structlog.get_logger("smsgw.store")

Handler = Callable[[Connection, list[Any]], Sequence[Any]]
# (level, event, fields): a log line, written by the daemon's logger (the child has none of its own).
LogLine = tuple[str, str, dict[str, Any]]
Outcome = tuple[bool, Any]  # (succeeded, result or exception)


@dataclass(slots=True)
class _Op:
    kind: str
    args: Any
    deferred: defer.Deferred[Any]


class Transactions:
    """Runs a batch of (kind, args) in one transaction, or one by one when that fails."""

    def __init__(self, engine: Engine, handlers: dict[str, Handler], order: Sequence[str],
                 durable: frozenset[str], *, retry_delay: float, stopping: Callable[[], bool],
                 emit: Callable[[str, str, dict[str, Any]], None]) -> None:
        self._engine = engine
        self._handlers = handlers
        self._rank = {kind: i for i, kind in enumerate(order)}
        self._durable = durable
        self._retry_delay = retry_delay
        self._stopping = stopping
        self._emit = emit

    def run(self, batch: Sequence[tuple[str, Any]]) -> list[Outcome]:
        try:
            results = self._transaction(batch)
        except Exception as exc:  # noqa: BLE001 - isolate per operation below
            if not _is_disconnect(exc):
                self._emit("warning", "store_batch_failed", {"ops": len(batch), "error": _short(exc)})
            return self._one_by_one(batch)
        return [(True, result) for result in results]

    def _transaction(self, batch: Sequence[tuple[str, Any]]) -> list[Any]:
        groups: dict[str, list[int]] = {}
        for index, (kind, _) in enumerate(batch):
            groups.setdefault(kind, []).append(index)
        results: list[Any] = [None] * len(batch)
        with self._engine.begin() as conn:
            for kind in sorted(groups, key=self._rank.__getitem__):
                indices = groups[kind]
                out = self._handlers[kind](conn, [batch[i][1] for i in indices])
                for i, result in zip(indices, out):
                    results[i] = result
        return results

    def _one_by_one(self, batch: Sequence[tuple[str, Any]]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for op in batch:
            kind = op[0]
            while True:
                try:
                    result = self._transaction([op])[0]
                except Exception as exc:  # noqa: BLE001 - reported to the caller
                    if _is_disconnect(exc) and kind in self._durable and not self._stopping():
                        self._emit("error", "alarm", {"alarm": "store_unreachable", "op": kind, "error": _short(exc),
                                                      "action": f"retrying in {self._retry_delay:g}s; nothing is dropped"})
                        time.sleep(self._retry_delay)
                        continue
                    if _is_disconnect(exc):
                        outcomes.append((False, StoreUnavailable(f"store unreachable: {_short(exc)}")))
                    else:
                        self._emit("error", "store_op_failed", {"op": kind, "error": _short(exc)})
                        outcomes.append((False, exc))
                else:
                    outcomes.append((True, result))
                break
        return outcomes


def _log_line(level: str, event: str, fields: dict[str, Any]) -> None:
    getattr(log, level)(event, **fields)


class _Batching:
    """The caller's side of both writers: a queue of operations, taken a batch at a time."""

    def __init__(self, reactor: IReactorFromThreads, batch_max: int, kinds: Iterable[str]) -> None:
        self._reactor = reactor
        self._kinds = frozenset(kinds)
        self._batch_max = batch_max
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.batches = 0
        self.ops = 0

    def submit(self, kind: str, args: Any) -> defer.Deferred[Any]:
        if kind not in self._kinds:
            raise KeyError(f"no store operation {kind!r}")
        d: defer.Deferred[Any] = defer.Deferred()
        self._queue.put(_Op(kind, args, d))
        return d

    def queued(self) -> int:
        return self._queue.qsize()

    def _next_batch(self) -> tuple[list[_Op], bool]:
        """Block for the next batch; (batch, last): `last` once stop() was asked (the batch may be empty)."""
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self._batch_max:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                break
            if op is None:
                return batch, True
            batch.append(op)
        return batch, False

    def _fire(self, batch: list[_Op], outcomes: Sequence[Outcome]) -> None:
        self.batches += 1
        self.ops += len(batch)
        self._reactor.callFromThread(_fire_all, [(op.deferred, ok, value) for op, (ok, value) in zip(batch, outcomes)])


class Writer(_Batching):
    """Runs `handlers[kind](conn, [args, ...]) -> [result, ...]` in batched transactions on a thread."""

    def __init__(self, engine: Engine, reactor: IReactorFromThreads, handlers: dict[str, Handler],
                 order: Sequence[str], durable: frozenset[str], *, batch_max: int = 1000,
                 retry_delay: float = 1.0) -> None:
        super().__init__(reactor, batch_max, handlers)
        self._transactions = Transactions(engine, handlers, order, durable, retry_delay=retry_delay,
                                          stopping=self._stopping.is_set, emit=_log_line)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="smsgw-store-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the thread (blocking: call from a thread or at exit)."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()

    def alive(self) -> bool:
        """Whether the writer thread is running (the systemd watchdog asks)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            batch, last = self._next_batch()
            if batch:
                self._fire(batch, self._transactions.run([(op.kind, op.args) for op in batch]))
            if last:
                return


# --- the writer in a process of its own ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What the child needs to build its engine and handlers (everything picklable)."""

    url: str
    node_id: int
    quiet_submits: frozenset[str]
    busy_timeout: float
    retry_delay: float


START_TIMEOUT = 60.0  # seconds for the child to build its engine and say so
_STOP = "stop"  # the daemon is stopping: durable operations stop waiting for the store


class ProcessWriter(_Batching):
    """The same batches and transactions as `Writer`, run by a child process (`child_main`)."""

    def __init__(self, spec: ChildSpec, reactor: IReactorFromThreads, kinds: Sequence[str], *,
                 batch_max: int = 1000) -> None:
        super().__init__(reactor, batch_max, kinds)
        self._spec = spec
        self._process: Any = None
        self._pipe: Pipe | None = None
        self._send_lock = threading.Lock()
        self._dead = False
        self._pidfd: int | None = None

    def start(self) -> None:
        ctx = multiprocessing.get_context("forkserver")
        # Each child forks from a server process that has the store's modules imported: a writer starts in
        # milliseconds, not the half second of a fresh interpreter's imports.
        ctx.set_forkserver_preload(["smsgw.store"])
        ours, theirs = ctx.Pipe()
        self._process = ctx.Process(target=child_main, args=(theirs, self._spec), name="smsgw-store-writer",
                                    daemon=True)
        self._process.start()
        theirs.close()
        self._pipe = ours
        ready: Any = f"no word from it within {START_TIMEOUT:g}s"
        try:
            # The child's engine is built: a bad URL fails here, not at the first write.
            if ours.poll(START_TIMEOUT):
                ready = pickle.loads(ours.recv_bytes())
        except (EOFError, OSError):
            ready = "it exited"
        if ready is not True:
            self._end_child()
            raise StoreUnavailable(f"the store writer process did not start: {ready}")
        try:
            self._pidfd = os.pidfd_open(self._process.pid)
        except (AttributeError, OSError):
            self._pidfd = None  # not Linux 5.3+: alive() asks kill(pid, 0)
        self._thread = threading.Thread(target=self._run, name="smsgw-store-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the child and the thread (blocking)."""
        self._stopping.set()
        self._send(_STOP)  # a durable operation retrying in the child gives up now
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()
        self._end_child()

    def _end_child(self) -> None:
        if self._pipe is not None:
            with self._send_lock:
                self._pipe.close()  # the child reads the end of the pipe and exits, if None did not reach it
            self._pipe = None
        if self._process is not None:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def alive(self) -> bool:
        """Whether the thread and the child run (the systemd watchdog asks). The child is looked up by its
        pidfd (or pid), not through multiprocessing, which asks the fork server: that one may be gone (a
        stop signal to every process of the service) while the child finishes the last batches."""
        if self._dead or self._thread is None or not self._thread.is_alive() or self.pid is None:
            return False
        if self._pidfd is not None:
            try:
                return not select.select([self._pidfd], [], [], 0)[0]
            except (OSError, ValueError):  # closed by stop() meanwhile
                return False  # readable once the process has ended
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # it exists (the pid is not ours to signal, but it is not gone)
        return True

    @property
    def pid(self) -> int | None:
        return None if self._process is None else int(self._process.pid)

    def _send(self, item: Any) -> bool:
        pipe = self._pipe
        if pipe is None or self._dead:
            return False
        return self._send_raw(pipe, pickle.dumps(item, pickle.HIGHEST_PROTOCOL))

    def _send_raw(self, pipe: Pipe, payload: bytes) -> bool:
        with self._send_lock:
            try:
                pipe.send_bytes(payload)
            except (OSError, ValueError):
                return False
        return True

    def _run(self) -> None:
        assert self._pipe is not None
        pipe = self._pipe
        while True:
            batch, last = self._next_batch()
            if batch:
                try:
                    outcomes = self._exchange(pipe, batch)
                except BaseException as exc:  # noqa: BLE001 - a bug here must not leave Deferreds unfired
                    log.exception("store_writer_failed", error=f"{type(exc).__name__}: {exc}")
                    outcomes = None
                    if self._process is not None:
                        self._process.kill()
                if outcomes is None:
                    self._child_died(batch, last)
                    return
                self._fire(batch, outcomes)
            if last:
                self._send(None)  # the child ends once it reads this
                return

    def _exchange(self, pipe: Pipe, batch: list[_Op]) -> list[Outcome] | None:
        """Send one batch, log what the child says meanwhile, return its outcomes (None: the child died).

        Each operation's arguments are pickled on their own, so one that cannot cross (either way)
        fails alone."""
        outcomes: list[Outcome | None] = []
        items: list[tuple[str, bytes]] = []
        for op in batch:
            try:
                items.append((op.kind, pickle.dumps(op.args, pickle.HIGHEST_PROTOCOL)))
            except Exception as exc:  # noqa: BLE001 - a bug in the caller: say which operation and why
                outcomes.append((False, TypeError(f"store operation {op.kind!r}: its arguments cannot be sent "
                                                  f"to the writer process: {exc}")))
            else:
                outcomes.append(None)
        if not items:
            return [o for o in outcomes if o is not None]
        if not self._send_raw(pipe, pickle.dumps(items, pickle.HIGHEST_PROTOCOL)):
            return None
        while True:
            try:
                data = pipe.recv_bytes()
            except (EOFError, OSError):
                return None
            reply = pickle.loads(data)
            if reply[0] == "log":
                _log_line(*reply[1])
                continue
            done = iter(reply[1])
            return [outcome if outcome is not None else next(done) for outcome in outcomes]

    def _child_died(self, batch: list[_Op], last: bool) -> None:
        """Fail what was sent and all that comes after, until stop().

        None of it was acknowledged; the last batch may have been committed in part or whole before
        the child died (see docs/store.md)."""
        self._dead = True
        code = None
        if self._process is not None:
            self._process.join(1)  # the fork server reports the exit code a moment after the death
            code = self._process.exitcode
        log.error("alarm", alarm="store_writer_died", exitcode=code,
                  action="store operations fail until the daemon is restarted (the systemd watchdog does it)")
        error = StoreUnavailable("the store writer process died; the daemon needs a restart")
        failed = [(op.deferred, False, error) for op in batch]
        while True:
            self._reactor.callFromThread(_fire_all, failed)
            if last:
                return
            op = self._queue.get()
            if op is None:
                return
            failed = [(op.deferred, False, error)]


def child_main(pipe: Pipe, spec: ChildSpec) -> None:
    """The writer process: receive a batch, run it, answer with its outcomes; until told to end.

    It ignores SIGINT and SIGTERM: Ctrl-C in a terminal and systemd's stop reach every process of the
    daemon, and the daemon still has results to write while it drains. It ends when the daemon says so,
    or when the daemon is gone (its end of the pipe closes).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _name_process(b"smsgw-writer")
    from smsgw.store._engine import dialect_of, make_engine
    from smsgw.store._ops import Ops
    from smsgw.store.ids import IdGenerator

    stopping = False

    def send_bytes(data: bytes) -> None:
        try:
            pipe.send_bytes(data)
        except OSError:
            raise SystemExit(0) from None  # the daemon is gone: what we committed stays committed

    def send(item: Any) -> None:
        send_bytes(pickle.dumps(item, pickle.HIGHEST_PROTOCOL))

    def is_stopping() -> bool:
        nonlocal stopping
        # Only a stop notice can arrive while a batch runs: the daemon sends the next batch after our answer.
        while not stopping and pipe.poll():
            try:
                item = pickle.loads(pipe.recv_bytes())
            except (EOFError, OSError):
                raise SystemExit(0) from None  # the daemon is gone
            stopping = item == _STOP
        return stopping

    try:
        engine = make_engine(spec.url, writer=True, busy_timeout=spec.busy_timeout, pool_size=2)
        engine.connect().close()  # a store it cannot open fails the daemon's start, not its first write
        ops = Ops(dialect_of(spec.url), IdGenerator(spec.node_id), spec.quiet_submits)
        transactions = Transactions(engine, ops.handlers(), Ops.ORDER, Ops.DURABLE, retry_delay=spec.retry_delay,
                                    stopping=is_stopping, emit=lambda level, event, fields: send(("log", (level, event, fields))))
    except Exception as exc:  # noqa: BLE001 - told to the daemon, which refuses to start
        send(f"{type(exc).__name__}: {exc}")
        return
    send(True)
    try:
        while True:
            try:
                item = pickle.loads(pipe.recv_bytes())
            except (EOFError, OSError):
                return  # the daemon is gone
            if item is None:
                return
            if item == _STOP:
                stopping = True
                continue
            send_bytes(_answer(transactions, item))
    finally:
        engine.dispose()


def _answer(transactions: Transactions, items: list[tuple[str, bytes]]) -> bytes:
    """Run a batch (each operation's arguments pickled on their own) and pickle its outcomes."""
    outcomes: list[Outcome | None] = []
    batch: list[tuple[str, Any]] = []
    for kind, data in items:
        try:
            batch.append((kind, pickle.loads(data)))
        except Exception as exc:  # noqa: BLE001 - it fails alone
            outcomes.append((False, TypeError(f"store operation {kind!r}: its arguments cannot be read in "
                                              f"the writer process: {type(exc).__name__}: {exc}")))
        else:
            outcomes.append(None)
    done = iter(transactions.run(batch) if batch else ())
    answers = [outcome if outcome is not None else next(done) for outcome in outcomes]
    try:
        return pickle.dumps(("done", answers), pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - an exception (or result) that does not pickle: send its type and text
        return pickle.dumps(("done", [_crossable(answer) for answer in answers]), pickle.HIGHEST_PROTOCOL)


def _name_process(name: bytes) -> None:
    """The name `top` and `ps -o comm` show (Linux; elsewhere nothing happens)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _crossable(outcome: Outcome) -> Outcome:
    """An outcome that pickles: an exception that does not is sent as its type and text."""
    ok, value = outcome
    try:
        pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001
        if ok:  # committed, but its result cannot be told: the caller sees a failure that says so
            return False, RuntimeError(f"committed, but its result ({type(value).__name__}) cannot be sent "
                                       f"from the writer process")
        return False, RuntimeError(f"{type(value).__name__}: {value}")
    return outcome


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
