"""The service's WSDL 1.1 with its XSD embedded, written by hand (docs/soap.md).

Document/literal *wrapped*: every operation's input is one element named after
the operation, its output one element ``<op>Response`` holding a single
``result``, and every fault one ``smsFault`` element. That is the shape Java's
wsimport (JAX-WS) and .NET's svcutil turn into plain methods
(``SendResult sendSms(String account, String password, List<String> mobile, ...)``)
and zeep into ``client.service.sendSms(...)``. Elements are qualified: every
element the client writes or reads is in `NAMESPACE`.

The only part that changes is ``soap:address``: `wsdl` puts in the address the
client used (its Host header), so the WSDL works behind NAT, a proxy or a name.
The schema here is the contract `smsgw.adapters.soap._operations` reads and writes;
change both together (tests/test_soap.py loads this WSDL with zeep and calls the
daemon through it).
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

__all__ = ["NAMESPACE", "OPERATIONS", "wsdl"]

NAMESPACE = "http://smsgw.org/ws/sms/1"
OPERATIONS = ("sendSms", "querySms", "fetchMo")
_ADDRESS = "@SOAP_ADDRESS@"

_CREDENTIALS = """\
            <xs:element name="account" type="xs:string">
              <xs:annotation><xs:documentation>The account's name (accounts[].name).</xs:documentation></xs:annotation>
            </xs:element>
            <xs:element name="password" type="xs:string">
              <xs:annotation><xs:documentation>The account's API key.</xs:documentation></xs:annotation>
            </xs:element>"""

_TEXT = f"""\
<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions name="SmsService"
    targetNamespace="{NAMESPACE}"
    xmlns:tns="{NAMESPACE}"
    xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <wsdl:documentation>smsgw SMS gateway: send messages, query their delivery, fetch uplink (MO) messages.
