"""`smsgw review list|show|approve|reject` and `smsgw cancel`: the review queue through the daemon's REST API.

Like `smsgw template`, these talk to the running daemon over REST with an API key
(`--key` or $SMSGW_API_KEY): the review commands need an account with the review
permission, and approve/reject act as a configured reviewer (`--as NAME`, or the one
reviewer that lists the account). `smsgw cancel` cancels the key's own messages.
Exit status: 0 done, 1 refused by the daemon or nothing (or not everything asked for)
changed, 2 a problem with the command line or the config file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import unicodedata
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, Sequence

from smsgw.lifecycle import Review

if TYPE_CHECKING:
    from smsgw.client import Client, ReviewFilter, ReviewPage

__all__ = ["add_parser", "cancel", "run"]

_STATES = (*Review.ALL, "any")


def _when(text: str) -> datetime.datetime:
    """A time for --since/--until: ISO-8601 (a time without an offset is local time) or epoch seconds."""
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.datetime.fromtimestamp(float(text), datetime.timezone.utc)
        when = datetime.datetime.fromisoformat(text.strip())
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: write 2024-03-05, \"2024-03-05 08:00\" (local "
                                         "time), 2024-03-05T08:00:00+08:00 or epoch seconds") from None
    return when if when.utcoffset() is not None else when.astimezone()


def _whole(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
        return int(text)
    return parse


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE")
    parser.add_argument("--key", default=None, help="API key (default: $SMSGW_API_KEY)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (combinable: every one given must match)")
    group.add_argument("--content", metavar="TEXT", help="the text holds TEXT")
    group.add_argument("--to", metavar="NUMBER", help="goes to NUMBER (written any way: +86 138 0013 8000)")
    group.add_argument("--account", metavar="NAME", help="sent by this account")
    group.add_argument("--interface", metavar="NAME", help="came through rest, url, soap, file, auto_reply, db or "
                                                          "db:<source>")
    group.add_argument("--state", action="append", default=None, metavar="STATE",
                       help=f"review state: {', '.join(_STATES)}; repeatable or comma-separated "
                            "(default: every message held for review)")
    group.add_argument("--batch", metavar="BATCH", help="the batch, as stored (demo:notice-1, or an id)")
    group.add_argument("--since", type=_when, metavar="TIME", help="created at or after TIME (2024-03-05, "
                                                                  "\"2024-03-05 08:00\" local, ISO-8601 or epoch)")
    group.add_argument("--until", type=_when, metavar="TIME", help="created before TIME")


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("review", help="list, show, approve or reject messages waiting for review",
                            description="The review queue lives in the daemon; these commands call its REST API "
                                        "with an account that has the review permission (docs/review.md).")
    actions = parser.add_subparsers(dest="review_command", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="messages by any combination of filters, or --export them all",
                                 description="Prints a page of the matching messages, oldest first; --export "
                                             "writes all of them to an .xlsx or .csv/.txt file instead.")
    _common(listing)
    _filters(listing)
    listing.add_argument("--offset", type=_whole(0, 1_000_000_000), default=None, metavar="N")
    listing.add_argument("--limit", type=_whole(1, 1000), default=None, metavar="N", help="default 50, at most 1000")
    listing.add_argument("--export", metavar="FILE", help="write every matching message to FILE (.xlsx, or .csv/.txt "
                                                          "for UTF-8 CSV)")
    show = actions.add_parser("show", help="one message, every number included")
    _common(show)
    show.add_argument("id", help="the message id")
    for name, verb in (("approve", "approve: they go out (at their send time)"),
                       ("reject", "reject: their recipients end rejected, the sender is told")):
        action = actions.add_parser(name, help=f"{verb}", description=(
            f"Choose the messages to {name} by ids, or --batch, or filters with --all-matching (which confirms "
            "acting on every message they select; alone, on every message waiting)."))
        _common(action)
        action.add_argument("ids", nargs="*", metavar="ID", help="message ids")
        _filters(action)
        action.add_argument("--all-matching", action="store_true",
                            help="act on every message waiting for review that the filters select")
        action.add_argument("--as", dest="reviewer", metavar="NAME",
                            help="the configured reviewer you act as (needed unless the key's account acts for "
                                 "exactly one)")
        action.add_argument("--comment", required=name == "reject", metavar="TEXT",
                            help="why (required to reject: the sender is told)")

    cancelling = sub.add_parser("cancel", help="cancel your message or batch before it goes out",
                                description="Cancels what has not gone out yet (held or queued recipients, e.g. a "
                                            "message scheduled for later); what went to the carrier goes on.")
    _common(cancelling)
    which = cancelling.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", metavar="ID", help="the message id")
    which.add_argument("--batch", metavar="BATCH", help="a batch of yours, as stored (demo:notice-1, or an id)")
    cancelling.add_argument("--comment", metavar="TEXT", help="why (recorded and told to the sender)")


# -- running ------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    """`smsgw review ACTION`."""
    action = args.review_command
    return _with_client(f"smsgw review {action}", args, {"list": _list, "show": _show, "approve": _act,
                                                         "reject": _act}[action])


def cancel(args: argparse.Namespace) -> int:
    """`smsgw cancel ID` / `smsgw cancel --batch BATCH`."""
    return _with_client("smsgw cancel", args, _cancel)


def _with_client(command: str, args: argparse.Namespace, body: Any) -> int:
    from smsgw.cli_daemon import _client, _load, _refused, _talking
    from smsgw.client import ApiError

    config = _load(args.config, command.removeprefix("smsgw "))
    if config is None:
        return 2
    try:
        with _talking(command), _client(config, args.key) as client:
            result: int = body(command, args, client)
            return result
    except ApiError as exc:
        return _refused(command, exc)
    except ValueError as exc:  # a selection the client refuses before sending anything
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the export file
        print(f"{command}: cannot write {getattr(exc, 'filename', None) or 'the file'}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1


def _where(args: argparse.Namespace) -> ReviewFilter:
    from smsgw.client import ReviewFilter

    states = None
    if args.state:
        states = [s.strip() for item in args.state for s in item.split(",") if s.strip()]
    return ReviewFilter(content=args.content, to=args.to, account=args.account, interface=args.interface,
                        state=states, batch=args.batch, since=args.since, until=args.until)


def _list(command: str, args: argparse.Namespace, client: Client) -> int:
    where = _where(args)
    if args.export is not None:
        if args.offset is not None or args.limit is not None:
            print(f"{command}: --export writes every matching message: leave out --offset and --limit",
                  file=sys.stderr)
            return 2
        done = client.review_export(args.export, where)  # the format by the file's ending
        count = f"{done.rows} message(s)" if done.rows is not None else "the messages"
        print(f"wrote {count} to {done.path} ({done.format}, {done.size} bytes)")
        return 0
    page = client.review_list(where, offset=args.offset or 0, limit=args.limit or 50)
    if args.json:
        print(json.dumps(asdict(page), ensure_ascii=False, indent=2))
    else:
        _print_page(page)
    return 0


def _show(command: str, args: argparse.Namespace, client: Client) -> int:
    message = client.review_get(args.id)
    if args.json:
        print(json.dumps(asdict(message), ensure_ascii=False, indent=2))
        return 0
    rows = [("id", message.id), ("account", message.account), ("interface", message.interface),
            ("batch", message.batch), ("ref", message.ref), ("created", _local(message.created_at)),
            ("send at", _local(message.send_at)), ("priority", str(message.priority)),
            ("state", message.state), ("review", message.review), ("rule", message.rule),
            ("deadline", _local(message.deadline)), ("reviewed by", message.reviewed_by),
            ("reviewed at", _local(message.reviewed_at)), ("comment", message.comment),
            ("template", message.template), ("text", message.text),
            ("recipients", f"{message.recipients}: {' '.join(message.numbers)}")]
    for name, value in rows:
        print(f"{name + ':':<13}{value if value is not None else '-'}")
    return 0


def _act(command: str, args: argparse.Namespace, client: Client) -> int:
    action = args.review_command
    where = _where(args)
    narrowed = where.narrows() or where.state is not None
    if args.ids and (narrowed or args.all_matching):
        print(f"{command}: give ids, or --batch, or filters with --all-matching: not ids and filters together",
              file=sys.stderr)
        return 2
    ids, batch, matching = None, None, None
    if args.ids:
        ids = args.ids
    elif args.batch is not None and not args.all_matching and not replace(where, batch=None).narrows() \
            and where.state is None:
        batch = args.batch
    elif args.all_matching:
        matching = where
    else:
        what = "the filters" if narrowed else "nothing"
        print(f"{command}: say which messages: ids, --batch BATCH, or filters with --all-matching (you gave "
              f"{what}; --all-matching confirms acting on every message they select)", file=sys.stderr)
        return 2
    method = client.review_approve if action == "approve" else client.review_reject
    done = method(ids, batch=batch, where=matching, all_matching=args.all_matching, comment=args.comment or "",
                  reviewer=args.reviewer)
    if args.json:
        print(json.dumps(asdict(done), ensure_ascii=False, indent=2))
    else:
        did, moved = ("approved", "queued") if action == "approve" else ("rejected", "rejected")
        print(f"{did} {len(done.messages)} message(s), {done.recipients} recipient(s) {moved}, as {done.reviewer}")
    if done.unchanged:
        print(f"{command}: not waiting for review, left as they are: {', '.join(done.unchanged)}", file=sys.stderr)
        return 1
    if not done.messages:
        print(f"{command}: nothing to {action}: no message waiting for review matched", file=sys.stderr)
        return 1
    return 0


def _cancel(command: str, args: argparse.Namespace, client: Client) -> int:
    if args.batch is not None:
        done = client.cancel_batch(args.batch, comment=args.comment)
    else:
        done = client.cancel(args.id, comment=args.comment)
    if args.json:
        print(json.dumps(asdict(done), ensure_ascii=False, indent=2))
    else:
        print(f"cancelled {len(done.messages)} message(s), {done.recipients} recipient(s)")
    return 0


# -- printing -------------------------------------------------------------------------------------

def _local(when: float | None) -> str | None:
    return None if when is None else f"{datetime.datetime.fromtimestamp(when):%Y-%m-%d %H:%M:%S}"


def width(text: str) -> int:
    """Columns `text` takes in a terminal: wide (CJK) characters two, combining marks none."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in text)


