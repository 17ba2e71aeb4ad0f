"""`smsgw import FILE`: preview a file of numbers, ask, then send it through the daemon's REST API.

    smsgw import -c /etc/smsgw/smsgw.yaml notice.xlsx --template meeting --at "2026-11-23 08:30"

The preview (`smsgw.adapters.file.preview`) is made with the validator of the config
given with ``-c``, so its counts and segments are what the daemon will say. Sending goes
through `smsgw.client.Client` in requests of ``api.max_batch`` messages, with a progress
bar on stderr; an unavailable daemon or a broken connection is retried with the same
refs (imp-<sha256>-<row>), which the store answers with the stored message, so neither a
retry nor running the whole command again sends a row twice. Every row's outcome goes to
``FILE.result.csv``.

Exit status: 0 when every valid row was accepted, 1 when the import was cancelled, found
nothing to send or stopped part-way (run it again: nothing is sent twice), 2 for a usage,
configuration or file error.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import os
import sys
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: every `smsgw` command loads this module for its parser
    from smsgw.adapters.file._plan import ImportOptions, Outgoing, Plan
    from smsgw.adapters.file._report import Outcomes
    from smsgw.model import Account

__all__ = ["Progress", "add_parser", "parse_at", "parse_priority", "plan_file", "run", "send"]

_ME = "smsgw import"
_RETRIES = 5  # per request, for an unavailable daemon or a broken connection


def add_parser(sub: Any) -> None:
    """Add the ``import`` subcommand to the `smsgw` command's subparsers."""
    p = sub.add_parser(
        "import", help="preview a CSV, TXT or XLSX file of numbers and send it through the daemon",
        description="Reads FILE (one number per line with --text; number,content; or a header row naming the "
                    "number column and the content or a template's parameters), prints a preview, asks, and "
                    "sends it through the running daemon's REST API. Running it again never sends a row twice.")
    p.add_argument("file", metavar="FILE", help=".csv, .txt or .xlsx; UTF-8 or GBK")
    p.add_argument("-c", "--config", required=True, metavar="CONFIG", help="the daemon's configuration file")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--text", help="the common text, or a text with {column} placeholders filled from the columns")
    what.add_argument("--template", metavar="NAME", help="a template defined on the daemon; its {parameters} come "
                                                        "from the columns named after them")
    p.add_argument("--at", metavar="TIME", help='send at this time: "2026-11-23 08:30" (this machine\'s time zone), '
                                                '"08:30" (the next one), with an offset, or epoch seconds')
    p.add_argument("--priority", default="bulk", help="0-9, or bulk (0, the default), normal (5), urgent (9)")
    p.add_argument("--no-report", action="store_true", help="ask the carrier for no status reports")
    p.add_argument("--account", metavar="NAME", help="the account of CONFIG whose limits the preview applies "
                                                     "(default: the one the key belongs to)")
    p.add_argument("-y", "--yes", action="store_true", help="send without asking")
    p.add_argument("--dry-run", action="store_true", help="print the preview and stop (needs no key)")
    p.add_argument("--url", metavar="URL", help="the daemon's REST API (default: from api.listen and api.port)")
    p.add_argument("--key", default=None, help="API key (default: $SMSGW_API_KEY)")
    p.add_argument("--result", metavar="PATH", help="where the result CSV goes (default: FILE.result.csv)")
    p.add_argument("--show", type=int, default=5, metavar="N", help="rendered messages in the preview (default 5)")


