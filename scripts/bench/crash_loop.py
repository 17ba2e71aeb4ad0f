#!/usr/bin/env python3
"""Crash soak: SIGKILL the daemon again and again under load, then check that nothing was lost.

    python scripts/bench/crash_loop.py --cycles 50            # `make soak`
    python scripts/bench/crash_loop.py --cycles 200 --clients 6 --connections 2 --seed 42 --keep /tmp/soak

The same rig as tests/test_crash.py (tests/crash_harness.py), for many more
cycles: a standalone ISMG simulator, `smsgw run` as a child process on a
SQLite store, and client threads POSTing all along. Each cycle waits a random
time (seeded), kills the daemon with SIGKILL and restarts it. After the last
cycle the client stops, the daemon settles and stops with SIGTERM, and the
store is audited. Prints one line:

    cycles=… accepted=… final=… lost=0 duplicates_submitted=… (then the details)

accepted counts messages answered 202; final counts recipients in a final
state (all of them, when the audit passes); lost counts accepted recipients
missing from the store; duplicates_submitted counts segments the simulator
received more than once (only what a kill caught in flight may be resent).
Exits 1 and prints every problem found when the audit fails; the run's
directory (config, store, logs) is then kept.
"""

from __future__ import annotations

import os
import sys

# Python puts this folder first on sys.path, and a sibling script is called logging.py:
# drop it before the standard library's logging is imported.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the rig lives with the tests

from crash_harness import Poster, Rig, RigConfig, audit  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=50, help="SIGKILL + restart cycles")
    parser.add_argument("--seed", type=int, default=None, help="kill points and message mix (default: random)")
    parser.add_argument("--min-gap", type=float, default=0.2, help="least seconds between a restart and a kill")
    parser.add_argument("--max-gap", type=float, default=3.0, help="most seconds between a restart and a kill")
    parser.add_argument("--clients", type=int, default=4, help="client threads POSTing one message at a time")
    parser.add_argument("--connections", type=int, default=1, help="CMPP connections of the carrier")
    parser.add_argument("--window", type=int, default=16, help="submits in flight per connection")
    parser.add_argument("--report-delay", type=float, default=0.05, help="simulator seconds before a report")
    parser.add_argument("--settle-timeout", type=float, default=300.0, help="seconds to wait for the end state")
    parser.add_argument("--keep", metavar="DIR", default=None, help="run in DIR and keep it (default: a temp dir)")
    args = parser.parse_args()

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="smsgw-crash-"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"seed={seed} dir={tmp}", flush=True)
    rig = Rig(tmp, seed, RigConfig(report_delay=args.report_delay, connections=args.connections,
                                   window=args.window))
    rng = random.Random(seed)
    kill_times: list[float] = []
    poster = Poster(rig.api_port, seed, clients=args.clients)
    began = time.monotonic()
    try:
        rig.upgrade()
        rig.start_simulator()
        rig.start_daemon()
        poster.start()
        try:
            for cycle in range(1, args.cycles + 1):
                time.sleep(rng.uniform(args.min_gap, args.max_gap))
                kill_times.append(rig.kill_daemon())
                rig.start_daemon()
                if cycle % 10 == 0:
                    print(f"  cycle {cycle}: accepted={len(poster.outcomes.accepted)}", flush=True)
            time.sleep(args.max_gap)  # a last stretch without a kill
        finally:
            poster.stop()
        rig.settle(args.settle_timeout)
        code, _ = rig.stop_daemon(rig.config.drain_timeout + 5)
        result = audit(rig.db_path, poster.outcomes, kill_times, rig.sim_stats(), rig.log_events())
    finally:
        rig.close()
    out = poster.outcomes
    problems = list(result.problems) + out.unexpected
    if code != 0:
        problems.append(f"the daemon exited {code} on the final SIGTERM")
    print(f"cycles={len(kill_times)} accepted={len(out.accepted)} final={result.final} lost={result.lost} "
          f"duplicates_submitted={result.duplicates_submitted} recipients={result.recipients} "
          f"unknown={len(out.unknown)} refused={out.refused} extra_attempts={result.extra_attempts} "
          f"requeued={result.requeued} report_rows={result.report_rows} seconds={time.monotonic() - began:.0f}")
    if problems:
        print(f"FAILED: {len(problems)} problem(s); the run is kept in {tmp}", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
