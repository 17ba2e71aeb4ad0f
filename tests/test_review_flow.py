"""The review flow end to end (issue 6 §7): a 10,000-recipient import held for review → a notice SMS to the
reviewer → approved in bulk as one batch → sent at its scheduled time, not before → delivered; and the
review export of the batch read back and checked."""

from __future__ import annotations

import datetime
import time

import openpyxl
from twisted.internet.threads import deferToThread

from daemon_helpers import DEMO_KEY, DaemonCase, account, count, make_config, rows, spin, wait_for
from smsgw.client import Client
from test_file_import_daemon import smsgw

REVIEWER_PHONE = "13900000000"
TEXT = "【东城区】明天8:00至18:00停水，请提前储水。"


class ReviewFlowTests(DaemonCase):
    tmp_prefix = "smsgw-review-flow-"
    timeout = 180

    async def test_import_held_notified_approved_scheduled_delivered_exported(self) -> None:
        config = make_config(self.tmp, {
            "accounts": [account("demo", DEMO_KEY, permissions=["review"])],
            "review": {"rules": [{"name": "imports", "action": "review", "interfaces": ["file"]}],
                       "reviewers": [{"name": "li", "phones": [REVIEWER_PHONE], "accounts": ["demo"]}],
                       "notify": {"hours": "00:00-24:00", "interval": 60}}})
        daemon = await self.daemon(config)
        numbers = [f"137{i:08d}" for i in range(10_000)]
        (self.tmp / "notice.txt").write_text("\n".join(numbers) + "\n", encoding="utf-8")
        send_at = int(time.time()) + 15
        at = datetime.datetime.fromtimestamp(send_at, datetime.timezone(datetime.timedelta(hours=8)))

        done = await deferToThread(smsgw, "import", str(self.tmp / "notice.txt"), "-c",
                                   str(self.tmp / "smsgw.yaml"), "--key", DEMO_KEY, "--text", TEXT,
                                   "--at", at.isoformat(), "--yes")
        assert done.returncode == 0, done.stderr
        assert "10,000 read: 10,000 valid" in done.stdout, done.stdout
        assert "review:    10,000 row(s) wait for a reviewer (batch demo:imp-" in done.stdout, done.stdout
        [(batch, held, total)] = rows(config, "SELECT batch, count(*), sum(recipients) FROM messages "
                                              "WHERE interface = 'file' GROUP BY batch")
        assert (held, total) == (10, 10_000)  # one batch of 10 messages of 1,000 numbers
        assert rows(config, "SELECT DISTINCT review, review_rule FROM messages WHERE interface = 'file'") == [
            ("pending", "imports")]
        assert count(config, "recipients", "state = 'held'") == 10_000

        # The reviewer is told by SMS, through the gateway, and the notice itself is not held.
        await wait_for(lambda: count(config, "recipients", f"phone = '{REVIEWER_PHONE}' AND state = 'delivered'")
                       == 1, what="the reviewer's notice delivered")
        [(notice,)] = rows(config, "SELECT content FROM messages WHERE interface = 'review_notice'")
        assert "10 messages (10000 recipients)" in notice, notice

        api = Client(f"http://{daemon.api_address()}", DEMO_KEY)
        self.addCleanup(api.close)
        page = await deferToThread(api.review_list, None, limit=5)
        assert page.total == 10 and page.items[0].batch == batch
        result = await deferToThread(api.review_approve, batch=batch, comment="已核对")
        assert len(result.messages) == 10 and result.recipients == 10_000
        assert count(config, "recipients", "state = 'queued'") == 10_000

        # Approved, but not sent before its time.
        while time.time() < send_at - 2:
            assert count(config, "segments") == 1  # the notice only
            await spin(1.0)
        await wait_for(lambda: count(config, "recipients", "state = 'delivered'") == 10_001, timeout=120,
                       what="the whole batch delivered")
        [(first,)] = rows(config, "SELECT min(submitted_at) FROM recipients WHERE phone LIKE '137%'")
        assert first >= send_at

        export = self.tmp / "batch.xlsx"
        got = await deferToThread(api.review_export, str(export), None)
        assert got.rows == 10
        sheet = openpyxl.load_workbook(export, read_only=True)["review"]
        table = [list(r) for r in sheet.iter_rows(values_only=True)]
        header, data = table[0], table[1:]
        col = {name: i for i, name in enumerate(header)}
        assert len(data) == 10
        assert {r[col["batch"]] for r in data} == {batch}
        assert {r[col["text"]] for r in data} == {TEXT}
        assert {r[col["review state"]] for r in data} == {"approved"}
        assert {r[col["reviewed by"]] for r in data} == {"li"}
        assert {r[col["comment"]] for r in data} == {"已核对"}
        exported = [n for r in data for n in str(r[col["numbers"]]).split(";")]
        assert sorted(exported) == numbers
        audit = rows(config, "SELECT actor, action, subject FROM audit_log")
        assert audit == [("li", "review_approve", f"batch:{batch}")]
