"""File import: 100,000 rows (a number and two template parameters) imported into a running daemon.

    python scripts/bench/file_import.py --rows 100000                 # CSV, then XLSX, through the REST API
    python scripts/bench/file_import.py --rows 100000 --via folder    # dropped into a watched folder

Processes: the ISMG simulator (reports at once), the daemon (`smsgw run`, SQLite store, every
lifecycle line logged, so it is also sending what it accepts), and this script. The files are
written first (not timed): a header row ``mobile,name,code`` and one row per number, as CSV
(UTF-8) and as XLSX. Then, per format:

- ``--via cli`` (default): what ``smsgw import --yes`` does, in this process: read and plan the
  file with the daemon's validator (``parse_s``), then send it through `smsgw.client` in
  requests of ``api.max_batch`` messages until every row is accepted (``accept_s``).
- ``--via folder``: the file is renamed into a watched folder; ``total_s`` runs until its
  result file appears in done/ (``parse_s`` and ``accept_s`` are the daemon's, from its
  ``file_import_done`` line: ``plan_seconds``, and ``seconds`` less that; ``total_s`` also
  holds the wait for the file to be seen stable).

Prints per format: ``format=… rows=… parse_s=… accept_s=… total_s=… rows_per_s=… cpu_s=…``
(``cpu_s`` is the daemon process's CPU over the import). ``--common`` sends one text to every
row instead, which the import groups into messages of up to 1,000 recipients.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import KEY, cpu_of, daemon_config, free_port, log_file, running, write_config

TEXT = "尊敬的{name}，您的验证码是{code}，5 分钟内有效。"
COMMON = "停水通知：明天 8:00-12:00 管网检修，请提前储水。"  # --common: one text for every row


def write_files(tmp: Path, rows: int) -> dict[str, Path]:
    import openpyxl

    prefixes = ("138", "139", "150", "186", "177", "133")
    table = [("mobile", "name", "code")] + [(f"{prefixes[i % 6]}{i:08d}", f"用户{i}", f"{i * 7919 % 1_000_000:06d}")
                                            for i in range(rows)]
    csv_path = tmp / "people.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(table)
    book = openpyxl.Workbook()  # not write_only: that leaves out <dimension>, which Excel always writes
    sheet = book.active
    assert sheet is not None
    for number, name, code in table:
        sheet.append([int(number) if number.isdigit() else number, name, code])
    xlsx_path = tmp / "people.xlsx"
    book.save(xlsx_path)
    return {"csv": csv_path, "xlsx": xlsx_path}


def via_cli(path: Path, config: Any, api: str, text: str) -> tuple[float, float, int]:
    from smsgw.adapters.file import ImportOptions, Outcomes
    from smsgw.adapters.file.command import Progress, plan_file, send
    from smsgw.client import Client
    from smsgw.model import Account

    t0 = time.perf_counter()
    plan = plan_file(str(path), ImportOptions(text), config, Account("demo"))
    parsed = time.perf_counter() - t0
    outcomes = Outcomes(plan)
    with Client(api, KEY, timeout=120) as client, open("/dev/null", "w") as quiet:
        stopped = send(client, plan, outcomes, config.api.max_batch, Progress(plan.valid, quiet))
    if stopped is not None or outcomes.accepted != plan.valid:
        raise SystemExit(f"import stopped: {stopped}; accepted {outcomes.accepted} of {plan.valid}")
    return parsed, time.perf_counter() - t0 - parsed, outcomes.accepted


def via_folder(path: Path, inbox: Path, log: Path) -> tuple[float, float, int]:
    staged = inbox / f"{path.name}.tmp"
    staged.write_bytes(path.read_bytes())
    staged.rename(inbox / path.name)
    result = inbox / "done" / f"{path.name}.result.csv"
    while not result.exists():
        if (inbox / "failed" / f"{path.name}.result.csv").exists():
            raise SystemExit(f"{path.name} failed: see {inbox / 'failed'}")
        time.sleep(0.05)
    line = next(json.loads(text) for text in reversed(log.read_text(encoding="utf-8").splitlines())
                if '"file_import_done"' in text and path.name in text)
    return line["plan_seconds"], line["seconds"] - line["plan_seconds"], int(line["accepted"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--via", choices=("cli", "folder"), default="cli")
    parser.add_argument("--formats", default="csv,xlsx")
    parser.add_argument("--link", choices=("up", "down"), default="up",
                        help="down: no simulator, so the daemon only accepts (messages stay queued)")
    parser.add_argument("--profile", metavar="FILE", help="record the daemon with py-spy (raw collapsed stacks)")
    parser.add_argument("--common", action="store_true",
                        help="one common text instead of the template: rows are grouped into messages of many recipients")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="smsgw-file-"))
    files = write_files(tmp, args.rows)
    sim_port, api_port = free_port(), free_port()
    data = daemon_config(tmp, sim_port)
    data["api"]["port"] = api_port
    inbox = tmp / "inbox"
    inbox.mkdir()
    text = COMMON if args.common else TEXT
    data["file_import"] = {"inboxes": [{"dir": str(inbox), "account": "demo", "text": text, "poll_interval": 0.05}]}
    config_path = write_config(tmp, data)
    from smsgw.config import load_config

    config = load_config(str(config_path), {})
    with running(config_path, sim_port if args.link == "up" else None, profile_to=args.profile) as daemon:
        for fmt in args.formats.split(","):
            cpu0, t0 = cpu_of(daemon.pid), time.perf_counter()
            if args.via == "cli":
                parse_s, accept_s, accepted = via_cli(files[fmt], config, f"http://127.0.0.1:{api_port}", text)
            else:
                parse_s, accept_s, accepted = via_folder(files[fmt], inbox, log_file(tmp))
            total = time.perf_counter() - t0
            print(f"format={fmt} rows={accepted} parse_s={parse_s:.2f} accept_s={accept_s:.2f} total_s={total:.2f} "
                  f"rows_per_s={accepted / total:.0f} cpu_s={cpu_of(daemon.pid) - cpu0:.1f}  "
                  f"# via={args.via} link={args.link}{' common' if args.common else ''}",
                  flush=True)


if __name__ == "__main__":
    main()
