#!/usr/bin/env python3
"""CPU cost of a POST /api/v1/messages through the real Site, the fake gateway behind it.

    python scripts/bench/api_overhead.py --count 40000 --connections 8
    python scripts/bench/api_overhead.py --count 2000 --batch 100
    python scripts/bench/api_overhead.py --floor          # Twisted alone: a leaf that answers 202

The API runs in this process (with smsgw's JSON logging writing to /dev/null, so the
`http_request` line is paid for); a client in another process keeps `--connections`
HTTP/1.1 keep-alive connections busy, one request in flight on each (raw sockets,
so the client costs little CPU next to the server). After a warm-up it runs
`--count` requests and the server's own CPU time over that run is divided by them:

    api_us_per_request=… requests_per_s=… messages_per_s=… api_us_per_message=… fake_gateway_us=…

api_us_per_request includes Twisted's HTTP handling and the fake gateway's accept
(fake_gateway_us, measured alone, is there to subtract).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import resource
import selectors
import socket
import sys
import time
from typing import Any, cast

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEY = b"demo-key"


def request_bytes(batch: int) -> bytes:
    one = b'{"to": "13800138000", "text": "Your code is 493021 (5 min)..."}'
    body = one if batch == 1 else b"[" + b",".join([one] * batch) + b"]"
    return (b"POST /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + KEY + b"\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


# -- the client process ------------------------------------------------------------------------

def client(port: int, count: int, warmup: int, connections: int, batch: int) -> None:
    """Keep every connection busy with one request until `count` answers; report on stdout."""
    request = request_bytes(batch)
    sel = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytearray] = {}
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        buffers[sock] = bytearray()
        sel.register(sock, selectors.EVENT_READ)

    def run(total: int) -> dict[bytes, int]:
        statuses: dict[bytes, int] = {}
        sent = done = 0
        for sock in buffers:
            if sent < total:
                sock.sendall(request)
                sent += 1
        while done < total:
            for key, _ in sel.select():
                sock = cast(socket.socket, key.fileobj)
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise SystemExit("the server closed a connection")
                buf = buffers[sock]
                buf += chunk
                while (end := buf.find(b"\r\n\r\n")) >= 0:
                    head = bytes(buf[:end]).lower()
                    at = head.index(b"content-length:") + 15
                    length = int(head[at:head.find(b"\r\n", at) if b"\r\n" in head[at:] else None])
                    if len(buf) < end + 4 + length:
                        break
                    statuses[head[9:12]] = statuses.get(head[9:12], 0) + 1
                    del buf[:end + 4 + length]
                    done += 1
                    if sent < total:
                        sock.sendall(request)
                        sent += 1
        return statuses

    run(warmup)
    print("warm", flush=True)
    t0 = time.perf_counter()
    statuses = run(count)
    print(f"done {time.perf_counter() - t0:.6f} {statuses}", flush=True)


# -- the server process ------------------------------------------------------------------------

def fake_gateway_us(batch: int) -> float:
    from fake_gateway import FakeGateway

    from smsgw.model import Account, SendRequest

    gateway, account = FakeGateway(retain=False), Account("demo")
    requests = [SendRequest(("13800138000",), "Your code is 493021 (5 min)...")] * batch
    n = max(2000, 20000 // batch)
    t0 = time.perf_counter()
    for _ in range(n):
        gateway.accept(account, "rest", requests)
    return (time.perf_counter() - t0) / n * 1e6


def floor_site(reactor: Any) -> Any:
    """Twisted's own share: the same Site settings and a leaf that answers a fixed 202."""
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    answer = b'{"messages":[{"id":"m00000001","ref":null,"recipients":1,"segments":1,"dropped_duplicates":[]}]}'

    class Fixed(Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.content.read()
            request.setResponseCode(202)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"content-length", b"%d" % len(answer))
            return answer

    class QuietSite(Site):
        def log(self, request: Any) -> None:
            pass

    return QuietSite(Fixed(), parsePOSTFormSubmission=False, reactor=reactor)  # type: ignore[no-untyped-call]


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=40000, help="measured requests (default 40000)")
    parser.add_argument("--warmup", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="messages per POST (default 1: a plain object)")
    parser.add_argument("--floor", action="store_true", help="measure a trivial twisted.web leaf instead")
    parser.add_argument("--no-log", action="store_true", help="log at warning level (no http_request lines)")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(args.client, args.count, args.warmup, args.connections, args.batch)
        return

    sys.path.insert(0, str(ROOT / "tests"))  # fake_gateway lives with the tests
    from fake_gateway import FakeGateway
    from twisted.internet import reactor as _reactor
    from twisted.internet.protocol import ProcessProtocol

    from smsgw import logs
    from smsgw.api import make_api
    from smsgw.model import Account

    reactor: Any = _reactor
    logs.configure("warning" if args.no_log else "info", open(os.devnull, "w"), json=True)
    if args.floor:
        site = floor_site(reactor)
    else:
        account = Account("demo", hashlib.sha256(KEY).hexdigest())
        site = make_api(FakeGateway(retain=False), [account], max_batch=max(1000, args.batch))
    port = reactor.listenTCP(0, site, interface="127.0.0.1", backlog=128)
    result: dict[str, float] = {}

    class Client(ProcessProtocol):
        def outReceived(self, data: bytes) -> None:
            for line in data.decode().splitlines():
                if line == "warm":
                    result["cpu0"] = cpu()
                elif line.startswith("done"):
                    result["cpu1"] = cpu()
                    result["wall"] = float(line.split()[1])
                    print(f"# statuses: {line.split(' ', 2)[2]}", file=sys.stderr)

        def errReceived(self, data: bytes) -> None:
            sys.stderr.write(data.decode())

        def processEnded(self, reason: Any) -> None:
            reactor.stop()

    argv = [sys.executable, __file__, "--client", str(port.getHost().port), "--count", str(args.count),
            "--warmup", str(args.warmup), "--connections", str(args.connections), "--batch", str(args.batch)]
    reactor.spawnProcess(Client(), sys.executable, argv, env=os.environ)
    reactor.run()
    if "wall" not in result:
        raise SystemExit("the client did not finish")
    us = (result["cpu1"] - result["cpu0"]) / args.count * 1e6
    fields = [f"api_us_per_request={us:.1f}", f"requests_per_s={args.count / result['wall']:.0f}"]
    if args.batch > 1:
        fields += [f"messages_per_s={args.count * args.batch / result['wall']:.0f}",
                   f"api_us_per_message={us / args.batch:.2f}"]
    if not args.floor:
        fields.append(f"fake_gateway_us={fake_gateway_us(args.batch):.1f}")
    print(" ".join(fields))


if __name__ == "__main__":
    main()