Every request carries the account's name and API key. Errors are SOAP 1.1 faults: soap:Client (fix the request),
soap:Server (retry later, or report the incident id); the detail element smsFault lists every problem.</wsdl:documentation>

  <wsdl:types>
    <xs:schema targetNamespace="{NAMESPACE}" elementFormDefault="qualified"
        xmlns:tns="{NAMESPACE}" xmlns:xs="http://www.w3.org/2001/XMLSchema">

      <xs:element name="sendSms">
        <xs:complexType>
          <xs:sequence>
{_CREDENTIALS}
            <xs:element name="mobile" type="xs:string" maxOccurs="unbounded">
              <xs:annotation><xs:documentation>A recipient: 11 digits, optionally +86 before them.</xs:documentation></xs:annotation>
            </xs:element>
            <xs:element name="content" type="xs:string" minOccurs="0">
              <xs:annotation><xs:documentation>The text; required unless template is given.</xs:documentation></xs:annotation>
            </xs:element>
            <xs:element name="template" type="xs:string" minOccurs="0">
              <xs:annotation><xs:documentation>A named template instead of content, filled from param.</xs:documentation></xs:annotation>
            </xs:element>
            <xs:element name="param" type="tns:Param" minOccurs="0" maxOccurs="unbounded"/>
            <xs:element name="sendTime" type="xs:dateTime" minOccurs="0">
              <xs:annotation><xs:documentation>Send at this time, not now; without a UTC offset it is the gateway's local time.</xs:documentation></xs:annotation>
            </xs:element>
            <xs:element name="ext" type="xs:string" minOccurs="0">
              <xs:annotation><xs:documentation>Digits appended to the service number; default: the account's.</xs:documentation></xs:annotation>
            </xs:element>
            <xs:element name="ref" type="xs:string" minOccurs="0">
              <xs:annotation><xs:documentation>Your reference: sending the same ref again answers the stored message, never sends twice.</xs:documentation></xs:annotation>
            </xs:element>
            <xs:element name="priority" type="xs:int" minOccurs="0">
              <xs:annotation><xs:documentation>0 (bulk) to 9 (urgent); default 5.</xs:documentation></xs:annotation>
            </xs:element>
            <xs:element name="report" type="xs:boolean" minOccurs="0">
              <xs:annotation><xs:documentation>Ask the carrier for a delivery report; default true.</xs:documentation></xs:annotation>
            </xs:element>
          </xs:sequence>
        </xs:complexType>
      </xs:element>
      <xs:element name="sendSmsResponse">
        <xs:complexType>
          <xs:sequence>
            <xs:element name="result" type="tns:SendResult"/>
          </xs:sequence>
        </xs:complexType>
      </xs:element>

      <xs:element name="querySms">
        <xs:complexType>
          <xs:sequence>
{_CREDENTIALS}
            <xs:element name="messageId" type="xs:string"/>
          </xs:sequence>
        </xs:complexType>
      </xs:element>
      <xs:element name="querySmsResponse">
        <xs:complexType>
          <xs:sequence>
            <xs:element name="result" type="tns:MessageStatus"/>
          </xs:sequence>
        </xs:complexType>
      </xs:element>

      <xs:element name="fetchMo">
        <xs:complexType>
          <xs:sequence>
{_CREDENTIALS}
            <xs:element name="cursor" type="xs:string" minOccurs="0">
              <xs:annotation><xs:documentation>The nextCursor of the previous page; leave out to start at the oldest.</xs:documentation></xs:annotation>
            </xs:element>
            <xs:element name="limit" type="xs:int" minOccurs="0">
              <xs:annotation><xs:documentation>Most messages in the page: 1 to 1000; default 100.</xs:documentation></xs:annotation>
            </xs:element>
          </xs:sequence>
        </xs:complexType>
      </xs:element>
      <xs:element name="fetchMoResponse">
        <xs:complexType>
          <xs:sequence>
            <xs:element name="result" type="tns:MoPage"/>
          </xs:sequence>
        </xs:complexType>
      </xs:element>

      <xs:element name="smsFault" type="tns:SmsFaultInfo"/>

      <xs:complexType name="Param">
        <xs:sequence>
          <xs:element name="name" type="xs:string"/>
          <xs:element name="value" type="xs:string"/>
        </xs:sequence>
      </xs:complexType>

      <xs:complexType name="SendResult">
        <xs:sequence>
          <xs:element name="messageId" type="xs:string"/>
          <xs:element name="ref" type="xs:string" minOccurs="0"/>
          <xs:element name="recipients" type="xs:int"/>
          <xs:element name="segments" type="xs:int"/>
          <xs:element name="droppedDuplicate" type="xs:string" minOccurs="0" maxOccurs="unbounded"/>
          <xs:element name="repeated" type="xs:boolean"/>
        </xs:sequence>
      </xs:complexType>

      <xs:complexType name="MessageStatus">
        <xs:sequence>
          <xs:element name="messageId" type="xs:string"/>
          <xs:element name="ref" type="xs:string" minOccurs="0"/>
          <xs:element name="state" type="xs:string"/>
          <xs:element name="content" type="xs:string"/>
          <xs:element name="priority" type="xs:int"/>
          <xs:element name="sendTime" type="xs:dateTime" minOccurs="0"/>
          <xs:element name="createdTime" type="xs:dateTime"/>
          <xs:element name="updatedTime" type="xs:dateTime"/>
          <xs:element name="recipient" type="tns:RecipientStatus" minOccurs="0" maxOccurs="unbounded"/>
        </xs:sequence>
      </xs:complexType>

      <xs:complexType name="RecipientStatus">
        <xs:sequence>
          <xs:element name="mobile" type="xs:string"/>
          <xs:element name="state" type="xs:string"/>
          <xs:element name="stat" type="xs:string" minOccurs="0"/>
          <xs:element name="error" type="xs:string" minOccurs="0"/>
          <xs:element name="attempts" type="xs:int"/>
          <xs:element name="msgId" type="xs:string" minOccurs="0" maxOccurs="unbounded"/>
          <xs:element name="submittedTime" type="xs:dateTime" minOccurs="0"/>
          <xs:element name="reportedTime" type="xs:dateTime" minOccurs="0"/>
          <xs:element name="updatedTime" type="xs:dateTime"/>
        </xs:sequence>
      </xs:complexType>

      <xs:complexType name="MoPage">
        <xs:sequence>
          <xs:element name="message" type="tns:MoMessage" minOccurs="0" maxOccurs="unbounded"/>
          <xs:element name="nextCursor" type="xs:string" minOccurs="0"/>
        </xs:sequence>
      </xs:complexType>

      <xs:complexType name="MoMessage">
        <xs:sequence>
          <xs:element name="id" type="xs:string"/>
          <xs:element name="mobile" type="xs:string"/>
          <xs:element name="destination" type="xs:string"/>
          <xs:element name="ext" type="xs:string"/>
          <xs:element name="content" type="xs:string"/>
          <xs:element name="receivedTime" type="xs:dateTime"/>
        </xs:sequence>
      </xs:complexType>

      <xs:complexType name="SmsFaultInfo">
        <xs:sequence>
          <xs:element name="code" type="xs:string"/>
          <xs:element name="problem" type="tns:Problem" minOccurs="0" maxOccurs="unbounded"/>
          <xs:element name="incident" type="xs:string" minOccurs="0"/>
          <xs:element name="retryAfter" type="xs:int" minOccurs="0"/>
        </xs:sequence>
      </xs:complexType>

      <xs:complexType name="Problem">
        <xs:sequence>
          <xs:element name="where" type="xs:string"/>
          <xs:element name="code" type="xs:string"/>
          <xs:element name="message" type="xs:string"/>
        </xs:sequence>
      </xs:complexType>

    </xs:schema>
  </wsdl:types>

  <wsdl:message name="sendSmsRequest"><wsdl:part name="parameters" element="tns:sendSms"/></wsdl:message>
  <wsdl:message name="sendSmsResponse"><wsdl:part name="parameters" element="tns:sendSmsResponse"/></wsdl:message>
  <wsdl:message name="querySmsRequest"><wsdl:part name="parameters" element="tns:querySms"/></wsdl:message>
  <wsdl:message name="querySmsResponse"><wsdl:part name="parameters" element="tns:querySmsResponse"/></wsdl:message>
  <wsdl:message name="fetchMoRequest"><wsdl:part name="parameters" element="tns:fetchMo"/></wsdl:message>
  <wsdl:message name="fetchMoResponse"><wsdl:part name="parameters" element="tns:fetchMoResponse"/></wsdl:message>
  <wsdl:message name="SmsFault"><wsdl:part name="fault" element="tns:smsFault"/></wsdl:message>

  <wsdl:portType name="SmsPortType">
{{port_operations}}
  </wsdl:portType>

  <wsdl:binding name="SmsSoapBinding" type="tns:SmsPortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
{{binding_operations}}
  </wsdl:binding>

  <wsdl:service name="SmsService">
    <wsdl:port name="SmsPort" binding="tns:SmsSoapBinding">
      <soap:address location="{_ADDRESS}"/>
    </wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"""

_PORT_OPERATION = """\
    <wsdl:operation name="{op}">
      <wsdl:input message="tns:{op}Request"/>
      <wsdl:output message="tns:{op}Response"/>
      <wsdl:fault name="SmsFault" message="tns:SmsFault"/>
    </wsdl:operation>"""

_BINDING_OPERATION = """\
    <wsdl:operation name="{op}">
      <soap:operation soapAction="{ns}/{op}" style="document"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input>
      <wsdl:output><soap:body use="literal"/></wsdl:output>
      <wsdl:fault name="SmsFault"><soap:fault name="SmsFault" use="literal"/></wsdl:fault>
    </wsdl:operation>"""

_DOCUMENT = (_TEXT.replace("{port_operations}", "\n".join(_PORT_OPERATION.format(op=op) for op in OPERATIONS))
             .replace("{binding_operations}", "\n".join(_BINDING_OPERATION.format(op=op, ns=NAMESPACE)
                                                       for op in OPERATIONS)))
_HEAD, _TAIL = (part.encode("utf-8") for part in _DOCUMENT.split(f'"{_ADDRESS}"'))


def wsdl(address: str) -> bytes:
    """The WSDL document (UTF-8) with ``soap:address location`` set to `address`, e.g. http://host:8088/ws/sms."""
    return _HEAD + quoteattr(address).encode("utf-8") + _TAIL
