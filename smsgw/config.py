"""The daemon's configuration: one YAML file, parsed once into frozen, typed objects (STYLE.md §5).

`load_config` reads the file, substitutes ``${VAR}`` / ``${VAR:-default}`` from the
environment, validates every key, then checks the meaning (routing names a configured
carrier, names are unique, ...). Every problem is reported at once, each as
``FILE:LINE: path.to.key: what is wrong — fix: how``. No other module reads YAML or the
environment for configuration; the rest of the daemon takes a `Config`.

Relative paths (``node.data_dir``, ``log.file`` under it, a relative SQLite URL) are
resolved against the directory the daemon was started in. ``make run`` starts it in the
repository root, so the example's ``data_dir: var`` is ``./var``; a systemd unit should
set ``WorkingDirectory=`` or use absolute paths. See docs/configuration.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal, Mapping

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic import model_validator

from smsgw._config_db import ActiveWindow, DbSourceConfig, InboxMapping, TableMapping, UrlRules, url_with_password
from smsgw._config_file import FileImportSection, FileInboxConfig
from smsgw._config_filters import (
    BlacklistConfig, DuplicatesConfig, FiltersSection, SegmentRuleConfig, SensitiveWordsConfig,
)
from smsgw._config_review import ReviewNoticeSection, ReviewRuleConfig, ReviewSection, ReviewerConfig
from smsgw._config_schedule import ScheduleSection
from smsgw._yaml_source import (
    Path, Source, digits_as_text, first_seen, path_text, read_source, scope_problems, validation_problems,
)
from smsgw._yaml_source import Section as _Section
from smsgw._yaml_source import bad as _bad
from smsgw.model import Account, RateLimit
from smsgw.protocol.cmpp import Version

if TYPE_CHECKING:
    from smsgw._listen import TlsFiles
    from smsgw.carrier import LinkConfig
    from smsgw.simulator import SimulatorConfig
    from smsgw.validation import Router, Validator

__all__ = [
    "AccountConfig", "ActiveWindow", "ApiSection", "AuthSection", "AutoReply", "BlacklistConfig", "CarrierConfig",
    "Config", "ConfigError", "DbSourceConfig", "DuplicatesConfig", "FiltersSection", "SegmentRuleConfig",
    "SensitiveWordsConfig", "DispatchSection", "FileImportSection", "ReviewNoticeSection", "ReviewRuleConfig",
    "ReviewSection", "ReviewerConfig", "ScheduleSection", "FileInboxConfig", "InboxMapping", "TableMapping",
    "LogSection", "MoRoute", "MoSection", "NodeSection", "RoutingRule", "RoutingSection", "ShutdownSection",
    "SimulatorSection", "SoapInterfaceSection", "StoreSection", "TlsSection", "ValidationSection", "check_config",
    "default_config", "load_config",
]

#: CMPP's Src_Id holds 21 digits: the service code plus the extension appended to it.
SRC_ID_DIGITS = 21


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists every reason, one formatted line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the configuration:\n" + "\n".join(problems))
        self.problems = problems


# --- Value types with their own messages ------------------------------------------------------------

def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:37] + "...")


def _digits(lo: int, hi: int, example: str) -> Callable[[str], str]:
    size = f"exactly {lo}" if lo == hi else (f"at most {hi}" if lo == 0 else f"{lo} to {hi}")

    def check(value: str) -> str:
        if not lo <= len(value) <= hi or not (value == "" or (value.isascii() and value.isdigit())):
            raise _bad(f"must be {size} digits, got {_shown(value)}", f'write {size} digits, e.g. "{example}"')
        return value
    return check


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise _bad(f"{_shown(value)} is not a valid name",
                   "use 1 to 64 letters, digits, '_', '.' or '-', e.g. cmcc-1")
    return value


def _word(value: str) -> str:
    if value.split() != [value]:
        raise _bad("must be one word (no spaces)", "write the keyword alone, e.g. TD")
    return value


def _host(value: str) -> str:
    if not value or value.split() != [value] or len(value) > 253:
        raise _bad("is not a host name or IP address", "write e.g. 127.0.0.1 or ismg.example.net")
    return value


def _listen(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if value != "localhost":
            raise _bad(f"{_shown(value)} is not an IP address to listen on",
                       "write 127.0.0.1 (this host only), 0.0.0.0 (every IPv4 address) or :: (IPv6)") from None
    return value


def _sha256(value: str) -> str:
    value = value.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        # The value is not shown: someone may have pasted the key itself.
        raise _bad("must be the SHA-256 of the API key: 64 hex digits",
                   "compute it with `printf %s 'THE-KEY' | sha256sum` and paste the 64 hex digits (without "
                   "the trailing '-'); the key itself never goes in this file")
    return value


def _secret_hash(value: str) -> str:
    from smsgw.auth import secret_hash_problem  # argon2 is imported only when a hash is configured

    problem = secret_hash_problem(value)
    if problem is not None:  # the value is not shown: it may be the secret itself
        raise _bad(problem, "run `smsgw hash-secret` and paste the whole line it prints, in quotes")
    return value


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise _bad(f"{_shown(value)} is not an IP address or CIDR",
                   "write an address (10.1.2.3, 2001:db8::5) or a network (10.1.2.0/24, 2001:db8::/64)") from None
    return value


def _ascii(limit: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value.isascii() or len(value) > limit:
            raise _bad(f"must be at most {limit} ASCII characters, got {_shown(value)}", "shorten it")
        return value
    return check


def _secret(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if not text:
        raise _bad("is empty", "write the secret, or better ${VARIABLE} and set it in the daemon's environment")
    if not text.isascii():
        raise _bad("contains a non-ASCII character (CMPP hashes the secret as ASCII)",
                   "ask the carrier for the exact secret; it is plain ASCII")
    return value


def _version(value: object) -> object:
    if isinstance(value, Version):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (2, 3):
        return Version.V30 if value == 3 else Version.V20
    if isinstance(value, str):
        try:
            return Version.parse(value)
        except ValueError:
            pass
    raise _bad(f"unknown CMPP version {value!r}" if isinstance(value, (str, int, float)) else "unknown CMPP version",
               'write "3.0" or "2.0", as the carrier\'s account says')


#: dialect -> (the driver smsgw installs for it, an example URL)
_DATABASES = {
    "sqlite": (("pysqlite",), "sqlite:////var/lib/smsgw/smsgw.db"),
    "postgresql": (("psycopg",), "postgresql+psycopg://smsgw:${DB_PASSWORD}@db.example:5432/smsgw"),
    "mysql": (("pymysql",), "mysql+pymysql://smsgw:${DB_PASSWORD}@db.example:3306/smsgw"),
    "mariadb": (("pymysql",), "mariadb+pymysql://smsgw:${DB_PASSWORD}@db.example:3306/smsgw"),
    "oracle": (("oracledb",), "oracle+oracledb://smsgw:${DB_PASSWORD}@db.example:1521/?service_name=SMSGW"),
}
_ENCODE = ("percent-encode @ : / ? # in the password (@ is %40), or leave the password out of the URL "
           "and set store.password")
_STORE_URL = UrlRules(_DATABASES, "is not supported", ", or null for SQLite in data_dir", "is not installed with smsgw",
                      _ENCODE, "write it as {example}; " + _ENCODE)


Name = Annotated[str, AfterValidator(_name)]
Keyword = Annotated[str, AfterValidator(_word)]
Host = Annotated[str, AfterValidator(_host)]
Listen = Annotated[str, AfterValidator(_listen)]
Sha256 = Annotated[str, AfterValidator(_sha256)]
SecretHash = Annotated[str, AfterValidator(_secret_hash)]
IpNetwork = Annotated[str, AfterValidator(_network)]
Secret = Annotated[SecretStr, AfterValidator(_secret)]
StoreUrl = Annotated[SecretStr, AfterValidator(_STORE_URL.check)]
CmppVersion = Annotated[Version, BeforeValidator(_version)]
_NUMBER_OK = BeforeValidator(digits_as_text)
SpId = Annotated[str, _NUMBER_OK, AfterValidator(_digits(1, 6, "901234"))]
ServiceCode = Annotated[str, _NUMBER_OK, AfterValidator(_digits(1, SRC_ID_DIGITS, "1069000100"))]
Ext = Annotated[str, _NUMBER_OK, AfterValidator(_digits(0, 12, "01"))]
MoExt = Annotated[str, _NUMBER_OK, AfterValidator(_digits(1, 20, "01"))]
Prefix = Annotated[str, _NUMBER_OK, AfterValidator(_digits(1, 20, "134"))]
FeeType = Annotated[str, _NUMBER_OK, AfterValidator(_digits(2, 2, "01"))]
FeeCode = Annotated[str, _NUMBER_OK, AfterValidator(_digits(1, 6, "000000"))]
Port = Annotated[int, Field(ge=1, le=65535)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
AtLeastOne = Annotated[int, Field(ge=1)]


# --- The sections ---------------------------------------------------------------------------------

class NodeSection(_Section):
    name: Annotated[str, Field(min_length=1, max_length=64)] = "smsgw"
    id: Annotated[int, Field(ge=0, le=1023)] = 0
    data_dir: Annotated[str, Field(min_length=1)] = "var"


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    file: Annotated[str, Field(min_length=1)] | None = None
    format: Literal["auto", "json", "console"] = "auto"
    mask_content: bool = False


class StoreSection(_Section):
    url: StoreUrl | None = None
    password: Secret | None = None  # put into url's password: no percent-encoding needed
    batch_max: Annotated[int, Field(ge=1, le=100_000)] = 1000
    readers: Annotated[int, Field(ge=1, le=64)] = 4
    lease_seconds: Positive = 60.0
    busy_timeout: NonNegative = 5.0
    writer: Literal["process", "thread"] = "process"  # where the store's transactions run (docs/store.md)


class TlsSection(_Section):
    """TLS for an HTTP listener (docs/security.md): PEM files, the certificate chain and its unencrypted key."""

    cert: Annotated[str, Field(min_length=1)]
    key: Annotated[str, Field(min_length=1)]

    def files(self) -> TlsFiles:
        from smsgw._listen import TlsFiles

        return TlsFiles(self.cert, self.key)


class AuthSection(_Section):
    """The brute-force guard and the verification cache of every interface (smsgw.auth)."""

    max_failures: AtLeastOne = 10
    failure_window: Positive = 300.0
    cache_ttl: NonNegative = 300.0


class ApiSection(_Section):
    enabled: bool = True
    listen: Listen = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_body_bytes: AtLeastOne = 4 * 1024 * 1024
    max_batch: AtLeastOne = 1000
    request_timeout: Positive = 30.0
    tls: TlsSection | None = None


class UrlInterfaceSection(_Section):
    """Kannel's sendsms URL interface (docs/url-interface.md), served by the ``url`` adapter."""

    enabled: bool = False
    listen: Listen = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 13013  # Kannel's sendsms-port
    max_body_bytes: AtLeastOne = 64 * 1024
    request_timeout: Positive = 30.0
    tls: TlsSection | None = None


