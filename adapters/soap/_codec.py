"""SOAP 1.1 envelopes in and out: bytes to the operation's element, or a `SoapFault`; answers to bytes.

No Twisted here. Requests are parsed by libxml2 (lxml) with everything that lets a
document reach beyond itself switched off: no DTD is loaded or accepted (so no
entity can be declared, neither the billion-laughs kind nor an external
``SYSTEM "file:///etc/passwd"``), no entity is resolved, nothing is fetched from
the network, and libxml2's own size and depth limits stay on (``huge_tree``
off). Whatever bytes a client sends either come out as the operation's name and
element or raise `SoapFault` with faultcode ``soap:Client``; the hypothesis tests
hold `read_envelope` to that.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Mapping, Sequence

from lxml import etree

from smsgw._api_codec import PROBLEMS_MAX, ApiError
from smsgw.adapters.soap._wsdl import NAMESPACE, OPERATIONS
from smsgw.model import Problem

__all__ = ["CONTENT_TYPE", "SOAP_ENV", "XSI", "SoapFault", "close_match", "envelope", "fault_envelope",
           "read_envelope", "rejected", "response", "sub", "xml_text"]

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
CONTENT_TYPE = b"text/xml; charset=utf-8"
FAULT_SUMMARY = 5  # problems quoted in faultstring (many clients show only that); detail lists up to PROBLEMS_MAX
_NSMAP = {"soap": SOAP_ENV}
_NS = f"{{{NAMESPACE}}}"
_MUST_UNDERSTAND = f"{{{SOAP_ENV}}}mustUnderstand"
# Characters XML 1.0 cannot carry, not even escaped (control characters, lone surrogates):
# a carrier's MO text or a stored error may hold one; it goes out as U+FFFD.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class SoapFault(ApiError):
    """A SOAP 1.1 fault: ``soap:Client`` (the request is wrong: fix it) or ``soap:Server`` (retry, or report).

    `code` and `details` (where/code/message per problem) go into the ``smsFault``
    detail element; `incident` names the log entry of an internal error;
    `retry_after` (seconds) says when to try again: rounded up to whole seconds, at
    least 1, it goes into the detail and the Retry-After header. `status` is 500, as
    SOAP 1.1 over HTTP requires for a fault, except where HTTP itself refused the
    request (404 path, 405 method, 413 body).
    """

    def __init__(self, code: str, message: str, details: Sequence[Mapping[str, str]] = (), *,
                 server: bool = False, status: int = 500, incident: str | None = None,
                 retry_after: float | None = None, headers: Mapping[bytes, bytes] | None = None) -> None:
        seconds = None if retry_after is None else max(1, math.ceil(retry_after))
        if seconds is not None:
            headers = {**(headers or {}), b"retry-after": b"%d" % seconds}
        super().__init__(status, code, message, details, headers)
        self.server = server
        self.incident = incident
        self.retry_after = seconds

    @property
    def faultcode(self) -> str:
        return "soap:Server" if self.server else "soap:Client"


def rejected(operation: str, problems: Sequence[Problem | Mapping[str, str]]) -> SoapFault:
    """The Client fault listing every problem of a request (faultstring quotes the first few)."""
    details = [p.as_dict() if isinstance(p, Problem) else dict(p) for p in problems]
    quoted = "; ".join(f"{d['where']}: {d['message']}" if d["where"] else d["message"]
                       for d in details[:FAULT_SUMMARY])
    more = len(details) - FAULT_SUMMARY
    tail = ""
    if len(details) > PROBLEMS_MAX:
        tail = f"; and {more} more problems, the first {PROBLEMS_MAX} of all listed in detail"
    elif more > 0:
        tail = f"; and {more} more problem{'s' if more > 1 else ''} listed in detail"
    return SoapFault("validation_failed", f"{operation} was not accepted: {quoted}{tail}", details[:PROBLEMS_MAX])


# -- reading -----------------------------------------------------------------------------------

def _parser(encoding: str | None) -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True, remove_pis=True, encoding=encoding)


_DEFAULT_PARSER = _parser(None)  # lxml parsers are not thread-safe: this one is used on the reactor thread only


def read_envelope(body: bytes, charset: str | None = None) -> tuple[str, etree._Element]:
    """The operation a SOAP 1.1 request calls, and its element (the Body's child).

    Args:
        body: the HTTP request body.
        charset: the Content-Type's charset parameter; it overrides the XML
            declaration (RFC 7303). None: the declaration's, else UTF-8.

    Raises:
        SoapFault: Client, naming what is wrong: not XML (with line and column),
            a DTD, not a SOAP 1.1 envelope, no Body, a header it must understand,
            an operation that does not exist or is in another namespace.
    """
    if not body.strip():
        raise SoapFault("malformed_xml", "the request body is empty: POST a SOAP 1.1 envelope (the WSDL at "
                        "?wsdl describes it)")
    if b"<!DOCTYPE" in body:  # refused before libxml2 reads a single declaration
        raise _dtd_refused()
    root = _parse(body, charset)
    if root.getroottree().docinfo.internalDTD is not None:  # a DOCTYPE the byte check missed (UTF-16 and such)
        raise _dtd_refused()
    return _operation(_body_of(root))


def _parse(body: bytes, charset: str | None) -> etree._Element:
    parser = _DEFAULT_PARSER
    if charset is not None and charset.lower().replace("-", "").replace("_", "") != "utf8":
        try:
            parser = _parser(charset)
        except LookupError:
            raise SoapFault("bad_charset", f"the Content-Type's charset {charset[:40]!r} is unknown: send UTF-8 "
                            "(charset=utf-8) or name a real encoding such as GBK") from None
    try:
        return etree.fromstring(body, parser)
    except etree.XMLSyntaxError as e:
        line, column = e.position
        reason = (e.msg or "not well-formed").split(", line ")[0]
        raise SoapFault("malformed_xml", f"the request is not well-formed XML: {reason} (line {line}, column "
                        f"{column})") from None
    except (ValueError, LookupError) as e:  # e.g. a declaration naming an encoding libxml2 cannot convert
        raise SoapFault("malformed_xml", f"the request cannot be read as XML: {str(e)[:200]}") from None


def _dtd_refused() -> SoapFault:
    return SoapFault("dtd_refused", "the request has a DOCTYPE: SOAP forbids DTDs, and this service accepts no "
                     "entity declarations; remove the <!DOCTYPE ...> part")


def _body_of(root: etree._Element) -> etree._Element:
    name = _qname(root)
    if name != (SOAP_ENV, "Envelope"):
        if name == (SOAP12_ENV, "Envelope"):
            raise SoapFault("version_mismatch", f"this is a SOAP 1.2 envelope ({SOAP12_ENV}); the service speaks "
                            f"SOAP 1.1: use the envelope namespace {SOAP_ENV} (JAX-WS: the default SOAP 1.1 "
                            "binding; .NET: BasicHttpBinding)")
        raise SoapFault("not_soap", f"the document is {_shown(name)}, not a SOAP 1.1 envelope: the root "
                        f"element must be Envelope in the namespace {SOAP_ENV}")
    parts = [child for child in root if isinstance(child.tag, str)]
    if [_qname(p) for p in parts] not in ([(SOAP_ENV, "Body")], [(SOAP_ENV, "Header"), (SOAP_ENV, "Body")]):
        raise SoapFault("not_soap", "the Envelope must hold one Body, after an optional Header, both in the "
                        f"namespace {SOAP_ENV}; found {', '.join(_shown(_qname(p)) for p in parts) or 'nothing'}")
    if len(parts) == 2:
        _check_headers(parts[0])
    return parts[-1]


def _check_headers(header: etree._Element) -> None:
    """Headers are ignored, except one the client says must be understood: SOAP 1.1 forbids ignoring that."""
    for entry in header:
        if isinstance(entry.tag, str) and entry.get(_MUST_UNDERSTAND, "").strip() in ("1", "true"):
            raise SoapFault("must_understand", f"the header {_shown(_qname(entry))} has mustUnderstand=\"1\" but "
                            "this service understands no headers: send the credentials as the account and "
                            "password elements of the operation, and leave the header out")


def _operation(body: etree._Element) -> tuple[str, etree._Element]:
    calls = [child for child in body if isinstance(child.tag, str)]
    if len(calls) != 1:
        raise SoapFault("no_operation", f"the Body holds {len(calls)} elements: it must hold exactly one, the "
                        f"operation ({', '.join(OPERATIONS)}) in the namespace {NAMESPACE}")
    call = calls[0]
    namespace, name = _qname(call)
    if namespace != NAMESPACE:
        where = f"in the namespace {namespace}" if namespace else "in no namespace"
        raise SoapFault("wrong_namespace", f"the operation {name!r} is {where}: write it in {NAMESPACE}, as "
                        "the WSDL says (e.g. <sms:sendSms xmlns:sms=\"" + NAMESPACE + "\">)")
    if name not in OPERATIONS:
        raise SoapFault("unknown_operation", f"there is no operation {name!r}: {close_match(name, OPERATIONS)}"
                        f"the operations are {', '.join(OPERATIONS)}")
    return name, call


def _qname(element: etree._Element) -> tuple[str | None, str]:
    q = etree.QName(element)
    return q.namespace, q.localname


def _shown(name: tuple[str | None, str]) -> str:
    namespace, local = name
    return f"{{{namespace}}}{local}" if namespace else local


def close_match(name: str, choices: Sequence[str]) -> str:
    """'did you mean "x"? ' for a near miss, else ''."""
    found = difflib.get_close_matches(name, choices, n=1)
    return f"did you mean {found[0]!r}? " if found else ""


# -- writing -----------------------------------------------------------------------------------

def xml_text(value: str) -> str:
    """`value` with what XML cannot carry replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", value)


def sub(parent: etree._Element, name: str, value: str | int | bool | None) -> etree._Element | None:
    """Append ``<sms:name>value</sms:name>`` (booleans as true/false); nothing for None."""
    if value is None:
        return None
    child = etree.SubElement(parent, _NS + name)
    if isinstance(value, bool):
        child.text = "true" if value else "false"
    else:
        child.text = xml_text(str(value))
    return child


def envelope(payload: etree._Element) -> bytes:
    """A SOAP 1.1 envelope whose Body holds `payload`, as UTF-8 bytes with an XML declaration."""
    root = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap=_NSMAP)
    etree.SubElement(root, f"{{{SOAP_ENV}}}Body").append(payload)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


def response(operation: str) -> tuple[etree._Element, etree._Element]:
    """A new ``<sms:{operation}Response>`` and its ``result`` child to fill."""
    wrapper = etree.Element(f"{_NS}{operation}Response", nsmap={"sms": NAMESPACE})
    return wrapper, etree.SubElement(wrapper, _NS + "result")


def fault_envelope(fault: SoapFault) -> bytes:
    """The fault's envelope: faultcode, faultstring, and the ``smsFault`` detail (code, problems, incident, retry)."""
    element = etree.Element(f"{{{SOAP_ENV}}}Fault", nsmap=_NSMAP)
    etree.SubElement(element, "faultcode").text = fault.faultcode
    etree.SubElement(element, "faultstring").text = xml_text(fault.message)
    info = etree.SubElement(etree.SubElement(element, "detail"), _NS + "smsFault", nsmap={"sms": NAMESPACE})
    sub(info, "code", fault.code)
    for problem in fault.details:
        entry = etree.SubElement(info, _NS + "problem")
        for key in ("where", "code", "message"):
            sub(entry, key, problem.get(key, ""))
    sub(info, "incident", fault.incident)
    sub(info, "retryAfter", fault.retry_after)
    return envelope(element)
