#!/usr/bin/env python3
"""Where a SUBMIT's CPU time goes, without sockets or a reactor.

    python scripts/bench/cmpp_hotpath.py

Prints one `name=… us` figure per line: the codec operations of the hot path,
the cost of building a frozen vs a plain slotted 23-field dataclass, and two
sessions (client + server) exchanging SUBMIT / SUBMIT_RESP (and a report and its
DELIVER_RESP) in memory, per message and per side.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import make_dataclass
from typing import Any, Callable

from smsgw.protocol.cmpp import (
    Deliver,
    DeliverResp,
    ReportReceived,
    Role,
    Session,
    SessionConfig,
    StatusReport,
    Submit,
    SubmitResp,
    Version,
    encode_pdu,
)

V = Version.V30
TEXT = b"Your code is 493021 (5 min)..."  # a 225-byte CMPP 3.0 SUBMIT


def per_call(fn: Callable[[], Any], n: int = 100_000) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def session_pair(reports: bool, n: int = 60_000) -> tuple[float, float]:
    client = Session(SessionConfig(Role.CLIENT, sp_id="901234", secret="x"))
    server = Session(SessionConfig(Role.SERVER))
    server.start(0.0)
    client.start(0.0, datetime.datetime(2024, 3, 5, 8, 9, 10))
    server.receive_data(client.data_to_send(), 0.0)
    server.next_event()
    server.accept_login("x", 0.0)
    server.next_event()
    client.receive_data(server.data_to_send(), 0.0)
    client.next_event()
    report = StatusReport(1, "DELIVRD", "2403050809", "2403050810", "13800138000", 1).encode(V)
    t_client = t_server = 0.0
    for _ in range(n // 16):
        a = time.perf_counter()
        for _ in range(16):
            client.send(Submit(("13800138000",), TEXT, 0, "10690001", "901234", "", 1), 0.0)
        data = client.data_to_send()
        b = time.perf_counter()
        server.receive_data(data, 0.0)
        while (e := server.next_event()) is not None:
            server.respond(e.seq, SubmitResp(12345, 0))  # type: ignore[attr-defined]
            if reports:
                server.send(Deliver(5, "10690001", "13800138000", report, 0, 1), 0.0)
        data = server.data_to_send()
        c = time.perf_counter()
        client.receive_data(data, 0.0)
        while (e := client.next_event()) is not None:
            if isinstance(e, ReportReceived):
                client.respond(e.seq, DeliverResp(e.deliver_msg_id))
        data = client.data_to_send()
        d = time.perf_counter()
        if data:  # b"" would mean EOF
            server.receive_data(data, 0.0)
        while server.next_event() is not None:
            pass
        e_ = time.perf_counter()
        t_client += (b - a) + (d - c)
        t_server += (c - b) + (e_ - d)
    return t_client / n * 1e6, t_server / n * 1e6


def main() -> None:
    sub = Submit(("13800138000",), TEXT, 0, "10690001", "901234", "", 1)
    body = sub.encode_body(V)
    report = StatusReport(1, "DELIVRD", "2403050809", "2403050810", "13800138000", 1)
    deliver = Deliver(5, "10690001", "13800138000", report.encode(V), 0, 1)
    dbody = deliver.encode_body(V)
    names = [(f"f{i}", int) for i in range(23)]
    frozen = make_dataclass("Frozen", names, frozen=True, slots=True)
    plain = make_dataclass("Plain", names, slots=True)
    args = tuple(range(23))
    figures = {
        "submit_pdu_bytes": len(body) + 12,
        "build_frozen_23_fields_us": per_call(lambda: frozen(*args)),
        "build_plain_23_fields_us": per_call(lambda: plain(*args)),
        "submit_build_us": per_call(lambda: Submit(("13800138000",), TEXT, 0, "10690001", "901234", "", 1)),
        "submit_encode_us": per_call(lambda: encode_pdu(sub, 7, V)),
        "submit_decode_us": per_call(lambda: Submit.decode_body(body, V)),
        "deliver_report_encode_us": per_call(lambda: encode_pdu(Deliver(5, "10690001", "13800138000",
                                                                         report.encode(V), 0, 1), 3, V)),
        "deliver_report_decode_us": per_call(lambda: StatusReport.decode(Deliver.decode_body(dbody, V).msg_content)),
    }
    for key, value in figures.items():
        print(f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}")
    for reports in (False, True):
        c, s = session_pair(reports)
        tag = "on" if reports else "off"
        print(f"session_pair_reports_{tag}_client_us={c:.2f}")
        print(f"session_pair_reports_{tag}_server_us={s:.2f}")


if __name__ == "__main__":
    main()


