"""The smsgw command line, run as a real subprocess."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def smsgw(*args: str, cwd: pathlib.Path | str = "/", timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smsgw", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_subcommands() -> None:
    """`smsgw --help` names the simulate and demo subcommands."""
    out = smsgw("--help")
    assert out.returncode == 0
    assert "simulate" in out.stdout and "demo" in out.stdout


def test_python_dash_m_works_from_the_source_checkout() -> None:
    """`python -m smsgw` in the repo root finds smsgw.protocol beside the smsgw folder."""
    out = smsgw("simulate", "--help", cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "--flow-limit" in out.stdout


def test_simulate_without_accounts_says_how_to_fix_it() -> None:
    """Without an account the simulator refuses to start and names the options to use."""
    out = smsgw("simulate", "--listen", "127.0.0.1:0")
    assert out.returncode == 2
    assert "--account SP_ID:SECRET" in out.stderr


def test_bad_listen_address_is_a_usage_error() -> None:
    """A --listen that is not HOST:PORT is rejected with an example of the right form."""
    out = smsgw("simulate", "--listen", "nonsense", "--account", "1:2")
    assert out.returncode == 2
    assert "HOST:PORT" in out.stderr


def test_bad_accounts_file_is_reported(tmp_path: pathlib.Path) -> None:
    """An accounts file of the wrong shape is reported with the file and the entry."""
    bad = tmp_path / "accounts.yaml"
    bad.write_text("- sp_id: 901234\n", encoding="utf-8")
    out = smsgw("simulate", "--accounts-file", str(bad))
    assert out.returncode == 2
    assert "accounts[0] needs sp_id and secret" in out.stderr


def test_demo_sends_messages_and_logs_their_reports() -> None:
    """`smsgw demo` logs in, submits, and logs a DELIVRD report per segment, as JSON lines."""
    out = smsgw("demo", "--exit-after", "4", timeout=60)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert names.count("link_up") == 2
    submitted = [e for e in events if e["event"] == "demo_submitted"]
    reports = [e for e in events if e["event"] == "demo_report"]
    assert len(submitted) == len(reports) >= 5
    assert {e["msg_id"] for e in submitted} == {e["msg_id"] for e in reports}
    assert {e["stat"] for e in reports} == {"DELIVRD"}
    assert "link_stopped" in names
