"""The legacy database adapter against real databases, with the daemon running for real.

The daemon runs on the reactor with its embedded CMPP simulator and a SQLite
store under a temporary directory; the legacy database is a SQLite file or
the local PostgreSQL / MariaDB server (database ``smsgw_legacy``, its tables
made afresh by each test). A "legacy writer" thread with an engine of its
own inserts rows while the daemon polls, as the legacy system would.

Row outcomes are checked in the legacy table (state, ids, Msg_Ids, Stat,
times, errors), against smsgw's store (one message per row, one SUBMIT per
number) and against the simulator's counters (the total it accepted).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable, Collection, Mapping, Sequence

from sqlalchemy import Connection, Engine, create_engine, event, insert, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs
from twisted.internet.threads import deferToThread

from daemon_helpers import DaemonCase, ApiClient, count, make_config, rows, spin, wait_for
from dbs import server_url
from smsgw.adapters.db import interface
from smsgw.adapters.db.source import DbSource
from smsgw.app import Daemon
from smsgw.config import Config
from smsgw.simulator import _MO_TEXTS
from tcp_proxy import TcpProxy

LEGACY_DB = "smsgw_legacy"
FINAL = ("sent", "delivered", "undeliverable", "failed", "expired", "partial", "rejected")
MSG_ID = re.compile(r"[0-9a-f]{16}")


# --- what the legacy system writes ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Planned:
    """One sms_outbox row the legacy writer inserts, and what should become of it."""

    ref: str
    mobiles: str
    content: str
    report: int
    template: str | None
    numbers: tuple[str, ...]  # what is sent; () for a bad row
    error: str | None  # a fragment of the rejection's text; None for a good row

    def values(self) -> dict[str, Any]:
        return {"mobiles": self.mobiles, "content": self.content, "report_wanted": self.report, "ref": self.ref,
                "template": self.template}


def plan(n: int, *, start: int = 0, bad: bool = True) -> list[Planned]:
    """`n` rows: numbers unique over every row, some with two numbers, some Chinese, some without a report
    wanted, and (`bad`) a few that must be rejected: a short number, an empty text, an unknown template."""
    out = []
    for i in range(start, start + n):
        first, second = f"138{i:08d}", f"139{i:08d}"
        content = f"【物流通知】您的订单{i}已发货，请注意查收。" if i % 3 == 0 else f"Order {i} has shipped"
        report = 0 if i % 7 == 5 else 1
        ref = f"w-{i}"
        if bad and i % 331 == 17:
            out.append(Planned(ref, f"1380{i % 1000:03d}", content, report, None, (), "digits"))
        elif bad and i % 331 == 101:
            out.append(Planned(ref, first, "   ", report, None, (), "text is empty"))
        elif bad and i % 331 == 203:
            out.append(Planned(ref, first, content, report, "welcome", (), "unknown template"))
        elif i % 10 == 3:
            out.append(Planned(ref, f"{first},{second}", content, report, None, (first, second), None))
        else:
            out.append(Planned(ref, first, content, report, None, (first,), None))
    return out


def good(planned: Sequence[Planned]) -> list[Planned]:
    return [p for p in planned if p.error is None]


def all_numbers(planned: Sequence[Planned]) -> list[str]:
    return [n for p in planned for n in p.numbers]


class Legacy:
    """The legacy database of one test: its interface tables made afresh, an engine of the test's own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        self.engine = engine_for(url)

    def reset(self) -> None:
        interface.metadata.drop_all(self.engine)
        interface.create(self.engine)

    def insert(self, planned: Sequence[Planned]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(interface.outbox), [p.values() for p in planned])

    def count(self, where: str = "1 = 1") -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM sms_outbox WHERE {where}")).scalar_one())

    def unfinished(self) -> int:
        """Rows not yet final, or final without their final write-back (every one sets done_at)."""
        return self.count("state NOT IN ({}) OR done_at IS NULL".format(", ".join(f"'{s}'" for s in FINAL)))

    def outbox(self) -> dict[str, dict[str, Any]]:
        """Every sms_outbox row by ref."""
        with self.engine.connect() as conn:
            return {r["ref"]: dict(r) for r in conn.execute(select(interface.outbox)).mappings()}

    def inbox(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(interface.inbox).order_by(interface.inbox.c.id)).mappings()]

    def dispose(self) -> None:
        self.engine.dispose()


def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": 30})
    return create_engine(url, pool_size=2, pool_pre_ping=True)


