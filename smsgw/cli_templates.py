"""`smsgw template list|show|add|change|delete`: templates through the running daemon's REST API.

The daemon owns the templates (its store, its in-memory registry), so the CLI
changes them the way any business system would: over REST, with an API key
whose account has the "templates" permission. Changes are audit-logged with that
account's name.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smsgw.client import Template

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("template", help="list, show, add, change or delete message templates",
                            description="Templates live in the daemon; these commands call its REST API "
                                        "(changing one needs an account with the templates permission).")
    actions = parser.add_subparsers(dest="template_command", metavar="ACTION")
    actions.required = True
    for name, helptext in (("list", "every template"), ("show", "one template"),
                           ("add", "add a template"), ("change", "change a template's text or flag"),
                           ("delete", "delete a template")):
        action = actions.add_parser(name, help=helptext)
        action.add_argument("-c", "--config", required=True, metavar="FILE")
        action.add_argument("--key", default=None, help="API key (default: $SMSGW_API_KEY)")
        action.add_argument("--json", action="store_true", help="print JSON")
        if name != "list":
            action.add_argument("name", help="the template's name, e.g. verify_code")
        if name in ("add", "change"):
            action.add_argument("--text", required=name == "add",
                                help="the text with {parameter} placeholders; {{ and }} are literal braces")
            flag = action.add_mutually_exclusive_group()
            flag.add_argument("--pre-approved", dest="pre_approved", action="store_true", default=None,
                              help="messages rendered from it may skip content review")
            flag.add_argument("--not-pre-approved", dest="pre_approved", action="store_false")


def run(args: argparse.Namespace) -> int:
    from smsgw.cli_daemon import _client, _load, _refused, _talking
    from smsgw.client import ApiError  # here: `smsgw hash-key` needs no HTTP

    command = f"smsgw template {args.template_command}"
    config = _load(args.config, "template")
    if config is None:
        return 2
    try:
        with _talking(command), _client(config, args.key) as client:
            action = args.template_command
            if action == "list":
                found = client.templates()
                _print_list(found, args.json)
                return 0
            if action == "show":
                _print_one(client.template(args.name), args.json)
                return 0
            if action == "delete":
                client.delete_template(args.name)
                print(f"deleted template {args.name!r}")
                return 0
            if action == "add":
                if _exists(client, args.name):
                    print(f"{command}: template {args.name!r} exists: use `smsgw template change`",
                          file=sys.stderr)
                    return 1
                template = client.put_template(args.name, args.text, pre_approved=bool(args.pre_approved))
            else:  # change: what is not given stays as it is
                current = client.template(args.name)
                pre_approved = current.pre_approved if args.pre_approved is None else args.pre_approved
                template = client.put_template(args.name, args.text if args.text is not None else current.text,
                                               pre_approved=pre_approved)
            _print_one(template, args.json)
            return 0
    except ApiError as exc:
        return _refused(command, exc)


def _exists(client: Any, name: str) -> bool:
    from smsgw.client import ApiError

    try:
        client.template(name)
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _as_json(t: Template) -> dict[str, Any]:
    return {"name": t.name, "text": t.text, "params": list(t.params), "pre_approved": t.pre_approved,
            "updated_at": t.updated_at, "updated_by": t.updated_by}


def _print_list(found: list[Template], as_json: bool) -> None:
    if as_json:
        print(json.dumps([_as_json(t) for t in found], ensure_ascii=False, indent=2))
        return
    if not found:
        print("no templates: add one with `smsgw template add NAME --text '...{param}...'`")
    for t in found:
        flag = " (pre-approved)" if t.pre_approved else ""
        print(f"{t.name}{flag}: {t.text}")


def _print_one(t: Template, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_as_json(t), ensure_ascii=False, indent=2))
        return
    print(f"name:         {t.name}\ntext:         {t.text}\nparams:       {', '.join(t.params) or '-'}\n"
          f"pre-approved: {'yes' if t.pre_approved else 'no'}\nupdated by:   {t.updated_by or '-'}")
