"""End-to-end throughput of the running daemon: REST API → store → CMPP → simulator → reports persisted.

    python scripts/bench/e2e.py --count 50000 --mode batch      # 100 messages per POST
    python scripts/bench/e2e.py --count 50000 --mode single     # one message per POST, 50 keep-alive connections
    python scripts/bench/e2e.py --count 1000000 --mode hold     # link down: RSS while the queue holds 1M

Three processes: the ISMG simulator (reports at once), the daemon (`smsgw run`,
SQLite store, every report persisted), and this script's load client (asyncio,
raw HTTP/1.1 keep-alive). Prints one line:

    accepted_per_s=… submitted_per_s=… delivered_per_s=… last_report_s=… cpu_ms_per_msg=… rss_mb=…

cpu_ms_per_msg is the daemon process's user+system CPU divided by the count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from _bench import KEY, cpu_of, daemon_config, free_port, read_response, rss_mb, running, write_config


def config_for(tmp: Path, sim_port: int, api_port: int, claim_batch: int) -> Path:
    data = daemon_config(tmp, sim_port)
    data["carriers"][0]["window"] = 16
    data["api"]["port"] = api_port
    data["api"]["max_batch"] = 1000
    data["dispatch"]["claim_batch"] = claim_batch
    return write_config(tmp, data)


# --- the load client --------------------------------------------------------------


def request_bytes(port: int, body: bytes) -> bytes:
    head = (f"POST /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def post_all(port: int, bodies: list[bytes], connections: int) -> int:
    """POST every body over `connections` keep-alive connections; returns messages accepted."""
    accepted = 0
    queue = list(reversed(bodies))

    async def worker() -> None:
        nonlocal accepted
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while queue:
            body = queue.pop()
            writer.write(request_bytes(port, body))
            status, answer = await read_response(reader)
            if status != 202:
                raise SystemExit(f"POST answered {status}: {answer[:300]!r}")
            accepted += len(json.loads(answer)["messages"])
        writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return accepted


def numbers(count: int) -> list[str]:
    return [f"139{i % 100_000_000:08d}" for i in range(count)]


def bodies_for(mode: str, count: int, per_request: int) -> list[bytes]:
    text = "您的验证码是 123456，5分钟内有效。【smsgw】"
    nums = numbers(count)
    if mode == "single":
        return [json.dumps({"to": [n], "text": text}, ensure_ascii=False).encode() for n in nums]
    out = []
    for i in range(0, count, per_request):
        chunk = [{"to": [n], "text": text} for n in nums[i:i + per_request]]
        out.append(json.dumps(chunk, ensure_ascii=False).encode())
    return out


# --- the run ---------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--mode", choices=("batch", "single", "hold"), default="batch")
    parser.add_argument("--per-request", type=int, default=100, help="messages per POST in batch/hold mode")
    parser.add_argument("--connections", type=int, default=None, help="default: 50 single, 4 batch")
    parser.add_argument("--claim-batch", type=int, default=256)
    parser.add_argument("--profile", metavar="FILE", help="record the daemon with py-spy (raw collapsed stacks)")
    args = parser.parse_args()
    connections = args.connections or (50 if args.mode == "single" else 4)
    tmp = Path(tempfile.mkdtemp(prefix="smsgw-e2e-"))
    sim_port, api_port = free_port(), free_port()
    if args.mode == "hold":
        sim_port = free_port()  # nothing will listen there: the link stays down, the queue holds
    config = config_for(tmp, sim_port, api_port, args.claim_batch)
    bodies = bodies_for(args.mode, args.count, args.per_request)
    with running(config, None if args.mode == "hold" else sim_port, profile_to=args.profile) as daemon:
        rss_before = rss_mb(daemon.pid)
        cpu0 = cpu_of(daemon.pid)
        t0 = time.perf_counter()
        accepted = asyncio.run(post_all(api_port, bodies, connections))
        t_accepted = time.perf_counter() - t0
        db = tmp / "var" / "smsgw.db"
        if args.mode == "hold":
            rss = rss_mb(daemon.pid)
            print(f"accepted_per_s={accepted / t_accepted:.0f} queued={accepted} rss_mb_before={rss_before:.0f} "
                  f"rss_mb={rss:.0f} cpu_ms_per_msg={(cpu_of(daemon.pid) - cpu0) * 1000 / accepted:.3f}")
            return
        t_submitted = t_delivered = None
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        while True:
            time.sleep(0.2)
            rows = dict(conn.execute("SELECT state, count(*) FROM recipients GROUP BY state").fetchall())
            open_ = rows.get("queued", 0) + rows.get("dispatching", 0)
            now = time.perf_counter() - t0
            if t_submitted is None and open_ == 0:
                t_submitted = now
            if rows.get("delivered", 0) + rows.get("undeliverable", 0) >= accepted:
                t_delivered = now
                break
            if now > 600:
                raise SystemExit(f"not done after 600 s: {rows}")
        last_report = conn.execute("SELECT max(received_at) - min(received_at) FROM reports").fetchone()[0]
        cpu = cpu_of(daemon.pid) - cpu0
        assert t_submitted is not None
        print(f"accepted_per_s={accepted / t_accepted:.0f} submitted_per_s={accepted / t_submitted:.0f} "
              f"delivered_per_s={accepted / t_delivered:.0f} last_report_s={t_delivered:.2f} "
              f"cpu_ms_per_msg={cpu * 1000 / accepted:.3f} rss_mb={rss_mb(daemon.pid):.0f}"
              f"  # mode={args.mode} count={accepted} report_span_s={last_report:.2f}")


if __name__ == "__main__":
    main()