class LegacyWriter(threading.Thread):
    """The legacy system: inserts rows into sms_outbox in small transactions, with its own engine."""

    def __init__(self, url: str, planned: Sequence[Planned], *, sizes: tuple[int, int] = (50, 200),
                 pause: float = 0.01, seed: int = 1) -> None:
        super().__init__(name="legacy-writer", daemon=True)
        self.url = url
        self.planned = list(planned)
        self.sizes = sizes
        self.pause = pause
        self.seed = seed
        self.inserted = 0
        self.transactions = 0
        self.error: BaseException | None = None
        self._stop_now = threading.Event()

    def run(self) -> None:
        engine = engine_for(self.url)
        rng = random.Random(self.seed)
        try:
            while self.inserted < len(self.planned) and not self._stop_now.is_set():
                chunk = self.planned[self.inserted:self.inserted + rng.randint(*self.sizes)]
                with engine.begin() as conn:
                    conn.execute(insert(interface.outbox), [p.values() for p in chunk])
                self.inserted += len(chunk)
                self.transactions += 1
                self._stop_now.wait(self.pause)
        except BaseException as exc:  # noqa: BLE001 - reported by the test through done()
            self.error = exc
        finally:
            engine.dispose()

    def done(self) -> bool:
        """Whether every row is in; raises what stopped the writer, if anything did."""
        if self.error is not None:
            raise AssertionError(f"the legacy writer failed after {self.inserted} rows: {self.error!r}")
        return not self.is_alive() and self.inserted == len(self.planned)

    def stop(self) -> None:
        self._stop_now.set()
        self.join(timeout=30)


# --- checking the results ------------------------------------------------------------------------------

@dataclass(slots=True)
class Sent:
    """What smsgw's store says of one message: its Msg_Ids in recipient order, first submit, last final."""

    msg_ids: list[str]
    submitted_at: datetime | None = None
    final_at: datetime | None = None


def sent_in(*configs: Config) -> dict[str, Sent]:
    """smsgw message id -> what its store(s) recorded of sending it (times as local datetimes)."""
    out: dict[str, Sent] = defaultdict(lambda: Sent([]))
    for config in configs:
        for mid, msg_id in rows(config, "SELECT r.message_id, s.msg_id FROM segments s JOIN recipients r "
                                        "ON r.id = s.recipient_id ORDER BY r.id, s.attempt, s.number"):
            out[str(mid)].msg_ids.append(msg_id)
        for mid, submitted, final in rows(config, "SELECT message_id, min(submitted_at), max(final_at) "
                                                  "FROM recipients GROUP BY message_id"):
            sent = out[str(mid)]
            sent.submitted_at = None if submitted is None else datetime.fromtimestamp(submitted)
            sent.final_at = None if final is None else datetime.fromtimestamp(final)
    return dict(out)


def submits_per_number(configs: Sequence[Config]) -> Counter[str]:
    """How many SUBMITs the ISMG accepted per number, over the stores of every node."""
    counted: Counter[str] = Counter()
    for config in configs:
        for phone, n in rows(config, "SELECT r.phone, count(*) FROM segments s JOIN recipients r "
                                     "ON r.id = s.recipient_id GROUP BY r.phone"):
            counted[phone] += n
    return counted


def source_rows(config: Config, source: str) -> dict[str, str]:
    """Legacy row key -> smsgw message id, as the store recorded the rows it took."""
    return {key: str(mid) for key, mid in rows(config, "SELECT row_key, message_id FROM source_rows WHERE source = ?",
                                               source)}


def row_problems(p: Planned, row: Mapping[str, Any], nodes: Collection[str], sent: Mapping[str, Sent],
                 retaken: bool = False) -> list[str]:
    """What is wrong with one legacy row's write-back (empty: nothing).

    A row `retaken` (reconciled) shows when it was taken again, which may be after it was sent.
    """
    out = []

    def expect(what: str, ok: bool) -> None:
        if not ok:
            out.append(f"{p.ref} ({p.mobiles!r}): {what}; row {dict(row)}")
    expect("taken by a node", row["taken_by"] in nodes)
    expect("taken_at and done_at set", row["taken_at"] is not None and row["done_at"] is not None)
    if p.error is not None:
        expect("rejected", row["state"] == "rejected")
        expect(f"error mentioning {p.error!r}", p.error in (row["error"] or ""))
        expect("no message id, Msg_Id or submit time",
               (row["message_id"], row["msg_ids"], row["submitted_at"]) == (None, None, None))
        return out
    expect("delivered" if p.report else "sent", row["state"] == ("delivered" if p.report else "sent"))
    expect("a message id", str(row["message_id"] or "").isdigit())
    expect("submit_result '0'", row["submit_result"] == "0")
    ids = (row["msg_ids"] or "").split(",")
    expect("one 16-hex Msg_Id per number", len(ids) == len(p.numbers) and all(MSG_ID.fullmatch(i) for i in ids))
    store = sent.get(str(row["message_id"])) or Sent([])
    expect("the store's Msg_Ids, in the order of the numbers", ids == store.msg_ids)
    expect("stat DELIVRD" if p.report else "no stat", row["stat"] == ("DELIVRD" if p.report else None))
    expect("no error", row["error"] is None)
    expect("the store's submit and final times", same_time(row["submitted_at"], store.submitted_at)
           and same_time(row["done_at"], store.final_at))
    expect("taken <= submitted", retaken or row["taken_at"] <= row["submitted_at"])
    return out


