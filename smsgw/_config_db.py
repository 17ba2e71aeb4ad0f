"""The `db_sources:` section: legacy databases smsgw polls for messages and writes results back to.

Kept apart from config.py because of its size; `smsgw.config` re-exports it.
The meaning of every key is in docs/legacy-db.md and conf/smsgw.yaml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping

from pydantic import AfterValidator, Field, SecretStr, model_validator

from smsgw._yaml_source import Section as _Section
from smsgw._yaml_source import SubProblem
from smsgw._yaml_source import bad as _bad
from smsgw.schedule import WEEKDAYS

#: Values a write-back can bind, by event (docs/legacy-db.md lists their meaning).
ROW_FIELDS = ("key", "message_id", "state", "now", "node")
WRITEBACK_FIELDS = {
    "accepted": ROW_FIELDS,
    "rejected": (*ROW_FIELDS, "error"),
    "submitted": (*ROW_FIELDS, "result", "msg_id", "msg_ids", "error", "submitted_at"),
    "reported": (*ROW_FIELDS, "result", "msg_id", "msg_ids", "stat", "error", "submitted_at", "done_at"),
}
INBOX_FIELDS = ("mo_id", "mobile", "content", "dest", "ext", "received_at", "now", "node")
#: Row columns a mapping can name (what to send); `to` and `text` are required.
ROW_COLUMNS = ("to", "text", "send_at", "priority", "ext", "report", "template", "params")
TIME_FIELDS = frozenset({"now", "submitted_at", "done_at", "received_at"})

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$#]{0,127}")
#: A bind marker in a statement, :name (not a PostgreSQL ::cast, not a time like 10:30).
BIND = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")

#: dialect -> (drivers smsgw knows for it, an example URL)
SOURCE_DATABASES = {
    "oracle": (("oracledb",), "oracle+oracledb://smsgw:${ERP_DB_PASSWORD}@erp-db:1521/?service_name=ERP"),
    "mysql": (("pymysql",), "mysql+pymysql://smsgw:${ERP_DB_PASSWORD}@erp-db:3306/erp?charset=utf8mb4"),
    "mariadb": (("pymysql",), "mariadb+pymysql://smsgw:${ERP_DB_PASSWORD}@erp-db:3306/erp?charset=utf8mb4"),
    "postgresql": (("psycopg",), "postgresql+psycopg://smsgw:${ERP_DB_PASSWORD}@erp-db:5432/erp"),
    "mssql": (("pyodbc", "pymssql"),
              "mssql+pyodbc://smsgw:${ERP_DB_PASSWORD}@erp-db:1433/erp?driver=ODBC+Driver+18+for+SQL+Server"),
    "sqlite": (("pysqlite",), "sqlite:////srv/legacy/orders.db"),
}


def _identifier(value: str) -> str:
    parts = value.split(".")
    if len(parts) > 2 or not all(_IDENT.fullmatch(p) for p in parts):
        raise _bad(f"{value[:40]!r} is not a table or column name",
                   "write the name as the database knows it (letters, digits, _, $ or #; schema.table for "
                   "another schema); values never go here")
    return value


def url_scheme(text: str) -> tuple[str, str, str, str]:
    """(dialect, driver, the rest after "://", the scheme as it may be shown) of a database URL.

    Only the scheme is ever shown: the rest may hold a password. Without "://" the dialect is "".
    """
    scheme, sep, rest = text.partition("://")
    dialect, _, driver = scheme.partition("+")
    shown = repr(scheme) if sep and re.fullmatch(r"[A-Za-z0-9+_.-]{1,40}", scheme) else "(none)"
    return (dialect if sep else ""), driver, rest, shown


def url_parses(text: str) -> bool:
    """Whether SQLAlchemy takes the URL (its own error would quote the whole URL, password included)."""
    from sqlalchemy.engine import make_url  # lazily: SQLAlchemy is slow to import

    try:
        make_url(text)
    except Exception:
        return False
    return True


@dataclass(frozen=True, slots=True)
class UrlRules:
    """Which database URLs a setting takes, and how it words their problems (only the scheme is ever shown)."""

    databases: Mapping[str, tuple[tuple[str, ...], str]]  # dialect -> (drivers smsgw knows for it, an example URL)
    unsupported: str  # after "the database 'x+y'"
    also: str  # after the list of the supported ones
    unknown_driver: str  # after "the driver 'x+y'"; may name {dialect}
    password_fix: str  # for a password that is not percent-encoded
    invalid_fix: str  # for a URL SQLAlchemy does not take; may name {example}

    def check(self, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        dialect, driver, rest, shown = url_scheme(text)
        if dialect not in self.databases:
            raise _bad(f"the database {shown} {self.unsupported}",
                       "use one of " + ", ".join(f"{d}+{drivers[0]}://" if d != "sqlite" else "sqlite:///"
                                                 for d, (drivers, _) in self.databases.items()) + self.also)
        drivers, example = self.databases[dialect]
        if driver not in (*drivers, "") or (not driver and dialect != "sqlite"):
            raise _bad(f"the driver {shown} {self.unknown_driver.format(dialect=dialect)}",
                       f"write {dialect}+{drivers[0]}://..., e.g. {example}")
        if rest.count("@") > 1:
            raise _bad("the URL has more than one '@' (a password containing '@'?)", self.password_fix)
        if not url_parses(text):
            raise _bad("is not a valid database URL", self.invalid_fix.format(example=example))
        return value


def url_with_password(text: str, password: SecretStr | None, *, hide_password: bool = False) -> str:
    """The URL `text` with `password` put in (no percent-encoding needed); `hide_password` for logs."""
    if password is None and not hide_password:
        return text
    from sqlalchemy.engine import make_url

    url = make_url(text)
    if password is not None:
        url = url.set(password=password.get_secret_value())
    return url.render_as_string(hide_password=hide_password)


_SOURCE_URL = UrlRules(
    SOURCE_DATABASES, "is not supported for a legacy source", "", "is not one smsgw knows for {dialect}",
    "percent-encode @ : / ? # in the password (@ is %40), or set password: apart", "write it as {example}")


def _hhmm(value: str) -> str:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value)
    if not m or int(m.group(1)) > 24 or int(m.group(2)) > 59 or (int(m.group(1)) == 24 and m.group(2) != "00"):
        raise _bad(f"{value!r} is not a time of day", 'write HH:MM, e.g. "08:00" or "20:30" ("24:00": midnight)')
    return value


def _days(value: Any) -> Any:
    """'mon-fri', 'mon,wed', ['mon', 'tue'] -> ('mon', 'tue', ...)."""
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        return value
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise _bad(f"{item!r} is not a day", "write days as mon, tue, ... sun, or a range like mon-fri")
        lo, _, hi = item.lower().partition("-")
        if lo not in WEEKDAYS or (hi and hi not in WEEKDAYS):
            raise _bad(f"{item!r} is not a day or a range of days", "write mon, tue, ... sun, or e.g. mon-fri")
        a, b = WEEKDAYS.index(lo), WEEKDAYS.index(hi or lo)
        out += [WEEKDAYS[i % 7] for i in range(a, (b if b >= a else b + 7) + 1)]
    return tuple(dict.fromkeys(out))


Identifier = Annotated[str, AfterValidator(_identifier)]
SourceUrl = Annotated[SecretStr, AfterValidator(_SOURCE_URL.check)]
HourMinute = Annotated[str, AfterValidator(_hhmm)]
Scalar = str | int | float | bool | None


class ActiveWindow(_Section):
    """Poll only on these days between these times (local time); `to` before `from` spans midnight."""

    days: Annotated[tuple[str, ...], Field(min_length=1)] = WEEKDAYS
    from_: Annotated[HourMinute, Field(alias="from")] = "00:00"
    to: HourMinute = "24:00"

    @model_validator(mode="before")
    @classmethod
    def _expand_days(cls, data: Any) -> Any:
        if isinstance(data, dict) and "days" in data:
            data = {**data, "days": _days(data["days"])}
        return data


def _writeback(event: str) -> Any:
    fields = WRITEBACK_FIELDS[event]

    def check(value: dict[str, Scalar]) -> dict[str, Scalar]:
        return _check_statement(value, fields, f"{event} write-back")
    return AfterValidator(check)


def _statement_problems(where: tuple[str, ...], sql: str, fields: tuple[str, ...],
                        what: str) -> list[SubProblem]:
    unknown = sorted(set(BIND.findall(sql)) - set(fields))
    if unknown:
        return [(where, f"the statement binds {', '.join(':' + u for u in unknown)}, which the {what} does not have",
                 "bind only " + ", ".join(":" + f for f in fields))]
    return []


def _check_statement(value: dict[str, Scalar], fields: tuple[str, ...], what: str) -> dict[str, Scalar]:
    if not value:
        raise _bad(f"the {what} is empty", "assign at least one column, e.g. {status: 2}, or write sql: UPDATE ...")
    if set(value) == {"sql"}:
        sql = value["sql"]
        if not isinstance(sql, str) or not sql.strip():
            raise _bad("sql: must be the text of a statement", "write sql: UPDATE my_table SET ... WHERE id = :key")
        problems = _statement_problems((), sql, fields, what)
        if problems:
            raise _bad(*problems[0][1:])
        return value
    for column, v in value.items():
        _identifier(column)
        if isinstance(v, str) and _PLACEHOLDER.search(v):
            m = _PLACEHOLDER.fullmatch(v)
            if not m:
                raise _bad(f"{column}: {v!r} mixes a {{field}} with other text",
                           "write the field alone, e.g. \"{msg_ids}\"; values are bound as they are, never formatted")
            if m.group(1) not in fields:
                raise _bad(f"{column}: the {what} has no field {{{m.group(1)}}}",
                           "use one of " + ", ".join("{" + f + "}" for f in fields))
    return value


class InboxMapping(_Section):
    """Where MO messages go in a legacy table: column per field, or one INSERT statement."""

    table: Identifier | None = None
    columns: dict[str, Identifier] = Field(default_factory=dict)  # field -> column
    sql: str | None = None

    def problems(self) -> list[SubProblem]:
        """(sub-path, what, fix) of what the types alone cannot say; config.py adds the line."""
        if self.sql is not None:
            if self.table is not None or self.columns:
                return [(("sql",), "both sql and table/columns are set", "keep one of them")]
            return _statement_problems(("sql",), self.sql, INBOX_FIELDS, "inbox insert")
        if self.table is None or not self.columns:
            return [((), "the inbox needs table and columns (or sql)",
                     "write table: my_inbox and columns: {mobile: phone, content: msg, ...}")]
        unknown = sorted(set(self.columns) - set(INBOX_FIELDS))
        if unknown:
            return [(("columns",), f"unknown inbox field(s) {', '.join(unknown)}", "use " + ", ".join(INBOX_FIELDS))]
        lacking: list[SubProblem] = [(("columns",), f"the inbox columns lack {need}",
                                      f"map {need}: to the column that holds it")
                                     for need in ("mobile", "content") if need not in self.columns]
        return lacking[:1]


class TableMapping(_Section):
    """How smsgw reads and writes an existing legacy table instead of the standard sms_outbox."""

    table: Identifier
    key: Identifier  # the column that identifies a row (its primary key)
    key_type: Literal["integer", "text"] = "integer"
    columns: dict[str, Identifier]  # to, text, send_at, priority, ext, report, template, params -> column
    pending: dict[Identifier, Scalar] = Field(default_factory=dict)  # rows to take: column = value, all of them
    select: str | None = None  # or a parameterised SELECT returning key and the mapped columns (:limit bound)
    accepted: Annotated[dict[str, Scalar], _writeback("accepted")]
    rejected: Annotated[dict[str, Scalar], _writeback("rejected")]
    submitted: Annotated[dict[str, Scalar], _writeback("submitted")] | None = None
    reported: Annotated[dict[str, Scalar], _writeback("reported")] | None = None

    def problems(self) -> list[SubProblem]:
        """(sub-path, what, fix) of what the types alone cannot say; config.py adds the line."""
        unknown = sorted(set(self.columns) - set(ROW_COLUMNS))
        if unknown:
            return [(("columns",), f"unknown column role(s) {', '.join(unknown)}", "map only " + ", ".join(ROW_COLUMNS))]
        for need in ("to", "text"):
            if need not in self.columns:
                return [(("columns",), f"columns lacks {need}", f"map {need}: to the column holding the "
                         + ("mobile number(s)" if need == "to" else "message text"))]
        if (self.select is None) == (not self.pending):
            where = ("select",) if self.select is not None else ("pending",) if self.pending else ()
            return [(where, "say which rows to take with pending: or with select:, not both or neither",
                     "write pending: {sms_flag: 0} (rows whose columns hold these values), or a select:")]
        if self.select is not None:
            unknown = sorted(set(BIND.findall(self.select)) - {"limit"})
            if unknown:
                return [(("select",), f"the select binds {', '.join(':' + u for u in unknown)}", "bind only :limit")]
        if self.pending and set(self.accepted) != {"sql"} and not set(self.pending) & set(self.accepted):
            return [(("accepted",), "accepted: changes none of the pending: columns, so every poll would take "
                     "the rows again", f"assign one of {', '.join(self.pending)} in accepted:, e.g. "
                     f"{next(iter(self.pending))}: 1")]
        return []


class DbSourceConfig(_Section):
    """One legacy database smsgw polls: the standard sms_outbox/sms_inbox tables, or a mapping."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,48}$")]
    url: SourceUrl
    password: SecretStr | None = None  # put into url: no percent-encoding needed
    account: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None  # default: the source's name
    poll_interval: Annotated[float, Field(gt=0)] = 1.0
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    pool_size: Annotated[int, Field(ge=1, le=32)] = 2
    active_hours: tuple[ActiveWindow, ...] = ()  # empty: always
    report: bool = True  # whether a status report is wanted, for rows that do not say
    priority: Annotated[int, Field(ge=0, le=9)] = 5  # for rows that do not say
    table: Identifier = "sms_outbox"  # the standard outbox (when there is no mapping)
    inbox: Identifier | None = "sms_inbox"  # the standard inbox for MO routed to this source; null: none
    mapping: TableMapping | None = None
    mo_inbox: InboxMapping | None = None  # MO into a legacy table of your own (instead of inbox)
    writeback_retry: Annotated[float, Field(gt=0)] = 86_400.0  # a write-back the database refuses: retried this long
    busy_timeout: Annotated[float, Field(ge=0)] = 10.0  # SQLite: wait this long for the lock
    # Oracle only: null = python-oracledb thin mode (Oracle Database 12.1 and later, no client
    # libraries); a directory = thick mode with the Oracle Instant Client there (servers older than 12.1);
    # "system" = thick mode with the client libraries on the system's library path.
    oracle_client: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _oracle_only(self) -> DbSourceConfig:
        if self.oracle_client is not None and self.dialect() != "oracle":
            raise _bad("oracle_client is set but the source is not Oracle", "remove oracle_client")
        return self

    def interface(self) -> str:
        return f"db:{self.name}"

    def account_name(self) -> str:
        return self.account or self.name

    def dialect(self) -> str:
        name = self.url.get_secret_value().partition("://")[0].partition("+")[0]
        return "mysql" if name == "mariadb" else name

    def plain_url(self, *, hide_password: bool = False) -> str:
        return url_with_password(self.url.get_secret_value(), self.password, hide_password=hide_password)
