"""The URL interface the way Kannel users call it, with a delivery report pushed back per message.

    python scripts/bench/url_interface.py --count 10000

Processes: the ISMG simulator (reports at once), the daemon (`smsgw run`, SQLite store,
URL interface on), and this script: 50 keep-alive connections sending one message per
`GET /cgi-bin/sendsms` with `dlr-mask=1` and a `dlr-url` pointing at a small HTTP receiver
(also in this script, asyncio) that counts the report callbacks. Prints:

    accepted_per_s=… callbacks_per_s=… last_callback_s=… cpu_ms_per_msg=… rss_mb=…

callbacks_per_s is count / time from the first request to the last callback received;
cpu_ms_per_msg is the daemon process's CPU divided by the count. Every message and every
callback is durable (committed before it is acknowledged / until the receiver answers 2xx).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from _bench import KEY, cpu_of, daemon_config, free_port, read_response, rss_mb, running, write_config


def config_for(tmp: Path, sim_port: int, url_port: int) -> Path:
    data = daemon_config(tmp, sim_port)
    data["api"]["port"] = free_port()
    data["url_interface"]["enabled"] = True
    data["url_interface"]["port"] = url_port
    return write_config(tmp, data)


class Receiver:
    """A minimal HTTP/1.1 keep-alive server that answers 200 and counts requests."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")  # GET: no body
                self.count += 1
                self.last = time.perf_counter()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()


async def run(url_port: int, receiver_port: int, count: int, connections: int, receiver: Receiver,
              timeout: float) -> tuple[float, float, int]:
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", receiver_port)
    dlr = quote(f"http://127.0.0.1:{receiver_port}/dlr?id=%I&type=%d&to=%p", safe="")
    requests = [(f"GET /cgi-bin/sendsms?username=demo&password={KEY}&to=138{i % 10**8:08d}"
                 f"&text={quote(f'验证码 {i:06d}')}&dlr-mask=1&dlr-url={dlr} HTTP/1.1\r\n"
                 f"Host: 127.0.0.1:{url_port}\r\n\r\n").encode() for i in range(count)]
    accepted = 0
    queue = iter(requests)

    async def worker() -> None:
        nonlocal accepted
        reader, writer = await asyncio.open_connection("127.0.0.1", url_port)
        for request in queue:
            writer.write(request)
            if (await read_response(reader))[0] == 202:
                accepted += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    t_accepted = time.perf_counter() - t0
    deadline = time.perf_counter() + timeout
    while receiver.count < accepted and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
    server.close()
    return t_accepted, receiver.last - t0, accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the last callback")
    parser.add_argument("--profile", metavar="FILE", help="record the daemon with py-spy (raw collapsed stacks)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="smsgw-url-"))
    sim_port, url_port, receiver_port = free_port(), free_port(), free_port()
    config = config_for(tmp, sim_port, url_port)
    with running(config, sim_port, profile_to=args.profile) as daemon:
        receiver = Receiver()
        cpu0 = cpu_of(daemon.pid)
        t_accepted, t_last, accepted = asyncio.run(run(url_port, receiver_port, args.count, args.connections,
                                                       receiver, args.timeout))
        cpu = cpu_of(daemon.pid) - cpu0
        print(f"accepted_per_s={accepted / t_accepted:.0f} callbacks_per_s={receiver.count / t_last:.0f} "
              f"last_callback_s={t_last:.2f} cpu_ms_per_msg={cpu * 1000 / max(accepted, 1):.3f} "
              f"rss_mb={rss_mb(daemon.pid):.0f}  # count={args.count} accepted={accepted} "
              f"callbacks={receiver.count} connections={args.connections}")


if __name__ == "__main__":
    main()
