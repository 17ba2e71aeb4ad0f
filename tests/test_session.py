"""The sans-IO session: login, window, timers, flow control, shutdown and protocol errors.

Two real sessions talk to each other in memory (h11's ConnectionPair): the
server role is our own ISMG simulator, not a mock. Time is whatever each test
passes in; nothing sleeps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmpp_helpers import (
    SECRET,
    VERSIONS,
    WALLCLOCK,
    config,
    decode_stream,
    drain,
    drain_all,
    established_pair,
    load_vectors,
    pair,
    pdus,
    pdus_of,
    pump,
)
from smsgw.protocol.cmpp import (
    PDU_CLASSES,
    ActiveTest,
    ActiveTestResp,
    Cancel,
    CancelResp,
    CmppLocalError,
    CmppRemoteError,
    CommandId,
    ConnectResp,
    Deliver,
    DeliverAcknowledged,
    DeliverResp,
    FailReason,
    LateResponse,
    LinkClosed,
    LinkEstablished,
    LoginRejected,
    LoginRequested,
    MalformedRequest,
    MoReceived,
    Pdu,
    Query,
    QueryResp,
    ReportReceived,
    RequestReceived,
    ResponseReceived,
    Role,
    Session,
    SessionConfig,
    State,
    StatusReport,
    Submit,
    SubmitAccepted,
    SubmitFailed,
    SubmitReceived,
    SubmitResp,
    Terminate,
    TerminateResp,
    Version,
    encode_pdu,
)

VECTORS = {v["name"]: v for v in load_vectors()}
T, C, N = 60.0, 180.0, 3  # the spec's recommended timers (SessionConfig defaults)
SUBMIT = Submit(("13800138000",), "你好".encode("utf-16-be"), msg_fmt=8, src_id="10690001",
                msg_src="901234", service_id="MTEST", registered_delivery=1)
REPORT = StatusReport(0x32A0928003E90001, "DELIVRD", "2403050809", "2403050810", "13800138000", 42)

by_version = pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.text)


def _frame(command_id: int, seq: int, body: bytes) -> bytes:
    return (12 + len(body)).to_bytes(4, "big") + command_id.to_bytes(4, "big") + seq.to_bytes(4, "big") + body


def _answer_submits(server: Session, result: int = 0, first_msg_id: int = 0x1000) -> list[SubmitReceived]:
    """Answer every SUBMIT the server has received, in order; returns them."""
    got = [e for e in drain(server) if isinstance(e, SubmitReceived)]
    for i, event in enumerate(got):
        server.respond(event.seq, SubmitResp(first_msg_id + i, result))
    return got


# --- login -------------------------------------------------------------------------


@by_version
def test_login_writes_the_documented_bytes(version: Version) -> None:
    """A login at the worked example's instant writes exactly the CONNECT and CONNECT_RESP of notes §5.3."""
    suffix = "_v30" if version is Version.V30 else "_v20"
    client, server = Session(config(Role.CLIENT, version)), Session(config(Role.SERVER, version))
    client.start(0.0, WALLCLOCK)
    connect = client.data_to_send()
    assert connect.hex() == VECTORS["connect" + suffix]["hex"]
    server.start(0.0)
    server.receive_data(connect, 0.0)
    assert drain(server) == [LoginRequested("901234", bytes.fromhex("5e648e76ec5bbf9b0dad02f5743a59b6"),
                                            int(version), 305080910)]
    server.accept_login(SECRET, 0.0)
    assert server.data_to_send().hex() == VECTORS["connect_resp" + suffix]["hex"]


@by_version
def test_login_succeeds(version: Version) -> None:
    """A correct login establishes both sides, and the client verifies the ISMG's authenticator."""
    client, server = Session(config(Role.CLIENT, version)), Session(config(Role.SERVER, version))
    server.start(0.0)
    client.start(0.0, WALLCLOCK)
    assert (client.state, server.state) == (State.LOGGING_IN, State.AWAITING_LOGIN)
    pump(client, server, 0.0)
    assert [type(e) for e in drain(server)] == [LoginRequested]
    assert server.state is State.LOGGING_IN
    assert server.check_login(SECRET)
    server.accept_login(SECRET, 0.0)
    pump(client, server, 0.0)
    assert drain(client) == [LinkEstablished(int(version), authenticator_ok=True)]
    assert drain(server) == [LinkEstablished(int(version), authenticator_ok=True)]
    assert (client.state, server.state) == (State.ESTABLISHED, State.ESTABLISHED)
    assert client.can_send and not client.closed
    assert client.get_timer() == server.get_timer() == C


def test_v20_client_and_v30_server_agree_on_v20() -> None:
    """A 3.0 server answering a 2.0 CONNECT speaks 2.0 on that link."""
    client, server = established_pair(config(Role.CLIENT, Version.V20), config(Role.SERVER, Version.V30))
    assert client.version is server.version is Version.V20
    key = client.send(SUBMIT, 1.0)
    pump(client, server, 1.0)
    [received] = drain(server)
    assert received == SubmitReceived(key, SUBMIT)


