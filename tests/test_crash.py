"""Nothing is lost when the daemon is killed mid-stream: the store, not the process, holds every promise.

A standalone ISMG simulator outlives the daemon (`smsgw run`, a child
process), a client POSTs messages all along, and the daemon is killed with
SIGKILL at random moments and restarted. Afterwards the SQLite store must hold
every accepted message, every recipient delivered with its status reports,
and resends only for what was in flight at a kill. The seed is printed; set
SMSGW_CRASH_SEED to replay a run's kill points (timing still varies).
scripts/bench/crash_loop.py runs the same rig for many more cycles.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from smsgw.store import make_engine, migrations, schema

from crash_harness import Accepted, Outcomes, Poster, Rig, RigConfig, audit, wait_until

KILLS = 5
SETTLE_TIMEOUT = 60.0


def crash_seed() -> int:
    """SMSGW_CRASH_SEED or a fresh one, printed (pytest shows it with a failure)."""
    seed = int(os.environ.get("SMSGW_CRASH_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"seed={seed} (replay with SMSGW_CRASH_SEED={seed})")
    return seed


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[[RigConfig], Rig]]:
    """Builds the rig (simulator and daemon running) with the given settings; stops both afterwards."""
    rigs: list[Rig] = []

    def make(config: RigConfig) -> Rig:
        rig = Rig(tmp_path, crash_seed(), config)
        rigs.append(rig)
        rig.upgrade()
        rig.start_simulator()
        rig.start_daemon()
        return rig
    try:
        yield make
    finally:
        for rig in rigs:
            if rig.sim is not None:
                os.kill(rig.sim.pid, signal.SIGCONT)  # a test may have stopped it
            rig.close()


def accepted_at_least(poster: Poster, n: int) -> bool:
    return len(poster.outcomes.accepted) >= n


def test_sigkill_and_restart_lose_nothing(make_rig: Callable[[RigConfig], Rig]) -> None:
    """Accepted messages survive repeated SIGKILLs: all delivered, every report stored, resends only after a kill."""
    rig = make_rig(RigConfig())
    rng = random.Random(rig.seed)
    poster = Poster(rig.api_port, rig.seed)
    poster.start()
    kill_times: list[float] = []
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.5))  # the random point of the kill, not a wait for something
            kill_times.append(rig.kill_daemon())
            rig.start_daemon()
        before = len(poster.outcomes.accepted)
        wait_until(lambda: accepted_at_least(poster, before + 20), "posts after the last restart", 30)
    finally:
        poster.stop()
    rig.settle(SETTLE_TIMEOUT)
    code, _ = rig.stop_daemon(rig.config.drain_timeout + 5)
    result = audit(rig.db_path, poster.outcomes, kill_times, rig.sim_stats(), rig.log_events())
    out = poster.outcomes
    print(f"kills={len(kill_times)} accepted={len(out.accepted)} unknown={len(out.unknown)} "
          f"refused={out.refused} {result.summary()}")
    assert out.unexpected == []
    assert result.problems == []
    assert result.lost == 0
    assert code == 0
    # A kill resends what the link had on the wire (a window per connection) and what was answered
    # but not yet committed: a window's worth again is ample at this load.
    assert result.duplicates_submitted <= rig.config.window * rig.config.connections * 2 * len(kill_times)


@pytest.mark.parametrize("every_process", [False, True], ids=["daemon", "every-process"])
def test_sigterm_drains_and_restart_resends_nothing(make_rig: Callable[[RigConfig], Rig], every_process: bool) -> None:
    """SIGTERM mid-stream drains: exit 0 within drain_timeout, then the restarted daemon finishes with no resend.
    Also when every process of the daemon gets the signal: the store writer process waits for the drain."""
    # 200 submits/s: a 300-recipient message keeps the link busy for 1.5 s, so SIGTERM lands mid-dispatch.
    rig = make_rig(RigConfig(rate_limit=200.0))
    poster = Poster(rig.api_port, rig.seed)
    poster.start()
    try:
        wait_until(lambda: accepted_at_least(poster, 20), "the first accepted messages", 30)
        poster.post_bulk(300)
        wait_until(lambda: rig.gateway_status()["links"][0]["inflight"] > 0, "submits in flight", 10)
        limit = rig.config.drain_timeout + 5
        code, took = rig.stop_daemon(limit, every_process=every_process)
        events = [e["event"] for e in rig.log_events()]
        rig.start_daemon()
        before = len(poster.outcomes.accepted)
        wait_until(lambda: accepted_at_least(poster, before + 20), "posts after the restart", 30)
    finally:
        poster.stop()
    assert code == 0
    assert took <= limit
    stopping = events.index("daemon_stopping")
    assert "daemon_stopped" in events[stopping:]
    drained = events[stopping:].count("segment_submitted")
    assert drained > 0, "nothing was in flight at SIGTERM: the test did not test a drain"
    assert "drain_timeout" not in events
    rig.settle(SETTLE_TIMEOUT)
    assert rig.stop_daemon(limit)[0] == 0
    result = audit(rig.db_path, poster.outcomes, [], rig.sim_stats(), rig.log_events())
    print(f"sigterm: exit after {took:.2f}s, {drained} submit(s) answered while draining; "
          f"accepted={len(poster.outcomes.accepted)} {result.summary()}")
    assert poster.outcomes.unexpected == []
    assert result.problems == []
    assert (result.lost, result.duplicates_submitted, result.extra_attempts, result.requeued) == (0, 0, 0, 0)


def test_sigterm_with_a_silent_ismg_exits_within_the_drain_timeout(
        make_rig: Callable[[RigConfig], Rig]) -> None:
    """SIGTERM while the ISMG has stopped answering still exits 0 within drain_timeout and a few seconds."""
    rig = make_rig(RigConfig(drain_timeout=2.0))
    poster = Poster(rig.api_port, rig.seed)
    poster.start()
    try:
        wait_until(lambda: accepted_at_least(poster, 20), "the first accepted messages", 30)
        assert rig.sim is not None
        os.kill(rig.sim.pid, signal.SIGSTOP)  # the ISMG hangs: submits stay unanswered
        wait_until(lambda: rig.gateway_status()["links"][0]["inflight"] > 0, "submits in flight", 10)
        code, took = rig.stop_daemon(rig.config.drain_timeout + 5)
    finally:
        poster.stop()
    assert code == 0


def test_audit_finds_a_lost_message_and_a_resend_without_a_kill(tmp_path: Path) -> None:
    """The audit reports an accepted message missing from the store and a second attempt no kill explains."""
    db_path = tmp_path / "smsgw.db"
    engine = make_engine(f"sqlite:///{db_path}", writer=True)
    migrations.upgrade(engine)
    now = time.time()
    with engine.begin() as conn:
        conn.execute(schema.messages.insert(), [{
            "id": 1, "account": "demo", "interface": "rest", "ref": "c0", "content": "x", "priority": 0,
            "send_at": None, "ext": "", "report": True, "msg_fmt": 0, "segments": 1, "recipients": 1,
            "open_recipients": 0, "state": "completed", "needs_review": False, "notify": None,
            "created_at": now, "updated_at": now}])
        conn.execute(schema.recipients.insert(), [{
            "id": 10, "message_id": 1, "phone": "13900000000", "link": "sim", "account": "demo", "priority": 0,
            "state": "delivered", "due_at": now, "attempts": 2, "segments": 1, "reported": 1, "failed": 0,
            "stat": "DELIVRD", "submitted_at": now + 1, "final_at": now + 2, "updated_at": now + 2}])
        conn.execute(schema.segments.insert(), [{
            "id": 100, "recipient_id": 10, "number": 1, "total": 1, "attempt": 2, "msg_id": "00000000000000aa",
            "state": "delivered", "stat": "DELIVRD", "submitted_at": now + 1, "reported_at": now + 2}])
        conn.execute(schema.reports.insert(), [{
            "id": 1000, "link": "sim", "msg_id": "00000000000000aa", "stat": "DELIVRD", "dest": "13900000000",
            "submit_time": "", "done_time": "", "received_at": now + 2, "segment_id": 100, "state": "matched"}])
    engine.dispose()
    outcomes = Outcomes(accepted=[Accepted("1", "c0", ("13900000000",), 1), Accepted("2", "c1", ("13900000001",), 1)],
                        sent={"c0": ("13900000000",), "c1": ("13900000001",)})
    stats = {"submits": 2, "segments": 1, "reports_acked": 1}
    events = [{"event": "inflight_requeued", "count": 1}]
    result = audit(db_path, outcomes, [], stats, events)
    assert result.lost == 1
    assert result.duplicates_submitted == 1
    assert result.problems == [
        "accepted message 2 (c1) is not in the store",
        "recipient 10 (13900000000) of message 1: 2 attempts but only 0 kill(s) between its accept and its "
        "recorded submit: resent without a crash",
        "0 reported Msg_Id(s) match no segment, but there were 1 duplicate submit(s)",
    ]
