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
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, func, select

from _bench import cpu_of, daemon_config, free_port, rss_mb, running, write_config


def config_for(tmp: Path, sim_port: int, url: str, poll_interval: float, batch: int, store: str | None) -> Path:
    data = daemon_config(tmp, sim_port)
    if store:
        data["store"]["url"] = store
    data["api"]["enabled"] = False
    data["accounts"] = []
    data["db_sources"] = [{"name": "bench", "url": url, "poll_interval": poll_interval, "batch_size": batch}]
    return write_config(tmp, data)


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
    config = config_for(tmp, sim_port, args.url, args.poll_interval, args.batch, args.store_url)
    if args.store_url:
        from smsgw.store import schema

        store = create_engine(args.store_url)
        schema.metadata.drop_all(store)
        store.dispose()
    try:
        with running(config, sim_port, profile_to=args.profile) as daemon:
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
        legacy.dispose()


if __name__ == "__main__":
    main()