def fit(text: str, columns: int) -> str:
    """`text` on one line in exactly `columns` terminal columns: cut with … or padded with spaces."""
    text = " ".join(text.split())
    if width(text) <= columns:
        return text + " " * (columns - width(text))
    out, used = [], 0
    for ch in text:
        w = width(ch)
        if used + w > columns - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…" + " " * (columns - 1 - used)


_COLUMNS = (("ID", 19), ("CREATED", 16), ("ACCOUNT", 12), ("VIA", 6), ("RCPT", 6), ("REVIEW", 9), ("RULE", 14))


def _print_page(page: ReviewPage) -> None:
    if not page.items:
        print("no messages match" + (f" (offset {page.offset} is past the last of {page.total})"
                                     if page.total and page.offset >= page.total else ""))
        return
    text_width = max(20, shutil.get_terminal_size((120, 24)).columns - sum(w + 1 for _, w in _COLUMNS) - 1)
    print(_line([title for title, _ in _COLUMNS] + ["TEXT"], text_width))
    for m in page.items:
        created = f"{datetime.datetime.fromtimestamp(m.created_at):%m-%d %H:%M:%S}"
        print(_line([m.id, created, m.account, m.interface, str(m.recipients), m.review, m.rule or "-", m.text],
                    text_width))
    last = page.offset + len(page.items)
    more = f"; next page: --offset {last}" if last < page.total else ""
    print(f"messages {page.offset + 1}-{last} of {page.total} ({page.total_recipients} recipients){more}")


def _line(cells: Sequence[str], text_width: int) -> str:
    widths = [w for _, w in _COLUMNS] + [text_width]
    return " ".join(fit(cell, w) for cell, w in zip(cells, widths)).rstrip()