def test_v20_client_accepts_a_v30_width_connect_resp() -> None:
    """A 2.0 client takes a CONNECT_RESP with a 4-byte Status and still verifies it (notes §14.2)."""
    client = Session(config(Role.CLIENT, Version.V20))
    client.start(0.0, WALLCLOCK)
    client.data_to_send()
    client.receive_data(bytes.fromhex(VECTORS["connect_resp_v30"]["hex"]), 0.5)
    assert drain(client) == [LinkEstablished(0x20, authenticator_ok=True)]
    assert client.state is State.ESTABLISHED


def test_login_with_wrong_authenticator_is_flagged() -> None:
    """A CONNECT_RESP whose authenticator does not match is accepted with authenticator_ok False."""
    client = Session(config(Role.CLIENT))
    client.start(0.0, WALLCLOCK)
    client.receive_data(encode_pdu(ConnectResp(0, bytes(16), 0x30), 1, Version.V30), 0.0)
    assert drain(client) == [LinkEstablished(0x30, authenticator_ok=False)]


@by_version
def test_login_rejected_for_wrong_secret(version: Version) -> None:
    """A CONNECT signed with the wrong secret fails check_login; reject_login(3) closes both sides."""
    client = Session(dataclasses.replace(config(Role.CLIENT, version), secret="wrong"))
    server = Session(config(Role.SERVER, version))
    server.start(0.0)
    client.start(0.0, WALLCLOCK)
    pump(client, server, 0.0)
    drain(server)
    assert not server.check_login(SECRET)
    server.reject_login(3, 0.0)
    assert server.closed
    [closed] = drain(server)
    assert isinstance(closed, LinkClosed) and not closed.by_peer and "status 3" in closed.reason
    reply = server.data_to_send()
    assert pdus_of(reply, version) == [ConnectResp(3, bytes(16), int(version))]
    client.receive_data(reply, 0.0)
    rejected, link_closed = drain(client)
    assert rejected == LoginRejected(3, "authentication error")
    assert isinstance(link_closed, LinkClosed) and link_closed.by_peer
    assert client.state is State.CLOSED and client.get_timer() is None


def test_reject_login_needs_a_status() -> None:
    """reject_login with status 0 is a local error, and so is answering when no CONNECT waits."""
    server = Session(config(Role.SERVER))
    with pytest.raises(CmppLocalError):
        server.accept_login(SECRET, 0.0)
    with pytest.raises(CmppLocalError):
        server.reject_login(0, 0.0)
    assert not server.check_login(SECRET)


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_login_timeout(role: Role) -> None:
    """Without a CONNECT_RESP (client) or a CONNECT (server) within T, the session closes."""
    session = Session(config(role))
    session.start(10.0, WALLCLOCK)
    assert session.get_timer() == 10.0 + T
    session.handle_timer(10.0 + T - 0.001)
    assert drain(session) == []
    session.handle_timer(10.0 + T)
    [closed] = drain(session)
    assert isinstance(closed, LinkClosed) and "login" in closed.reason
    assert session.closed and session.get_timer() is None


def test_login_timeout_when_server_never_decides() -> None:
    """A CONNECT the server's owner never answers still ends in a close after T."""
    client, server = Session(config(Role.CLIENT)), Session(config(Role.SERVER))
    server.start(0.0)
    client.start(0.0, WALLCLOCK)
    pump(client, server, 1.0)
    drain(server)
    server.handle_timer(T)
    assert isinstance(drain(server)[-1], LinkClosed)
    assert server.state is State.CLOSED


def test_eof_during_login() -> None:
    """EOF before the CONNECT is answered closes the client with a reason saying so."""
    client = Session(config(Role.CLIENT))
    client.start(0.0, WALLCLOCK)
    client.receive_data(b"", 1.0)
    [closed] = drain(client)
    assert isinstance(closed, LinkClosed) and closed.by_peer and "CONNECT" in closed.reason


def test_misuse_before_login_is_a_local_error() -> None:
    """Sending before login, starting twice or starting a client without a wallclock raise CmppLocalError."""
    client = Session(config(Role.CLIENT))
    with pytest.raises(CmppLocalError):
        client.start(0.0)
    with pytest.raises(CmppLocalError, match="SUBMIT"):
        client.send(SUBMIT, 0.0)
    client.start(0.0, WALLCLOCK)
    with pytest.raises(CmppLocalError):
        client.start(0.0, WALLCLOCK)
    with pytest.raises(CmppLocalError, match="LOGGING_IN"):
        client.send(SUBMIT, 0.0)


def test_each_role_sends_only_its_requests() -> None:
    """A client may not send DELIVER or control PDUs; a server may not send SUBMIT."""
    client, server = pair()
    for pdu in (Deliver(1, "1", "2", b""), ActiveTest(), Terminate(), SubmitResp(1, 0)):
        with pytest.raises(CmppLocalError):
            client.send(pdu, 0.0)
    for request in (SUBMIT, Query("20240305"), Cancel(1)):
        with pytest.raises(CmppLocalError):
            server.send(request, 0.0)


@pytest.mark.parametrize("bad", [{"window": 0}, {"attempts": 0}, {"rate_limit": 0.0}])
def test_config_rejects_impossible_limits(bad: dict[str, Any]) -> None:
    """A window or attempt count below 1, or a non-positive rate, is refused up front."""
    with pytest.raises(CmppLocalError, match=next(iter(bad))):
        dataclasses.replace(SessionConfig(Role.CLIENT), **bad)


# --- submits, window, timeouts ----------------------------------------------------------