class SoapInterfaceSection(_Section):
    """The SOAP 1.1 WebService at /ws/sms (docs/soap.md), served by the ``soap`` adapter."""

    enabled: bool = False
    listen: Listen = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8088
    max_body_bytes: AtLeastOne = 256 * 1024  # SOAP is wordy: 1000 mobile elements take about 40 kB
    request_timeout: Positive = 30.0
    tls: TlsSection | None = None


def _callback_url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(f"{value.split('?', 1)[0][:60]!r} is not an http(s) URL",
                   "write the receiver's full URL, e.g. https://oa.example/sms/dlr")
    return value


CallbackUrl = Annotated[str, AfterValidator(_callback_url)]


class CallbackSection(_Section):
    """Where an account's delivery reports and MO messages are pushed (docs/callbacks.md)."""

    dlr_url: CallbackUrl | None = None
    mo_url: CallbackUrl | None = None
    format: Literal["json", "kannel"] = "json"
    secret: Secret | None = None  # HMAC-SHA256 signature header (json format)
    submitted: bool = False  # also tell when a recipient is submitted (Kannel DLR type 8)
    timeout: Positive = 10.0
    retry_for: Positive = 21_600.0  # seconds an event is retried before it is given up (6 hours)

    @model_validator(mode="after")
    def _some_url(self) -> CallbackSection:
        if self.dlr_url is None and self.mo_url is None:
            raise _bad("callbacks has neither dlr_url nor mo_url", "set one of them, or remove callbacks:")
        return self