def same_time(legacy: datetime | None, store: datetime | None) -> bool:
    """Equal, but for the fraction of a second a DATETIME column without one (MariaDB's) drops."""
    return legacy is not None and store is not None and abs((legacy - store).total_seconds()) < 1.0


def check_outbox(found: Mapping[str, Mapping[str, Any]], planned: Sequence[Planned], nodes: Collection[str],
                 sent: Mapping[str, Sent], retaken: Collection[str] = ()) -> None:
    """Every planned row is in the legacy table with the write-back it should have; `retaken`: keys of
    rows reconciled."""
    assert sorted(found) == sorted(p.ref for p in planned), "the legacy table holds other rows than were written"
    problems = [problem for p in planned for problem in row_problems(p, found[p.ref], nodes, sent,
                                                                      str(found[p.ref]["id"]) in retaken)]
    assert not problems, f"{len(problems)} rows wrong, e.g.:\n" + "\n".join(problems[:5])


def check_store(config: Config, source: str, found: Mapping[str, Mapping[str, Any]],
                planned: Sequence[Planned]) -> None:
    """The store took each good row once, under the message id the legacy row shows."""
    taken = source_rows(config, source)
    expected = {str(found[p.ref]["id"]): str(found[p.ref]["message_id"]) for p in good(planned)}
    assert taken == expected


def events(logs: Sequence[Mapping[str, Any]], name: str, **match: Any) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == name and all(e.get(k) == v for k, v in match.items())]


def alarms(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(e.get("alarm")) for e in logs if e["event"] == "alarm"]


async def until(check: Callable[[], bool], *, timeout: float = 60.0, what: str = "condition",
                interval: float = 0.1) -> None:
    """Like `wait_for`, but `check` runs on a thread: it may block on the legacy database."""
    deadline = time.monotonic() + timeout
    while not await deferToThread(check):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await spin(interval)


def source(name: str, url: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "poll_interval": 0.2, **fields}


def db_source(daemon: Daemon, name: str) -> DbSource:
    [found] = [a for a in daemon.adapters if isinstance(a, DbSource) and a.source.name == name]
    return found


def via(url: str, proxy: TcpProxy) -> str:
    return make_url(url).set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)


# --- the tests -----------------------------------------------------------------------------------------

class LegacyCase(DaemonCase):
    """A temporary directory per test; what a test starts is stopped afterwards."""

    timeout = 120
    tmp_prefix = "smsgw-legacy-"

    def setUp(self) -> None:
        super().setUp()
        self.timings: dict[str, float] = {}

    def legacy(self, dialect: str) -> Legacy:
        if dialect == "sqlite":
            url = f"sqlite:///{self.tmp}/legacy.db"
        else:
            url = server_url(dialect, db=LEGACY_DB)  # skips the test when the server is missing
        legacy = Legacy(url)
        self.addCleanup(legacy.dispose)
        legacy.reset()
        return legacy

    def writer(self, url: str, planned: Sequence[Planned], **options: Any) -> LegacyWriter:
        writer = LegacyWriter(url, planned, **options)
        self.addCleanup(writer.stop)
        writer.start()
        return writer

    def proxy(self, url: str) -> TcpProxy:
        target = make_url(url)
        assert target.port is not None
        proxy = TcpProxy(target.host or "127.0.0.1", target.port)
        self.addCleanup(proxy.close)
        return proxy

    async def timed(self, what: str, step: Awaitable[None]) -> None:
        started = time.monotonic()
        await step
        self.timings[what] = round(time.monotonic() - started, 2)