@by_version
def test_submit_accepted(version: Version) -> None:
    """A SUBMIT arrives intact at the server, and its answer becomes SubmitAccepted with the Msg_Id."""
    client, server = pair(version)
    key = client.send(SUBMIT, 1.0)
    assert client.in_flight == 1
    pump(client, server, 1.0)
    assert drain(server) == [SubmitReceived(key, SUBMIT)]
    server.respond(key, SubmitResp(0x32A0928003E90001, 0))
    pump(client, server, 1.5)
    assert drain(client) == [SubmitAccepted(key, 0x32A0928003E90001)]
    assert client.in_flight == 0 and client.can_send


def test_sequence_ids_increase_per_request() -> None:
    """Each request gets the next Sequence_Id after the CONNECT's, and send returns it."""
    client, _ = pair()
    keys = [client.send(SUBMIT, 1.0) for _ in range(3)]
    assert keys == [2, 3, 4]
    assert [seq for seq, _ in decode_stream(client.data_to_send(), Version.V30)] == keys


@by_version
def test_window_full_queues_the_seventeenth(version: Version) -> None:
    """With W = 16 requests unanswered, the 17th waits in the queue until a response frees a slot."""
    client, server = pair(version)
    keys = [client.send(SUBMIT, 1.0) for _ in range(16)]
    assert client.in_flight == 16 and client.queued == 0
    assert not client.can_send
    last = client.send(SUBMIT, 1.0)
    assert client.in_flight == 16 and client.queued == 1
    assert len(pdus_of(client.data_to_send(), version)) == 16
    server.receive_data(b"".join(encode_pdu(SUBMIT, k, version) for k in keys), 1.0)
    first = drain(server)[0]
    assert isinstance(first, SubmitReceived)
    server.respond(first.seq, SubmitResp(7, 0))
    client.receive_data(server.data_to_send(), 2.0)
    assert drain(client) == [SubmitAccepted(keys[0], 7)]
    assert client.queued == 0 and client.in_flight == 16
    assert decode_stream(client.data_to_send(), version) == [(last, SUBMIT)]


@by_version
def test_response_timeout_resends_then_fails(version: Version) -> None:
    """An unanswered SUBMIT is resent with identical bytes every T, and fails TIMEOUT after N attempts."""
    client, _ = pair(version, active_test_interval=1000.0)
    key = client.send(SUBMIT, 0.0)
    original = client.data_to_send()
    assert client.get_timer() == T
    for attempt in range(1, N):
        client.handle_timer(attempt * T)
        assert client.data_to_send() == original
        assert drain(client) == []
    client.handle_timer(N * T)
    assert client.data_to_send() == b""
    assert drain(client) == [SubmitFailed(key, FailReason.TIMEOUT)]
    assert client.in_flight == 0 and client.state is State.ESTABLISHED


def test_no_resend_when_resend_on_timeout_is_off() -> None:
    """With resend_on_timeout off, a SUBMIT fails after the first T without being written again."""
    client, _ = pair(resend_on_timeout=False, active_test_interval=1000.0)
    key = client.send(SUBMIT, 0.0)
    client.data_to_send()
    client.handle_timer(T)
    assert client.data_to_send() == b""
    assert drain(client) == [SubmitFailed(key, FailReason.TIMEOUT)]


def test_timeout_frees_the_window_for_queued_requests() -> None:
    """A SUBMIT given up on frees its window slot, and the queued one goes out."""
    client, _ = pair(window=1, attempts=1, active_test_interval=1000.0)
    first = client.send(SUBMIT, 0.0)
    second = client.send(SUBMIT, 0.0)
    client.data_to_send()
    client.handle_timer(T)
    assert drain(client) == [SubmitFailed(first, FailReason.TIMEOUT)]
    assert decode_stream(client.data_to_send(), Version.V30) == [(second, SUBMIT)]


@by_version
def test_late_response_after_give_up(version: Version) -> None:
    """A SUBMIT_RESP arriving after the SUBMIT timed out becomes LateResponse with the same key."""
    client, server = pair(version, attempts=1, active_test_interval=1000.0)
    key = client.send(SUBMIT, 0.0)
    pump(client, server, 0.0)
    [received] = drain(server)
    client.handle_timer(T)
    assert drain(client) == [SubmitFailed(key, FailReason.TIMEOUT)]
    assert isinstance(received, SubmitReceived)
    server.respond(received.seq, SubmitResp(99, 0))
    pump(client, server, T + 1)
    assert drain(client) == [LateResponse(key, SubmitResp(99, 0))]
    assert client.state is State.ESTABLISHED


def test_response_for_unknown_sequence_is_late() -> None:
    """A response nobody asked for is reported as LateResponse under its wire sequence id."""
    client, _ = pair()
    client.receive_data(encode_pdu(SubmitResp(5, 0), 777, Version.V30), 1.0)
    assert drain(client) == [LateResponse(777, SubmitResp(5, 0))]


# --- flow control and rate ------------------------------------------------------------------