class RateLimitSection(_Section):
    per_second: Positive
    burst: AtLeastOne | None = None  # None: one second's worth (at least 1)

    def limit(self) -> RateLimit:
        return RateLimit(self.per_second, self.burst if self.burst is not None else max(1, int(self.per_second)))


class AccountConfig(_Section):
    """A business system allowed to send; becomes `smsgw.model.Account`."""

    name: Name
    api_key_sha256: Sha256 | None = None
    interfaces: tuple[Literal["rest", "url", "soap", "file", "db"], ...] = ()
    default_ext: Ext = ""
    max_priority: Annotated[int, Field(ge=0, le=9)] = 9
    needs_review: bool = False
    mo_consumers: tuple[Name, ...] = ()
    permissions: tuple[Literal["templates", "review"], ...] = ()  # beyond sending (docs/templates.md)
    secret_hash: SecretHash | None = None
    allow_from: tuple[IpNetwork, ...] = ()
    rate_limit: RateLimitSection | None = None
    daily_quota: AtLeastOne | None = None
    callbacks: CallbackSection | None = None

    def account(self) -> Account:
        fields = {name: getattr(self, name) for name in type(self).model_fields if name != "callbacks"}
        fields.update(api_key_sha256=self.api_key_sha256 or "", secret_hash=self.secret_hash or "",
                      rate_limit=self.rate_limit.limit() if self.rate_limit is not None else None)
        return Account(**fields)

    def callback_kind(self) -> str | None:
        """The outbox kind of this account's callbacks, or None without any."""
        return f"http:{self.name}" if self.callbacks is not None else None


