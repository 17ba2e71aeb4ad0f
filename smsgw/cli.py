"""The `smsgw` command: `smsgw --help` lists the subcommands."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from smsgw import __version__


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:7890)")
    return host or "127.0.0.1", int(port)


def _account(text: str) -> tuple[str, str]:
    sp_id, sep, secret = text.partition(":")
    if not sep or not sp_id:
        raise argparse.ArgumentTypeError(f"{text!r} is not SP_ID:SECRET (for example 901234:abc123)")
    return sp_id, secret


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a ratio between 0 and 1")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535)")
    return int(text)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number, 0 or more")
    return int(text)


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smsgw", description="SMS gateway daemon (CMPP 3.0/2.0).")
    parser.add_argument("--version", action="version", version=f"smsgw {__version__}")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sim = sub.add_parser("simulate", help="run an ISMG (carrier gateway) simulator",
                         description="A CMPP server that behaves like a carrier's ISMG, for tests and demos.")
    sim.add_argument("--listen", type=_host_port, default=("127.0.0.1", 7890), metavar="HOST:PORT")
    sim.add_argument("--stats-port", type=_port, default=None, metavar="PORT",
                     help="serve GET /stats (JSON counters) on this port, same host as --listen")
    sim.add_argument("--version", dest="cmpp_version", default="3.0", choices=("3.0", "2.0"))
    sim.add_argument("--account", type=_account, action="append", default=[], metavar="SP_ID:SECRET",
                     help="an account that may log in (repeatable)")
    sim.add_argument("--accounts-file", metavar="YAML",
                     help='accounts as YAML: a mapping "sp_id": "secret", or a list of {sp_id, secret}')
    sim.add_argument("--report-delay", type=_non_negative, default=0.5, metavar="SECONDS")
    sim.add_argument("--fail-ratio", type=_ratio, default=0.0, help="share of reports with a failure Stat")
    sim.add_argument("--mo-rate", type=_non_negative, default=0.0, metavar="PER_SECOND")
    sim.add_argument("--flow-limit", type=_positive, default=None, metavar="PER_SECOND",
                     help="answer Result 8 above this many submits per second")
    sim.add_argument("--drop-every", type=_count, default=0, metavar="N", help="drop a connection every N submits")
    sim.add_argument("--window", type=_count, default=16)
    sim.add_argument("--seed", type=int, default=None)

    demo = sub.add_parser("demo", help="the simulator plus a demo carrier link (what `make run` starts)",
                          description="Starts the ISMG simulator and a CMPP link to it, sends a few "
                                      "messages and logs their status reports and incoming MO messages.")
    demo.add_argument("--port", type=_port, default=0, help="simulator port (0: any free port)")
    demo.add_argument("--version", dest="cmpp_version", default="3.0", choices=("3.0", "2.0"))
    demo.add_argument("--exit-after", type=float, default=None, metavar="SECONDS",
                      help="stop by itself after this long (default: run until interrupted)")
    run = sub.add_parser("run", help="run the gateway daemon (foreground; systemd Type=notify aware)",
                         description="Runs the daemon described by the config file until SIGTERM/SIGINT.")
    run.add_argument("-c", "--config", required=True, metavar="FILE")

    check = sub.add_parser("check-config", help="check a config file and print every problem",
                           description="Exits 0 when the file is fine, 1 when it has problems.")
    check.add_argument("-c", "--config", required=True, metavar="FILE")

    db = sub.add_parser("db", help="store maintenance", description="Store maintenance commands.")
    db_sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND")
    db_sub.required = True
    upgrade = db_sub.add_parser("upgrade", help="create or upgrade the store's schema (back it up first)")
    upgrade.add_argument("-c", "--config", required=True, metavar="FILE")
    init = db_sub.add_parser(
        "init-interface", help="create the standard sms_outbox / sms_inbox tables in a legacy database",
        description="Creates the tables that do not exist yet (existing ones are left alone). "
                    "--print shows the DDL instead; scripts/sql/<dialect>/interface.sql holds the same.")
    where = init.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", metavar="URL", help="the legacy database, e.g. postgresql+psycopg://u@host/erp")
    where.add_argument("--source", metavar="NAME", help="the db_sources entry of -c FILE")
    where.add_argument("--dialect", choices=("oracle", "mysql", "postgresql", "mssql", "sqlite"),
                       help="with --print: the DDL of this dialect, without connecting")
    init.add_argument("-c", "--config", metavar="FILE", help="with --source")
    init.add_argument("--print", action="store_true", help="print the statements, create nothing")

    send = sub.add_parser("send", help="send a message through the daemon's REST API",
                          description="POSTs one message to the running daemon and prints its id.")
    send.add_argument("-c", "--config", required=True, metavar="FILE")
    send.add_argument("--to", required=True, action="append", metavar="NUMBER", help="repeatable; or comma-separated")
    content = send.add_mutually_exclusive_group(required=True)
    content.add_argument("--text")
    content.add_argument("--template", metavar="NAME", help="a named template (smsgw template list) instead of --text")
    send.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                      help="a template parameter; repeatable")
    send.add_argument("--priority", type=int, default=None)
    send.add_argument("--ext", default=None)
    send.add_argument("--ref", default=None)
    send.add_argument("--key", default=None, help="API key (default: $SMSGW_API_KEY)")

    status = sub.add_parser("status", help="show the running daemon's links, queues and rates")
    status.add_argument("-c", "--config", required=True, metavar="FILE")
    status.add_argument("--key", default=None, help="API key (default: $SMSGW_API_KEY)")

    from smsgw import cli_review, cli_templates

    cli_templates.add_parser(sub)
    cli_review.add_parser(sub)  # smsgw review ..., smsgw cancel

    from smsgw.adapters.file.command import add_parser as add_import_parser  # smsgw import FILE

    add_import_parser(sub)

    hash_key = sub.add_parser("hash-key", help="print the api_key_sha256 value for an API key",
                              description="Reads the key from stdin when not given (keeps it out of shell history).")
    hash_key.add_argument("key", nargs="?", default=None)
    sub.add_parser("hash-secret", help="print an argon2id secret_hash for an account's secret",
                   description="Asks for the secret twice on a terminal, or reads one line from stdin; prints the "
                               "hash to paste into the account's secret_hash (docs/security.md).")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("simulate", "demo"):
        from smsgw import logs

        logs.configure(args.log_level)
    from smsgw import cli_daemon, cli_review, cli_templates

    handler: Any = {"simulate": _simulate, "demo": _demo, "run": cli_daemon.run,
                    "check-config": cli_daemon.check_config, "db": cli_daemon.db, "send": cli_daemon.send,
                    "status": cli_daemon.status, "hash-key": cli_daemon.hash_key,
                    "hash-secret": cli_daemon.hash_secret,
                    "template": cli_templates.run, "review": cli_review.run, "cancel": cli_review.cancel,
                    "import": _import}[args.command]
    result: int = handler(args)
    return result


def _import(args: argparse.Namespace) -> int:
    from smsgw.adapters.file.command import run

    return run(args)


def _simulate(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from smsgw.protocol.cmpp import Version
    from smsgw.simulator import SimulatorConfig, load_accounts, make_service

    accounts = dict(args.account)
    if args.accounts_file:
        try:
            accounts.update(load_accounts(args.accounts_file))
        except (OSError, ValueError) as exc:
            print(f"smsgw simulate: cannot read --accounts-file: {exc}", file=sys.stderr)
            return 2
    if not accounts:
        print("smsgw simulate: no account can log in: give --account SP_ID:SECRET or --accounts-file",
              file=sys.stderr)
        return 2
    config = SimulatorConfig(
        accounts=accounts, version=Version.parse(args.cmpp_version), report_delay=args.report_delay,
        fail_ratio=args.fail_ratio, mo_rate=args.mo_rate, flow_limit=args.flow_limit,
        drop_every=args.drop_every, window=args.window, seed=args.seed,
    )
    stats = (args.listen[0], args.stats_port) if args.stats_port is not None else None
    return _run_service(reactor, make_service(config, reactor, args.listen, stats))


def _demo(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from smsgw.demo import DemoService

    return _run_service(reactor, DemoService(reactor, port=args.port, version=args.cmpp_version,
                                             exit_after=args.exit_after))


def _run_service(reactor: Any, service: Any, start: Callable[[], Any] | None = None,
                 command: str = "smsgw") -> int:
    """Start a service under the reactor (with `start`, which may return a Deferred, or startService);
    SIGINT/SIGTERM stop it gracefully. A start that fails stops what did start and exits 1."""
    from twisted.internet import defer

    failures: list[str] = []

    def failed(failure: Any) -> None:  # listen failures, an outdated schema and the like
        failures.append(failure.getErrorMessage())
        print(f"{command}: cannot start: {failures[-1]}", file=sys.stderr)
        stopped = defer.maybeDeferred(service.stopService) if service.running else defer.succeed(None)
        stopped.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(lambda: defer.maybeDeferred(start or service.startService).addErrback(failed))
    reactor.addSystemEventTrigger("before", "shutdown", lambda: service.stopService() if service.running else None)
    reactor.run()
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