@by_version
def test_result_8_pauses_and_resends_under_a_new_sequence_id(version: Version) -> None:
    """Result 8 holds the SUBMIT back for a pause, then resends it with a new Sequence_Id and the same key."""
    client, server = pair(version, active_test_interval=1000.0)
    key = client.send(SUBMIT, 1.0)
    first = client.data_to_send()
    server.receive_data(first, 1.0)
    _answer_submits(server, result=8)
    client.receive_data(server.data_to_send(), 1.0)
    assert drain(client) == []
    assert client.queued == 1 and client.in_flight == 0 and not client.can_send
    assert client.get_timer() == pytest.approx(1.0 + 0.2)
    client.handle_timer(1.1)
    assert client.data_to_send() == b""
    client.handle_timer(1.2)
    again = client.data_to_send()
    assert again[:8] == first[:8] and again[12:] == first[12:]
    new_seq = int.from_bytes(again[8:12], "big")
    assert new_seq != key
    server.receive_data(again, 1.2)
    [received] = _answer_submits(server, first_msg_id=42)
    assert received == SubmitReceived(new_seq, SUBMIT)
    client.receive_data(server.data_to_send(), 1.3)
    assert drain(client) == [SubmitAccepted(key, 42)]
    assert client.in_flight == 0 and client.queued == 0


def test_repeated_result_8_doubles_the_pause() -> None:
    """Each further Result 8 doubles the pause, up to flow_control_pause_max."""
    client, server = pair(active_test_interval=1000.0, flow_control_pause_max=0.5)
    client.send(SUBMIT, 0.0)
    now, pauses = 0.0, []
    for _ in range(4):
        server.receive_data(client.data_to_send(), now)
        _answer_submits(server, result=8)
        client.receive_data(server.data_to_send(), now)
        timer = client.get_timer()
        assert timer is not None
        pauses.append(round(timer - now, 6))
        now = timer
        client.handle_timer(now)
    assert pauses == [0.2, 0.4, 0.5, 0.5]


def test_result_8_past_retries_fails_flow_controlled() -> None:
    """A SUBMIT answered with Result 8 more than flow_control_retries times fails FLOW_CONTROLLED."""
    client, server = pair(flow_control_retries=2, active_test_interval=1000.0)
    key = client.send(SUBMIT, 0.0)
    now = 0.0
    for _ in range(3):
        server.receive_data(client.data_to_send(), now)
        _answer_submits(server, result=8)
        client.receive_data(server.data_to_send(), now)
        timer = client.get_timer()
        assert timer is not None
        now = timer
        client.handle_timer(now)
    assert drain(client) == [SubmitFailed(key, FailReason.FLOW_CONTROLLED, 8)]
    assert client.queued == 0 and client.in_flight == 0


@by_version
@pytest.mark.parametrize("result", [1, 9, 13, 250])
def test_other_result_is_rejected(version: Version, result: int) -> None:
    """Any other non-zero Result fails the SUBMIT as REJECTED, carrying the result."""
    client, server = pair(version)
    key = client.send(SUBMIT, 0.0)
    pump(client, server, 0.0)
    _answer_submits(server, result=result)
    pump(client, server, 0.0)
    assert drain(client) == [SubmitFailed(key, FailReason.REJECTED, result)]


def _send_times(client: Session, count: int, start: float) -> list[float]:
    """Send `count` submits at `start`, then follow get_timer; the times each went out."""
    for _ in range(count):
        client.send(SUBMIT, start)
    times = [start] * len(pdus_of(client.data_to_send(), client.version))
    for _ in range(10 * count):
        if len(times) == count:
            break
        timer = client.get_timer()
        assert timer is not None and timer < start + T
        client.handle_timer(timer)
        times += [timer] * len(pdus_of(client.data_to_send(), client.version))
    return times


@pytest.mark.parametrize(("burst", "immediate"), [(0, 1), (3, 3)])
def test_rate_limit_spaces_submits(burst: int, immediate: int) -> None:
    """At 10/s at most the burst goes out at once; the rest follow 0.1 s apart via the timer."""
    client, _ = pair(rate_limit=10.0, rate_burst=burst, active_test_interval=1000.0)
    times = _send_times(client, 8, 5.0)
    assert times[:immediate] == [5.0] * immediate
    expected = [5.0 + 0.1 * i for i in range(1, 8 - immediate + 1)]
    assert times[immediate:] == pytest.approx(expected)
    assert client.queued == 0


def test_rate_limit_refills_while_idle() -> None:
    """After an idle second the limiter allows a burst again, not more."""
    client, _ = pair(rate_limit=10.0, rate_burst=2, active_test_interval=1000.0)
    _send_times(client, 4, 0.0)
    times = _send_times(client, 4, 10.0)
    assert times[:2] == [10.0, 10.0] and times[2] > 10.0


# --- ACTIVE_TEST ---------------------------------------------------------------------------------


@by_version
def test_active_test_after_idle_interval_is_answered(version: Version) -> None:
    """An idle link sends ACTIVE_TEST after C; the answer keeps it up and re-arms the idle timer."""
    client, server = pair(version)
    assert client.get_timer() == C
    client.handle_timer(C - 1)
    assert client.data_to_send() == b""
    client.handle_timer(C)
    probe = client.data_to_send()
    assert pdus_of(probe, version) == [ActiveTest()]
    server.receive_data(probe, C)
    answer = server.data_to_send()
    assert pdus_of(answer, version) == [ActiveTestResp(0)]
    client.receive_data(answer, C + 1)
    assert drain(client) == [] and drain(server) == []
    assert client.state is State.ESTABLISHED
    assert client.get_timer() == C + 1 + C


