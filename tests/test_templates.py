"""Templates (docs/templates.md): parsing and rendering, validation, the store and registry, and the
REST API, the Python client, the CLI, the URL interface and legacy rows using them on a real daemon."""

from __future__ import annotations

import json
import pathlib
import sqlite3
import urllib.parse
import urllib.request
from typing import Any

import pytest
from hypothesis import given, strategies as st
from twisted.internet.threads import deferToThread

from daemon_helpers import DEMO_KEY, R, DaemonCase, account, make_config, spin, wait_for, write_config
from smsgw.adapters.url.service import UrlInterface
from smsgw.client import ApiError, AuthFailed, Client
from smsgw.config import load_config
from smsgw.model import Account, SendRequest
from smsgw.store import Store
from smsgw.template_registry import TemplateRegistry
from smsgw.templates import Template, TemplateError, check_name, parse, render
from smsgw.validation import Validator
from test_cli import smsgw

MOBILE = "13800138000"


# --- parse and render ---------------------------------------------------------------------------------

def test_parse_lists_placeholders_once_in_order() -> None:
    """Placeholders come out in order of first appearance; {{ }} are braces; names may be Chinese."""
    assert parse("您好{name}，验证码{code}，{name}请勿泄露") == ("name", "code")
    assert parse("{{literal}} and {x_1}") == ("x_1",)
    assert parse("{姓名}您好") == ("姓名",)
    assert parse("no placeholders") == ()


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("   ", "empty"), ("x" * 2001, "2001 characters"),
    ("code {code", "unmatched '{' at character 6"), ("a } b", "unmatched '}' at character 3"),
    ("{}", "placeholder '{}' at character 1"), ("{a b}", "placeholder '{a b}'"), ("{a-b}", "not a parameter"),
])
def test_parse_refuses_bad_texts_naming_where(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        parse(text)


def test_names_are_checked() -> None:
    assert check_name("verify_code") is None and check_name("otp.v2-cn") is None
    for bad in ("", "-x", ".x", "a b", "x" * 65, "名字", 5):
        assert check_name(bad) is not None, bad


def test_render_fills_every_placeholder() -> None:
    t = Template.create("otp", "您的验证码是{code}，{minutes}分钟内有效 {{勿回复}}")
    assert t.params == ("code", "minutes")
    assert render(t, {"code": "493021", "minutes": 5}) == "您的验证码是493021，5分钟内有效 {勿回复}"
    assert render(t, {"code": 123456.0, "minutes": 2.5}) == "您的验证码是123456，2.5分钟内有效 {勿回复}"
    assert render(Template.create("plain", "hello"), None) == "hello"


def test_render_names_missing_extra_and_odd_parameters_at_once() -> None:
    t = Template.create("otp", "code {code} for {name}")
    problems = render(t, {"name": "x", "cod": "1", "list": ["a"]}, "[3]")
    assert isinstance(problems, list)
    assert [(p.where, p.code) for p in problems] == [("[3].params", "missing_params"), ("[3].params", "bad_params"),
                                                     ("[3].params", "unknown_params")]
    assert "needs {code}" in problems[0].message and "has no {cod}, {list}" in problems[2].message
    assert "takes {code}, {name}" in problems[2].message


@given(st.text(max_size=300))
def test_parse_never_raises_anything_but_template_error(text: str) -> None:
    try:
        names = parse(text)
    except TemplateError:
        return
    t = Template.create("t", text)
    rendered = render(t, {n: f"<{n}>" for n in names})
    assert isinstance(rendered, str)
    for name in names:
        assert f"<{name}>" in rendered


@given(st.text(alphabet=st.characters(blacklist_characters="{}"), min_size=1, max_size=200).filter(str.strip))
def test_a_text_without_braces_renders_to_itself(text: str) -> None:
    assert render(Template.create("t", text), {}) == text


@given(st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=5, unique=True),
       st.lists(st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=10), min_size=6, max_size=6))
def test_render_round_trip(names: list[str], values: list[str]) -> None:
    """Joining fixed pieces and placeholders renders to the pieces with the values in between."""
    pieces = values[:len(names) + 1]
    text = "".join(p + "{" + n + "}" for p, n in zip(pieces, names)) + pieces[-1] + "."
    params = {n: f"[{i}]" for i, n in enumerate(names)}
    expected = "".join(p + params[n] for p, n in zip(pieces, names)) + pieces[-1] + "."
    assert render(Template.create("t", text), params) == expected


# --- the validator ----------------------------------------------------------------------------------