class _Stop(Exception):
    """Stop the command: print the message and exit with `status`."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def run(args: argparse.Namespace) -> int:
    """The ``import`` subcommand; returns the exit status."""
    try:
        return _run(args)
    except _Stop as stop:
        print(f"{_ME}: {stop}", file=sys.stderr)
        return stop.status


def _run(args: argparse.Namespace) -> int:
    from smsgw.adapters.file._plan import ImportOptions
    from smsgw.adapters.file._report import Outcomes, preview
    from smsgw.cli_daemon import _load  # the config, its problems printed as every command prints them

    config = _load(args.config, "import")
    if config is None:
        return 2
    try:
        send_at = parse_at(args.at) if args.at else None
        priority = parse_priority(args.priority)
    except ValueError as exc:
        raise _Stop(str(exc)) from None
    key = args.key or os.environ.get("SMSGW_API_KEY") or None
    account = _account(config, key, args.account, args.config)
    client = None
    template = None
    if args.template is not None:
        client = _client(config, args.url, key)
        template = _template(client, args.template)
    try:
        options = ImportOptions(args.text, template, priority, send_at, not args.no_report)
    except ValueError as exc:
        raise _Stop(f"--text: {exc}") from None
    plan = plan_file(args.file, options, config, account)
    print(preview(plan, show=args.show))
    if args.dry_run:
        return 0
    if plan.valid == 0:
        raise _Stop("nothing to send: no row is valid (the reasons are above)", 1)
    _confirm(args.yes, plan)
    client = client or _client(config, args.url, key)
    try:
        outcomes = Outcomes(plan)
        stopped = send(client, plan, outcomes, config.api.max_batch, Progress(plan.valid, sys.stderr),
                       max_bytes=config.api.max_body_bytes // 2)
    finally:
        client.close()
    return _summary(args, plan, outcomes, stopped)


def parse_at(text: str) -> float:
    """--at as epoch seconds: ISO date and time (local when it has no offset), HH:MM (the next), or epoch.

    Raises:
        ValueError: not a time, saying how to write one.
    """
    value = text.strip()
    if value.isdigit():
        return float(value)
    now = datetime.datetime.now().astimezone()
    try:
        if len(value) <= 5 and ":" in value:
            clock = datetime.time.fromisoformat(value.zfill(5))
            moment = datetime.datetime.combine(now.date(), clock).astimezone()
            return (moment if moment > now else moment + datetime.timedelta(days=1)).timestamp()
        moment = datetime.datetime.fromisoformat(value.replace("/", "-"))
    except ValueError:
        raise ValueError(f"--at {text!r} is not a time: write it like \"2026-11-23 08:30\", "
                         "2026-11-23T08:30+08:00 or 08:30") from None
    return (moment.astimezone() if moment.tzinfo is None else moment).timestamp()


def parse_priority(text: str) -> int:
    """--priority as 0-9. Raises ValueError naming the choices."""
    from smsgw.model import PRIORITY_NAMES

    value = PRIORITY_NAMES.get(text.strip().lower())
    if value is None and text.strip().isdigit() and 0 <= int(text) <= 9:
        value = int(text)
    if value is None:
        raise ValueError(f"--priority {text!r}: use 0 to 9, or bulk, normal, urgent")
    return value


def _account(config: Any, key: str | None, name: str | None, path: str) -> Account:
    """The account whose limits the preview applies: --account, else the one `key` belongs to."""
    accounts: list[Account] = config.account_objects()
    digest = hashlib.sha256(key.encode()).hexdigest() if key else None
    by_key = next((a for a in accounts if digest and a.api_key_sha256 == digest), None)
    names = ", ".join(a.name for a in accounts) or "(none)"
    if name is not None:
        chosen = next((a for a in accounts if a.name == name), None)
        if chosen is None:
            raise _Stop(f"{path} has no account named {name!r}; it has: {names}")
        if by_key is not None and by_key.name != name:
            raise _Stop(f"the key belongs to account {by_key.name!r}, not {name!r}: give that account's key")
        return chosen
    if by_key is not None:
        return by_key
    if key:
        raise _Stop(f"the key is not the key of any account in {path}: check --key, or name the account with "
                    "--account NAME if the daemon runs with another configuration")
    if len(accounts) == 1:
        return accounts[0]
    raise _Stop(f"no API key: give --key KEY or set SMSGW_API_KEY (or --account NAME with --dry-run; {path} "
                f"has: {names})")


def _client(config: Any, url: str | None, key: str | None) -> Any:
    from smsgw.client import Client

    if not key:
        raise _Stop("no API key: give --key KEY or set SMSGW_API_KEY")
    try:
        return Client(url if url is not None else config.api_url(), key, timeout=60)
    except ValueError as exc:
        raise _Stop(str(exc)) from None


def _template(client: Any, name: str) -> Any:
    from smsgw.client import ApiError, ClientError

    try:
        return client.template(name)
    except ApiError as exc:
        if exc.status == 404:
            raise _Stop(f"the daemon has no template named {name!r} (GET /api/v1/templates lists them)") from None
        raise _Stop(f"cannot fetch template {name!r}: {exc}") from None
    except ClientError as exc:
        raise _Stop(f"cannot fetch template {name!r}: {exc}") from None


def plan_file(path: str, options: ImportOptions, config: Any, account: Account) -> Plan:
    """Read and plan the file at `path` with the daemon's validator (built from `config`), as `account`.

    Raises:
        _Stop: the file cannot be read or imported (the message says why).
    """
    from smsgw.adapters.file._plan import build_plan
    from smsgw.adapters.file._read import FileImportError

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise _Stop(f"cannot read {path}: {exc.strerror or exc}") from None
    # A plan is hundreds of thousands of small acyclic objects, and the cyclic collector scanning them
    # again and again took a quarter of the time. This process does nothing else meanwhile, so the
    # collector is paused here (never in build_plan, which the daemon runs beside everything else).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return build_plan(os.path.basename(path), data, options, config.validator(), account, time.time())
    except FileImportError as exc:
        raise _Stop(f"{path} {exc}") from None
    finally:
        if collecting:
            gc.enable()


def _confirm(yes: bool, plan: Plan) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise _Stop("cancelled, nothing was sent: standard input is not a terminal to ask on; add --yes to send "
                    "without asking", 1)
    try:
        answer = input(f"Send {plan.valid:,} message{'' if plan.valid == 1 else 's'} "
                       f"({plan.segments:,} segments)? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise _Stop("cancelled, nothing was sent", 1)


class Progress:
    """A progress bar on a terminal; a line per tenth otherwise (a log file stays short)."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total = max(total, 1)
        self.done = 0
        self._stream = stream
        self._tty = stream.isatty()
        self._shown = -1
        self._started = time.monotonic()

    def advance(self, rows: int) -> None:
        self.done += rows
        share = min(self.done / self.total, 1.0)
        step = int(share * (100 if self._tty else 10))
        if step == self._shown:
            return
        self._shown = step
        rate = self.done / max(time.monotonic() - self._started, 1e-6)
        text = f"{self.done:,}/{self.total:,} rows ({share:.0%}, {rate:,.0f}/s)"
        if self._tty:
            bar = "#" * int(share * 30)
            self._stream.write(f"\r[{bar:<30}] {text}" + ("\n" if self.done >= self.total else ""))
        else:
            self._stream.write(f"sent {text}\n")
        self._stream.flush()