class ConcurrentWriterTests(LegacyCase):
    """10,000 rows written while the daemon polls: each sent once and written back."""

    ROWS = 10_000

    async def run_rows(self, dialect: str) -> None:
        legacy = self.legacy(dialect)
        planned = plan(self.ROWS)
        config = make_config(self.tmp, {"db_sources": [source("erp", legacy.url)], "node": {"name": "node-a"}})
        with capture_logs() as logs:
            daemon = await self.daemon(config)
            writer = self.writer(legacy.url, planned)
            await self.timed("all rows final", until(lambda: writer.done() and legacy.unfinished() == 0,
                                                     timeout=100, what=f"{self.ROWS} rows final"))
        print(f"{dialect}: {self.timings} in {writer.transactions} writer transactions")
        found = legacy.outbox()
        check_outbox(found, planned, {"node-a"}, sent_in(config))
        check_store(config, "erp", found, planned)
        numbers = all_numbers(planned)
        assert submits_per_number([config]) == Counter(numbers)
        assert daemon.simulator is not None and daemon.simulator.stats.segments == len(numbers)
        assert count(config, "messages") == len(good(planned))
        assert alarms(logs) == []
        assert len(events(logs, "db_row_rejected")) == self.ROWS - len(good(planned)) > 0
        assert events(logs, "db_row_reconciled") == []

    async def test_sqlite(self) -> None:
        """Rows a writer adds to a SQLite sms_outbox while the daemon polls are sent once and written back."""
        await self.run_rows("sqlite")

    async def test_postgresql(self) -> None:
        """Rows a writer adds to a PostgreSQL sms_outbox while the daemon polls are sent once and written back."""
        await self.run_rows("postgresql")

    async def test_mariadb(self) -> None:
        """Rows a writer adds to a MariaDB sms_outbox while the daemon polls are sent once and written back."""
        await self.run_rows("mysql")


class TwoNodeTests(LegacyCase):
    """Two daemons polling one table take every row exactly once between them."""

    ROWS = 4_000

    async def run_two(self, dialect: str) -> None:
        legacy = self.legacy(dialect)
        planned = plan(self.ROWS)
        configs = []
        for i, name in enumerate(("node-a", "node-b")):
            directory = self.tmp / name
            directory.mkdir()
            configs.append(make_config(directory, {"node": {"name": name, "id": i + 1},
                                                   "db_sources": [source("erp", legacy.url, batch_size=100)]}))
        with capture_logs() as logs:
            daemons = [await self.daemon(c) for c in configs]
            writer = self.writer(legacy.url, planned, sizes=(20, 200))
            await self.timed("all rows final", until(lambda: writer.done() and legacy.unfinished() == 0,
                                                     timeout=100, what=f"{self.ROWS} rows final"))
        found = legacy.outbox()
        check_outbox(found, planned, {"node-a", "node-b"}, sent_in(*configs))
        keys = [set(source_rows(c, "erp")) for c in configs]
        assert not keys[0] & keys[1]
        assert keys[0] | keys[1] == {str(found[p.ref]["id"]) for p in good(planned)}
        print(f"{dialect}: {self.timings}, rows per node {[len(k) for k in keys]}")
        assert all(keys), f"one node took every row: {[len(k) for k in keys]}"
        by_node = {p.ref: found[p.ref]["taken_by"] for p in good(planned)}
        for name, taken in zip(("node-a", "node-b"), keys):
            assert {str(found[ref]["id"]) for ref, node in by_node.items() if node == name} == taken
        numbers = all_numbers(planned)
        assert submits_per_number(configs) == Counter(numbers)
        sims = [d.simulator for d in daemons]
        assert sum(s.stats.segments for s in sims if s is not None) == len(numbers)
        assert alarms(logs) == [] and events(logs, "db_row_reconciled") == []

    async def test_postgresql(self) -> None:
        """Two nodes on one PostgreSQL table split the rows between them, each sent once."""
        await self.run_two("postgresql")

    async def test_mariadb(self) -> None:
        """Two nodes on one MariaDB table split the rows between them, each sent once."""
        await self.run_two("mysql")