def test_traffic_postpones_active_test() -> None:
    """Anything received resets the idle interval."""
    client, server = pair()
    server.send(Deliver(1, "1069", "138", b"hi"), 100.0)
    pump(client, server, 100.0)
    assert client.get_timer() == 100.0 + C


@by_version
def test_unanswered_active_tests_close_the_link(version: Version) -> None:
    """N ACTIVE_TESTs unanswered, each after T, close the link as dead and fail what was in flight."""
    client, _ = pair(version)
    key = client.send(SUBMIT, C - 1)
    client.data_to_send()
    client.handle_timer(C)
    probe = client.data_to_send()
    assert pdus_of(probe, version) == [ActiveTest()]
    events = []
    for attempt in range(1, N):
        client.handle_timer(C + attempt * T)
        assert probe in client.data_to_send()
        events += drain(client)
    assert client.state is State.ESTABLISHED
    client.handle_timer(C + N * T)
    events += drain(client)
    assert client.closed
    closed = events[-1]
    assert isinstance(closed, LinkClosed) and "dead" in closed.reason and not closed.by_peer
    assert [e for e in events if isinstance(e, SubmitFailed) and e.seq == key]


def test_twelve_byte_active_test_resp_is_accepted() -> None:
    """An ACTIVE_TEST_RESP without its Reserved byte still answers the probe (notes §14.3)."""
    client, _ = pair()
    client.handle_timer(C)
    [(seq, _)] = decode_stream(client.data_to_send(), Version.V30)
    client.receive_data(_frame(CommandId.ACTIVE_TEST_RESP, seq, b""), C + 1)
    assert drain(client) == []
    assert client.get_timer() == C + 1 + C


def test_server_probes_and_client_answers() -> None:
    """The server role sends ACTIVE_TEST too, and the client answers it without involving its owner."""
    client, server = pair(Version.V20)
    server.handle_timer(C)
    pump(client, server, C)
    assert drain(client) == [] and drain(server) == []
    assert server.get_timer() == 2 * C


# --- TERMINATE ------------------------------------------------------------------------------------


@by_version
def test_terminate_from_client(version: Version) -> None:
    """After terminate(): queued requests fail NOT_SENT, answers to sent ones still count, TERMINATE_RESP closes."""
    client, server = pair(version, window=1)
    sent = client.send(SUBMIT, 0.0)
    queued = client.send(SUBMIT, 0.0)
    pump(client, server, 0.0)
    [received] = drain(server)
    client.terminate(1.0)
    assert client.state is State.CLOSING
    assert drain(client) == [SubmitFailed(queued, FailReason.NOT_SENT)]
    with pytest.raises(CmppLocalError):
        client.send(SUBMIT, 1.0)
    client.terminate(1.0)  # a second call changes nothing
    assert isinstance(received, SubmitReceived)
    server.respond(received.seq, SubmitResp(55, 0))
    pump(client, server, 1.5)
    accepted, closed = drain(client)
    assert accepted == SubmitAccepted(sent, 55)
    assert isinstance(closed, LinkClosed) and not closed.by_peer and closed.reason == "terminated"
    [server_closed] = drain(server)
    assert isinstance(server_closed, LinkClosed) and server_closed.by_peer
    assert (client.state, server.state) == (State.CLOSED, State.CLOSED)
    assert client.get_timer() is None and server.get_timer() is None


def test_terminate_from_server() -> None:
    """A TERMINATE from the ISMG is answered at once and closes the client; the answer closes the server."""
    client, server = pair()
    server.terminate(1.0)
    assert server.state is State.CLOSING
    pump(client, server, 1.0)
    [client_closed] = drain(client)
    assert isinstance(client_closed, LinkClosed) and client_closed.by_peer
    [server_closed] = drain(server)
    assert isinstance(server_closed, LinkClosed) and server_closed.reason == "terminated"
    assert client.closed and server.closed


def test_terminate_without_answer_closes_after_t() -> None:
    """A TERMINATE the peer never answers closes the link anyway after its attempts."""
    client, _ = pair(attempts=1)
    client.terminate(0.0)
    assert pdus_of(client.data_to_send(), Version.V30) == [Terminate()]
    assert client.get_timer() == T
    client.handle_timer(T)
    [closed] = drain(client)
    assert isinstance(closed, LinkClosed) and "TERMINATE" in closed.reason
    assert client.closed


def test_terminate_before_login_just_closes() -> None:
    """terminate() before login completes closes without writing anything."""
    client = Session(config(Role.CLIENT))
    client.start(0.0, WALLCLOCK)
    client.data_to_send()
    client.terminate(0.0)
    assert client.data_to_send() == b""
    assert isinstance(drain(client)[-1], LinkClosed) and client.closed


def test_peer_terminate_drops_later_frames() -> None:
    """Frames after a TERMINATE in the same read are ignored, and only TERMINATE_RESP is written."""
    client, _ = pair()
    data = encode_pdu(Terminate(), 9, Version.V30) + encode_pdu(ActiveTest(), 10, Version.V30)
    client.receive_data(data, 1.0)
    assert decode_stream(client.data_to_send(), Version.V30) == [(9, TerminateResp())]
    assert [type(e) for e in drain(client)] == [LinkClosed]


# --- EOF ---------------------------------------------------------------------------------------------


