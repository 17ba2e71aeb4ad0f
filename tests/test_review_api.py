"""The review queue for reviewers (docs/review.md): the REST API, the Python client and the CLI on a real
daemon (query, approve, reject, identity and permissions, exports), cancelling before a message goes out,
and property tests of the query and body parsers."""

from __future__ import annotations

import csv
import datetime
import functools
import hashlib
import io
import json
import pathlib
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.server import Site

from daemon_helpers import DEMO_KEY, R, DaemonCase, account, numbers, rows, spin, wait_for, write_config
from openapi_check import check_response
from fake_gateway import FakeGateway
from smsgw import review_export
from smsgw._api_codec import ApiError
from smsgw._openapi import build_openapi
from smsgw._review_codec import (
    named_reviewer,
    parse_action_body,
    parse_export_query,
    parse_list_query,
    reviewer_for,
)
from smsgw.api import make_api
from smsgw.cli_review import fit, width
from smsgw.client import ApiError as ClientApiError, Client, Message, ReviewFilter, TwistedClient
from smsgw.config import Config, load_config
from smsgw.model import Account
from smsgw.store import ReviewItem
from test_api import parse_replies
from test_cli import smsgw
from test_templates import blocking

CHECKER, AUDITOR, PLAIN, OTHER = "checker-key", "auditor-key", "plain-key", "other-key"
WATER = "【东城区】明天8:00至18:00停水，请提前储水。"
N = numbers(12)  # 13800000000, 13800000001, ...
DOC = build_openapi(max_batch=1000, max_body_bytes=4 * 1024 * 1024)


def review_config(directory: pathlib.Path, **overrides: Any) -> tuple[pathlib.Path, Config]:
    """Three rules (mass sends, a word list, file imports), two reviewers: zhang.wei acts through the
    checker account only, li.na through any account with the review permission that names her."""
    path = write_config(directory, {
        "accounts": [account("demo", DEMO_KEY), account("other", OTHER),
                     account("checker", CHECKER, permissions=["review"]),
                     account("auditor", AUDITOR, permissions=["review"]), account("plain", PLAIN)],
        "review": {"rules": [{"name": "mass", "action": "review", "min_recipients": 3},
                             {"name": "words", "action": "review", "words": ["停水", "=SUM"]},
                             {"name": "imports", "action": "review", "interfaces": ["file"]}],
                   "reviewers": [{"name": "zhang.wei", "accounts": ["checker"]}, {"name": "li.na"}]},
        **overrides}, embedded_simulator=False)
    return path, load_config(str(path), {})


