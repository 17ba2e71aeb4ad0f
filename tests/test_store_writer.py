"""The store's two writers (a thread, or a process of its own) on a real SQLite file: the same results,
one bad operation failing alone, durable operations waiting out a locked store, and, for the process,
what happens when it dies."""

from __future__ import annotations

import os
import pathlib
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from typing import Any, MutableMapping

import pytest
import structlog
from structlog.testing import LogCapture
from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from daemon_helpers import R, wait_for
from smsgw.store import (
    ClaimArgs,
    NewMessage,
    ReportArgs,
    ReviewAction,
    ReviewQuery,
    Store,
    StoreUnavailable,
    make_engine,
    migrations,
)
from smsgw.store._writer import ChildSpec, ProcessWriter, Writer, _crossable, _Op
from smsgw.validation import PreparedMessage

NOW = 1_800_000_000.0


def new_message(store: Store, *to: str) -> NewMessage:
    message = PreparedMessage(to, (), "hello", 1, 0, 5, None, "", None, True)
    return NewMessage(store.ids.next(), "a", "rest", message, ["cmcc"] * len(to), store.ids.many(len(to)), NOW)


def report(msg_id: str) -> ReportArgs:
    return ReportArgs("cmcc", msg_id, "DELIVRD", "13800000001", "2601010000", "2601010001", NOW)