def test_validator_renders_templates_and_names_every_problem() -> None:
    templates = {"otp": Template.create("otp", "验证码{code}")}
    validator = Validator(templates=templates)
    me = Account("a")
    [ok] = validator.prepare(me, [SendRequest((MOBILE,), "", template="otp", params={"code": "1234"})], 0.0)
    assert (ok.text, ok.template, ok.segments, ok.msg_fmt) == ("验证码1234", "otp", 1, 8)
    checks = [
        (SendRequest((MOBILE,), "", template="nope"), "[0].template", "unknown_template"),
        (SendRequest((MOBILE,), "text too", template="otp", params={"code": "1"}), "[0].text", "text_and_template"),
        (SendRequest((MOBILE,), "x", params={"code": "1"}), "[0].params", "params_without_template"),
        (SendRequest((MOBILE,), "", template="otp"), "[0].params", "missing_params"),
        (SendRequest((MOBILE,), "", template="otp", params={"code": "1", "x": 2}), "[0].params", "unknown_params"),
        (SendRequest((MOBILE,), "", template="otp", params=["code"]), "[0].params", "bad_params"),  # type: ignore[arg-type]
    ]
    for request, where, code in checks:
        result = validator.prepare_one(me, request, 0.0)
        assert isinstance(result, list), request
        assert [(f"[0].{p.where}" if p.where else "[0]", p.code) for p in result] == [(where, code)], request
    # A rendered text that is too long is refused as any text is.
    templates["long"] = Template.create("long", "{x}")
    [problem] = validator.prepare_one(me, SendRequest((MOBILE,), "", template="long", params={"x": "长" * 800}),
                                      0.0)  # type: ignore[misc]
    assert problem.code == "too_many_segments"


# --- the store and the registry ---------------------------------------------------------------------

class RegistryTests(DaemonCase):
    async def test_changes_are_stored_audited_and_seen_by_another_node(self) -> None:
        config = make_config(self.tmp, {"api": {"enabled": False}})
        daemon = await self.daemon(config)
        registry = daemon.gateway.templates
        template, outcome = await registry.put("otp", "验证码{code}", False, "alice")
        assert (outcome, template.params, template.updated_by) == ("added", ("code",), "alice")
        _, outcome = await registry.put("otp", "您的验证码{code}，{minutes}分钟有效", True, "bob")
        assert outcome == "changed" and registry.get("otp").pre_approved  # type: ignore[union-attr]
        assert await registry.delete("nope", "bob") is False

        # A second node on the same store sees the change when it reloads.
        other = TemplateRegistry(daemon.store, R, refresh_interval=0.1)
        await other.start()
        self.addCleanup(other.stop)
        assert other.get("otp") == registry.get("otp")
        await registry.delete("otp", "carol")
        await wait_for(lambda: other.get("otp") is None, what="the other node to drop the deleted template")

        audit = sql(config, "SELECT actor, action, subject, details FROM audit_log ORDER BY at, id")
        assert [(a, b, c) for a, b, c, _ in audit] == [
            ("alice", "template_added", "template:otp"), ("bob", "template_changed", "template:otp"),
            ("carol", "template_deleted", "template:otp")]
        assert json.loads(audit[1][3])["before"] == {"content": "验证码{code}", "pre_approved": False}

    async def test_an_unusable_stored_template_is_skipped_with_an_error(self) -> None:
        config = make_config(self.tmp, {"api": {"enabled": False}})
        daemon = await self.daemon(config)
        sql(config, "INSERT INTO templates VALUES ('bad', 'x {unclosed', 0, 0, 0, 'dba')")
        sql(config, "INSERT INTO templates VALUES ('good', 'y {p}', 1, 0, 0, 'dba')")
        store: Store = daemon.store
        registry = TemplateRegistry(store, R)
        await registry.reload()
        assert sorted(registry.templates) == ["good"]