class CarrierConfig(_Section):
    """One ISMG account: every field of `smsgw.carrier.LinkConfig`, with the same defaults."""

    name: Name
    host: Host
    port: Port
    sp_id: SpId
    secret: Secret
    service_code: ServiceCode
    service_id: Annotated[str, AfterValidator(_ascii(10))] = ""
    version: CmppVersion = Version.V30
    connections: Annotated[int, Field(ge=1, le=64)] = 1
    window: AtLeastOne = 16
    response_timeout: Positive = 60.0
    attempts: AtLeastOne = 3
    active_test_interval: Positive = 180.0
    resend_on_timeout: bool = True
    rate_limit: Positive | None = None
    fee_user_type: Annotated[int, Field(ge=0, le=3)] = 2
    fee_type: FeeType = "01"
    fee_code: FeeCode = "000000"
    msg_level: Annotated[int, Field(ge=0, le=255)] = 1
    prefer_gbk: bool = False
    ref16: bool = False
    reconnect_initial: Positive = 1.0
    reconnect_max: Positive = 60.0
    submit_wait: Positive = 30.0
    stop_timeout: NonNegative = 10.0
    report_hold: NonNegative = 5.0
    max_pending: AtLeastOne = 100_000
    pad_sp_id: bool = False
    mo_reassembly_timeout: Positive = 600.0

    def link_config(self) -> LinkConfig:
        """The carrier link's settings, with the plain secret."""
        from smsgw.carrier import LinkConfig  # imports Twisted, which check-config does not need

        fields = {name: getattr(self, name) for name in type(self).model_fields}
        fields["secret"] = self.secret.get_secret_value()
        return LinkConfig(**fields)


class RoutingRule(_Section):
    link: Name
    prefixes: Annotated[tuple[Prefix, ...], Field(min_length=1)]


class RoutingSection(_Section):
    default: Name | None = None
    rules: tuple[RoutingRule, ...] = ()


class ValidationSection(_Section):
    max_recipients: AtLeastOne = 1000
    max_segments: Annotated[int, Field(ge=1, le=255)] = 10
    number_prefixes: Annotated[tuple[Prefix, ...], Field(min_length=1)] | None = None
    allow_other_numbers: bool = False


class DispatchSection(_Section):
    claim_batch: AtLeastOne = 256
    max_attempts: AtLeastOne = 5
    retry_initial: Positive = 10.0
    retry_max: Positive = 600.0
    report_timeout: Positive = 259_200.0
    orphan_keep: NonNegative = 600.0
    sweep_interval: Positive = 5.0


class MoRoute(_Section):
    consumer: Name
    ext: MoExt | None = None
    keyword: Keyword | None = None

    @model_validator(mode="after")
    def _has_a_condition(self) -> MoRoute:
        if self.ext is None and self.keyword is None:
            raise _bad("the route has neither ext nor keyword",
                       "add ext: (digits) or keyword: (a word); mo.default_consumer takes the rest")
        return self


class AutoReply(_Section):
    keyword: Keyword
    text: Annotated[str, Field(min_length=1)]
    ext: MoExt | None = None


class MoSection(_Section):
    default_consumer: Name | None = None
    routes: tuple[MoRoute, ...] = ()
    auto_replies: tuple[AutoReply, ...] = ()


class SimulatorSection(_Section):
    enabled: bool = False
    host: Host = "127.0.0.1"
    port: Port = 7890
    report_delay: NonNegative = 0.5
    fail_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0
    mo_rate: NonNegative = 0.0
    flow_limit: Positive | None = None
    version: CmppVersion = Version.V30
    mo_dest: ServiceCode | None = None  # None: the service code of the first carrier pointing here


class ShutdownSection(_Section):
    drain_timeout: NonNegative = 30.0