class WriterContract(TestCase):
    """What both writers do; run by the TestCase classes below."""

    __test__ = False
    timeout = 60
    writer = "thread"

    def setUp(self) -> None:
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="smsgw-writer-"))
        self.url = f"sqlite:///{self.tmp}/store.db"
        engine = make_engine(self.url, writer=True)
        migrations.upgrade(engine)
        engine.dispose()
        capture = LogCapture()
        self.logs = capture.entries
        self.addCleanup(structlog.configure, **structlog.get_config())
        structlog.configure(processors=[capture])

    def unstarted(self, **options: Any) -> Store:
        return Store(self.url, R, owner="n1", writer=self.writer, **options)

    def start(self, **options: Any) -> Store:
        store = self.unstarted(**options)
        store.start()
        self.addCleanup(store.stop)
        return store

    async def one_batch(self, store: Store, writes: list[defer.Deferred[Any]]) -> list[tuple[bool, Any]]:
        """Start `store` with `writes` already queued, so its writer takes them as one batch; their outcomes."""
        store.start()
        self.addCleanup(store.stop)
        results = await defer.DeferredList(writes, consumeErrors=True)
        assert store.writer.batches == 1
        return results

    def alarms(self) -> list[MutableMapping[str, Any]]:
        return [e for e in self.logs if e["event"] == "alarm"]

    def lock_store(self) -> sqlite3.Connection:
        """Another process's view: SQLite's write lock held until the returned connection rolls back."""
        conn = sqlite3.connect(self.tmp / "store.db", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        return conn

    async def test_operations_commit_and_answer(self) -> None:
        store = self.start()
        (ids,) = await store.write("accept", [new_message(store, "13800000001", "13800000002")])
        claimed = await store.write("claim", ClaimArgs("cmcc", "a", 10, NOW, "n1", NOW + 60))
        assert sorted(c.phone for c in claimed) == ["13800000001", "13800000002"]
        assert {c.message_id for c in claimed} == {ids}
        outcome = await store.write("report", report("0102030405060708"))
        assert not outcome.matched  # kept as an orphan candidate
        assert store.writer.ops == 3

    async def test_a_bad_operation_fails_alone(self) -> None:
        store = self.unstarted()
        bad = ReviewAction("promote", ReviewQuery(), "li", "", NOW)
        # One batch, so the isolation path runs.
        results = await self.one_batch(store, [store.write("accept", [new_message(store, "13800000001")]),
                                               store.write("review", bad),
                                               store.write("accept", [new_message(store, "13800000002")])])
        assert [ok for ok, _ in results] == [True, False, True]
        failure = results[1][1]
        assert failure.check(ValueError)
        assert "unknown review action 'promote'" in failure.getErrorMessage()
        assert [e["event"] for e in self.logs] == ["store_batch_failed", "store_op_failed"]

    async def test_durable_operations_wait_out_a_locked_store_and_others_fail_fast(self) -> None:
        store = self.start(busy_timeout=0.05)
        lock = self.lock_store()
        with pytest.raises(StoreUnavailable):
            await store.write("accept", [new_message(store, "13800000001")])
        durable = store.write("report", report("0102030405060709"))
        await wait_for(lambda: len(self.alarms()) >= 1, what="the store_unreachable alarm")
        alarm = self.alarms()[0]
        assert (alarm["alarm"], alarm["op"]) == ("store_unreachable", "report")
        assert "nothing is dropped" in alarm["action"]
        assert not durable.called
        lock.rollback()
        lock.close()
        outcome = await durable
        assert outcome.report_id > 0

    async def test_stopping_ends_a_durable_wait(self) -> None:
        store = self.unstarted(busy_timeout=0.05)
        store.start()
        lock = self.lock_store()
        self.addCleanup(lock.close)
        durable = store.write("report", report("010203040506070A"))
        await wait_for(lambda: len(self.alarms()) >= 1, what="the store_unreachable alarm")
        began = time.monotonic()
        await threads.deferToThread(store.stop)
        assert time.monotonic() - began < 5
        with pytest.raises(StoreUnavailable):
            await durable


class ThreadWriterTests(WriterContract):
    __test__ = True
    writer = "thread"

    def test_the_writer_is_a_thread(self) -> None:
        store = self.start()
        assert isinstance(store.writer, Writer)

    def test_an_in_memory_store_always_uses_a_thread(self) -> None:
        store = Store("sqlite://", R, writer="process")
        assert isinstance(store.writer, Writer)


class ProcessWriterTests(WriterContract):
    __test__ = True
    writer = "process"

    def test_the_writer_is_a_process_of_its_own(self) -> None:
        store = self.start()
        assert isinstance(store.writer, ProcessWriter)
        assert store.writer.pid not in (None, os.getpid())
        assert store.writer.alive()
        if sys.platform == "linux":
            assert pathlib.Path(f"/proc/{store.writer.pid}/comm").read_text().strip() == "smsgw-writer"

    async def test_arguments_that_cannot_cross_fail_alone(self) -> None:
        store = self.unstarted()
        unpicklable = ReviewAction("approve", ReviewQuery(), "li", "", NOW, due=lambda d, p: d)
        results = await self.one_batch(store, [store.write("accept", [new_message(store, "13800000001")]),
                                               store.write("review", unpicklable),
                                               store.write("accept", [new_message(store, "13800000002")])])
        assert results[0][0] and results[2][0]
        assert not results[1][0]
        assert results[1][1].check(TypeError)
        assert "store operation 'review'" in results[1][1].getErrorMessage()
        assert store.writer.alive()

    def test_a_writer_that_dies_in_its_last_batch_still_stops(self) -> None:
        store = self.start()
        writer = store.writer
        assert isinstance(writer, ProcessWriter)
        d: defer.Deferred[Any] = defer.Deferred()
        failures: list[Any] = []
        d.addErrback(failures.append)
        done = threading.Thread(target=writer._child_died, args=([_Op("accept", None, d)], True))
        done.start()
        done.join(5)
        assert not done.is_alive(), "waited for a stop sentinel that was already taken"

    async def test_a_dead_writer_fails_every_operation_and_the_watchdog_sees_it(self) -> None:
        store = self.start()
        await store.write("accept", [new_message(store, "13800000001")])
        assert isinstance(store.writer, ProcessWriter) and store.writer.pid is not None
        os.kill(store.writer.pid, signal.SIGKILL)
        await wait_for(lambda: not store.writer.alive(), what="the writer to be seen dead")
        for _ in range(2):  # the one that finds it dead, and any after
            with pytest.raises(StoreUnavailable):
                await store.write("accept", [new_message(store, "13800000002")])
        died = [e for e in self.alarms() if e["alarm"] == "store_writer_died"]
        assert len(died) == 1
        assert died[0]["exitcode"] == -signal.SIGKILL

    def test_a_store_the_writer_cannot_open_refuses_to_start(self) -> None:
        (self.tmp / "elsewhere").mkdir()
        url = f"sqlite:///{self.tmp}/elsewhere"  # a directory where the database file should be
        writer = ProcessWriter(ChildSpec(url, 0, frozenset(), 0.05, 1.0), R, ["accept"])
        with pytest.raises(StoreUnavailable, match="the store writer process did not start: OperationalError"):
            writer.start()
        assert not writer.alive()


def test_an_exception_that_does_not_pickle_crosses_as_its_type_and_text() -> None:
    exc = ValueError("constraint failed")
    exc.lock = threading.Lock()  # type: ignore[attr-defined]  # what some drivers' errors carry
    ok, value = _crossable((False, exc))
    assert not ok
    assert isinstance(value, RuntimeError)
    assert str(value) == "ValueError: constraint failed"
    assert _crossable((True, [1, 2])) == (True, [1, 2])