class Http:
    """Real HTTP to the daemon, every answer checked against the OpenAPI document."""

    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base, key

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON, or the bytes of a file download)."""
        result: tuple[int, dict[str, str], Any] = await blocking(self._blocking, method, path, body, headers or {})
        return result

    async def get(self, path: str, **query: Any) -> tuple[int, Any]:
        status, _, answer = await self.call("GET", path + ("?" + urllib.parse.urlencode(query) if query else ""))
        return status, answer

    async def post(self, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        status, _, answer = await self.call("POST", path, body, {k.replace("_", "-"): v for k, v in headers.items()})
        return status, answer

    def _blocking(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in headers.items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, got, raw = response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as error:
            status, got, raw = error.code, dict(error.headers.items()), error.read()
        lower = {k.lower(): v for k, v in got.items()}
        check_response(DOC, method, path, status, lower, raw)
        return status, lower, json.loads(raw) if lower.get("content-type") == "application/json" else raw


class ReviewCase(DaemonCase):
    async def start(self, simulator: bool = False, **overrides: Any) -> Any:
        self.path, self.config = review_config(self.tmp, **overrides)
        if simulator:
            self.simulator(self.config)
        daemon = await self.daemon(self.config)
        self.base = f"http://{daemon.api_address()}"
        self.demo, self.checker = Http(self.base, DEMO_KEY), Http(self.base, CHECKER)
        self.auditor, self.plain = Http(self.base, AUDITOR), Http(self.base, PLAIN)
        return daemon

    def client(self, key: str) -> Client:
        client = Client(self.base, key, timeout=10)
        self.addCleanup(client.close)
        return client

    async def send(self, body: Any, key: str = DEMO_KEY) -> str:
        status, _, answer = await Http(self.base, key).call("POST", "/api/v1/messages", body)
        assert status == 202, answer
        await spin(0.01)  # distinct creation times, so since/until can tell them apart
        return str(answer["messages"][0]["id"])

    def states(self, message_id: str) -> list[str]:
        return [s for (s,) in rows(self.config, "SELECT state FROM recipients WHERE message_id = ? ORDER BY id",
                                   int(message_id))]


def ids_of(answer: Any) -> list[str]:
    return [item["id"] for item in answer["items"]]


class QueryTests(ReviewCase):
    async def test_held_messages_are_listed_by_each_filter_and_together(self) -> None:
        """Held messages are listed oldest first by each filter, by several together, a page at a time, and one by id
        with every number."""
        await self.start()
        mass = await self.send({"to": N[:7], "text": "通知：本周五下午三点例会"})
        water = await self.send({"to": N[0], "text": WATER})
        passed = await self.send({"to": N[8], "text": "hello"})
        others = await self.send({"to": N[0], "text": "其他单位停水通知"}, OTHER)
        [imported] = await blocking(self.client(DEMO_KEY).send_many, [Message(N[9], "导入的通知")], origin="file")

        status, page = await self.checker.get("/api/v1/review")
        assert status == 200 and ids_of(page) == [mass, water, others, imported.id]
        assert (page["total"], page["total_recipients"], page["offset"], page["limit"]) == (4, 10, 0, 50)
        first = page["items"][0]
        assert (first["recipients"], first["numbers"], first["review"], first["rule"], first["state"]) == (
            7, N[:5], "pending", "mass", "pending_review")
        assert (first["account"], first["interface"], first["batch"], first["text"]) == (
            "demo", "rest", mass, "通知：本周五下午三点例会")

        async def listed(**query: Any) -> list[str]:
            status, answer = await self.checker.get("/api/v1/review", **query)
            assert status == 200, answer
            return ids_of(answer)

        assert await listed(content="停水") == [water, others]
        assert await listed(to="+86 138 0000 0000") == [mass, water, others]
        assert await listed(to="8613800000000", content="停水", account="demo") == [water]
        assert await listed(interface="file") == [imported.id]
        assert await listed(interface="rest", account="other") == [others]
        assert await listed(batch=mass) == [mass]
        assert await listed(state="any") == [mass, water, passed, others, imported.id]
        assert await listed(state="passed,pending", content="hello") == [passed]
        assert await listed(state="approved") == []
        water_at = datetime.datetime.fromisoformat(page["items"][1]["created_at"]).timestamp()
        assert await listed(since=water_at) == [water, others, imported.id]
        assert await listed(until=page["items"][1]["created_at"], state="any") == [mass]
        in_china = datetime.datetime.fromtimestamp(water_at, datetime.timezone(datetime.timedelta(hours=8)))
        assert await listed(since=in_china.isoformat(), until=water_at + 0.001) == [water]

        status, paged = await self.checker.get("/api/v1/review", limit=2, offset=1)
        assert ids_of(paged) == [water, others] and (paged["total"], paged["offset"], paged["limit"]) == (4, 1, 2)

        # One message with every number.
        status, one = await self.checker.get(f"/api/v1/review/{mass}")
        assert status == 200 and one["numbers"] == N[:7] and one["id"] == mass
        for missing in ("999", "abc", "9" * 30):
            status, answer = await self.checker.get(f"/api/v1/review/{missing}")
            assert status == 404 and answer["error"]["code"] == "not_found", missing

    async def test_bad_query_parameters_are_refused_naming_them(self) -> None:
        """A bad, unknown or repeated query parameter is a 400 whose message and details name it."""
        await self.start()
        cases = [
            ({"limit": "0"}, "limit", "limit must be a whole number from 1 to 1000"),
            ({"limit": "1001"}, "limit", "not \"1001\""),
            ({"offset": "-1"}, "offset", "offset must be a whole number"),
            ({"state": "waiting"}, "state", "state \"waiting\" is not a review state"),
            ({"state": "pending,"}, "state", "state \"\" is not a review state"),
            ({"since": "2024-03-05 08:00"}, "since", "has no UTC offset"),
            ({"until": "yesterday"}, "until", "is not an ISO-8601 time"),
            ({"since": "1700000000", "until": "1600000000"}, "until", "until must be later than since"),
            ({"to": "12345"}, "to", "to: '12345' has 5 digits"),
            ({"interface": "ftp"}, "interface", "interface \"ftp\" is not one"),
            ({"interface": "db:"}, "interface", "db:<source>"),
            ({"content": ""}, "content", "content \"\" must be 1 to 1000 characters"),
            ({"sort": "id"}, "sort", "unknown query parameter \"sort\": the parameters are content, to"),
        ]
        for query, where, message in cases:
            status, answer = await self.checker.get("/api/v1/review", **query)
            assert status == 400, (query, answer)
            error = answer["error"]
            assert error["code"] == "bad_request" and message in error["message"], (query, error)
            assert [d["where"] for d in error["details"]] == [where], (query, error)
        status, answer = await self.checker.get("/api/v1/review?state=pending&state=approved")
        assert status == 400 and "state is given 2 times: give it once: several states go in one" in (
            answer["error"]["message"])
        status, answer = await self.checker.get("/api/v1/review", limit="x", state="nope")
        assert status == 400 and answer["error"]["message"].startswith("2 problems with the query parameters: ")


class ActionTests(ReviewCase):
    async def test_approved_messages_go_out_by_ids_batch_and_filter(self) -> None:
        """Held messages wait until approved by ids, batch or filter; then the simulator delivers them, and each
        action is audited once."""
        await self.start(simulator=True)
        single = await self.send({"to": N[0], "text": WATER})
        part1 = await self.send({"to": N[1:3], "text": "第一批：明日停电通知", "batch": "notice-1", "batch_size": 4})
        part2 = await self.send({"to": N[3:5], "text": "第二批：明日停电通知", "batch": "notice-1", "batch_size": 4})
        target = await self.send({"to": N[5:8], "text": "区政府通知 filter-target"})
        passed = await self.send({"to": N[8], "text": "hello"})
        await wait_for(lambda: self.states(passed) == ["delivered"], what="the unreviewed message delivered")
        await spin(0.3)
        for held in (single, part1, part2, target):
            assert set(self.states(held)) == {"held"}, held

        status, done = await self.checker.post("/api/v1/review/approve", {"ids": [single], "comment": "ok"})
        assert status == 200 and done == {"action": "approve", "reviewer": "zhang.wei", "messages": [single],
                                          "recipients": 1, "unchanged": []}
        status, done = await self.checker.post("/api/v1/review/approve", {"batch": "demo:notice-1"})
        assert status == 200 and (sorted(done["messages"]), done["recipients"]) == (sorted([part1, part2]), 4)

        # A filter must narrow something, or say "all": true.
        unbounded: dict[str, Any]
        for unbounded in ({"filter": {}}, {"filter": {"state": "pending"}}):
            status, refused = await self.checker.post("/api/v1/review/approve", unbounded)
            assert status == 422 and refused["error"]["details"][0]["code"] == "unbounded", refused
            assert "send \"all\": true" in refused["error"]["details"][0]["message"]
        status, done = await self.checker.post("/api/v1/review/approve",
                                               {"filter": {"content": "filter-target", "account": "demo"}})
        assert status == 200 and done["messages"] == [target] and done["recipients"] == 3

        await wait_for(lambda: all(set(self.states(m)) == {"delivered"} for m in (single, part1, part2, target)),
                       what="the approved messages delivered")
        status, again = await self.checker.post("/api/v1/review/approve", {"ids": [single, "12345"]})
        assert status == 200 and again["messages"] == [] and again["unchanged"] == [single, "12345"]

        # "all": true approves everything still waiting (here, one message sent now).
        last = await self.send({"to": N[9], "text": "最后一条停水通知"})
        status, done = await self.checker.post("/api/v1/review/approve", {"filter": {}, "all": True})
        assert status == 200 and done["messages"] == [last]

        status, approved = await self.checker.get("/api/v1/review", state="approved")
        assert len(approved["items"]) == 5 and {i["reviewed_by"] for i in approved["items"]} == {"zhang.wei"}
        assert approved["items"][0]["comment"] == "ok" and approved["items"][0]["reviewed_at"] is not None
        audit = rows(self.config, "SELECT action, actor, subject FROM audit_log ORDER BY at, id")
        assert audit == [("review_approve", "zhang.wei", "messages:1"), ("review_approve", "zhang.wei",
                                                                          "batch:demo:notice-1"),
                         ("review_approve", "zhang.wei", "messages:1"), ("review_approve", "zhang.wei", "messages:1")]

    async def test_reject_needs_a_comment_and_ends_recipients_rejected(self) -> None:
        """A reject needs a comment; its recipients end rejected, the sender sees why, and the audit log has the row."""
        await self.start()
        held = await self.send({"to": N[:2], "text": WATER})
        status, refused = await self.auditor.post("/api/v1/review/reject", {"ids": [held]}, X_Smsgw_Reviewer="li.na")
        assert status == 422 and [(d["where"], d["code"]) for d in refused["error"]["details"]] == [
            ("comment", "required")]
        assert "say why, the sender is told" in refused["error"]["details"][0]["message"]

        status, done = await self.auditor.post("/api/v1/review/reject", {"ids": [held], "comment": "日期写错了"},
                                               X_Smsgw_Reviewer="li.na")
        assert status == 200 and done == {"action": "reject", "reviewer": "li.na", "messages": [held],
                                          "recipients": 2, "unchanged": []}
        assert self.states(held) == ["rejected", "rejected"]
        assert rows(self.config, "SELECT state, review, reviewed_by, review_comment FROM messages") == [
            ("completed", "rejected", "li.na", "日期写错了")]
        status, view = await self.demo.get(f"/api/v1/messages/{held}")  # what the sender sees
        assert view["state"] == "completed" and {r["state"] for r in view["recipients"]} == {"rejected"}
        assert view["recipients"][0]["error"] == "rejected in review by li.na: 日期写错了"
        [(action, actor, details)] = rows(self.config, "SELECT action, actor, details FROM audit_log")
        assert (action, actor) == ("review_reject", "li.na")
        assert json.loads(details)["comment"] == "日期写错了" and json.loads(details)["messages"] == [held]
        status, shown = await self.checker.get(f"/api/v1/review/{held}")
        assert (shown["review"], shown["reviewed_by"], shown["comment"]) == ("rejected", "li.na", "日期写错了")

    async def test_only_review_accounts_may_use_the_queue_and_the_reviewer_must_be_clear(self) -> None:
        """Accounts without the review permission get 403; approve refuses a missing, unknown or not-allowed reviewer
        and changes nothing."""
        await self.start()
        held = await self.send({"to": N[0], "text": WATER})
        for method, path, body in (("GET", "/api/v1/review", None), ("GET", f"/api/v1/review/{held}", None),
                                   ("GET", "/api/v1/review/export", None),
                                   ("POST", "/api/v1/review/approve", {"ids": [held]}),
                                   ("POST", "/api/v1/review/reject", {"ids": [held], "comment": "x"})):
            for who in (self.plain, self.demo):
                status, _, answer = await who.call(method, path, body)
                assert status == 403 and answer["error"]["code"] == "forbidden", (path, answer)
                assert "may not use the review queue" in answer["error"]["message"]
                assert "add \"review\" to its permissions" in answer["error"]["message"]

        refused = await blocking(_raises, self.client(PLAIN).review_export, str(self.tmp / "x.xlsx"))
        assert refused.status == 403 and list(self.tmp.glob("*.xlsx")) + list(self.tmp.glob(".smsgw-export-*")) == []

        # auditor acts for no reviewer by itself: it must name one.
        status, answer = await self.auditor.post("/api/v1/review/approve", {"ids": [held]})
        assert status == 400 and answer["error"]["code"] == "reviewer_required"
        assert "X-Smsgw-Reviewer" in answer["error"]["message"] and "--as NAME" in answer["error"]["message"]
        assert "li.na, zhang.wei" in answer["error"]["message"]
        status, answer = await self.checker.post("/api/v1/review/approve", {"ids": [held], "reviewer": "nobody"})
        assert status == 400 and answer["error"]["code"] == "unknown_reviewer"
        assert "\"nobody\" is not a reviewer" in answer["error"]["message"]
        status, answer = await self.auditor.post("/api/v1/review/approve", {"ids": [held], "reviewer": "zhang.wei"})
        assert status == 403 and "may not act as reviewer 'zhang.wei', who acts through checker" in (
            answer["error"]["message"])
        status, answer = await self.auditor.post("/api/v1/review/approve", {"ids": [held], "reviewer": "li.na"},
                                                 X_Smsgw_Reviewer="zhang.wei")
        assert status == 400 and "name one" in answer["error"]["message"]
        assert set(self.states(held)) == {"held"}  # nothing above changed anything

        status, done = await self.checker.post("/api/v1/review/approve", {"ids": [held]}, X_Smsgw_Reviewer="li.na")
        assert status == 200 and done["reviewer"] == "li.na" and done["messages"] == [held]

    async def test_bad_bodies_list_every_problem(self) -> None:
        """An approve body with several problems is a 422 naming each; an empty body is a 400."""
        await self.start()
        status, answer = await self.checker.post("/api/v1/review/approve", {"ids": [], "batch": "x", "colour": 1})
        assert status == 422
        codes = sorted((d["where"], d["code"]) for d in answer["error"]["details"])
        assert codes == [("", "several_selectors"), ("colour", "unknown_field")]
        status, answer = await self.checker.post("/api/v1/review/approve", {"ids": ["12", "x", -3], "all": True})
        assert status == 422
        assert sorted((d["where"], d["code"]) for d in answer["error"]["details"]) == [
            ("all", "bad_value"), ("ids[1]", "bad_id"), ("ids[2]", "bad_id")]
        status, answer = await self.checker.post("/api/v1/review/approve",
                                                 {"filter": {"content": "x", "since": "soon", "mood": "good"}})
        assert sorted(d["where"] for d in answer["error"]["details"]) == ["filter.mood", "filter.since"]
        status, _, answer = await self.checker.call("POST", "/api/v1/review/approve")
        assert status == 400 and "the body is empty: send which messages to approve" in answer["error"]["message"]


class ExportTests(ReviewCase):
    async def test_exports_hold_every_matching_message_with_chinese_text_intact(self) -> None:
        """CSV and XLSX exports hold every matching message, Chinese text intact, formulas as text, and too large a
        query is refused."""
        await self.start()
        mass = await self.send({"to": N[:7], "text": "公告：本周五下午三点例会"})
        water = await self.send({"to": N[7], "text": WATER, "batch": "水务"})
        formula = await self.send({"to": N[8], "text": "=SUM(A1:A9) 看起来像公式"})
        await self.send({"to": N[9], "text": "hello"})  # passes: not in the default export
        items = {m["id"]: m for m in (await self.checker.get("/api/v1/review", state="any"))[1]["items"]}

        # CSV over plain HTTP: a download with a name, UTF-8 with a BOM, the rows asked for.
        status, headers, body = await self.checker.call("GET", "/api/v1/review/export?format=csv")
        assert status == 200 and headers["content-type"] == "text/csv; charset=utf-8"
        assert headers["content-disposition"].startswith('attachment; filename="review-')
        assert headers["content-disposition"].endswith('.csv"') and headers["x-smsgw-rows"] == "3"
        assert body.startswith(b"\xef\xbb\xbf")
        table = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
        assert tuple(table[0]) == review_export.HEADER
        assert [row[0] for row in table[1:]] == [mass, water, formula]
        by_id = {row[0]: dict(zip(review_export.HEADER, row)) for row in table[1:]}
        assert by_id[mass]["numbers"] == ";".join(N[:7]) and by_id[mass]["recipients"] == "7"
        assert by_id[water]["text"] == WATER and by_id[water]["batch"] == "demo:水务"
        assert by_id[formula]["text"] == "'=SUM(A1:A9) 看起来像公式"  # never run as a formula
        created = datetime.datetime.fromisoformat(items[water]["created_at"]).timestamp()
        local = datetime.datetime.fromtimestamp(created)
        assert by_id[water]["created at (local time)"] == f"{local:%Y-%m-%d %H:%M:%S}"
        assert (by_id[water]["review state"], by_id[water]["rule"], by_id[water]["reviewed by"]) == (
            "pending", "words", "")

        # XLSX through the client: filters apply, real dates, ids as text, formulas stay text.
        target = self.tmp / "审核导出.xlsx"
        done = await blocking(self.client(CHECKER).review_export, str(target), ReviewFilter(content="公"))
        assert (done.format, done.rows, done.size) == ("xlsx", 2, target.stat().st_size)
        sheet = openpyxl.load_workbook(target).active
        assert sheet is not None
        values = [[cell.value for cell in row] for row in sheet.iter_rows()]
        assert tuple(values[0]) == review_export.HEADER
        assert [row[0] for row in values[1:]] == [mass, formula]
        assert values[2][8] == "=SUM(A1:A9) 看起来像公式" and sheet.cell(3, 9).data_type == "s"
        assert values[1][7] == ";".join(N[:7]) and values[1][6] == 7 and values[1][1] == mass
        mass_created = datetime.datetime.fromisoformat(items[mass]["created_at"]).timestamp()
        assert values[1][4] == datetime.datetime.fromtimestamp(mass_created).replace(microsecond=0)

        # The default format is xlsx; bad parameters name themselves; too large is refused.
        status, headers, body = await self.checker.call("GET", "/api/v1/review/export?content=%E5%81%9C%E6%B0%B4")
        assert status == 200 and headers["x-smsgw-rows"] == "1" and body[:2] == b"PK"
        status, answer = await self.checker.get("/api/v1/review/export", format="pdf", offset=5)
        assert status == 400 and sorted(d["where"] for d in answer["error"]["details"]) == ["format", "offset"]
        assert "an export holds the whole result: leave out offset and limit" in answer["error"]["message"]
        self.addCleanup(setattr, review_export, "EXPORT_MAX_ROWS", review_export.EXPORT_MAX_ROWS)
        review_export.EXPORT_MAX_ROWS = 2
        status, answer = await self.checker.get("/api/v1/review/export")
        assert status == 400 and answer["error"]["code"] == "export_too_large"
        assert "selects 3 messages, more than the 2 one export holds" in answer["error"]["message"]


class CancelTests(ReviewCase):
    async def test_scheduled_messages_and_batches_are_cancelled_before_they_go_out(self) -> None:
        """A scheduled message and what is left of a batch are cancelled; what went out goes on; nothing left is 409,
        not yours 404."""
        await self.start(simulator=True)
        later = time.time() + 3600
        scheduled = await self.send({"to": N[:2], "text": "今晚八点停电检修", "send_at": later})
        status, done = await self.demo.post(f"/api/v1/messages/{scheduled}/cancel", {"comment": "改期"})
        assert status == 200 and done == {"messages": [scheduled], "recipients": 2}
        assert self.states(scheduled) == ["cancelled", "cancelled"]
        status, view = await self.demo.get(f"/api/v1/messages/{scheduled}")
        assert view["state"] == "completed" and view["recipients"][0]["error"] == "cancelled by demo: 改期"
        status, again = await self.demo.post(f"/api/v1/messages/{scheduled}/cancel")
        assert status == 409 and again["error"]["code"] == "nothing_to_cancel"
        assert f"GET /api/v1/messages/{scheduled} shows them" in again["error"]["message"]
        for who, message_id in ((Http(self.base, OTHER), scheduled), (self.demo, "999"), (self.demo, "abc")):
            status, missing = await who.post(f"/api/v1/messages/{message_id}/cancel")
            assert status == 404 and missing["error"]["code"] == "not_found", missing

        # A batch: what went out goes on, what waits is cancelled.
        now = await self.send({"to": N[2], "text": "立即发送", "batch": "evening"})
        await wait_for(lambda: self.states(now) == ["delivered"], what="the batch's first message delivered")
        waiting = [await self.send({"to": N[3 + i], "text": f"晚间通知 {i}", "batch": "evening", "send_at": later})
                   for i in range(2)]
        held = await self.send({"to": N[6], "text": WATER, "batch": "evening"})
        client = self.client(DEMO_KEY)
        missing_batch = await blocking(_raises, client.cancel_batch, "evening")
        assert missing_batch.status == 404 and "batches are named as stored, e.g. 'demo:evening'" in (
            missing_batch.message)
        cancelled = await blocking(client.cancel_batch, "demo:evening", comment="活动取消")
        assert sorted(cancelled.messages) == sorted([*waiting, held]) and cancelled.recipients == 3
        assert self.states(now) == ["delivered"] and self.states(held) == ["cancelled"]
        assert rows(self.config, "SELECT review FROM messages WHERE id = ?", int(held)) == [("cancelled",)]
        gone = await blocking(_raises, client.cancel, now)
        assert gone.status == 409
        audit = rows(self.config, "SELECT action, actor, subject FROM audit_log ORDER BY at, id")
        assert audit == [("message_cancel", "demo", "messages:1"), ("message_cancel", "demo", "batch:demo:evening")]


class ClientAndCliTests(ReviewCase):
    async def test_twisted_client_lists_approves_and_exports(self) -> None:
        """TwistedClient lists, shows, exports and approves like Client, and refuses an unbounded reject before
        sending."""
        await self.start()
        held = await self.send({"to": N[:3], "text": "东城区停水"})
        client = TwistedClient(self.base, CHECKER, R, timeout=10)
        self.addCleanup(client.close)
        page = await client.review_list(ReviewFilter(state=["pending"], to="138-0000-0001"))
        assert [m.id for m in page.items] == [held] and page.items[0].numbers == tuple(N[:3])
        assert (await client.review_get(held)).text == "东城区停水"
        export = await client.review_export(str(self.tmp / "out.csv"))
        assert export.rows == 1 and (self.tmp / "out.csv").read_bytes().startswith(b"\xef\xbb\xbf")
        done = await client.review_approve([held])
        assert done.messages == (held,) and done.reviewer == "zhang.wei" and done.recipients == 3
        with pytest.raises(ValueError, match="pass all_matching=True"):
            client.review_reject(where=ReviewFilter(state="pending"), comment="x")

    async def test_cli_lists_shows_exports_approves_rejects_and_cancels(self) -> None:
        """smsgw review and smsgw cancel work the queue through the daemon, with exit statuses that tell what
        happened."""
        await self.start()
        path = str(self.path)
        water = await self.send({"to": N[:2], "text": WATER})
        mass = await self.send({"to": N[2:6], "text": "全区例会通知", "batch": "meeting"})
        scheduled = await self.send({"to": N[7], "text": "later", "send_at": time.time() + 3600})

        async def cli(*args: str, key: str = CHECKER) -> Any:
            return await blocking(smsgw, *args, "-c", path, "--key", key)

        listed = await cli("review", "list", "--content", "停水")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].split()[:3] == ["ID", "CREATED", "ACCOUNT"]
        assert lines[1].startswith(water) and "【东城区】明天8:00" in lines[1]
        assert lines[-1] == "messages 1-1 of 1 (2 recipients)"
        paged = await cli("review", "list", "--limit", "1", "--json")
        assert json.loads(paged.stdout)["total"] == 2 and json.loads(paged.stdout)["items"][0]["id"] == water
        shown = await cli("review", "show", mass)
        assert f"recipients:  4: {' '.join(N[2:6])}" in shown.stdout and "batch:       demo:meeting" in shown.stdout
        xlsx = self.tmp / "queue.xlsx"
        exported = await cli("review", "list", "--export", str(xlsx), "--since", "2020-01-01", "--state", "pending")
        assert exported.returncode == 0 and exported.stdout.startswith(f"wrote 2 message(s) to {xlsx} (xlsx, ")
        sheet = openpyxl.load_workbook(xlsx).active
        assert sheet is not None and [row[0].value for row in sheet.iter_rows(min_row=2)] == [water, mass]

        # Who acts: auditor must say --as; then approve, and again (nothing changes: exit 1).
        unnamed = await cli("review", "approve", water, key=AUDITOR)
        assert unnamed.returncode == 1 and "refused (400 reviewer_required)" in unnamed.stderr
        assert "--as NAME" in unnamed.stderr
        approved = await cli("review", "approve", water, "--as", "li.na", key=AUDITOR)
        assert approved.stdout == "approved 1 message(s), 2 recipient(s) queued, as li.na\n", approved.stderr
        again = await cli("review", "approve", water)
        assert again.returncode == 1 and f"not waiting for review, left as they are: {water}" in again.stderr

        rejected = await cli("review", "reject", "--batch", "demo:meeting", "--comment", "重复发送")
        assert rejected.stdout == "rejected 1 message(s), 4 recipient(s) rejected, as zhang.wei\n", rejected.stderr
        assert self.states(mass) == ["rejected"] * 4
        none_left = await cli("review", "approve", "--all-matching")
        assert none_left.returncode == 1 and "nothing to approve" in none_left.stderr

        cancelled = await cli("cancel", scheduled, "--comment", "不发了", key=DEMO_KEY)
        assert cancelled.returncode == 0 and cancelled.stdout == "cancelled 1 message(s), 1 recipient(s)\n"
        batch = await cli("cancel", "--batch", "demo:nothing", key=DEMO_KEY)
        assert batch.returncode == 1 and "refused (404 not_found): no batch 'demo:nothing'" in batch.stderr


@pytest.mark.parametrize("args, words", [
    (["review", "list", "--export", "queue.pdf"], "does not end in .xlsx, .csv or .txt"),
    (["review", "list", "--export", "queue.xlsx", "--limit", "3"], "leave out --offset and --limit"),
    (["review", "reject", "--content", "例会", "--comment", "重复"], "filters with --all-matching (you gave the filters"),
    (["review", "approve"], "(you gave nothing;"),
    (["review", "approve", "123", "--content", "x"], "not ids and filters together"),
    (["review", "list", "--since", "yesterday"], "'yesterday' is not a time"),
    (["review", "reject", "123"], "the following arguments are required: --comment"),
])
def test_cli_refuses_unclear_commands_before_calling_the_daemon(args: list[str], words: str, tmp_path: pathlib.Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Usage problems exit 2 with the reason, without a daemon to talk to."""
    from smsgw.cli import main

    path = write_config(tmp_path)
    try:
        code = main([*args, "-c", str(path), "--key", "k"])
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    assert code == 2 and words in capsys.readouterr().err