class Config(_Section):
    """The whole file. Build it with `load_config` (or `default_config` in tests)."""

    node: NodeSection = Field(default_factory=NodeSection)
    log: LogSection = Field(default_factory=LogSection)
    store: StoreSection = Field(default_factory=StoreSection)
    api: ApiSection = Field(default_factory=ApiSection)
    url_interface: UrlInterfaceSection = Field(default_factory=UrlInterfaceSection)
    soap_interface: SoapInterfaceSection = Field(default_factory=SoapInterfaceSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    accounts: tuple[AccountConfig, ...] = ()
    carriers: tuple[CarrierConfig, ...] = ()
    routing: RoutingSection = Field(default_factory=RoutingSection)
    validation: ValidationSection = Field(default_factory=ValidationSection)
    dispatch: DispatchSection = Field(default_factory=DispatchSection)
    mo: MoSection = Field(default_factory=MoSection)
    simulator: SimulatorSection = Field(default_factory=SimulatorSection)
    shutdown: ShutdownSection = Field(default_factory=ShutdownSection)
    db_sources: tuple[DbSourceConfig, ...] = ()
    file_import: FileImportSection = Field(default_factory=FileImportSection)
    review: ReviewSection = Field(default_factory=ReviewSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    filters: FiltersSection = Field(default_factory=FiltersSection)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `store:` with every key commented out is YAML null: an empty section, all defaults.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in cls.model_fields)}
        return data

    def link_configs(self) -> list[LinkConfig]:
        """One `smsgw.carrier.LinkConfig` per carrier, in file order, with the plain secret."""
        return [c.link_config() for c in self.carriers]

    def validator(self) -> Validator:
        """The daemon's `smsgw.validation.Validator`: validation.*, with the default carrier's text settings
        and the filters (its `filters`: None when none are configured).

        Raises:
            smsgw.filters.ListFileError: a filter's list file cannot be read or has a bad line.
        """
        from smsgw.validation import Validator  # the text codecs, which check-config does not need

        default = next((c for c in self.carriers if c.name == self.default_link()), None)
        v = self.validation
        return Validator(max_recipients=v.max_recipients, max_segments=v.max_segments, prefixes=v.number_prefixes,
                         allow_other=v.allow_other_numbers, prefer_gbk=default.prefer_gbk if default else False,
                         ref16=default.ref16 if default else False, filters=self.filters.build(self.router()))

    def router(self) -> Router:
        """The daemon's `smsgw.validation.Router`: routing.rules, then the default link."""
        from smsgw.validation import Router

        return Router([(rule.link, rule.prefixes) for rule in self.routing.rules], self.default_link() or "")

    def api_url(self) -> str:
        """The REST API's URL for a client on this machine: https with api.tls, loopback for a wildcard listen."""
        host = self.api.listen if self.api.listen not in ("0.0.0.0", "::") else "127.0.0.1"
        scheme = "https" if self.api.tls is not None else "http"  # the certificate is checked against the system CAs
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.api.port}"

    def account_objects(self) -> list[Account]:
        """One `smsgw.model.Account` per account, in file order."""
        return [a.account() for a in self.accounts]

    def simulator_carriers(self) -> list[CarrierConfig]:
        """Carriers that connect to the embedded simulator: its port on loopback or on simulator.host."""
        hosts = {"127.0.0.1", "localhost", self.simulator.host}
        return [c for c in self.carriers if c.host in hosts and c.port == self.simulator.port]

    def simulator_config(self) -> SimulatorConfig:
        """The embedded simulator's settings; its accounts are {sp_id: secret} of `simulator_carriers`."""
        from smsgw.simulator import SimulatorConfig  # Twisted, as in link_config

        targets, sim = self.simulator_carriers(), self.simulator
        mo_dest = sim.mo_dest or (targets[0].service_code if targets else SimulatorConfig().mo_dest)
        return SimulatorConfig(
            accounts={c.sp_id: c.secret.get_secret_value() for c in targets}, version=sim.version,
            report_delay=sim.report_delay, fail_ratio=sim.fail_ratio, mo_rate=sim.mo_rate,
            flow_limit=sim.flow_limit, mo_dest=mo_dest,
        )

    def default_link(self) -> str | None:
        """routing.default, else the first carrier's name; None without carriers."""
        if self.routing.default is not None:
            return self.routing.default
        return self.carriers[0].name if self.carriers else None

    def data_path(self) -> str:
        """node.data_dir as an absolute path (a relative one is under the working directory)."""
        return os.path.abspath(self.node.data_dir)

    def store_url(self, *, hide_password: bool = False) -> str:
        """store.url with store.password put in, or SQLite in data_dir; `hide_password` for logs."""
        if self.store.url is None:
            return "sqlite:///" + os.path.join(self.data_path(), "smsgw.db")
        return url_with_password(self.store.url.get_secret_value(), self.store.password, hide_password=hide_password)

    def log_file(self) -> str | None:
        """log.file as an absolute path (a relative one is under data_dir), or None: stdout only."""
        if self.log.file is None:
            return None
        return os.path.join(self.data_path(), self.log.file)  # an absolute log.file stays as it is