def sql(config: Any, statement: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(pathlib.Path(config.data_path()) / "smsgw.db") as conn:
        return conn.execute(statement).fetchall()


# --- REST, client, CLI, URL interface ---------------------------------------------------------------

READER = "reader-key"


class ApiTests(DaemonCase):
    def start_config(self) -> Any:
        path = write_config(self.tmp, {
            "accounts": [account("demo", DEMO_KEY, permissions=["templates"]), account("reader", READER)],
            "url_interface": {"enabled": True, "port": 0}})
        return path, load_config(str(path), {})

    def client(self, base: str, key: str = DEMO_KEY) -> Client:
        client = Client(base, key, timeout=10)
        self.addCleanup(client.close)
        return client

    async def test_manage_templates_and_send_with_them_everywhere(self) -> None:
        path, config = self.start_config()
        daemon = await self.daemon(config)
        base = f"http://{daemon.api_address()}"
        admin, reader = self.client(base), self.client(base, READER)

        added = await blocking(admin.put_template, "otp", "您的验证码是{code}，{minutes}分钟内有效")
        assert (added.name, added.params, added.pre_approved, added.updated_by) == (
            "otp", ("code", "minutes"), False, "demo")
        assert [t.name for t in await blocking(reader.templates)] == ["otp"]
        assert (await blocking(reader.template, "otp")).text == added.text

        # Only an account with the permission may change templates.
        denied = await blocking(_raises, AuthFailed, reader.put_template, "otp", "x")
        assert denied.status == 403 and "templates" in denied.message
        missing = await blocking(_raises, ApiError, reader.template, "nope")
        assert missing.status == 404
        bad = await blocking(_raises, ApiError, admin.put_template, "otp", "code {code")
        assert bad.status == 422 and bad.problems[0].where == "text" and "unmatched" in bad.problems[0].message

        # REST: send with the template; problems with parameters name where.
        accepted = await blocking(reader.send, MOBILE, template="otp", params={"code": "493021", "minutes": 5})
        refused = await blocking(_raises, ApiError, lambda: reader.send(MOBILE, template="otp",
                                                                         params={"code": "1"}))
        assert refused.status == 422 and [(p.where, p.code) for p in refused.problems] == [
            ("params", "missing_params")]

        # URL interface: template and params (a JSON object) as native parameters.
        query = urllib.parse.urlencode({"username": "demo", "password": DEMO_KEY, "to": "13900139000",
                                        "template": "otp", "params": json.dumps({"code": "1", "minutes": 2})})
        [url] = daemon.adapters
        assert isinstance(url, UrlInterface)
        status, body = await blocking(_get, f"http://{url.address()}/cgi-bin/sendsms?{query}")
        assert (status, body) == (202, "0: Accepted for delivery")

        await wait_for(lambda: sql(config, "SELECT count(*) FROM recipients WHERE state = 'delivered'") == [(2,)],
                       what="both templated messages delivered")
        assert sorted(sql(config, "SELECT interface, template, content FROM messages")) == [
            ("rest", "otp", "您的验证码是493021，5分钟内有效"), ("url", "otp", "您的验证码是1，2分钟内有效")]
        assert (await blocking(reader.get_message, accepted.id)).text == "您的验证码是493021，5分钟内有效"

        # The CLI: list, change (keeping what is not given), send with --param, delete.
        changed = await blocking(smsgw, "template", "change", "-c", str(path), "--key", DEMO_KEY, "otp",
                                 "--pre-approved")
        assert changed.returncode == 0, changed.stderr
        assert "pre-approved: yes" in changed.stdout and "params:       code, minutes" in changed.stdout
        listed = await blocking(smsgw, "template", "list", "-c", str(path), "--key", READER, "--json")
        [shown] = json.loads(listed.stdout)
        assert (shown["name"], shown["pre_approved"], shown["text"]) == ("otp", True, added.text)
        sent = await blocking(smsgw, "send", "-c", str(path), "--key", READER, "--to", MOBILE, "--template", "otp",
                              "--param", "code=777", "--param", "minutes=1")
        assert sent.returncode == 0 and sent.stdout.startswith("accepted: id "), sent.stderr
        again = await blocking(smsgw, "template", "add", "-c", str(path), "--key", DEMO_KEY, "otp", "--text", "x")
        assert again.returncode == 1 and "exists: use `smsgw template change`" in again.stderr
        gone = await blocking(smsgw, "template", "delete", "-c", str(path), "--key", DEMO_KEY, "otp")
        assert gone.returncode == 0 and gone.stdout == "deleted template 'otp'\n"
        unknown = await blocking(smsgw, "send", "-c", str(path), "--key", READER, "--to", MOBILE, "--template",
                                 "otp")
        assert unknown.returncode == 1 and "unknown template 'otp'" in unknown.stderr

    async def test_templates_survive_a_restart(self) -> None:
        _, config = self.start_config()
        daemon = await self.daemon(config)
        admin = self.client(f"http://{daemon.api_address()}")
        await blocking(admin.put_template, "notice", "停水通知：{area}")
        admin.close()
        await daemon.stopService()
        await spin(0.1)
        daemon = await self.daemon(config)
        assert daemon.gateway.templates.get("notice") is not None
        accepted = await blocking(self.client(f"http://{daemon.api_address()}", READER).send, MOBILE,
                                  template="notice", params={"area": "东城区"})
        assert accepted.segments == 1


async def blocking(f: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a synchronous call on a reactor thread, so the daemon keeps answering."""
    return await deferToThread(f, *args, **kwargs)


def _raises(kind: type[ApiError], f: Any, *args: Any) -> Any:
    try:
        result = f(*args)
    except kind as exc:
        return exc
    raise AssertionError(f"expected {kind.__name__}, got {result!r}")


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.status, reply.read().decode()