class OutageTests(LegacyCase):
    """The legacy database goes away (a proxy cut) while rows are polled and while write-backs are owed."""

    timeout = 150
    CUT = 3.0

    def mo_ids(self, config: Config) -> set[str]:
        return {str(i) for (i,) in rows(config, "SELECT id FROM mo_messages WHERE consumer = 'erp'")}

    def inbox_matches_store(self, legacy: Legacy, config: Config) -> bool:
        """Every MO routed to the source is in sms_inbox once (MO keeps arriving: read the store around it)."""
        before = self.mo_ids(config)
        inbox = [str(r["mo_id"]) for r in legacy.inbox()]
        after = self.mo_ids(config)
        return len(inbox) == len(set(inbox)) and before <= set(inbox) <= after

    async def run_outage(self, dialect: str) -> None:
        legacy = self.legacy(dialect)
        proxy = self.proxy(legacy.url)
        first, second = plan(1_500), plan(300, start=1_500, bad=False)
        config = make_config(self.tmp, {
            "db_sources": [source("erp", via(legacy.url, proxy), batch_size=100)],
            "mo": {"default_consumer": "erp"}, "simulator": {"mo_rate": 5.0, "report_delay": 0.8}})
        with capture_logs() as logs:
            daemon = await self.daemon(config)
            api = ApiClient.for_daemon(daemon)
            writer = self.writer(legacy.url, first, sizes=(20, 60), pause=0.05)  # straight in, not via the proxy
            await until(lambda: legacy.count("state <> 'new'") >= 100, what="the first rows taken")

            # 1. Cut while rows are being written and polled; a REST send goes through meanwhile.
            mark, cut_at = len(logs), time.monotonic()
            proxy.cut()
            [rest_id] = await api.send({"to": "13700000001", "text": "数据库断开期间的短信"})
            await wait_for(lambda: count(config, "recipients", "message_id = ? AND state = 'delivered'",
                                         int(rest_id)) == 1, what="the REST message delivered during the outage")
            await spin(max(0.0, self.CUT - (time.monotonic() - cut_at)))
            assert not writer.done() or legacy.count("state = 'new'") > 0, "nothing was left to poll in the outage"
            assert "legacy_db_unreachable" in alarms(logs[mark:])
            proxy.restore()
            await self.timed("first batch final after the outage",
                             until(lambda: writer.done() and legacy.unfinished() == 0, what="the first rows final"))
            assert events(logs[mark:], "db_source_recovered")

            # 2. Cut once the new rows are accepted, before their reports are written back.
            await deferToThread(legacy.insert, second)
            await until(lambda: legacy.count("state = 'new'") == 0, interval=0.02, what="the second rows taken")
            mark, cut_at = len(logs), time.monotonic()
            proxy.cut()
            await wait_for(lambda: "receiver_unreachable" in alarms(logs[mark:]), what="the write-back alarm")
            owed = count(config, "outbox", "kind = 'db:erp' AND state = 'pending' AND event = 'recipient_final'")
            assert owed > 0, "no report write-back was owed during the outage"
            await spin(max(0.0, self.CUT - (time.monotonic() - cut_at)))
            waiting = self.mo_ids(config) - {str(r["mo_id"]) for r in await deferToThread(legacy.inbox)}
            assert waiting, "no MO arrived during the outage"
            assert legacy.count("state = 'delivered'") < len(first) + len(second)
            proxy.restore()
            await self.timed("second batch final after the outage",
                             until(lambda: legacy.unfinished() == 0, what="the second rows final"))
            await until(lambda: self.inbox_matches_store(legacy, config), what="every MO in sms_inbox once")
            assert waiting <= {str(r["mo_id"]) for r in legacy.inbox()}
        print(f"{dialect}: {self.timings}, {proxy.accepted} connections through the proxy, "
              f"{len(events(logs, 'db_row_reconciled'))} rows reconciled")

        planned = first + second
        found = legacy.outbox()
        retaken = {str(e["key"]) for e in events(logs, "db_row_reconciled")}
        check_outbox(found, planned, {config.node.name}, sent_in(config), retaken)
        check_store(config, "erp", found, planned)
        numbers = all_numbers(planned)
        assert submits_per_number([config]) == Counter(numbers + ["13700000001"])
        assert daemon.simulator is not None and daemon.simulator.stats.segments == len(numbers) + 1
        assert set(alarms(logs)) == {"legacy_db_unreachable", "receiver_unreachable"}
        assert events(logs, "receiver_recovered", kind="db:erp")
        self.check_inbox(legacy, config)

    def check_inbox(self, legacy: Legacy, config: Config) -> None:
        stored = {str(i): (src, content, dest, ext) for i, src, content, dest, ext in rows(
            config, "SELECT id, src, content, dest, ext FROM mo_messages WHERE consumer = 'erp'")}
        inbox = {str(r["mo_id"]): (r["mobile"], r["content"], r["dest"], r["ext"]) for r in legacy.inbox()}
        assert set(inbox) <= set(stored)
        assert all(inbox[i] == stored[i] and inbox[i][1] in _MO_TEXTS for i in inbox)

    async def test_postgresql(self) -> None:
        """PostgreSQL going away mid-poll and with write-backs owed loses nothing, sends nothing twice."""
        await self.run_outage("postgresql")

    async def test_mariadb(self) -> None:
        """MariaDB going away mid-poll and with write-backs owed loses nothing, sends nothing twice."""
        await self.run_outage("mysql")