# --- Loading --------------------------------------------------------------------------------------

#: Fixes for errors of a particular field (list indices left out of the path).
_FIELD_FIXES = {
    "": "write the sections (node:, log:, store:, api:, accounts:, carriers:, ...) as `name:` lines at the left margin",
    "node.id": "use a number from 0 to 1023, different for every daemon that shares the store",
    "api.port": "use a TCP port between 1 and 65535, or 0 to let the system pick a free one",
    "carriers.port": "use a TCP port between 1 and 65535",
    "simulator.port": "use a TCP port between 1 and 65535",
    "simulator.fail_ratio": "use a share between 0.0 (every report DELIVRD) and 1.0 (every report failed)",
    "accounts.max_priority": "use a priority from 0 (bulk) to 9 (urgent)",
    "carriers.fee_user_type": "use 0 (charge the recipient), 1 (the sender), 2 (the SP) or 3 (Fee_terminal_Id)",
    "carriers.connections": "use 1 to 64, and no more than the carrier allows for the account",
    "validation.max_segments": "use 1 to 255 (CMPP counts segments in one byte)",
    "store.batch_max": "use 1 to 100000 operations per transaction",
    "store.readers": "use 1 to 64 reader threads",
    "accounts.api_key_sha256": "write the 64 hex digits of `printf %s 'THE-KEY' | sha256sum`",
    "accounts.daily_quota": "use a number of recipients per day, 1 or more, or null for no quota",
    "accounts.rate_limit.per_second": "use recipients per second above 0, e.g. 10 or 0.5",
    "accounts.rate_limit.burst": "use how many recipients may go at once, 1 or more",
}


def default_config(data_dir: str = "var") -> Config:
    """Every default, with `data_dir`. The meaning checks are not run (there is no account)."""
    return Config(node=NodeSection(data_dir=data_dir))


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Read, substitute, validate and check the file at `path`.

    Args:
        path: the YAML file; problems name it as given.
        env: the variables for ``${VAR}``; defaults to os.environ.

    Returns:
        The frozen configuration.

    Raises:
        ConfigError: with every problem found (unreadable file, YAML, types, meaning).
    """
    config, problems = _load(path, os.environ if env is None else env)
    if config is None:
        raise ConfigError(problems)
    return config


def check_config(path: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Every problem `load_config` would raise, or [] when the file is fine. Never raises for bad content."""
    return _load(path, os.environ if env is None else env)[1]


def _load(path: str, env: Mapping[str, str]) -> tuple[Config | None, list[str]]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return None, [f"{path}: (file): cannot read it: {reason} — fix: give the path of a readable "
                      f"UTF-8 YAML file, e.g. -c conf/smsgw.yaml"]
    source = read_source(text, env)
    problems = [(p.line, p.path, p.what, p.fix) for p in source.problems]
    config = None
    if source.data is not None:
        try:
            config = Config.model_validate(source.data)
        except ValidationError as exc:
            problems += [(p.line, p.path, p.what, p.fix)
                         for p in validation_problems(exc, source, Config, _FIELD_FIXES)]
    if config is not None:
        problems += [(source.line_of(where), where, what, fix) for where, what, fix in _meaning(config, source)]
    problems.sort(key=lambda p: p[0])  # stable: same line keeps the order found
    lines = [f"{path}:{line}: {path_text(where)}: {what} — fix: {fix}" for line, where, what, fix in problems]
    return (None if problems else config), lines


# --- Meaning: what the types alone cannot say -----------------------------------------------------

_Problem = tuple[Path, str, str]  # where, what, fix


def _meaning(cfg: Config, source: Source) -> list[_Problem]:
    return [*_api_problems(cfg, source), *_duplicates(cfg), *_routing_problems(cfg), *_simulator_problems(cfg),
            *_order_problems(cfg), *_mo_problems(cfg), *_store_problems(cfg), *_ext_problems(cfg),
            *_db_source_problems(cfg), *_callback_problems(cfg), *_tls_problems(cfg), *_review_problems(cfg),
            *_filter_problems(cfg),
            *((("file_import", *sub), what, fix)
              for sub, what, fix in cfg.file_import.problems({a.name: a.interfaces for a in cfg.accounts})),
            *((("schedule", *sub), what, fix) for sub, what, fix in cfg.schedule.problems())]