@by_version
def test_eof_fails_outstanding_and_queued(version: Version) -> None:
    """EOF fails sent SUBMITs as LINK_CLOSED and queued ones as NOT_SENT, then closes."""
    client, _ = pair(version, window=2)
    a, b, c = (client.send(SUBMIT, 0.0) for _ in range(3))
    client.receive_data(b"", 1.0)
    events = drain(client)
    assert events[:3] == [SubmitFailed(a, FailReason.LINK_CLOSED), SubmitFailed(b, FailReason.LINK_CLOSED),
                          SubmitFailed(c, FailReason.NOT_SENT)]
    closed = events[3]
    assert isinstance(closed, LinkClosed) and closed.by_peer
    assert client.state is State.CLOSED and client.get_timer() is None
    client.receive_data(b"anything", 2.0)  # ignored once closed
    client.handle_timer(1000.0)
    assert drain(client) == []


def test_eof_ends_server_requests_and_queries() -> None:
    """EOF ends an unanswered DELIVER with result None and an unanswered QUERY with no response."""
    client, server = pair()
    deliver_key = server.send(Deliver(1, "1069", "138", b"hi"), 0.0)
    query_key = client.send(Query("20240305"), 0.0)
    server.connection_lost(1.0, "reset")
    client.connection_lost(1.0, "reset")
    assert drain(server)[0] == DeliverAcknowledged(deliver_key, None)
    assert drain(client)[0] == ResponseReceived(query_key, None)


# --- DELIVER -------------------------------------------------------------------------------------------


@by_version
def test_report_received_and_acknowledged(version: Version) -> None:
    """A DELIVER carrying a report reaches the client as ReportReceived; its answer acknowledges it at the server."""
    client, server = pair(version)
    deliver = Deliver(0x32A0928003E90002, "10690001", "13800138000", REPORT.encode(version),
                      registered_delivery=1)
    key = server.send(deliver, 1.0)
    pump(client, server, 1.0)
    [event] = drain(client)
    assert event == ReportReceived(key, deliver.msg_id, REPORT, deliver)
    assert isinstance(event, ReportReceived)
    client.respond(event.seq, DeliverResp(event.deliver_msg_id, 0))
    pump(client, server, 1.5)
    assert drain(server) == [DeliverAcknowledged(key, 0)]
    assert server.in_flight == 0


@by_version
def test_mo_received_and_acknowledged(version: Version) -> None:
    """An ordinary DELIVER reaches the client as MoReceived, and a non-zero answer reaches the server."""
    client, server = pair(version)
    deliver = Deliver(77, "106900011", "13800138000", b"TD", msg_fmt=0)
    key = server.send(deliver, 1.0)
    pump(client, server, 1.0)
    assert drain(client) == [MoReceived(key, deliver)]
    client.respond(key, DeliverResp(77, 9))
    pump(client, server, 1.0)
    assert drain(server) == [DeliverAcknowledged(key, 9)]


def test_unanswered_deliver_ends_without_result() -> None:
    """A DELIVER the SP never answers ends as DeliverAcknowledged(result=None) after N attempts."""
    client, server = pair(active_test_interval=1000.0)
    key = server.send(Deliver(1, "1069", "138", b"x"), 0.0)
    for attempt in range(1, N + 1):
        server.handle_timer(attempt * T)
    assert drain(server) == [DeliverAcknowledged(key, None)]


@by_version
def test_malformed_report_is_answered_and_link_stays(version: Version) -> None:
    """A report DELIVER whose content is no report is answered with a non-zero result; the link goes on."""
    client, _ = pair(version)
    bad = Deliver(0xABCDEF, "10690001", "13800138000", b"short", registered_delivery=1)
    client.receive_data(encode_pdu(bad, 5, version), 1.0)
    [event] = drain(client)
    assert isinstance(event, MalformedRequest)
    assert (event.seq, event.command_id, event.result) == (5, CommandId.DELIVER, 4)
    assert decode_stream(client.data_to_send(), version) == [(5, DeliverResp(0xABCDEF, 4))]
    assert client.state is State.ESTABLISHED


# --- malformed input and protocol errors -----------------------------------------------------------------


@by_version
def test_malformed_submit_is_answered_and_link_stays(version: Version) -> None:
    """A SUBMIT body that does not decode is answered with a non-zero result, reported, and the link goes on."""
    client, server = pair(version)
    good = SUBMIT.encode_body(version)
    server.receive_data(_frame(CommandId.SUBMIT, 41, good[:60]) + _frame(CommandId.SUBMIT, 42, good), 1.0)
    malformed, received = drain(server)
    assert isinstance(malformed, MalformedRequest)
    assert (malformed.seq, malformed.command_id) == (41, CommandId.SUBMIT)
    assert malformed.result != 0 and "SUBMIT" in malformed.error
    assert received == SubmitReceived(42, SUBMIT)
    [(seq, resp)] = decode_stream(server.data_to_send(), version)
    assert seq == 41 and isinstance(resp, SubmitResp) and resp.result == malformed.result
    assert server.state is State.ESTABLISHED


