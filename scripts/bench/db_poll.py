"""Legacy database end to end: rows inserted into sms_outbox → sent → final state written back.

    python scripts/bench/db_poll.py --url sqlite:////tmp/legacy.db --rows 20000
    python scripts/bench/db_poll.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test --rows 20000

Three processes: the ISMG simulator (reports at once), the daemon (`smsgw run`,
SQLite store, polling the legacy database at --url every --poll-interval
seconds) and this script, which (re)creates the standard interface tables at
--url, inserts the rows (in transactions of 1,000, as fast as the database
takes them) and watches the legacy table until every row is final. Prints:

    rows_per_s=… insert_s=… last_final_s=… cpu_ms_per_row=… rss_mb=…

rows_per_s is rows / (time of the last row's final write-back - time the first
insert began): the whole path, insert to final state written back.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from sqlalchemy import create_engine, func, select

from _bench import cpu_of, free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))


def write_config(tmp: Path, sim_port: int, url: str, poll_interval: float, batch: int, store: str | None) -> Path:
    data = yaml.safe_load((ROOT / "conf" / "smsgw.yaml").read_text(encoding="utf-8"))
    if store:
        data["store"]["url"] = store
    data["node"]["data_dir"] = str(tmp / "var")
    data["log"]["file"] = "log/smsgw.log"
    data["log"]["level"] = "info"  # every lifecycle line is written, as in production
    data["simulator"]["enabled"] = False
    data["api"]["enabled"] = False
    data["accounts"] = []
    data["carriers"][0]["port"] = sim_port
    data["db_sources"] = [{"name": "bench", "url": url, "poll_interval": poll_interval, "batch_size": batch}]
    path = tmp / "smsgw.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the legacy database (its sms_outbox/sms_inbox are recreated)")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=500, help="db_sources batch_size")
    parser.add_argument("--store-url", help="smsgw's own store (default: SQLite in a temp dir); emptied first")
    parser.add_argument("--profile", metavar="FILE", help="record the daemon with py-spy (raw collapsed stacks)")
    args = parser.parse_args()

    from smsgw.adapters.db import interface

    legacy = create_engine(args.url)
    interface.metadata.drop_all(legacy)
    interface.create(legacy)
    outbox = interface.outbox

    tmp = Path(tempfile.mkdtemp(prefix="smsgw-dbpoll-"))
    sim_port = free_port()
    config = write_config(tmp, sim_port, args.url, args.poll_interval, args.batch, args.store_url)
    if args.store_url:
        from smsgw.store import schema

        store = create_engine(args.store_url)
        schema.metadata.drop_all(store)
        store.dispose()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(
            [str(BIN / "smsgw"), "--log-level", "warning", "simulate", "--listen", f"127.0.0.1:{sim_port}",
             "--account", "901234:simsecret", "--report-delay", "0"], stdout=subprocess.DEVNULL))
        wait_port(sim_port)
        subprocess.run([str(BIN / "smsgw"), "db", "upgrade", "-c", str(config)], check=True, stdout=subprocess.DEVNULL)
        daemon = subprocess.Popen([str(BIN / "smsgw"), "run", "-c", str(config)], stdout=subprocess.DEVNULL)
        procs.append(daemon)
        log = tmp / "var" / "log" / "smsgw.log"
        deadline = time.time() + 30
        while not (log.exists() and "daemon_started" in log.read_text(encoding="utf-8")):
            if time.time() > deadline or daemon.poll() is not None:
                raise SystemExit(f"the daemon did not start; see {log}")
            time.sleep(0.1)
        time.sleep(0.5)  # the link logs in
        if args.profile:
            procs.append(subprocess.Popen(["py-spy", "record", "--pid", str(daemon.pid), "--format", "raw",
                                           "--output", args.profile, "--rate", "200"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        cpu0 = cpu_of(daemon.pid)
        t0 = time.perf_counter()
        for start in range(0, args.rows, 1000):
            n = min(1000, args.rows - start)
            with legacy.begin() as conn:
                conn.execute(outbox.insert(), [{"mobiles": f"138{(start + i) % 10**8:08d}",
                                                "content": f"工单 {start + i} 已受理"} for i in range(n)])
        t_insert = time.perf_counter() - t0
        final = ("delivered", "undeliverable", "sent", "failed", "expired", "rejected", "partial")
        while True:
            time.sleep(0.2)
            with legacy.connect() as conn:
                done = conn.execute(select(func.count()).select_from(outbox)
                                    .where(outbox.c.state.in_(final))).scalar_one()
            elapsed = time.perf_counter() - t0
            if done >= args.rows:
                break
            if elapsed > 900:
                raise SystemExit(f"not done after 900 s: {done} of {args.rows} final")
        cpu = cpu_of(daemon.pid) - cpu0
        print(f"rows_per_s={args.rows / elapsed:.0f} insert_s={t_insert:.2f} last_final_s={elapsed:.2f} "
              f"cpu_ms_per_row={cpu * 1000 / args.rows:.3f} rss_mb={rss_mb(daemon.pid):.0f}"
              f"  # rows={args.rows} dialect={legacy.dialect.name} poll_interval={args.poll_interval} "
              f"batch={args.batch} store={'sqlite' if not args.store_url else args.store_url.split(':')[0]}")
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGINT if "py-spy" in str(proc.args) else signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
        legacy.dispose()


if __name__ == "__main__":
    main()