def _api_problems(cfg: Config, source: Source) -> Iterator[_Problem]:
    if cfg.api.enabled and not cfg.accounts:
        where: Path = ("accounts",) if ("accounts",) in source.lines else ("api", "enabled")
        yield (where, "api is enabled but no account can use it",
               "add an account (name and api_key_sha256 or secret_hash) under accounts:, or set api.enabled: false")


def _duplicates(cfg: Config) -> Iterator[_Problem]:
    for section, items in (("accounts", cfg.accounts), ("carriers", cfg.carriers), ("db_sources", cfg.db_sources)):
        for i, name, first in first_seen(item.name for item in items):
            yield ((section, i, "name"), f"the name {name!r} is already used by {section}[{first}]",
                   "give every entry its own name")


def _routing_problems(cfg: Config) -> Iterator[_Problem]:
    names = [c.name for c in cfg.carriers]
    fix = f"use one of the carriers: {', '.join(names)}" if names else "add a carrier with that name under carriers:"
    if cfg.routing.default is not None and cfg.routing.default not in names:
        yield (("routing", "default"), f"no carrier is named {cfg.routing.default!r}", fix)
    owner: dict[str, tuple[str, int]] = {}
    for i, rule in enumerate(cfg.routing.rules):
        if rule.link not in names:
            yield (("routing", "rules", i, "link"), f"no carrier is named {rule.link!r}", fix)
        for j, prefix in enumerate(rule.prefixes):
            link, first = owner.setdefault(prefix, (rule.link, i))
            if link != rule.link:
                yield (("routing", "rules", i, "prefixes", j),
                       f"prefix {prefix!r} is already routed to {link!r} by routing.rules[{first}]",
                       "list each prefix in one rule only")


def _simulator_problems(cfg: Config) -> Iterator[_Problem]:
    sim = cfg.simulator
    if not sim.enabled:
        return
    targets = cfg.simulator_carriers()
    if not targets:
        yield (("simulator", "enabled"),
               f"the simulator is enabled but no carrier connects to it ({sim.host}:{sim.port})",
               f"point a carrier at host 127.0.0.1, port {sim.port}, or set simulator.enabled: false")
    secrets: dict[str, SecretStr] = {}
    for c in targets:
        if secrets.setdefault(c.sp_id, c.secret) != c.secret:
            i = cfg.carriers.index(c)
            yield (("carriers", i, "secret"),
                   f"another carrier logs in to the simulator as sp_id {c.sp_id!r} with a different secret",
                   "use the same secret for the same sp_id (the simulator keeps one per SP_Id)")


def _order_problems(cfg: Config) -> Iterator[_Problem]:
    d = cfg.dispatch
    if d.retry_max < d.retry_initial:
        yield (("dispatch", "retry_max"), f"retry_max ({d.retry_max}) is less than retry_initial ({d.retry_initial})",
               "make retry_max at least retry_initial")
    for i, c in enumerate(cfg.carriers):
        if c.reconnect_max < c.reconnect_initial:
            yield (("carriers", i, "reconnect_max"),
                   f"reconnect_max ({c.reconnect_max}) is less than reconnect_initial ({c.reconnect_initial})",
                   "make reconnect_max at least reconnect_initial")


def _mo_problems(cfg: Config) -> Iterator[_Problem]:
    routes = ((r.ext, (r.keyword or "").lower()) for r in cfg.mo.routes)
    for i, _, first in first_seen(f"{ext}|{kw}" for ext, kw in routes):
        yield (("mo", "routes", i), f"the same ext and keyword as mo.routes[{first}]",
               "merge the two routes or tell them apart by ext or keyword")
    replies = (f"{r.ext}|{r.keyword.lower()}" for r in cfg.mo.auto_replies)
    for i, _, first in first_seen(replies):
        yield (("mo", "auto_replies", i), f"the same keyword and ext as mo.auto_replies[{first}]",
               "keep one reply per keyword and ext")


def _store_problems(cfg: Config) -> Iterator[_Problem]:
    url = cfg.store.url
    if cfg.store.password is not None and (url is None or url.get_secret_value().startswith("sqlite")):
        yield (("store", "password"), "a password is set but the store is SQLite, which has none",
               "remove store.password, or set store.url to a database server")


def _ext_problems(cfg: Config) -> Iterator[_Problem]:
    longest = max((len(c.service_code) for c in cfg.carriers), default=0)
    for i, a in enumerate(cfg.accounts):
        if a.default_ext and longest + len(a.default_ext) > SRC_ID_DIGITS:
            yield (("accounts", i, "default_ext"),
                   f"a service code of {longest} digits plus this extension is longer than CMPP's "
                   f"{SRC_ID_DIGITS}-digit Src_Id", "shorten the extension")