@pytest.mark.parametrize("command_id", [0x00000003, 0x00000009, 0x80000003, 0xFFFFFFFF])
def test_unknown_command_id_fails_the_session(command_id: int) -> None:
    """An unknown Command_Id raises CmppRemoteError once, closes, and every later call fails fast."""
    client, _ = pair()
    key = client.send(SUBMIT, 0.0)
    client.data_to_send()
    client.receive_data(_frame(command_id, 3, b""), 1.0)
    with pytest.raises(CmppRemoteError, match="Command_Id") as info:
        client.next_event()
    assert info.value.status == 2
    failed, closed = drain(client)
    assert failed == SubmitFailed(key, FailReason.LINK_CLOSED)
    assert isinstance(closed, LinkClosed) and "protocol error" in closed.reason
    assert client.state is State.ERROR and client.closed and client.get_timer() is None
    with pytest.raises(CmppLocalError):
        client.send(SUBMIT, 2.0)
    with pytest.raises(CmppLocalError):
        client.receive_data(b"\x00", 2.0)
    with pytest.raises(CmppLocalError):
        client.terminate(2.0)
    with pytest.raises(CmppLocalError):
        client.respond(3, DeliverResp(1))


@pytest.mark.parametrize(("role", "pdu"), [
    (Role.CLIENT, SUBMIT),
    (Role.CLIENT, Query("20240305")),
    (Role.CLIENT, ConnectResp(0, bytes(16), 0x30)),
    (Role.SERVER, Deliver(1, "1069", "138", b"x")),
    (Role.SERVER, SubmitResp(1, 0)),
    (Role.SERVER, ConnectResp(0, bytes(16), 0x30)),
], ids=lambda x: x.value if isinstance(x, Role) else type(x).__name__)
def test_pdu_not_allowed_in_state_is_a_remote_error(role: Role, pdu: Pdu) -> None:
    """A PDU the other role sends (or one out of place) raises CmppRemoteError naming it and the state."""
    client, server = pair()
    session = client if role is Role.CLIENT else server
    session.receive_data(encode_pdu(pdu, 3, Version.V30), 1.0)
    with pytest.raises(CmppRemoteError) as info:
        session.next_event()
    assert pdu.command.name in str(info.value) and "ESTABLISHED" in str(info.value)
    assert session.state is State.ERROR


def test_connect_on_established_server_is_a_remote_error() -> None:
    """A second CONNECT on an established link is refused as a protocol error."""
    client, server = pair()
    again = Session(config(Role.CLIENT))
    again.start(0.0, WALLCLOCK)
    server.receive_data(again.data_to_send(), 1.0)
    with pytest.raises(CmppRemoteError, match="CONNECT"):
        server.next_event()


def test_response_of_the_wrong_kind_is_a_remote_error() -> None:
    """A SUBMIT_RESP whose sequence id belongs to an outstanding QUERY is a protocol error."""
    client, _ = pair()
    key = client.send(Query("20240305"), 0.0)
    client.receive_data(encode_pdu(SubmitResp(1, 0), key, Version.V30), 1.0)
    with pytest.raises(CmppRemoteError, match="SUBMIT_RESP"):
        client.next_event()
    assert client.state is State.ERROR


def test_frames_before_a_framing_error_are_handled() -> None:
    """Good frames before a bad Total_Length are processed, then the error is raised."""
    client, server = pair()
    key = server.send(Deliver(1, "1069", "138", b"x"), 0.0)
    data = server.data_to_send() + (5).to_bytes(4, "big")
    client.receive_data(data, 1.0)
    assert client.next_event() == MoReceived(key, Deliver(1, "1069", "138", b"x"))
    with pytest.raises(CmppRemoteError, match="Total_Length"):
        client.next_event()
    assert isinstance(client.next_event(), LinkClosed)


def test_respond_checks_the_request() -> None:
    """Answering an unknown sequence id, or with the wrong response type, is a local error that loses nothing."""
    client, server = pair()
    key = server.send(Deliver(1, "1069", "138", b"x"), 0.0)
    pump(client, server, 0.0)
    drain(client)
    with pytest.raises(CmppLocalError):
        client.respond(key + 100, DeliverResp(1))
    with pytest.raises(CmppLocalError, match="SUBMIT_RESP"):
        client.respond(key, SubmitResp(1, 0))
    client.respond(key, DeliverResp(1))
    with pytest.raises(CmppLocalError):
        client.respond(key, DeliverResp(1))


# --- QUERY / CANCEL -------------------------------------------------------------------------------------


@by_version
def test_query_round_trip(version: Version) -> None:
    """A QUERY reaches the server as RequestReceived, and its answer returns as ResponseReceived."""
    client, server = pair(version)
    query = Query("20240305", 1, "MTEST")
    key = client.send(query, 0.0)
    pump(client, server, 0.0)
    assert drain(server) == [RequestReceived(key, query)]
    answer = QueryResp("20240305", 1, "MTEST", 10, 9, 8, 1, 1, 3, 0, 0)
    server.respond(key, answer)
    pump(client, server, 0.5)
    assert drain(client) == [ResponseReceived(key, answer)]
    assert client.in_flight == 0


@by_version
@pytest.mark.parametrize("success_id", [0, 1])
def test_cancel_round_trip(version: Version, success_id: int) -> None:
    """A CANCEL reaches the server and its Success_Id comes back, with the version's field width."""
    client, server = pair(version)
    key = client.send(Cancel(0x32A0928003E90001), 0.0)
    pump(client, server, 0.0)
    assert drain(server) == [RequestReceived(key, Cancel(0x32A0928003E90001))]
    server.respond(key, CancelResp(success_id))
    wire = server.data_to_send()
    assert len(wire) == (16 if version is Version.V30 else 13)
    client.receive_data(wire, 0.5)
    assert drain(client) == [ResponseReceived(key, CancelResp(success_id))]