def test_cli_table_pages_and_aligns_chinese_text(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The list's table cuts long texts to the terminal's width and says where the next page starts."""
    monkeypatch.setenv("COLUMNS", "110")
    from smsgw._client_review import ReviewMessage, ReviewPage
    from smsgw.cli_review import _print_page

    item = ReviewMessage("7165432109876543210", "demo", "file", None, None, "停水" * 80, None, 3, tuple(N[:3]), 5,
                         None, 1_700_000_000.0, "pending_review", "pending", "mass", None, None, None, None)
    _print_page(ReviewPage((item,), 7, 21, 2, 1))
    lines = capsys.readouterr().out.splitlines()
    assert 105 < width(lines[1]) < 110 and lines[1].endswith("…") and "停水停水" in lines[1]
    assert lines[-1] == "messages 3-3 of 7 (21 recipients); next page: --offset 3"
    _print_page(ReviewPage((), 2, 4, 5, 50))
    assert capsys.readouterr().out == "no messages match (offset 5 is past the last of 2)\n"


def _raises(f: Any, *args: Any) -> ClientApiError:
    try:
        result = f(*args)
    except ClientApiError as exc:
        return exc
    raise AssertionError(f"expected ApiError, got {result!r}")


# --- pure parts ----------------------------------------------------------------------------------

REVIEWERS = {"zhang.wei": ("checker",), "li.na": (), "wang.fang": ("checker", "desk")}


def test_the_reviewer_is_the_one_named_or_the_only_one_listing_the_account() -> None:
    """A named reviewer must exist and list the account (or list none); unnamed, exactly one must list it."""
    desk, checker, auditor = Account("desk"), Account("checker"), Account("auditor")
    assert reviewer_for(desk, None, REVIEWERS) == "wang.fang"
    assert reviewer_for(checker, "zhang.wei", REVIEWERS) == "zhang.wei"
    assert reviewer_for(auditor, "li.na", REVIEWERS) == "li.na"
    for who, named, status, code, words in (
            (checker, None, 400, "reviewer_required", "acts for several reviewers (wang.fang, zhang.wei)"),
            (auditor, None, 400, "reviewer_required", "say which reviewer you are"),
            (desk, "zhang.wei", 403, "forbidden", "who acts through checker"),
            (desk, "li", 400, "unknown_reviewer", "(li.na, wang.fang, zhang.wei)")):
        with pytest.raises(ApiError) as caught:
            reviewer_for(who, named, REVIEWERS)
        assert (caught.value.status, caught.value.code) == (status, code) and words in caught.value.message
    with pytest.raises(ApiError, match="no reviewer is configured"):
        reviewer_for(desk, None, {})
    assert named_reviewer([b" li.na "], None) == "li.na" and named_reviewer(None, "x") == "x"
    for header in ([b"a", b"b"], [b""], [b"\xff"]):
        with pytest.raises(ApiError):
            named_reviewer(header, None)


def test_cli_columns_count_chinese_characters_as_two() -> None:
    """Wide characters take two columns: a cut text never breaks the table's alignment."""
    assert width("停水ab") == 6 and width("e\u0301") == 1
    assert fit("停水通知", 6) == "停水…" + " " and width(fit("停水通知", 6)) == 6
    assert fit("ab\ncd", 8) == "ab cd   " and fit("停水", 5) == "停水 "
    assert width(fit("a停水通知", 4)) == 4


def test_export_format_follows_the_file_name() -> None:
    """The export format follows the file's ending; an unknown ending is refused with the ones that work."""
    assert review_export.format_for("a.XLSX") == "xlsx" and review_export.format_for("/x/y.txt") == "csv"
    with pytest.raises(ValueError, match="does not end in .xlsx, .csv or .txt"):
        review_export.format_for("a.xls")


_QUERY_VALUES = st.lists(st.tuples(
    st.sampled_from([b"content", b"to", b"account", b"interface", b"state", b"batch", b"since", b"until", b"offset",
                     b"limit", b"format", b"x"]) | st.binary(max_size=8),
    st.lists(st.binary(max_size=30) | st.sampled_from([b"any", b"pending,passed", b"1700000000", b"db:erp",
                                                       b"2024-03-05T08:00:00+08:00", b"+8613800138000", b"0",
                                                       b"1e3", b"\xe5\x81\x9c"]), min_size=0, max_size=3)),
    max_size=6)


@settings(max_examples=400, deadline=None)
@given(_QUERY_VALUES)
def test_query_parsers_take_garbage_or_refuse_it_with_a_400(pairs: list[tuple[bytes, list[bytes]]]) -> None:
    """Any query string gives a ReviewQuery or an ApiError 400 that names parameters, nothing else."""
    args = dict(pairs)
    for parse in (parse_list_query, parse_export_query):
        try:
            parse(args)
        except ApiError as exc:
            assert exc.status == 400 and exc.code == "bad_request" and exc.details and exc.message


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4), max_leaves=12)
_BODY_KEYS = st.sampled_from(["ids", "batch", "filter", "all", "comment", "reviewer", "content", "state", "since"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_BODY_KEYS, _JSON | st.dictionaries(_BODY_KEYS, _JSON, max_size=4), max_size=5) | _JSON,
       st.sampled_from(["approve", "reject"]))
