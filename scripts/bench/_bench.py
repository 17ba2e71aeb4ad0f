"""What the benchmark scripts share: loopback ports, a process's CPU time and memory, starting and
stopping the simulator and daemon processes of the end-to-end benchmarks, and reading their answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the process helpers live with the crash rig
from crash_harness import descendants, proc_stat  # noqa: E402
from ports import free_port  # noqa: E402,F401  (the benchmarks import it from here)


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Return once something listens on 127.0.0.1:`port`; exit the benchmark after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def tree(pid: int) -> list[int]:
    """`pid` and every live process under it (the daemon's store writer and its fork server)."""
    return [pid, *descendants(pid)]


def cpu_of(pid: int) -> float:
    """utime + stime of a live process and the processes under it, in seconds."""
    total = 0
    for p in tree(pid):
        try:
            fields = proc_stat(p)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# --- the daemon and simulator processes of the end-to-end benchmarks ---------------------------

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KEY = "demo-key"  # the API key of conf/smsgw.yaml's demo account


def rss_mb(pid: int) -> float:
    """The memory of a process and the processes under it: their PSS (shared pages split between them,
    so the store writer's pages shared with its fork server count once), in MB."""
    total = 0
    for p in tree(pid):
        try:
            lines = Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("Pss:"))
    return total / 1024


def log_file(tmp: Path) -> Path:
    """The daemon's log file under `tmp` (`daemon_config`): JSON lines."""
    return tmp / "var" / "log" / "smsgw.log"


def daemon_config(tmp: Path, sim_port: int) -> dict[str, Any]:
    """conf/smsgw.yaml for a benchmark: data under `tmp`, every lifecycle line logged to its file,
    the embedded simulator off and the carrier pointing at a simulator process on `sim_port`."""
    data: dict[str, Any] = yaml.safe_load((ROOT / "conf" / "smsgw.yaml").read_text(encoding="utf-8"))
    data["node"]["data_dir"] = str(tmp / "var")
    data["log"]["file"] = "log/smsgw.log"
    data["log"]["level"] = "info"  # every lifecycle line is written, as in production
    data["simulator"]["enabled"] = False
    data["carriers"][0]["port"] = sim_port
    # SMSGW_BENCH_STORE_WRITER=thread measures the store's writer as a thread of the daemon (the default
    # is its own process): for A/B runs on this machine, whose speed changes from one minute to the next.
    data["store"]["writer"] = os.environ.get("SMSGW_BENCH_STORE_WRITER", data["store"]["writer"])
    return data


def write_config(tmp: Path, data: dict[str, Any]) -> Path:
    path = tmp / "smsgw.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def start_simulator(port: int) -> subprocess.Popen[bytes]:
    """`smsgw simulate` on 127.0.0.1:`port`, reporting at once; returns once it listens."""
    proc = subprocess.Popen(
        [str(BIN / "smsgw"), "--log-level", "warning", "simulate", "--listen", f"127.0.0.1:{port}",
         "--account", "901234:simsecret", "--report-delay", "0"], stdout=subprocess.DEVNULL)
    wait_port(port)
    return proc


def start_daemon(config: Path) -> subprocess.Popen[bytes]:
    """`smsgw db upgrade` then `smsgw run` on `config` (the caller waits for it to listen)."""
    subprocess.run([str(BIN / "smsgw"), "db", "upgrade", "-c", str(config)], check=True, stdout=subprocess.DEVNULL)
    return subprocess.Popen([str(BIN / "smsgw"), "run", "-c", str(config)], stdout=subprocess.DEVNULL)


def profile(pid: int, output: str) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` and its store writer process as raw collapsed stacks (stopped by `stop_all`
    with SIGINT)."""
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--subprocesses", "--format", "raw",
                             "--output", output, "--rate", "200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def running(config: Path, sim_port: int | None, *, profile_to: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """The simulator on `sim_port` (None: none, so the link stays down) and the daemon on `config` (by
    `write_config`), started and ready; yields the daemon and stops them all when the block ends. With
    `profile_to`, py-spy records the daemon into that file."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if sim_port is not None:
            procs.append(start_simulator(sim_port))
        daemon = start_daemon(config)
        procs.append(daemon)
        wait_started(daemon, log_file(config.parent))
        time.sleep(0.5)  # the link logs in
        if profile_to:
            procs.append(profile(daemon.pid, profile_to))
        yield daemon
    finally:
        stop_all(procs)


def wait_started(daemon: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Return once the daemon logged daemon_started (everything listens); exit the benchmark if it does not."""
    deadline = time.monotonic() + timeout
    while not (log.exists() and "daemon_started" in log.read_text(encoding="utf-8")):
        if time.monotonic() > deadline or daemon.poll() is not None:
            raise SystemExit(f"the daemon did not start; see {log}")
        time.sleep(0.1)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the processes, last started first (py-spy with SIGINT, so that it writes its file)."""
    for proc in reversed(procs):
        proc.send_signal(signal.SIGINT if "py-spy" in str(proc.args) else signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length (or none): its status and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return status, body