def _sqlite_file(url: str) -> str | None:
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return os.path.realpath(database) if database and database != ":memory:" else None


def _db_source_problems(cfg: Config) -> Iterator[_Problem]:
    accounts = {a.name: a for a in cfg.accounts}
    store = _sqlite_file(cfg.store_url())
    for i, src in enumerate(cfg.db_sources):
        if src.account is not None and src.account not in accounts:
            yield (("db_sources", i, "account"), f"no account is named {src.account!r}",
                   "add it under accounts: (its limits, extension and review flag then apply), or leave account out "
                   "to send as an account named after the source")
        account = accounts.get(src.account_name())
        if account is not None and account.interfaces and "db" not in account.interfaces:
            yield (("db_sources", i, "account"), f"account {account.name!r} may not use the db interface",
                   "add db to that account's interfaces")
        url = src.plain_url()
        if store is not None and _sqlite_file(url) == store:
            yield (("db_sources", i, "url"), "the source is smsgw's own SQLite store file",
                   "point the source at the legacy system's database; SQLite allows one writer per file")
        if src.mapping is not None:
            for sub, what, fix in src.mapping.problems():
                yield (("db_sources", i, "mapping", *sub), what, fix)
        if src.mo_inbox is not None:
            for sub, what, fix in src.mo_inbox.problems():
                yield (("db_sources", i, "mo_inbox", *sub), what, fix)
        if src.password is not None and url.startswith("sqlite"):
            yield (("db_sources", i, "password"), "a password is set but the source is SQLite, which has none",
                   "remove password")


def _callback_problems(cfg: Config) -> Iterator[_Problem]:
    sources = {s.name for s in cfg.db_sources}
    for i, a in enumerate(cfg.accounts):
        cb = a.callbacks
        if cb is None:
            continue
        for key in ("dlr_url", "mo_url"):
            url = getattr(cb, key)
            if url is not None and url.startswith("https:") and not _tls_available():
                yield (("accounts", i, "callbacks", key), "https callbacks need Twisted's TLS support",
                       "install it (pip install 'twisted[tls]') or use an http:// URL on a trusted network")
        if cb.mo_url is not None and a.name in sources:
            yield (("accounts", i, "callbacks", "mo_url"),
                   f"MO for consumer {a.name!r} already goes to the db source of that name",
                   "rename the account or the source, or remove mo_url")


def _tls_problems(cfg: Config) -> Iterator[_Problem]:
    from smsgw._listen import tls_problems

    sections = ((cfg.api, "api"), (cfg.url_interface, "url_interface"), (cfg.soap_interface, "soap_interface"))
    for section, name in sections:
        if section.enabled and section.tls is not None:
            for key, what, fix in tls_problems(section.tls.files()):
                yield ((name, "tls", key), what, fix)


def _review_problems(cfg: Config) -> Iterator[_Problem]:
    accounts = {a.name: a for a in cfg.accounts}
    sources = {s.name for s in cfg.db_sources}
    origins = {*accounts, "auto_reply"}
    for i, rule in enumerate(cfg.review.rules):
        yield from scope_problems(("review", "rules", i), rule.accounts, rule.interfaces, origins,
                                  sources, "use the name of an account under accounts:")
    held = any(r.action == "review" for r in cfg.review.rules) or any(a.needs_review for a in cfg.accounts)
    if held and not cfg.review.reviewers:
        yield (("review", "reviewers"), "messages can be held for review but no reviewer is configured",
               "add a reviewer (name, phones, accounts) under review.reviewers, or nobody can approve them")
    for i, reviewer in enumerate(cfg.review.reviewers):
        for j, name in enumerate(reviewer.accounts):
            account = accounts.get(name)
            if account is None:
                yield (("review", "reviewers", i, "accounts", j), f"no account is named {name!r}",
                       "use the name of an account under accounts: that has the review permission")
            elif "review" not in account.permissions:
                yield (("review", "reviewers", i, "accounts", j), f"account {name!r} lacks the review permission",
                       "add review to that account's permissions")


def _filter_problems(cfg: Config) -> Iterator[_Problem]:
    names = {a.name for a in cfg.accounts} | {"auto_reply", cfg.review.notify.account}
    for sub, what, fix in cfg.filters.problems(names, [c.name for c in cfg.carriers],
                                               [s.name for s in cfg.db_sources], bool(cfg.review.reviewers)):
        yield (("filters", *sub), what, fix)


def _tls_available() -> bool:
    from importlib.util import find_spec

    return find_spec("OpenSSL") is not None and find_spec("service_identity") is not None