def send(client: Any, plan: Plan, outcomes: Outcomes, batch: int, progress: Progress, *,
         max_bytes: int = 2 * 1024 * 1024) -> str | None:
    """Send the plan's messages through `client` (smsgw.client.Client); why it stopped early, or None.

    A request refused for some rows (422) is sent again without them; an unavailable daemon
    or a broken connection is retried with the same refs.
    """
    from smsgw.adapters.file._plan import chunks
    from smsgw.adapters.file._report import ImportAborted
    from smsgw.client import ApiError, ClientError, Unavailable

    o = plan.options
    for chunk in chunks(plan.messages, batch, max_bytes=max_bytes):
        attempt = 0
        while chunk:
            rows = _rows(chunk)
            try:
                answers = client.send_many([_message(m, o, plan) for m in chunk], origin="file")
            except ApiError as exc:
                if exc.status == 429:  # the account's rate limit (waited out) or daily quota (stops)
                    if exc.code == "quota_exceeded":
                        return f"{exc.message}; run the same command again once the quota resets"
                    time.sleep(min(exc.retry_after or 1.0, 60.0))
                    continue
                if not isinstance(exc, Unavailable) and exc.problems and exc.status in (400, 422):
                    try:
                        chunk = outcomes.refuse(chunk, exc.problems)
                    except ImportAborted as aborted:
                        return f"the daemon refused the messages: {aborted}"
                    progress.advance(rows - _rows(chunk))
                    continue
                if not exc.retryable:
                    return f"the daemon refused the request: {exc}"
                error: ClientError = exc
            except ClientError as exc:
                if not exc.retryable:
                    return str(exc)
                error = exc
            else:
                for message, answer in zip(chunk, answers):
                    outcomes.record(message, answer.id, answer.repeated, answer.held, answer.batch)
                progress.advance(rows)
                chunk = []
                continue
            attempt += 1
            if attempt > _RETRIES:
                return f"gave up after {_RETRIES} retries: {error}"
            time.sleep(min(2.0 ** attempt, 30.0))
    return None


def _message(m: Outgoing, o: ImportOptions, plan: Plan) -> Any:
    """The REST message of `m`: the gateway's request (`Outgoing.request`) as the client sends it."""
    from smsgw.client import Message

    r = m.request(o, plan.batch, plan.valid)
    return Message(r.to, r.text, r.priority, r.send_at, r.ext, r.ref, r.report, r.template, r.params, r.batch,
                   r.batch_size)


def _rows(chunk: list[Outgoing]) -> int:
    return sum(len(m.rows) for m in chunk)


def _summary(args: argparse.Namespace, plan: Plan, outcomes: Outcomes, stopped: str | None) -> int:
    from smsgw.adapters.file._report import result_csv

    path = args.result or f"{args.file}.result.csv"
    reason = f"not sent: {stopped}; run the same command again to send the rest" if stopped else None
    try:
        with open(path, "wb") as fh:
            fh.write(result_csv(outcomes, reason))
        written = path
    except OSError as exc:
        print(f"{_ME}: cannot write the result file {path}: {exc.strerror or exc}", file=sys.stderr)
        written = None
    print(f"accepted:  {outcomes.accepted + outcomes.repeated:,} row(s) in {outcomes.messages:,} message(s)"
          + (f"; {outcomes.repeated:,} of them had been sent by an earlier import of this file and were not sent "
             "again" if outcomes.repeated else ""))
    if outcomes.held:
        print(f"review:    {outcomes.held:,} row(s) wait for a reviewer (batch {', '.join(sorted(outcomes.batches))}): "
              "they go out once approved (docs/review.md)")
    print(f"not sent:  {plan.invalid + outcomes.refused:,} invalid, {plan.duplicates:,} duplicate(s)"
          + (f", {outcomes.not_sent:,} not reached" if outcomes.not_sent else ""))
    if written:
        print(f"result:    {written} (row, number, outcome, reason, message_id)")
    if stopped:
        print(f"{_ME}: stopped: {stopped}. Run the same command again: rows already accepted are not sent twice.",
              file=sys.stderr)
        return 1
    return 0
