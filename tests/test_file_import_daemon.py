"""File import end to end: `smsgw import` against a real daemon, and watched folders in the daemon.

`smsgw import` runs as a real subprocess (on a thread, so the in-process daemon keeps serving);
the watched folders run in the daemon (or, for the gateway's failure modes, beside a FakeGateway).
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import pathlib
import pty
import subprocess
import sys
import time
from typing import Any

import openpyxl
from structlog.testing import capture_logs
from twisted.internet.threads import deferToThread

from daemon_helpers import DEMO_KEY, DaemonCase, R, count, key_hash, rows, spin, wait_for, write_config
from fake_gateway import FakeGateway
from smsgw.adapters.file.service import FileInbox
from smsgw.client import Client
from smsgw.config import Config, FileInboxConfig, load_config
from smsgw.model import Account
from smsgw.validation import Validator

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE_TEXT = "尊敬的{name}，您的验证码是{code}。"


def smsgw(*args: str, stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smsgw", *args], cwd="/", stdin=stdin, capture_output=True,
                          text=True, timeout=120)


def on_a_terminal(args: list[str], answer: str) -> tuple[int, str]:
    """Run smsgw with a pseudo-terminal as stdin (so it asks) and type `answer`."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "smsgw", *args], cwd="/", stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    os.close(slave)
    try:
        os.write(master, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
    return proc.returncode, out + err


def xlsx_file(path: pathlib.Path, table: list[list[Any]]) -> pathlib.Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for values in table:
        sheet.append(values)
    book.save(path)
    return path


def result_lines(path: pathlib.Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig"))))[1:]


PEOPLE: list[list[Any]] = [["手机号", "name", "code"], [13800138000, "张三", 123456], [13900139000, "李四", 654321],
          [13700137000, "王五", 111111], [1380013, "短号", 1]]


class ImportCommandTests(DaemonCase):
    tmp_prefix = "smsgw-import-"

    async def started(self, overrides: dict[str, Any] | None = None) -> tuple[Config, pathlib.Path]:
        path = write_config(self.tmp, overrides)
        config = load_config(str(path), {})
        await self.daemon(config)
        return config, path

    async def cli(self, *args: str, stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
        done: subprocess.CompletedProcess[str] = await deferToThread(smsgw, "import", *args, stdin=stdin)
        return done

    async def test_yes_sends_every_valid_row_and_a_second_run_sends_nothing_again(self) -> None:
        """--yes sends the valid rows as rendered texts with stable refs; the same command again resends none."""
        config, path = await self.started()
        book = xlsx_file(self.tmp / "people.xlsx", PEOPLE)
        args = [str(book), "-c", str(path), "--key", DEMO_KEY, "--text", TEMPLATE_TEXT, "--yes"]
        first = await self.cli(*args)
        assert first.returncode == 0, first.stderr
        assert "XLSX, sheet 'Sheet'" in first.stdout and "4 read: 3 valid, 1 invalid" in first.stdout
        assert "accepted:  3 row(s) in 3 message(s)\n" in first.stdout
        stored = rows(config, "SELECT ref, content, interface, priority, recipients FROM messages ORDER BY ref")
        prefix = stored[0][0].rsplit("-", 1)[0]
        assert stored == [(f"{prefix}-2", "尊敬的张三，您的验证码是123456。", "file", 0, 1),
                          (f"{prefix}-3", "尊敬的李四，您的验证码是654321。", "file", 0, 1),
                          (f"{prefix}-4", "尊敬的王五，您的验证码是111111。", "file", 0, 1)]
        lines = result_lines(self.tmp / "people.xlsx.result.csv")
        ids = {str(i) for (i,) in rows(config, "SELECT id FROM messages")}
        assert [line[:3] for line in lines] == [["2", "13800138000", "accepted"], ["3", "13900139000", "accepted"],
                                                ["4", "13700137000", "accepted"], ["5", "1380013", "invalid"]]
        assert {line[4] for line in lines[:3]} == ids and "wrong_length" in lines[3][3]
        again = await self.cli(*args)
        assert again.returncode == 0, again.stderr
        assert "3 of them had been sent by an earlier import of this file and were not sent again" in again.stdout
        assert count(config, "messages") == 3 and count(config, "recipients") == 3
        assert {line[4] for line in result_lines(self.tmp / "people.xlsx.result.csv")[:3]} == ids
        await wait_for(lambda: count(config, "recipients", "state = 'delivered'") == 3, what="3 delivered")

    async def test_a_common_text_goes_as_one_message_at_the_time_given(self) -> None:
        """Numbers with --text become one message with every recipient, held until --at."""
        config, path = await self.started()
        numbers = self.tmp / "numbers.txt"
        numbers.write_text("13800138000\n13900139000\n\n13700137000\n13700137000\n", encoding="utf-8")
        later = datetime.datetime.fromtimestamp(int(time.time()) + 10 * 86400, datetime.timezone(
            datetime.timedelta(hours=8)))
        done = await self.cli(str(numbers), "-c", str(path), "--key", DEMO_KEY, "--text", "停水通知：明天检修。",
                              "--at", later.isoformat(), "--priority", "normal", "--yes")
        assert done.returncode == 0, done.stderr
        assert "1 duplicate" in done.stdout and f"at {later.astimezone():%Y-%m-%d %H:%M}" in done.stdout
        assert rows(config, "SELECT content, recipients, send_at, priority FROM messages") == [
            ("停水通知：明天检修。", 3, later.timestamp(), 5)]
        assert count(config, "recipients", "state = 'queued'") == 3

    async def test_without_yes_nothing_is_sent_unless_the_answer_is_yes(self) -> None:
        """Stdin not a terminal cancels with a clear message; on a terminal "n" cancels and "y" sends."""
        config, path = await self.started()
        data = self.tmp / "m.csv"
        data.write_text("mobile,content\n13800138000,您好\n", encoding="utf-8")
        args = [str(data), "-c", str(path), "--key", DEMO_KEY]
        piped = await self.cli(*args)
        assert piped.returncode == 1
        assert "cancelled, nothing was sent: standard input is not a terminal" in piped.stderr and "--yes" in piped.stderr
        status, output = await deferToThread(on_a_terminal, ["import", *args], "n")
        assert status == 1 and "Send 1 message (1 segments)? [y/N]" in output and "cancelled" in output
        assert count(config, "messages") == 0
        status, output = await deferToThread(on_a_terminal, ["import", *args], "y")
        assert status == 0, output
        assert count(config, "messages") == 1

    async def test_a_named_template_is_sent_by_name_and_parameters(self) -> None:
        """--template NAME previews with the daemon's template; the daemon renders it and records its name."""
        config, path = await self.started()
        api = Client(f"http://127.0.0.1:{config.api.port}", DEMO_KEY)
        self.addCleanup(api.close)
        await deferToThread(api.put_template, "meeting", "{name}：会议改在{room}。")
        data = self.tmp / "t.csv"
        data.write_text("手机号,name,room\n13800138000,张三,301\n13900139000,李四,\n", encoding="utf-8")
        done = await self.cli(str(data), "-c", str(path), "--key", DEMO_KEY, "--template", "meeting", "--yes")
        assert done.returncode == 0, done.stderr
        assert "of template 'meeting'" in done.stdout and "张三：会议改在301。" in done.stdout
        assert "missing_params" in done.stdout
        assert rows(config, "SELECT content, template FROM messages") == [("张三：会议改在301。", "meeting")]
        missing = await self.cli(str(data), "-c", str(path), "--key", DEMO_KEY, "--template", "other", "--yes")
        assert missing.returncode == 2 and "no template named 'other'" in missing.stderr

    async def test_the_accounts_rate_limit_is_waited_out(self) -> None:
        """A 429 for the account's rate limit makes the command wait and go on until every row is accepted."""
        config, path = await self.started({"api": {"max_batch": 1},
                                           "accounts": [{"name": "demo", "api_key_sha256": key_hash(DEMO_KEY),
                                                         "rate_limit": {"per_second": 2, "burst": 1}}]})
        data = self.tmp / "m.csv"
        data.write_text("mobile,content\n13800138000,a\n13900139000,b\n13700137000,c\n", encoding="utf-8")
        with capture_logs() as logs:
            done = await self.cli(str(data), "-c", str(path), "--key", DEMO_KEY, "--yes")
        assert done.returncode == 0, done.stderr
        assert "accepted:  3 row(s)" in done.stdout and count(config, "messages") == 3
        assert any(e["event"] == "limit_exceeded" for e in logs)

    async def test_rows_the_daemon_refuses_are_reported_and_the_others_sent(self) -> None:
        """A row the daemon refuses (its config is stricter than the one previewed with) is invalid; the rest go."""
        config, path = await self.started()
        lenient = write_config(self.tmp, {"api": {"port": config.api.port},
                                          "validation": {"allow_other_numbers": True}}, name="lenient.yaml")
        data = self.tmp / "m.csv"
        data.write_text("mobile,content\n13800138000,a\n+447700900123,a\n13900139000,b\n", encoding="utf-8")
        done = await self.cli(str(data), "-c", str(lenient), "--key", DEMO_KEY, "--yes")
        assert done.returncode == 0, done.stderr
        assert "accepted:  2 row(s) in 2 message(s)" in done.stdout and "1 invalid" in done.stdout
        lines = result_lines(self.tmp / "m.csv.result.csv")
        assert [line[2] for line in lines] == ["accepted", "invalid", "accepted"]
        assert "not_mainland" in lines[1][3]
        assert sorted(rows(config, "SELECT content, recipients FROM messages")) == [("a", 1), ("b", 1)]


def test_dry_run_needs_no_key_and_file_errors_exit_2(tmp_path: pathlib.Path) -> None:
    """--dry-run previews with the only account and no key; an unreadable file exits 2 with the reason."""
    config = write_config(tmp_path)
    data = tmp_path / "n.txt"
    data.write_bytes("13800138000\n".encode())
    shown = smsgw("import", str(data), "-c", str(config), "--text", "hi", "--dry-run")
    assert shown.returncode == 0 and "1 read: 1 valid" in shown.stdout
    data.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
    bad = smsgw("import", str(data), "-c", str(config), "--text", "hi", "--dry-run")
    assert bad.returncode == 2 and "Excel 97-2003" in bad.stderr


# --- watched folders in the daemon ---------------------------------------------------------------


class WatchedFolderTests(DaemonCase):
    tmp_prefix = "smsgw-inbox-"

    async def started(self, **inbox: Any) -> tuple[Config, pathlib.Path]:
        folder = self.tmp / "inbox"
        settings = {"dir": str(folder), "account": "demo", "poll_interval": 0.1, **inbox}
        config = load_config(str(write_config(self.tmp, {"file_import": {"inboxes": [settings]}})), {})
        await self.daemon(config)
        return config, folder

    @staticmethod
    def drop(folder: pathlib.Path, name: str, data: bytes) -> None:
        """Write as a .tmp (ignored), then rename: how a file should arrive."""
        (folder / f"{name}.tmp").write_bytes(data)
        (folder / f"{name}.tmp").rename(folder / name)

    async def test_a_dropped_file_is_imported_moved_to_done_and_logged(self) -> None:
        """A CSV dropped in the folder is sent (interface file), moved to done/ beside its result, one log line."""
        (self.tmp / "inbox").mkdir()
        with capture_logs() as logs:
            config, folder = await self.started(text=TEMPLATE_TEXT)
            data = "手机号,name,code\n13800138000,张三,1\n138,x,2\n13900139000,李四,3\n".encode("gbk")
            self.drop(folder, "批次1.csv", data)
            await wait_for(lambda: (folder / "done" / "批次1.csv.result.csv").exists(), what="the result file")
        assert not (folder / "批次1.csv").exists() and (folder / "done" / "批次1.csv").read_bytes() == data
        assert sorted(rows(config, "SELECT content, interface, priority FROM messages")) == [
            ("尊敬的张三，您的验证码是1。", "file", 0), ("尊敬的李四，您的验证码是3。", "file", 0)]
        assert [line[2] for line in result_lines(folder / "done" / "批次1.csv.result.csv")] == [
            "accepted", "invalid", "accepted"]
        [done] = [e for e in logs if e["event"] == "file_import_done"]
        assert {k: done[k] for k in ("file", "outcome", "encoding", "rows", "accepted", "repeated", "invalid",
                                     "duplicates", "messages", "segments")} == {
            "file": "批次1.csv", "outcome": "done", "encoding": "GB18030 (GBK)", "rows": 3, "accepted": 2,
            "repeated": 0, "invalid": 1, "duplicates": 0, "messages": 2, "segments": 2}

    async def test_the_same_file_again_is_not_sent_twice(self) -> None:
        """A file taken again (as after a crash before it was moved) answers with the stored messages."""
        (self.tmp / "inbox").mkdir()
        config, folder = await self.started(text="会议通知")
        data = b"13800138000\n13900139000\n"
        self.drop(folder, "a.txt", data)
        await wait_for(lambda: (folder / "done" / "a.txt").exists(), what="a.txt done")
        self.drop(folder, "a.txt", data)
        await wait_for(lambda: (folder / "done" / "a-2.txt.result.csv").exists(), what="the second result")
        assert count(config, "messages") == 1 and count(config, "recipients") == 2
        assert [line[3] for line in result_lines(folder / "done" / "a-2.txt.result.csv")] == [
            "sent before by an import of this same file: not sent again"] * 2

    async def test_unreadable_and_all_invalid_files_go_to_failed(self) -> None:
        """A damaged XLSX and a file without a valid row are moved to failed/ with a result saying why."""
        (self.tmp / "inbox").mkdir()
        config, folder = await self.started(text="hi")
        self.drop(folder, "broken.xlsx", b"PK\x03\x04 not really a workbook")
        self.drop(folder, "bad.csv", b"123\n456\n")
        await wait_for(lambda: (folder / "failed" / "bad.csv.result.csv").exists()
                       and (folder / "failed" / "broken.xlsx.result.csv").exists(), what="both failed")
        [[_, _, outcome, reason, _]] = result_lines(folder / "failed" / "broken.xlsx.result.csv")
        assert outcome == "failed" and "damaged ZIP/XLSX" in reason
        assert [line[2] for line in result_lines(folder / "failed" / "bad.csv.result.csv")] == ["invalid"] * 2
        assert count(config, "messages") == 0

    async def test_a_named_template_fills_from_the_columns_and_is_recorded(self) -> None:
        """An inbox with template: renders the daemon's template per row and records its name."""
        (self.tmp / "inbox").mkdir()
        config, folder = await self.started(template="notice")
        api = Client(f"http://127.0.0.1:{config.api.port}", DEMO_KEY)
        self.addCleanup(api.close)
        await deferToThread(api.put_template, "notice", "{name}，明天{time}停水。")
        self.drop(folder, "t.csv", "手机,name,time\n13800138000,张三,8:00\n".encode())
        await wait_for(lambda: (folder / "done" / "t.csv").exists(), what="t.csv done")
        assert rows(config, "SELECT content, template, interface FROM messages") == [
            ("张三，明天8:00停水。", "notice", "file")]

    async def test_the_rate_limit_is_waited_out(self) -> None:
        """Batches the account's rate limit refuses are sent again once it allows them."""
        folder = self.tmp / "inbox"
        folder.mkdir()
        settings = {"dir": str(folder), "account": "demo", "poll_interval": 0.1}
        config = load_config(str(write_config(self.tmp, {
            "api": {"max_batch": 1}, "file_import": {"inboxes": [settings]},
            "accounts": [{"name": "demo", "api_key_sha256": key_hash(DEMO_KEY),
                          "rate_limit": {"per_second": 4, "burst": 1}}]})), {})
        with capture_logs() as logs:
            await self.daemon(config)
            self.drop(folder, "m.csv", b"mobile,content\n13800138000,a\n13900139000,b\n13700137000,c\n")
            await wait_for(lambda: (folder / "done" / "m.csv").exists(), what="m.csv done")
        assert any(e["event"] == "limit_exceeded" for e in logs) and count(config, "messages") == 3

    async def test_the_daily_quota_stops_the_file_until_it_resets(self) -> None:
        """What fits the daily quota is accepted; the file stays, not taken again before the quota resets."""
        (self.tmp / "inbox").mkdir()
        folder = self.tmp / "inbox"
        settings = {"dir": str(folder), "account": "demo", "poll_interval": 0.1}
        config = load_config(str(write_config(self.tmp, {
            "api": {"max_batch": 1}, "file_import": {"inboxes": [settings]},
            "accounts": [{"name": "demo", "api_key_sha256": key_hash(DEMO_KEY), "daily_quota": 2}]})), {})
        with capture_logs() as logs:
            await self.daemon(config)
            self.drop(folder, "m.csv", b"mobile,content\n13800138000,a\n13900139000,b\n13700137000,c\n")
            await wait_for(lambda: any(e["event"] == "file_import_interrupted" for e in logs), what="interrupted")
            await spin(0.5)
        assert [e["event"] for e in logs].count("file_import_interrupted") == 1
        assert (folder / "m.csv").exists() and count(config, "messages") == 2

    async def test_hidden_partial_and_lock_files_are_left_alone(self) -> None:
        """Dotfiles, *.tmp, *.part and Excel's ~$ lock files stay where they are, unread."""
        folder = self.tmp / "inbox"
        folder.mkdir()
        names = [".hidden.csv", "x.csv.tmp", "y.csv.part", "~$z.xlsx"]
        for name in names:
            (folder / name).write_bytes(b"13800138000\n")
        config, _ = await self.started(text="hi")
        await spin(0.8)
        assert sorted(p.name for p in folder.iterdir() if p.is_file()) == sorted(names)
        assert count(config, "messages") == 0

    async def test_a_missing_folder_raises_an_alarm_until_it_exists(self) -> None:
        """A folder that does not exist is an alarm (once); once created, its files are imported."""
        with capture_logs() as logs:
            config, folder = await self.started(text="hi")
            await wait_for(lambda: any(e.get("alarm") == "file_inbox_unusable" for e in logs), what="the alarm")
            await spin(0.4)
            folder.mkdir()
            self.drop(folder, "n.txt", b"13800138000\n")
            await wait_for(lambda: (folder / "done" / "n.txt").exists(), what="n.txt done")
        assert [e["event"] for e in logs if e.get("alarm") == "file_inbox_unusable"] == ["alarm"]
        assert any(e["event"] == "file_inbox_recovered" for e in logs)
        assert count(config, "messages") == 1


# --- beside a FakeGateway: what the gateway can answer ------------------------------------------


class _Gateway(FakeGateway):
    accepting = True


class InboxWithFakeGatewayTests(DaemonCase):
    tmp_prefix = "smsgw-inbox-fake-"

    def inbox(self, gateway: _Gateway, validator: Validator | None = None, **settings: Any) -> FileInbox:
        folder = self.tmp / "inbox"
        folder.mkdir(exist_ok=True)
        cfg = FileInboxConfig(dir=str(folder), account="demo", poll_interval=0.05, **settings)
        service = FileInbox(cfg, gateway, validator or Validator(), Account("demo"), R, batch=2)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    async def test_an_unavailable_gateway_leaves_the_file_for_later(self) -> None:
        """While the gateway cannot take messages the file stays; once it can, the file is imported."""
        gateway = _Gateway()
        gateway.mode = "unavailable"
        service = self.inbox(gateway, text="hi")
        folder = pathlib.Path(service.cfg.path())
        with capture_logs() as logs:
            (folder / "n.txt").write_bytes(b"13800138000\n13900139000\n")
            await wait_for(lambda: any(e["event"] == "file_import_interrupted" for e in logs), what="interrupted")
        assert (folder / "n.txt").exists() and not gateway.accepted_requests
        gateway.mode = "normal"
        await wait_for(lambda: (folder / "done" / "n.txt").exists(), what="imported")
        assert [(name, interface) for name, interface, _ in gateway.accepted_requests] == [("demo", "file")]

    async def test_rows_the_gateway_refuses_are_invalid_and_the_rest_accepted(self) -> None:
        """A refusal naming "[i].to[j]" marks that row invalid; the batch goes again without it."""
        gateway = _Gateway()
        service = self.inbox(gateway, Validator(allow_other=True))
        folder = pathlib.Path(service.cfg.path())
        (folder / "m.csv").write_bytes(b"mobile,content\n13800138000,a\n+447700900123,b\n13900139000,c\n")
        await wait_for(lambda: (folder / "done" / "m.csv.result.csv").exists(), what="the result")
        lines = result_lines(folder / "done" / "m.csv.result.csv")
        assert [line[2] for line in lines] == ["accepted", "invalid", "accepted"] and "bad_number" in lines[1][3]
        sent = [r.text for _, _, requests in gateway.accepted_requests for r in requests]
        assert sorted(sent) == ["a", "c"]

    async def test_a_stop_waits_for_the_batch_under_way_and_leaves_the_file(self) -> None:
        """stop_polling fires once the batch being committed is answered; the rest of the file waits in the folder."""
        gateway = _Gateway()
        gateway.mode = "hold"
        service = self.inbox(gateway)
        folder = pathlib.Path(service.cfg.path())
        data = "".join(f"138{i:08d},text {i}\n" for i in range(5)).encode()  # 5 messages: 3 batches of 2
        (folder / "n.txt").write_bytes(data)
        await wait_for(lambda: bool(gateway.held), what="a batch being committed")
        stopped = service.stop_polling()
        await spin(0.2)
        assert not stopped.called
        gateway.release()
        await stopped
        assert (folder / "n.txt").read_bytes() == data and not (folder / "done" / "n.txt").exists()
        assert len(gateway.accepted_requests) == 1

    async def test_an_unexpected_failure_is_an_alarm_and_the_file_is_not_taken_again_until_it_changes(self) -> None:
        """A gateway failing with an unexpected error raises one alarm; the file stays, left alone until touched."""
        gateway = _Gateway()
        gateway.mode = "broken"
        service = self.inbox(gateway, text="hi")
        folder = pathlib.Path(service.cfg.path())
        with capture_logs() as logs:
            (folder / "n.txt").write_bytes(b"13800138000\n")
            await wait_for(lambda: any(e.get("alarm") == "file_import_failed" for e in logs), what="the alarm")
            await spin(0.4)
            assert [e.get("alarm") for e in logs].count("file_import_failed") == 1
            gateway.mode = "normal"
            (folder / "n.txt").write_bytes(b"13800138000\n13900139000\n")
            await wait_for(lambda: (folder / "done" / "n.txt").exists(), what="imported once changed")

    async def test_a_gateway_refusing_the_account_fails_the_file(self) -> None:
        """A refusal of the request as a whole (no row named) moves the file to failed/ with the reason."""

        class Refusing(_Gateway):
            def accept(self, account: Account, interface: str, requests: Any) -> Any:
                from twisted.internet.defer import fail

                from smsgw.model import Problem, RequestRejected

                return fail(RequestRejected([Problem("", "interface_not_allowed", "may not use 'file'")]))

        service = self.inbox(Refusing(), text="hi")
        folder = pathlib.Path(service.cfg.path())
        (folder / "n.txt").write_bytes(b"13800138000\n")
        await wait_for(lambda: (folder / "failed" / "n.txt.result.csv").exists(), what="failed")
        [[_, _, outcome, reason, _]] = result_lines(folder / "failed" / "n.txt.result.csv")
        assert outcome == "not_sent" and "interface_not_allowed" in reason
