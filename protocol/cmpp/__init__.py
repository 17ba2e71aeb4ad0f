"""CMPP 3.0 / 2.0: exact codec and a sans-IO session, no I/O anywhere (STYLE.md §1)."""

from smsgw.protocol.cmpp._auth import (
    authenticator_ismg,
    authenticator_source,
    make_timestamp,
    verify_authenticator_ismg,
)
from smsgw.protocol.cmpp._constants import (
    HEADER_SIZE,
    MAX_PDU_SIZE,
    RESULT_FLOW_CONTROL,
    CommandId,
    Version,
    connect_status_text,
    stat_is_final,
    stat_text,
    submit_result_text,
)
from smsgw.protocol.cmpp._errors import CmppError, CmppLocalError, CmppRemoteError
from smsgw.protocol.cmpp._events import (
    DeliverAcknowledged,
    Event,
    FailReason,
    LateResponse,
    LinkClosed,
    LinkEstablished,
    LoginRejected,
    LoginRequested,
    MalformedRequest,
    MoReceived,
    ReportReceived,
    RequestReceived,
    ResponseReceived,
    SubmitAccepted,
    SubmitFailed,
    SubmitReceived,
)
from smsgw.protocol.cmpp._framing import FrameBuffer
from smsgw.protocol.cmpp._msgid import (
    MsgIdFields,
    MsgIdGenerator,
    msg_id_display,
    msg_id_from_text,
    msg_id_range,
    msg_id_to_text,
    pack_msg_id,
    unpack_msg_id,
)
from smsgw.protocol.cmpp._pdus import (
    PDU_CLASSES,
    ActiveTest,
    ActiveTestResp,
    Cancel,
    CancelResp,
    Connect,
    ConnectResp,
    Deliver,
    DeliverResp,
    Pdu,
    Query,
    QueryResp,
    StatusReport,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
    decode_body,
    encode_pdu,
)
from smsgw.protocol.cmpp._reassembly import Reassembler, ReassembledMessage
from smsgw.protocol.cmpp._session import Role, Session, SessionConfig, State
from smsgw.protocol.cmpp._text import (
    MSG_FMT_ASCII,
    MSG_FMT_BINARY,
    MSG_FMT_GBK,
    MSG_FMT_UCS2,
    ConcatInfo,
    ReferenceCounter,
    Segment,
    SplitLimits,
    choose_msg_fmt,
    concat_info,
    decode_text,
    encode_text,
    parse_udh,
    split_bytes,
    split_text,
    udhi_set,
)

__all__ = [
    "HEADER_SIZE", "MAX_PDU_SIZE", "MSG_FMT_ASCII", "MSG_FMT_BINARY", "MSG_FMT_GBK", "MSG_FMT_UCS2",
    "PDU_CLASSES", "RESULT_FLOW_CONTROL", "ActiveTest", "ActiveTestResp", "Cancel", "CancelResp",
    "CmppError", "CmppLocalError", "CmppRemoteError", "CommandId", "ConcatInfo", "Connect",
    "ConnectResp", "Deliver", "DeliverAcknowledged", "DeliverResp", "Event", "FailReason",
    "FrameBuffer", "LateResponse", "LinkClosed", "LinkEstablished", "LoginRejected",
    "LoginRequested", "MalformedRequest", "MoReceived", "MsgIdFields", "MsgIdGenerator", "Pdu",
    "Query", "QueryResp", "ReassembledMessage", "Reassembler", "ReferenceCounter",
    "ReportReceived", "RequestReceived", "ResponseReceived", "Role", "Segment", "Session",
    "SessionConfig", "SplitLimits", "State", "StatusReport", "Submit", "SubmitAccepted",
    "SubmitFailed", "SubmitReceived", "SubmitResp", "Terminate", "TerminateResp", "Version",
    "authenticator_ismg", "authenticator_source", "choose_msg_fmt", "concat_info",
    "connect_status_text", "decode_body", "decode_text", "encode_pdu", "encode_text",
    "make_timestamp", "msg_id_display", "msg_id_from_text", "msg_id_range", "msg_id_to_text",
    "pack_msg_id", "parse_udh", "split_bytes", "split_text", "stat_is_final", "stat_text",
    "submit_result_text", "udhi_set", "unpack_msg_id", "verify_authenticator_ismg",
]
