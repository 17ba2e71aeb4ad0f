"""A crash rig for the daemon: a standalone ISMG simulator, `smsgw run` as a child, a posting client, an audit.

The simulator runs in its own process so it outlives every kill of the daemon,
and keeps counting what it saw (GET /stats). The client POSTs messages from a
few threads and keeps the id of every 202: only those were accepted. A request
whose connection died before its answer is "unknown" (it may or may not have
been committed); a refused connection or a 503 is not accepted.

`audit()` then reads the SQLite store directly and checks that nothing was
lost: used by tests/test_crash.py and scripts/bench/crash_loop.py.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ports import free_port

ROOT = Path(__file__).resolve().parents[1]
SP_ID, SECRET = "901234", "secret"
API_KEY = "demo-key"  # the demo account of conf/smsgw.yaml
FINAL_STATES = frozenset({"delivered", "undeliverable", "failed", "expired", "sent"})
LONG_TEXT = "Crash test: " + "0123456789" * 19  # 202 ASCII characters: two segments
POST_TIMEOUT = 15.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: [0] state, [1] parent pid, [11] utime, [12] stime."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """The live processes under `pid` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(proc_stat(int(entry))[1])
            except OSError:
                continue  # ended meanwhile
            parents.setdefault(parent, []).append(int(entry))
    out, todo = [], list(parents.get(pid, ()))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(parents.get(child, ()))
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return proc_stat(pid)[0] != "Z"
    except OSError:
        return False


class ShutdownTooSlow(AssertionError):
    """The daemon did not exit within the time allowed after SIGTERM (it was then killed)."""


# --- the processes ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RigConfig:
    report_delay: float = 0.05
    connections: int = 1
    window: int = 16
    drain_timeout: float = 10.0
    sweep_interval: float = 0.5
    rate_limit: float | None = None  # the carrier's submits/s per connection


