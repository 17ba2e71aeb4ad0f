"""A mass send of 100,000 recipients as one batch: accepted, held for review, approved as one unit, and
dispatched while another account's verification codes still go out promptly.

    python scripts/bench/mass_send.py --recipients 100000

Processes: the ISMG simulator (reports at once), the daemon (`smsgw run`, SQLite store, a review rule
holding requests of 1,000 recipients or more, a pass rule for the `otp` account), and this script,
which over the REST API:

1. sends the batch as one request: 100 messages of 1,000 recipients (validation.max_recipients),
   `batch: mass-1` -> accept_s (until the 202, every recipient committed and held);
2. approves it with one call (`POST /api/v1/review/approve {"batch": ...}`) -> approve_s;
3. while the batch drains, sends one verification code a second (30 in all) from account `otp` (urgent)
   and measures each one's time from request to submitted to the carrier (otp_submit_p50_s,
   otp_submit_max_s: what fair dispatch promises) and to delivered (otp_p50_s, otp_max_s: that also waits
   behind the batch's status reports, which the carrier sends on one connection in order), looking
   every 0.1 s;
4. waits until the batch is delivered -> drain_per_s (recipients delivered per second after approval).

Prints: accept_s=… approve_s=… otp_submit_p50_s=… otp_submit_max_s=… otp_p50_s=… otp_max_s=… drain_per_s=… cpu_s=… rss_mb=…
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

from _bench import KEY, cpu_of, daemon_config, free_port, rss_mb, running, write_config

from smsgw.client import Client, Message

OTP_KEY = "otp-key"


def config_for(tmp: Path, sim_port: int, api_port: int) -> Path:
    data = daemon_config(tmp, sim_port)
    data["api"]["port"] = api_port
    data["api"]["max_body_bytes"] = 8 * 1024 * 1024
    data["accounts"][0]["permissions"] = ["templates", "review"]
    data["accounts"].append({"name": "otp", "api_key_sha256": hashlib.sha256(OTP_KEY.encode()).hexdigest()})
    data["review"]["rules"] = [{"name": "otp", "action": "pass", "accounts": ["otp"]},
                               {"name": "mass", "action": "review", "min_recipients": 1000}]
    data["review"]["reviewers"] = [{"name": "bench", "accounts": ["demo"]}]
    data["review"]["notify"]["enabled"] = False
    return write_config(tmp, data)


def waiting(client: Client) -> dict[str, int]:
    """Recipients not final yet, by state (GET /api/v1/status)."""
    return client.status().queues


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000, help="multiple of 1000")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    per_message = 1000
    with tempfile.TemporaryDirectory(prefix="smsgw-bench-mass-") as tmp:
        sim_port, api_port = free_port(), free_port()
        config = config_for(Path(tmp), sim_port, api_port)
        with running(config, sim_port) as daemon:
            api = Client(f"http://127.0.0.1:{api_port}", KEY, timeout=600)
            otp = Client(f"http://127.0.0.1:{api_port}", OTP_KEY)
            body = [Message([f"13{(m * per_message + i):09d}" for i in range(per_message)],
                            f"停水通知：第{m}片区明日 8:00-18:00 停水，请提前储水。", priority="bulk", batch="mass-1")
                    for m in range(args.recipients // per_message)]
            t0 = time.perf_counter()
            answer = api.send_many(body)
            accept_s = time.perf_counter() - t0
            assert all(m.held for m in answer), "the batch was not held"
            batch = answer[0].batch
            time.sleep(1.0)
            assert waiting(api)["held"] == args.recipients, "something went on before approval"

            t0 = time.perf_counter()
            result = api.review_approve(batch=batch, reviewer="bench")
            approve_s = time.perf_counter() - t0
            approved_at = time.perf_counter()
            assert result.recipients == args.recipients, result

            latencies: list[float] = []  # request -> delivered
            to_carrier: dict[str, float] = {}  # request -> submitted to the carrier (a Msg_Id back)
            pending: list[tuple[str, float]] = []
            otp_sent, next_otp = 0, 0.0
            while True:
                queued = sum(waiting(api).values())
                if not pending and not queued:
                    break
                if time.perf_counter() - approved_at > args.timeout:
                    raise SystemExit(f"not delivered within {args.timeout}s")
                if otp_sent < 30 and time.perf_counter() >= next_otp and queued:
                    next_otp = time.perf_counter() + 1.0
                    sent = otp.send("13900139000", f"验证码 {otp_sent:06d}", priority="urgent")
                    pending.append((sent.id, time.perf_counter()))
                    otp_sent += 1
                for mid, at in list(pending):
                    state = otp.get_message(mid).recipients[0].state
                    if state not in ("queued", "dispatching") and mid not in to_carrier:
                        to_carrier[mid] = time.perf_counter() - at
                    if state == "delivered":
                        latencies.append(time.perf_counter() - at)
                        pending.remove((mid, at))
                time.sleep(0.1)
            drain_s = time.perf_counter() - approved_at
            cpu, rss = cpu_of(daemon.pid), rss_mb(daemon.pid)
    submits = list(to_carrier.values())
    print(f"accept_s={accept_s:.2f} approve_s={approve_s:.2f} otp_submit_p50_s={statistics.median(submits):.2f} "
          f"otp_submit_max_s={max(submits):.2f} otp_p50_s={statistics.median(latencies):.2f} "
          f"otp_max_s={max(latencies):.2f} drain_per_s={args.recipients / drain_s:.0f} cpu_s={cpu:.1f} "
          f"rss_mb={rss:.0f}")


if __name__ == "__main__":
    main()
