"""The daemon's subcommands: run, check-config, db upgrade, send, status, hash-key, hash-secret."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # imported where used: `smsgw hash-key` needs neither pydantic nor HTTP
    from smsgw.client import Client
    from smsgw.config import Config


def _load(path: str, command: str) -> Config | None:
    from smsgw.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"smsgw {command}: {path} has {len(exc.problems)} problem(s); nothing was started:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def check_config(args: argparse.Namespace) -> int:
    from smsgw.config import check_config as _check

    problems = _check(args.config)
    if not problems:
        print(f"{args.config}: OK")
        return 0
    print(f"{args.config}: {len(problems)} problem(s):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def db(args: argparse.Namespace) -> int:
    if args.db_command == "init-interface":
        return init_interface(args)
    from smsgw.store import make_engine, migrations

    config = _load(args.config, "db upgrade")
    if config is None:
        return 2
    shown = config.store_url(hide_password=True)
    try:
        engine = make_engine(config.store_url(), writer=True)
        applied = migrations.upgrade(engine)
        version = migrations.current_version(engine)
        engine.dispose()
    except migrations.SchemaOutdated as exc:
        print(f"smsgw db upgrade: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a database error is the operator's to read
        print(f"smsgw db upgrade: cannot upgrade {shown}: {str(exc).splitlines()[0]}\n"
              f"  fix: check store.url in {args.config} and that the database server is reachable",
              file=sys.stderr)
        return 1
    if applied:
        print(f"{shown}: applied migration(s) {', '.join(map(str, applied))}; schema version {version}")
    else:
        print(f"{shown}: schema version {version}, up to date")
    return 0


def init_interface(args: argparse.Namespace) -> int:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from smsgw.adapters.db import interface

    me = "smsgw db init-interface"
    url: str | None = args.url
    if args.source is not None:
        if args.config is None:
            print(f"{me}: --source needs -c FILE (the config that names it)", file=sys.stderr)
            return 2
        config = _load(args.config, "db init-interface")
        if config is None:
            return 2
        found = [s for s in config.db_sources if s.name == args.source]
        if not found:
            names = ", ".join(s.name for s in config.db_sources) or "(none)"
            print(f"{me}: {args.config} has no db_sources entry named {args.source!r}; it has: {names}",
                  file=sys.stderr)
            return 2
        url = found[0].plain_url()
    if url is None and not args.print:  # --dialect
        print(f"{me}: --dialect only prints the DDL: add --print, or give --url to create the tables",
              file=sys.stderr)
        return 2
    dialect, shown = args.dialect, ""
    if url is not None:
        try:
            parsed = make_url(url)
            dialect, shown = parsed.get_backend_name(), parsed.render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - the message would show the password
            print(f"{me}: not a database URL; write it like postgresql+psycopg://user@host:5432/erp", file=sys.stderr)
            return 2
    if args.print:
        print(";\n\n".join(interface.ddl(dialect)) + ";")  # mariadb is MySQL's DDL (interface.dialect_for)
        return 0
    assert url is not None  # --dialect prints
    try:
        engine = create_engine(url)
        created = interface.create(engine)
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - the database's message is the operator's to read
        print(f"{me}: cannot create the tables in {shown}: {str(exc).splitlines()[0]}\n"
              "  fix: check the URL and that this user may CREATE TABLE there (or have a DBA run "
              f"scripts/sql/{_script_dir(dialect)}/interface.sql)", file=sys.stderr)
        return 1
    if created:
        print(f"{shown}: created {', '.join(created)}")
    else:
        print(f"{shown}: {interface.OUTBOX} and {interface.INBOX} exist already; nothing changed")
    return 0


def _script_dir(dialect: str) -> str:
    return {"mssql": "sqlserver", "mariadb": "mysql"}.get(dialect, dialect)


def run(args: argparse.Namespace) -> int:
    config = _load(args.config, "run")
    if config is None:
        return 2
    from twisted.internet import reactor as _reactor

    from smsgw import logs, sdnotify
    from smsgw.app import Daemon
    from smsgw.cli import _run_service

    reactor: Any = _reactor
    try:
        logs.configure_daemon(config.log.level, config.log_file(), config.log.format, config.log.mask_content)
    except (ValueError, OSError) as exc:
        # exit 2: a configuration error, which the unit does not restart (RestartPreventExitStatus=2)
        print(f"smsgw run: cannot set up logging: {exc}\n  fix: check the log section of {args.config}",
              file=sys.stderr)
        return 2
    try:
        daemon = Daemon(config, reactor, notifier=sdnotify.Notifier.from_env())
    except Exception as exc:  # noqa: BLE001 - e.g. a driver that is not installed
        print(f"smsgw run: cannot build the daemon: {exc}", file=sys.stderr)
        return 1
    def reopen(signum: int, frame: Any) -> None:  # SIGHUP: log files rotated, or list files edited
        reactor.callFromThread(logs.reopen_log_files)
        reactor.callFromThread(daemon.reload_filters)

    signal.signal(signal.SIGHUP, reopen)
    return _run_service(reactor, daemon, daemon.start, "smsgw run")


def _client(config: Config, key: str | None) -> Client:
    from smsgw.client import Client

    key = key or os.environ.get("SMSGW_API_KEY")
    if not key:
        raise SystemExit("smsgw: no API key: give --key KEY or set SMSGW_API_KEY")
    try:
        return Client(config.api_url(), key, timeout=30)
    except ValueError as exc:
        raise SystemExit(f"smsgw: {exc}") from None


@contextlib.contextmanager
def _talking(command: str) -> Iterator[None]:
    """A garbled answer or none from the daemon ends `command` with the reason on stderr, exit status 1."""
    from smsgw.client import BadResponse, ConnectionFailed

    try:
        yield
    except BadResponse as exc:
        raise SystemExit(f"{command}: {exc}") from None
    except ConnectionFailed as exc:
        why = f"cannot reach the daemon at {exc.url}: {exc.reason}; is `smsgw run` running?"
        raise SystemExit(f"smsgw: {why}") from None


def _refused(command: str, exc: Any) -> int:
    """Print an ApiError the daemon answered `command` with, and every problem it names; exit status 1."""
    problems = "".join(f"\n  {p.where or '-'}: {p.message}" for p in exc.problems)
    print(f"{command}: refused ({exc.status} {exc.code}): {exc.message}{problems}", file=sys.stderr)
    return 1


def send(args: argparse.Namespace) -> int:
    config = _load(args.config, "send")
    if config is None:
        return 2
    to = [n.strip() for item in args.to for n in item.split(",") if n.strip()]
    params = {}
    for item in args.param:
        name, eq, value = item.partition("=")
        if not eq or not name:
            print(f"smsgw send: --param {item!r} is not NAME=VALUE", file=sys.stderr)
            return 2
        params[name] = value
    if params and not args.template:
        print("smsgw send: --param needs --template NAME", file=sys.stderr)
        return 2
    from smsgw.client import ApiError

    try:
        with _talking("smsgw send"), _client(config, args.key) as client:
            accepted = client.send(to, args.text or "", priority=args.priority, ext=args.ext, ref=args.ref,
                                   template=args.template, params=params if args.template else None)
    except ApiError as exc:
        print(f"smsgw send: refused ({exc.status}): {json.dumps(exc.body, ensure_ascii=False, indent=2)}",
              file=sys.stderr)
        return 1
    print(f"accepted: id {accepted.id} ({accepted.recipients} recipient(s), {accepted.segments} segment(s) each)")
    return 0


def status(args: argparse.Namespace) -> int:
    config = _load(args.config, "status")
    if config is None:
        return 2
    from smsgw.client import ApiError

    try:
        with _talking("smsgw status"), _client(config, args.key) as client:
            answer = dataclasses.asdict(client.status())
    except ApiError as exc:
        print(json.dumps(exc.body, ensure_ascii=False, indent=2))
        return 1
    print(json.dumps(answer, ensure_ascii=False, indent=2))
    return 0


def hash_secret(args: argparse.Namespace) -> int:
    """Print an argon2id hash of a secret read from a prompt (a terminal) or from stdin, for secret_hash."""
    from smsgw.auth import hash_secret as make_hash

    if sys.stdin.isatty():
        import getpass

        secret = getpass.getpass("Secret: ")
        if secret != getpass.getpass("Again: "):
            print("smsgw hash-secret: the two entries differ; nothing printed", file=sys.stderr)
            return 2
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        print("smsgw hash-secret: empty secret", file=sys.stderr)
        return 2
    print(make_hash(secret))
    return 0


def hash_key(args: argparse.Namespace) -> int:
    key = args.key if args.key is not None else sys.stdin.readline().rstrip("\n")
    if not key:
        print("smsgw hash-key: empty key", file=sys.stderr)
        return 2
    print(hashlib.sha256(key.encode()).hexdigest())
    return 0
