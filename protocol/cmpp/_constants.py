"""Command ids, versions and the code tables of CMPP 3.0 / 2.0 (protocol notes §2, §3, §6, §7)."""

from __future__ import annotations

import enum


class Version(enum.IntEnum):
    """The Version byte: high nibble major, low nibble minor."""

    V20 = 0x20
    V30 = 0x30

    @property
    def text(self) -> str:
        return f"{self >> 4}.{self & 0xF}"

    @classmethod
    def parse(cls, text: str) -> Version:
        """Map "3.0"/"3"/"2.0"/"2" to a Version.

        Raises:
            ValueError: for anything else, naming the accepted values.
        """
        norm = text.strip()
        for v in cls:
            if norm in (v.text, v.text[0]):
                return v
        raise ValueError(f"unknown CMPP version {text!r}: use 3.0 or 2.0")


class CommandId(enum.IntEnum):
    CONNECT = 0x00000001
    CONNECT_RESP = 0x80000001
    TERMINATE = 0x00000002
    TERMINATE_RESP = 0x80000002
    SUBMIT = 0x00000004
    SUBMIT_RESP = 0x80000004
    DELIVER = 0x00000005
    DELIVER_RESP = 0x80000005
    QUERY = 0x00000006
    QUERY_RESP = 0x80000006
    CANCEL = 0x00000007
    CANCEL_RESP = 0x80000007
    ACTIVE_TEST = 0x00000008
    ACTIVE_TEST_RESP = 0x80000008


RESPONSE_BIT = 0x80000000

#: Frames outside [HEADER_SIZE, MAX_PDU_SIZE] are rejected before buffering (notes §1.2).
HEADER_SIZE = 12
MAX_PDU_SIZE = 4096

#: SUBMIT destinations: the spec says DestUsr_tl < 100.
MAX_DESTINATIONS = 100 - 1

CONNECT_STATUS: dict[int, str] = {
    0: "OK",
    1: "message structure error",
    2: "illegal source address (unknown SP_Id or IP not allowed)",
    3: "authentication error",
    4: "version too high",
    55: "too many system connections",
    56: "too many connections for this account",
    57: "login IP not allowed",
    58: "server thread creation failed",
    60: "account not on this proxy",
}

SUBMIT_RESULT: dict[int, str] = {
    0: "OK",
    1: "message structure error",
    2: "command id error",
    3: "duplicate sequence number",
    4: "message length error",
    5: "fee code error",
    6: "message too long",
    7: "Service_Id error",
    8: "flow control error (rate exceeded)",
    9: "this ISMG does not serve the charged number",
    10: "Src_Id error",
    11: "Msg_src error",
    12: "Fee_terminal_Id error",
    13: "Dest_terminal_Id error",
    51: "no connection yet",
    52: "not logged in",
    53: "send failed",
    54: "response timeout",
    55: "report wait timeout",
    61: "validity already expired",
    62: "scheduled time already passed",
    63: "unknown FeeType",
    69: "blacklisted user",
    70: "network or peer down",
    72: "no route",
    73: "response timeout",
    76: "content security check failed",
    77: "too many submits",
    250: "message queue full",
}

#: Result 8 is the one SUBMIT_RESP result that means "try again later".
RESULT_FLOW_CONTROL = 8

STAT_MEANING: dict[str, str] = {
    "DELIVRD": "delivered to the handset",
    "EXPIRED": "validity period expired (phone off or out of coverage)",
    "DELETED": "deleted",
    "UNDELIV": "undeliverable",
    "ACCEPTD": "accepted (intermediate, not final)",
    "UNKNOWN": "unknown state",
    "REJECTD": "rejected",
}

STAT_PREFIX_MEANING: dict[str, str] = {
    "MA": "SMSC gave no response",
    "MB": "SMSC returned an error",
    "MC": "no status report from the SMSC",
    "CA": "SCP (billing) gave no response",
    "CB": "SCP (billing) returned an error",
    "DA": "DSMP gave no response",
    "DB": "DSMP returned an error",
    "SA": "SP gave no response",
    "SB": "SP returned an error",
    "IA": "next-hop ISMG gave no response",
    "IB": "next-hop ISMG returned an error",
    "IC": "no report from the next-hop ISMG",
    "MI": "SMSC final state EXPIRED",
    "MJ": "SMSC final state DELETED",
    "MK": "SMSC final state UNDELIV",
    "ML": "SMSC final state ACCEPTD",
    "MM": "SMSC final state UNKNOWN",
    "MN": "SMSC final state REJECTD",
}


def connect_status_text(status: int) -> str:
    return CONNECT_STATUS.get(status, "other error" if status >= 5 else "unknown status")


def submit_result_text(result: int) -> str:
    return SUBMIT_RESULT.get(result, "other error")


def stat_text(stat: str) -> str:
    """A readable meaning for a report Stat value; unknown values are kept as vendor codes."""
    if stat in STAT_MEANING:
        return STAT_MEANING[stat]
    prefix, sep, _ = stat.partition(":")
    if sep and prefix in STAT_PREFIX_MEANING:
        return STAT_PREFIX_MEANING[prefix]
    return "vendor-specific state"


def stat_is_final(stat: str) -> bool:
    """ACCEPTD is an intermediate state: every other value ends the message."""
    return stat != "ACCEPTD"