def test_unanswered_query_ends_with_no_response() -> None:
    """A QUERY never answered ends as ResponseReceived(pdu=None) after its attempts."""
    client, _ = pair(attempts=1, active_test_interval=1000.0)
    key = client.send(Query("20240305"), 0.0)
    client.handle_timer(T)
    assert drain(client) == [ResponseReceived(key, None)]


# --- (state x input) is never undefined -------------------------------------------------------------

_E, _CL, _X = State.ESTABLISHED, State.CLOSING, State.CLOSED
_I = CommandId
_CLIENT_REQUESTS: dict[int, State | None] = {_I.SUBMIT_RESP: None, _I.DELIVER: None, _I.QUERY_RESP: None, _I.CANCEL_RESP: None,
                    _I.ACTIVE_TEST: None, _I.ACTIVE_TEST_RESP: None}
_SERVER_REQUESTS: dict[int, State | None] = {_I.SUBMIT: None, _I.DELIVER_RESP: None, _I.QUERY: None, _I.CANCEL: None,
                    _I.ACTIVE_TEST: None, _I.ACTIVE_TEST_RESP: None}

#: What may arrive in each (role, state), and the state it leads to (None: stay), written
#: from the notes (§12.2) independently of the session's own table.
_EXPECTED: dict[tuple[Role, State], dict[int, State | None]] = {
    (Role.CLIENT, State.CONNECTING): {},
    (Role.CLIENT, State.LOGGING_IN): {_I.CONNECT_RESP: _E},  # or CLOSED for a non-zero Status
    (Role.CLIENT, _E): {**_CLIENT_REQUESTS, _I.TERMINATE: _X},
    (Role.CLIENT, _CL): {**_CLIENT_REQUESTS, _I.TERMINATE: _X, _I.TERMINATE_RESP: _X},
    (Role.SERVER, State.AWAITING_LOGIN): {_I.CONNECT: State.LOGGING_IN},
    (Role.SERVER, State.LOGGING_IN): {},
    (Role.SERVER, _E): {**_SERVER_REQUESTS, _I.TERMINATE: _X},
    (Role.SERVER, _CL): {**_SERVER_REQUESTS, _I.TERMINATE: _X, _I.TERMINATE_RESP: _X},
}
_UNKNOWN_IDS = [0, 3, 9, 0x10, 0x17, 0x80000000, 0x80000003, 0x80000009, 0xFFFFFFFF]


def _session_in(role: Role, state: State, version: Version) -> Session:
    """A session brought into `state` the way a real link gets there."""
    if state in (State.CONNECTING, State.AWAITING_LOGIN):
        return Session(config(role, version))
    if state is State.LOGGING_IN:
        client, server = Session(config(Role.CLIENT, version)), Session(config(Role.SERVER, version))
        server.start(0.0)
        client.start(0.0, WALLCLOCK)
        if role is Role.CLIENT:
            return client
        server.receive_data(client.data_to_send(), 0.0)
        drain(server)
        return server
    client, server = pair(version)
    session = client if role is Role.CLIENT else server
    if state is State.CLOSING:
        session.terminate(0.0)
    elif state is State.CLOSED:
        session.receive_data(b"", 0.0)
    drain(session)
    session.data_to_send()
    assert session.state is state
    return session


_STATES = [(role, state) for role, state in _EXPECTED] + [(Role.CLIENT, _X), (Role.SERVER, _X)]


@by_version
@pytest.mark.parametrize(("role", "state"), _STATES, ids=lambda x: x.value if isinstance(x, Role) else x.name)
@given(command_id=st.sampled_from([int(c) for c in CommandId] + _UNKNOWN_IDS),
       seq=st.integers(1000, 0xFFFFFFFF), data=st.data())
def test_state_by_input_is_never_undefined(role: Role, state: State, version: Version, command_id: int,
                                           seq: int, data: st.DataObject) -> None:
    """Any well-formed frame in any state follows the transition table or raises CmppRemoteError, nothing else."""
    session = _session_in(role, state, version)
    cls = PDU_CLASSES.get(command_id)
    pdu: Pdu | None = None
    if cls is None:
        frame = _frame(command_id, seq, data.draw(st.binary(max_size=64)))
    else:
        pdu = data.draw(pdus(cls, session.version))
        frame = encode_pdu(pdu, seq, session.version)
    session.receive_data(frame, 1.0)
    events = drain_all(session)
    errors = [e for e in events if isinstance(e, CmppRemoteError)]
    if state is State.CLOSED:
        assert events == [] and session.state is State.CLOSED
        return
    allowed = _EXPECTED[(role, state)]
    if command_id not in allowed:
        assert len(errors) == 1 and session.state is State.ERROR
        assert events[0] is errors[0] and isinstance(events[-1], LinkClosed)
        if cls is not None:
            assert CommandId(command_id).name in errors[0].msg
        return
    assert errors == []
    expected = allowed[command_id] or state
    if command_id == CommandId.CONNECT_RESP and isinstance(pdu, ConnectResp) and pdu.status != 0:
        expected = State.CLOSED
    assert session.state is expected
    pdus_of(session.data_to_send(), session.version)  # whatever it answered is well-formed