class CrashWindowTests(LegacyCase):
    """Rows committed in smsgw's store whose legacy transaction did not commit are reconciled, not resent."""

    def fail_first_claim_commit(self, src: DbSource) -> list[str]:
        """Make the legacy COMMIT of the first poll that accepted rows fail (after the store's commit)."""
        assert src.engine is not None
        marker = "smsgw-test-fail-commit"
        failed: list[str] = []
        accepted = src.statements.accepted
        original = accepted.run

        def run(conn: Connection, values: list[dict[str, Any]]) -> None:
            original(conn, values)
            if values and not failed:
                conn.info[marker] = [str(v["key"]) for v in values]

        def on_commit(conn: Connection) -> None:
            keys = conn.info.pop(marker, None)
            if keys is not None:
                failed.extend(keys)
                raise sa_exc.OperationalError("COMMIT", None, ConnectionError("server closed the connection"))
        accepted.run = run  # type: ignore[method-assign, assignment]  # this instance only, for this test
        self.addCleanup(vars(accepted).pop, "run", None)
        event.listen(src.engine, "commit", on_commit)
        self.addCleanup(event.remove, src.engine, "commit", on_commit)
        return failed

    async def run_crash(self, dialect: str, poll_interval: float = 0.2) -> None:
        legacy = self.legacy(dialect)
        planned = plan(40)
        config = make_config(self.tmp, {"db_sources": [source("erp", legacy.url, poll_interval=poll_interval)]})
        with capture_logs() as logs:
            daemon = await self.daemon(config)
            failed = self.fail_first_claim_commit(db_source(daemon, "erp"))
            await deferToThread(legacy.insert, planned)
            await until(lambda: legacy.unfinished() == 0, what="the rows final")
        found = legacy.outbox()
        keys = {str(found[p.ref]["id"]) for p in good(planned)}
        assert set(failed) == keys, "the first claim did not take every good row"
        reconciled = {str(e["key"]): str(e["message_id"]) for e in events(logs, "db_row_reconciled", source="erp")}
        assert reconciled == source_rows(config, "erp") == {str(found[p.ref]["id"]): str(found[p.ref]["message_id"])
                                                            for p in good(planned)}
        assert "legacy_db_unreachable" in alarms(logs)
        check_outbox(found, planned, {config.node.name}, sent_in(config), retaken=keys)
        numbers = all_numbers(planned)
        assert submits_per_number([config]) == Counter(numbers)
        assert daemon.simulator is not None and daemon.simulator.stats.segments == len(numbers)
        assert count(config, "messages") == len(keys)

    async def test_sqlite(self) -> None:
        """A failed SQLite commit after the store took the rows: taken again, reconciled, sent once."""
        await self.run_crash("sqlite")

    async def test_postgresql(self) -> None:
        """A failed PostgreSQL commit after the store took the rows: taken again, reconciled, sent once."""
        await self.run_crash("postgresql")

    async def test_postgresql_write_back_before_the_next_poll(self) -> None:
        """A row whose claim commit failed is reconciled even when its write-back comes before the next poll."""
        await self.run_crash("postgresql", poll_interval=1.5)


class WriteBackOrderTests(LegacyCase):
    """What a legacy system reading sms_outbox may see while write-backs are under way."""

    TRIGGER = """
        DROP TABLE IF EXISTS premature;
        CREATE TABLE premature (id BIGINT, state VARCHAR(16), stat VARCHAR(16));
        -- Checked at COMMIT (deferred), on the row as that transaction leaves it: what others can read.
        CREATE OR REPLACE FUNCTION note_premature() RETURNS trigger AS $$
        BEGIN
            INSERT INTO premature
                SELECT id, state, stat FROM sms_outbox
                WHERE id = NEW.id AND done_at IS NULL
                    AND state IN ('sent', 'delivered', 'undeliverable', 'failed', 'expired', 'partial');
            RETURN NULL;
        END $$ LANGUAGE plpgsql;
        CREATE CONSTRAINT TRIGGER sms_outbox_premature AFTER UPDATE ON sms_outbox
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION note_premature();
    """

    async def test_a_row_is_never_final_without_its_final_columns(self) -> None:
        """No UPDATE ever shows a row final without done_at, even when write-backs pile up past a batch."""
        legacy = self.legacy("postgresql")
        with legacy.engine.begin() as conn:
            conn.exec_driver_sql(self.TRIGGER)
        self.addCleanup(self.drop_trigger, legacy)
        proxy = self.proxy(legacy.url)
        planned = plan(400, bad=False)
        config = make_config(self.tmp, {"db_sources": [source("erp", via(legacy.url, proxy))]})
        await self.daemon(config)
        await deferToThread(legacy.insert, planned)
        await until(lambda: legacy.count("state = 'new'") == 0, interval=0.02, what="the rows taken")
        # With the database away, every submit and report piles up: more events than one outbox batch (500).
        proxy.cut()
        recipients = len(all_numbers(planned))
        await wait_for(lambda: count(config, "recipients", "state IN ('delivered', 'sent')") == recipients,
                       what="every recipient final in the store")
        assert count(config, "outbox", "kind = 'db:erp' AND state = 'pending'") > 500
        proxy.restore()
        await until(lambda: legacy.unfinished() == 0, what="the rows final")
        with legacy.engine.connect() as conn:
            premature = conn.execute(text("SELECT id, state, stat FROM premature ORDER BY id")).all()
        assert premature == [], f"{len(premature)} rows were final without done_at, e.g. {premature[:3]}"

    def drop_trigger(self, legacy: Legacy) -> None:
        with legacy.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS sms_outbox, premature; "
                                 "DROP FUNCTION IF EXISTS note_premature()")