def test_action_bodies_are_parsed_or_refused_with_a_422(body: Any, action: str) -> None:
    """Any JSON body gives an ActionRequest with exactly one selector or an ApiError 422 listing problems."""
    try:
        asked = parse_action_body(body, action)
    except ApiError as exc:
        assert exc.status == 422 and exc.details
        return
    assert len([k for k in ("ids", "batch", "filter") if body.get(k) is not None]) == 1, body
    assert asked.query.message_ids == asked.ids
    if action == "reject":
        assert asked.comment


@functools.cache
def _site() -> Site:
    gateway = FakeGateway()
    gateway.review_items = [ReviewItem(i, "demo", "rest", "b", None, f"停水 {i}", None, 2, (N[i], N[i + 1]), 5, None,
                                       1_700_000_000.0 + i, "pending_review", "pending", "words", None, None, None,
                                       None) for i in range(1, 8)]
    reviewer = Account("checker", hashlib.sha256(b"review-key").hexdigest(), permissions=("review",))
    return make_api(gateway, [reviewer], clock=Clock(), reviewers={"zhang.wei": ("checker",)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=120))
def test_any_query_string_is_answered_200_or_400_never_500(query: bytes) -> None:
    """Whatever bytes follow the ? (percent-encoded as a client would), the list answers 200 or 400, as the
    document says. (The export's parser is the same but for format; its answer streams, which needs a reactor.)"""
    target = b"/api/v1/review?" + urllib.parse.quote_from_bytes(query, safe=b"=&,:+").encode()
    channel = _site().buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer review-key\r\n\r\n")
    [reply] = parse_replies(transport.value())
    assert reply.status in (200, 400), reply.body[:300]
    check_response(DOC, "GET", target.decode(), reply.status, reply.headers, reply.body)