class Rig:
    """One simulator process and (at most) one daemon process sharing a store under `tmp`."""

    def __init__(self, tmp: Path, seed: int, config: RigConfig = RigConfig()) -> None:
        self.tmp = tmp
        self.seed = seed
        self.config = config
        self.sim_port, self.stats_port, self.api_port = free_port(), free_port(), free_port()
        self.data_dir = tmp / "var"
        self.db_path = self.data_dir / "smsgw.db"
        self.log_path = self.data_dir / "log" / "smsgw.log"
        self.config_path = tmp / "smsgw.yaml"
        self.sim: subprocess.Popen[bytes] | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        data = yaml.safe_load((ROOT / "conf" / "smsgw.yaml").read_text(encoding="utf-8"))
        data["node"]["data_dir"] = str(self.data_dir)
        data["log"].update(file="log/smsgw.log", format="json", level="info")
        data["api"]["port"] = self.api_port
        carrier = data["carriers"][0]
        carrier.update(port=self.sim_port, secret=SECRET, connections=self.config.connections,
                       window=self.config.window, rate_limit=self.config.rate_limit,
                       reconnect_initial=0.1, reconnect_max=0.5)
        data["simulator"]["enabled"] = False
        data["dispatch"]["sweep_interval"] = self.config.sweep_interval
        data["shutdown"]["drain_timeout"] = self.config.drain_timeout
        self.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    def _smsgw(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "smsgw", *args]

    def upgrade(self) -> None:
        subprocess.run(self._smsgw("db", "upgrade", "-c", str(self.config_path)), cwd=self.tmp, check=True,
                       stdout=subprocess.DEVNULL)

    def start_simulator(self) -> None:
        out = open(self.tmp / "simulator.out", "ab")
        self.sim = subprocess.Popen(
            self._smsgw("--log-level", "warning", "simulate", "--listen", f"127.0.0.1:{self.sim_port}",
                        "--stats-port", str(self.stats_port), "--account", f"{SP_ID}:{SECRET}",
                        "--report-delay", str(self.config.report_delay), "--seed", str(self.seed)),
            cwd=self.tmp, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        wait_until(lambda: self._answers(self.sim, self.sim_stats), "the simulator's stats port", 20)

    def start_daemon(self) -> None:
        """Start `smsgw run` and wait until its REST API answers."""
        out = open(self.tmp / "daemon.out", "ab")
        # A session of its own, as under systemd: stop_daemon can signal all its processes at once.
        self.daemon = subprocess.Popen(self._smsgw("run", "-c", str(self.config_path)), cwd=self.tmp,
                                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        wait_until(lambda: self._answers(self.daemon, self.gateway_status), "the daemon's REST API", 30)

    def _answers(self, proc: subprocess.Popen[bytes] | None, probe: Callable[[], Any]) -> bool:
        if proc is None or proc.poll() is not None:
            raise AssertionError(f"process exited early ({proc and proc.returncode}); see {self.tmp}/*.out")
        try:
            probe()
        except (OSError, http.client.HTTPException, ValueError):
            return False
        return True

    def kill_daemon(self) -> float:
        """SIGKILL: nothing gets to run, as in a power cut of the process; returns the time of the kill.
        Its store writer process (and that one's fork server) must end on their own: one left behind
        would hold the store."""
        assert self.daemon is not None
        children = descendants(self.daemon.pid)  # before the time is taken: reading /proc takes a while
        assert children, "the daemon has no store writer process"
        killed_at = time.time()
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait(10)
        self.daemon = None
        wait_until(lambda: not any(_running(pid) for pid in children),
                   f"the killed daemon's processes {children} to end", 10)
        return killed_at

    def stop_daemon(self, timeout: float, *, every_process: bool = False) -> tuple[int, float]:
        """SIGTERM and wait; (exit code, seconds it took). `every_process`: to each of the daemon's processes,
        as systemd's default KillMode and Ctrl-C in a terminal do."""
        assert self.daemon is not None
        began = time.monotonic()
        if every_process:
            os.killpg(self.daemon.pid, signal.SIGTERM)
        else:
            os.kill(self.daemon.pid, signal.SIGTERM)
        try:
            code = self.daemon.wait(timeout)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait(10)
            raise ShutdownTooSlow(f"the daemon did not exit within {timeout:g}s of SIGTERM") from None
        self.daemon = None
        return code, time.monotonic() - began

    def close(self) -> None:
        for proc in (self.daemon, self.sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.daemon = self.sim = None

    def _get(self, port: int, path: str, key: str | None = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise ValueError(f"GET {path}: {response.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def sim_stats(self) -> dict[str, int]:
        stats: dict[str, int] = self._get(self.stats_port, "/stats")
        return stats

    def gateway_status(self) -> dict[str, Any]:
        status: dict[str, Any] = self._get(self.api_port, "/api/v1/status", API_KEY)
        return status

    def settled(self) -> bool:
        """Nothing open in the store and every report the simulator made was taken."""
        status = self.gateway_status()
        stats = self.sim_stats()
        return (not any(status["queues"].values()) and stats["reports_acked"] == stats["segments"]
                and stats["connections"] >= 1)

    def settle(self, timeout: float) -> None:
        try:
            wait_until(self.settled, "the daemon to settle", timeout, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: status {self.gateway_status()}, simulator {self.sim_stats()}") from None

    def log_events(self) -> list[dict[str, Any]]:
        """Every JSON line of the daemon's log file (a line cut short by SIGKILL is skipped)."""
        events = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


# --- the client ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    id: str
    ref: str
    phones: tuple[str, ...]
    segments: int


@dataclass
class Outcomes:
    accepted: list[Accepted] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # refs whose answer never came
    refused: int = 0  # connection refused or 503: certainly not accepted
    unexpected: list[str] = field(default_factory=list)  # any other answer: a test or API problem
    sent: dict[str, tuple[str, ...]] = field(default_factory=dict)  # ref -> phones, every request tried


class Poster:
    """Threads that POST one message at a time to the REST API until stopped."""

    def __init__(self, api_port: int, seed: int, clients: int = 3, long_ratio: float = 0.2,
                 batch_ratio: float = 0.15) -> None:
        self._port = api_port
        self._seed = seed
        self._clients = clients
        self._long_ratio = long_ratio
        self._batch_ratio = batch_ratio
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counter = 0
        self._threads: list[threading.Thread] = []
        self.outcomes = Outcomes()

    def start(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"poster-{i}", daemon=True)
                         for i in range(self._clients)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(POST_TIMEOUT + 5)
        self._threads = []

    def _next(self, rng: random.Random) -> list[tuple[str, tuple[str, ...], str]]:
        """One request: usually one message, sometimes a batch of two (refs c<n>, phones 139<n>...)."""
        out = []
        for _ in range(2 if rng.random() < self._batch_ratio else 1):
            with self._lock:
                first = self._counter
                count = rng.choice((1, 1, 2, 3))
                self._counter += count
            phones = tuple(f"139{n:08d}" for n in range(first, first + count))
            text = LONG_TEXT if rng.random() < self._long_ratio else f"Crash test message {first}"
            out.append((f"c{first}", phones, text))
        return out

    def _run(self, index: int) -> None:
        try:
            self._post_until_stopped(random.Random(self._seed * 1000 + index))
        except Exception as exc:  # noqa: BLE001 - a dead client must fail the test, not hide
            with self._lock:
                self.outcomes.unexpected.append(f"client {index} crashed: {exc!r}")

    def _post_until_stopped(self, rng: random.Random) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            messages = self._next(rng)
            refs = [ref for ref, _, _ in messages]
            items = [{"to": list(phones), "text": text, "ref": ref} for ref, phones, text in messages]
            body = json.dumps(items if len(items) > 1 else items[0]).encode()
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=POST_TIMEOUT)
                try:
                    conn.connect()
                except OSError:
                    conn = None
                    self._refused()
                    continue
            with self._lock:
                self.outcomes.sent.update((ref, phones) for ref, phones, _ in messages)
            try:
                conn.request("POST", "/api/v1/messages", body,
                             {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None
                with self._lock:
                    self.outcomes.unknown.extend(refs)
                continue
            self._answered(messages, response.status, answer)
            if response.status != 202 or response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def post_bulk(self, recipients: int) -> Accepted:
        """POST one message to `recipients` numbers from the calling thread; it must be accepted."""
        with self._lock:
            first = self._counter
            self._counter += recipients
        ref = f"c{first}"
        phones = tuple(f"139{n:08d}" for n in range(first, first + recipients))
        with self._lock:
            self.outcomes.sent[ref] = phones
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=POST_TIMEOUT)
        try:
            conn.request("POST", "/api/v1/messages", json.dumps({"to": list(phones), "text": "Bulk", "ref": ref}),
                         {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
            response = conn.getresponse()
            answer = response.read()
        finally:
            conn.close()
        if response.status != 202:
            raise AssertionError(f"bulk POST answered {response.status}: {answer[:300]!r}")
        return self._answered([(ref, phones, "Bulk")], response.status, answer)[0]

    def _refused(self) -> None:
        with self._lock:
            self.outcomes.refused += 1
        self._stop.wait(0.05)  # the daemon is down or restarting: try again shortly

    def _answered(self, messages: list[tuple[str, tuple[str, ...], str]], status: int,
                  answer: bytes) -> list[Accepted]:
        if status == 503:
            self._refused()
            return []
        refs = [ref for ref, _, _ in messages]
        if status != 202:
            with self._lock:
                self.outcomes.unexpected.append(f"{refs}: {status} {answer[:300]!r}")
            return []
        answered = json.loads(answer)["messages"]
        items = [Accepted(m["id"], ref, phones, m["segments"])
                 for m, (ref, phones, _) in zip(answered, messages)]
        with self._lock:
            if len(answered) != len(messages) or [m["ref"] for m in answered] != refs:
                self.outcomes.unexpected.append(f"{refs}: 202 answers {answered}")
            self.outcomes.accepted.extend(items)
        return items


# --- the audit -------------------------------------------------------------------------------


@dataclass
class Audit:
    messages: int = 0  # in the store (accepted ones and committed unknowns)
    recipients: int = 0
    final: int = 0
    delivered: int = 0
    lost: int = 0  # accepted but missing in the store, or missing a recipient
    segments_expected: int = 0  # one submit per segment per recipient
    duplicates_submitted: int = 0  # simulator submits beyond the expected
    extra_attempts: int = 0  # claims beyond the first, over all recipients
    extra_segment_attempts: int = 0  # the same in segments: the most that can have been resent
    requeued: int = 0  # sum of inflight_requeued counts in the log
    unmatched_msg_ids: int = 0  # Msg_Ids the simulator reported that no segment row has
    report_rows: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"messages={self.messages} recipients={self.recipients} final={self.final} "
                f"delivered={self.delivered} lost={self.lost} duplicates_submitted={self.duplicates_submitted} "
                f"extra_attempts={self.extra_attempts} requeued={self.requeued} "
                f"unmatched_msg_ids={self.unmatched_msg_ids} report_rows={self.report_rows}")


def audit(db_path: Path, outcomes: Outcomes, kill_times: list[float], stats: dict[str, int],
          events: list[dict[str, Any]]) -> Audit:
    """Check the store after the daemon settled and stopped; every violation goes into `problems`."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return _Auditor(db, outcomes, kill_times, stats, events).run()
    finally:
        db.close()


class _Auditor:
    def __init__(self, db: sqlite3.Connection, outcomes: Outcomes, kill_times: list[float],
                 stats: dict[str, int], events: list[dict[str, Any]]) -> None:
        self.out = Audit()
        self.outcomes = outcomes
        self.kill_times = sorted(kill_times)
        self.stats = stats
        self.events = events
        self.messages = {str(row["id"]): row for row in db.execute("SELECT * FROM messages")}
        self.recipients: dict[str, list[sqlite3.Row]] = defaultdict(list)
        for row in db.execute("SELECT * FROM recipients ORDER BY id"):
            self.recipients[str(row["message_id"])].append(row)
        self.segments: dict[int, list[sqlite3.Row]] = defaultdict(list)
        for row in db.execute("SELECT * FROM segments"):
            self.segments[row["recipient_id"]].append(row)
        self.reports = list(db.execute("SELECT * FROM reports"))

    def problem(self, text: str) -> None:
        if len(self.out.problems) < 50:
            self.out.problems.append(text)

    def run(self) -> Audit:
        self.check_accepted()
        self.check_refs()
        self.check_recipients()
        self.check_reports()
        self.check_duplicates()
        return self.out

    def check_accepted(self) -> None:
        """Every 202 is in the store with all its recipients."""
        for item in self.outcomes.accepted:
            if item.id not in self.messages:
                self.out.lost += len(item.phones)
                self.problem(f"accepted message {item.id} ({item.ref}) is not in the store")
                continue
            phones = sorted(row["phone"] for row in self.recipients[item.id])
            if phones != sorted(item.phones):
                self.out.lost += len(set(item.phones) - set(phones))
                self.problem(f"message {item.id}: recipients {phones}, accepted {sorted(item.phones)}")
            if self.messages[item.id]["ref"] != item.ref:
                self.problem(f"message {item.id}: ref {self.messages[item.id]['ref']!r}, posted {item.ref!r}")

    def check_refs(self) -> None:
        """Each stored message is one the client posted, stored once; committed unknowns count as sent."""
        refs = Counter(row["ref"] for row in self.messages.values())
        for ref, n in refs.items():
            if ref not in self.outcomes.sent:
                self.problem(f"the store has message ref {ref!r} the client never posted")
            if n > 1:
                self.problem(f"ref {ref!r} is stored {n} times (one POST, several messages)")
        accepted = {item.ref for item in self.outcomes.accepted}
        stray = set(refs) - accepted - set(self.outcomes.unknown)
        if stray:
            self.problem(f"{len(stray)} stored message(s) were neither answered 202 nor unknown, e.g. "
                         f"{sorted(stray)[:5]}: a POST answered 503 or refused was committed")

    def check_recipients(self) -> None:
        """Every recipient is final (delivered: the simulator says DELIVRD) with its segments reported."""
        self.out.messages = len(self.messages)
        for message_id, rows in self.recipients.items():
            msg = self.messages.get(message_id)
            if msg is None:
                self.problem(f"recipients of message {message_id}, which is not in messages")
                continue
            if msg["state"] != "completed" or msg["open_recipients"] != 0:
                self.problem(f"message {message_id}: state {msg['state']}, open_recipients {msg['open_recipients']}")
            for row in rows:
                self.check_recipient(msg, row)

    def check_recipient(self, msg: sqlite3.Row, row: sqlite3.Row) -> None:
        out = self.out
        out.recipients += 1
        out.segments_expected += row["segments"]
        out.extra_attempts += max(0, row["attempts"] - 1)
        out.extra_segment_attempts += max(0, row["attempts"] - 1) * row["segments"]
        where = f"recipient {row['id']} ({row['phone']}) of message {msg['id']}"
        if row["state"] in FINAL_STATES:
            out.final += 1
        if row["state"] != "delivered":
            self.problem(f"{where}: state {row['state']!r} (error {row['error']!r}), expected 'delivered'")
            return
        out.delivered += 1
        segs = self.segments[row["id"]]
        if sorted(s["number"] for s in segs) != list(range(1, row["segments"] + 1)):
            self.problem(f"{where}: segment rows {[(s['number'], s['attempt']) for s in segs]}, "
                         f"expected numbers 1..{row['segments']} of one attempt")
        for seg in segs:
            if seg["attempt"] != row["attempts"] or seg["state"] != "delivered":
                self.problem(f"{where}: segment {seg['number']} attempt {seg['attempt']} state {seg['state']}; "
                             f"recipient attempts {row['attempts']}")
        # Resends only where documented: each attempt after the first needs a kill between the
        # accept and the submit that was recorded (the last attempt's).
        submitted = min((s["submitted_at"] for s in segs), default=row["submitted_at"])
        kills = sum(1 for t in self.kill_times if msg["created_at"] <= t <= submitted)
        if row["attempts"] - 1 > kills:
            self.problem(f"{where}: {row['attempts']} attempts but only {kills} kill(s) between its accept "
                         f"and its recorded submit: resent without a crash")

    def check_reports(self) -> None:
        """No status report lost: each segment has a matched report; every report taken is stored."""
        matched: defaultdict[int, int] = defaultdict(int)
        for report in self.reports:
            if report["state"] == "matched":
                matched[report["segment_id"]] += 1
        for segs in self.segments.values():
            for seg in segs:
                if not matched[seg["id"]]:
                    self.problem(f"segment {seg['id']} (msg_id {seg['msg_id']}) has no matched report row")
        out = self.out
        out.report_rows = len(self.reports)
        acked, made = self.stats["reports_acked"], self.stats["segments"]
        if acked > out.report_rows:
            self.problem(f"the simulator had {acked} report(s) acknowledged but the store has {out.report_rows} "
                         f"report rows: a report was acknowledged before it was committed")
        if acked != made:
            self.problem(f"the simulator made {made} report(s) but only {acked} were acknowledged")
        seg_msg_ids = {seg["msg_id"] for segs in self.segments.values() for seg in segs}
        reported = {report["msg_id"] for report in self.reports}
        out.unmatched_msg_ids = len(reported - seg_msg_ids)
        if len(reported) != made:
            self.problem(f"the store has reports for {len(reported)} distinct Msg_Ids; the simulator made {made}")
        for report in self.reports:
            if report["state"] != "matched" and report["msg_id"] in seg_msg_ids:
                self.problem(f"report {report['id']} (msg_id {report['msg_id']}) is {report['state']} "
                             f"although its segment is in the store")

    def check_duplicates(self) -> None:
        """Resends only where documented: what a restart requeued, never more."""
        out = self.out
        out.requeued = sum(int(e.get("count", 0)) for e in self.events if e.get("event") == "inflight_requeued")
        out.duplicates_submitted = self.stats["submits"] - out.segments_expected
        if out.duplicates_submitted < 0:
            self.problem(f"the simulator saw {self.stats['submits']} submit(s), fewer than the "
                         f"{out.segments_expected} segment(s) the store says were delivered")
        if out.extra_attempts > out.requeued:
            self.problem(f"{out.extra_attempts} extra attempt(s) but restarts requeued only {out.requeued}")
        if out.duplicates_submitted > out.extra_segment_attempts:
            self.problem(f"{out.duplicates_submitted} duplicate submit(s) but the store counts only "
                         f"{out.extra_segment_attempts} segment(s) of extra attempts")
        if out.unmatched_msg_ids != out.duplicates_submitted:
            # Each resend whose first SUBMIT_RESP died with the process left one Msg_Id no segment has.
            self.problem(f"{out.unmatched_msg_ids} reported Msg_Id(s) match no segment, but there were "
                         f"{out.duplicates_submitted} duplicate submit(s)")
        retries = [e for e in self.events if e.get("event") in ("submit_retry", "message_failed")]
        if retries:
            self.problem(f"{len(retries)} submit retry/failure line(s) in the log, e.g. {retries[0]}")