class MappingTests(LegacyCase):
    """Existing legacy tables with their own columns, and write-backs as SQL statements, on PostgreSQL."""

    TABLES = """
        DROP TABLE IF EXISTS work_orders_sms, wo_mo, ticket_sms;
        CREATE TABLE work_orders_sms (
            wo_no VARCHAR(32) PRIMARY KEY, phone VARCHAR(200) NOT NULL, body TEXT NOT NULL,
            sms_flag SMALLINT NOT NULL DEFAULT 0, sms_id VARCHAR(20), carrier_id VARCHAR(2000),
            submit_code VARCHAR(64), dlr_stat VARCHAR(16), dlr_time TIMESTAMP, sms_error VARCHAR(500));
        CREATE TABLE wo_mo (
            seq SERIAL PRIMARY KEY, mo_ref VARCHAR(20) NOT NULL, phone VARCHAR(32), body TEXT,
            got_at TIMESTAMP, by_node VARCHAR(64));
        CREATE TABLE ticket_sms (
            tid INTEGER PRIMARY KEY, tel VARCHAR(200) NOT NULL, msg TEXT NOT NULL, st SMALLINT NOT NULL DEFAULT 0,
            gw_id VARCHAR(20), ids VARCHAR(2000), result VARCHAR(64), stat VARCHAR(16), finished TIMESTAMP,
            why VARCHAR(500), node VARCHAR(64));
    """
    WORK_ORDERS = [("WO-0001", "13800000001", "工单WO-0001已派发，请及时处理。"),
                   ("WO-0002", "13800000002, 13900000002", "Work order WO-0002 assigned"),
                   ("WO-0003", "1380000", "bad number"),
                   ("WO-0004", "13800000004", "工单WO-0004已完成")]
    TICKETS = [(1, "13600000001", "您的工单已受理"), (2, "13600000002;13600000003", "Ticket 2 opened"),
               (3, "13600000004", ""), (4, "13600000005", "工单4已关闭")]

    def sources(self, url: str) -> list[dict[str, Any]]:
        work_orders = source("wo", url, inbox=None, mapping={
            "table": "work_orders_sms", "key": "wo_no", "key_type": "text",
            "columns": {"to": "phone", "text": "body"}, "pending": {"sms_flag": 0},
            "accepted": {"sms_flag": 1, "sms_id": "{message_id}"},
            "submitted": {"sms_flag": 2, "carrier_id": "{msg_ids}", "submit_code": "{result}"},
            "reported": {"sms_flag": 3, "dlr_stat": "{stat}", "dlr_time": "{done_at}"},
            "rejected": {"sms_flag": 9, "sms_error": "{error}"},
        }, mo_inbox={"sql": "INSERT INTO wo_mo (mo_ref, phone, body, got_at, by_node) "
                            "VALUES (:mo_id, :mobile, :content, :received_at, :node)"})
        tickets = source("tickets", url, inbox=None, mapping={
            "table": "ticket_sms", "key": "tid", "columns": {"to": "tel", "text": "msg"}, "pending": {"st": 0},
            "accepted": {"sql": "UPDATE ticket_sms SET st = 1, gw_id = :message_id, node = :node WHERE tid = :key"},
            "submitted": {"sql": "UPDATE ticket_sms SET st = 2, ids = :msg_ids, result = :result WHERE tid = :key"},
            "reported": {"sql": "UPDATE ticket_sms SET st = 3, stat = :stat, finished = :done_at WHERE tid = :key"},
            "rejected": {"sql": "UPDATE ticket_sms SET st = 9, why = :error WHERE tid = :key"},
        })
        return [work_orders, tickets]

    def table(self, legacy: Legacy, sql: str) -> list[dict[str, Any]]:
        with legacy.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(sql)).mappings()]

    def done(self, legacy: Legacy) -> bool:
        with legacy.engine.connect() as conn:
            return int(conn.execute(text("SELECT (SELECT count(*) FROM work_orders_sms WHERE sms_flag NOT IN (3, 9))"
                                         " + (SELECT count(*) FROM ticket_sms WHERE st NOT IN (3, 9))")).scalar_one()) == 0

    async def test_mapped_tables_get_their_write_backs(self) -> None:
        """A mapped work-order table, a table written by sql: statements and an MO INSERT all get their values."""
        legacy = self.legacy("postgresql")
        with legacy.engine.begin() as conn:
            conn.exec_driver_sql(self.TABLES)
            conn.execute(text("INSERT INTO work_orders_sms (wo_no, phone, body) VALUES (:k, :p, :b)"),
                         [{"k": k, "p": p, "b": b} for k, p, b in self.WORK_ORDERS])
            conn.execute(text("INSERT INTO ticket_sms (tid, tel, msg) VALUES (:k, :p, :b)"),
                         [{"k": k, "p": p, "b": b} for k, p, b in self.TICKETS])
        self.addCleanup(self.drop_tables, legacy)
        config = make_config(self.tmp, {"db_sources": self.sources(legacy.url), "mo": {"default_consumer": "wo"},
                                        "simulator": {"mo_rate": 10.0}})
        with capture_logs() as logs:
            await self.daemon(config)
            await until(lambda: self.done(legacy), what="the mapped rows final")
            await until(lambda: len(self.table(legacy, "SELECT seq FROM wo_mo")) >= 3, what="3 MO in wo_mo")
            await spin(0.3)
        assert alarms(logs) == []
        sent = sent_in(config)

        taken = source_rows(config, "wo")
        assert set(taken) == {"WO-0001", "WO-0002", "WO-0004"}
        for row in self.table(legacy, "SELECT * FROM work_orders_sms ORDER BY wo_no"):
            if row["wo_no"] == "WO-0003":
                assert row["sms_flag"] == 9 and "7 digits" in row["sms_error"] and row["sms_id"] is None
                continue
            mid = taken[row["wo_no"]]
            n = 2 if row["wo_no"] == "WO-0002" else 1
            assert len(sent[mid].msg_ids) == n
            assert row["dlr_time"] == sent[mid].final_at
            assert {k: row[k] for k in ("sms_flag", "sms_id", "carrier_id", "submit_code", "dlr_stat", "sms_error")} == {
                "sms_flag": 3, "sms_id": mid, "carrier_id": ",".join(sent[mid].msg_ids), "submit_code": "0",
                "dlr_stat": "DELIVRD", "sms_error": None}

        taken = source_rows(config, "tickets")
        assert set(taken) == {"1", "2", "4"}
        for row in self.table(legacy, "SELECT * FROM ticket_sms ORDER BY tid"):
            if row["tid"] == 3:
                assert row["st"] == 9 and "text is empty" in row["why"] and row["gw_id"] is None
                continue
            mid = taken[str(row["tid"])]
            assert {k: row[k] for k in ("st", "gw_id", "ids", "result", "stat", "why", "node")} == {
                "st": 3, "gw_id": mid, "ids": ",".join(sent[mid].msg_ids), "result": "0", "stat": "DELIVRD", "why": None,
                "node": config.node.name}
            assert row["finished"] == sent[mid].final_at
        assert submits_per_number([config]) == Counter(
            ["13800000001", "13800000002", "13900000002", "13800000004", "13600000001", "13600000002",
             "13600000003", "13600000005"])

        landed = self.table(legacy, "SELECT mo_ref, phone, body, got_at, by_node FROM wo_mo")
        stored = {str(i): (src, content) for i, src, content in rows(
            config, "SELECT id, src, content FROM mo_messages WHERE consumer = 'wo'")}
        refs = [r["mo_ref"] for r in landed]
        assert len(refs) == len(set(refs)) and set(refs) <= set(stored)
        for r in landed:
            assert (r["phone"], r["body"]) == stored[r["mo_ref"]]
            assert r["got_at"] is not None and r["by_node"] == config.node.name

    def drop_tables(self, legacy: Legacy) -> None:
        with legacy.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS work_orders_sms, wo_mo, ticket_sms")
