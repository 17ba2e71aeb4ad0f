"""Helpers for tests that run the real daemon: configs, schema, start/stop, HTTP calls, store reads.

    config = make_config(tmp_path)                       # conf/smsgw.yaml, free ports, fast timings
    daemon = await start_daemon(config)                  # schema upgraded, Daemon.start() fired
    api = ApiClient.for_daemon(daemon)
    status, body = await api.post("/api/v1/messages", {"to": ["13800138000"], "text": "hi"})
    await wait_for(lambda: count(config, "recipients", "state = 'delivered'") == 1)
    await daemon.stopService()

Nothing here is specific to one test module: a test that runs `smsgw run` in a
subprocess can use `write_config(...)` (it returns the file's path) and `upgrade_schema`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pathlib
import shutil
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Mapping

import yaml
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from smsgw.app import Daemon
from smsgw.config import Config, load_config
from smsgw.simulator import IsmgSimulator, SimulatorConfig
from smsgw.store import make_engine, migrations

from ports import free_port

R: Any = reactor
ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMO_KEY = "demo-key"  # the key of conf/smsgw.yaml's demo account

#: What every test config changes in conf/smsgw.yaml: quick reconnects, retries, sweeps and reports.
FAST: dict[str, Any] = {
    "log": {"file": None, "format": "json"},
    "api": {"request_timeout": 20.0},
    "dispatch": {"retry_initial": 0.1, "retry_max": 1.0, "sweep_interval": 0.2},
    "simulator": {"report_delay": 0.05},
    "shutdown": {"drain_timeout": 5.0},
}
FAST_CARRIER: dict[str, Any] = {"reconnect_initial": 0.1, "reconnect_max": 0.5, "response_timeout": 5.0,
                                "stop_timeout": 2.0, "submit_wait": 5.0}


def key_hash(key: str) -> str:
    """What an account's api_key_sha256 holds for `key`."""
    return hashlib.sha256(key.encode()).hexdigest()


def account(name: str, key: str, **fields: Any) -> dict[str, Any]:
    """An `accounts:` entry for the YAML file, e.g. account("b", "b-key", max_priority=9)."""
    return {"name": name, "api_key_sha256": key_hash(key), **fields}


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in: mappings key by key, anything else (lists too) replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write_config(directory: pathlib.Path, overrides: Mapping[str, Any] | None = None, *,
                 carrier: Mapping[str, Any] | None = None, embedded_simulator: bool = True,
                 name: str = "smsgw.yaml") -> pathlib.Path:
    """Write a config file for a test under `directory` and return its path.

    It is conf/smsgw.yaml with the data under `directory/data`, free ports for
    the API and the carrier, the `FAST` timings, then `overrides` merged in
    (`merge`) and `carrier` merged into the first carrier. With
    `embedded_simulator` false the simulator section is off and nothing
    listens on the carrier's port until a test starts a simulator there
    (`start_simulator`). `smsgw run -c PATH` in a subprocess reads it as is.
    """
    raw = yaml.safe_load((ROOT / "conf/smsgw.yaml").read_text(encoding="utf-8"))
    sim_port = free_port()
    data = merge(raw, FAST)
    data = merge(data, {"node": {"data_dir": str(directory / "data")}, "api": {"port": free_port()},
                        "simulator": {"port": sim_port, "enabled": embedded_simulator}})
    data["carriers"][0] = merge(data["carriers"][0], {**FAST_CARRIER, "port": sim_port, **(carrier or {})})
    data = merge(data, overrides or {})
    path = directory / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def make_config(directory: pathlib.Path, overrides: Mapping[str, Any] | None = None, *,
                carrier: Mapping[str, Any] | None = None, embedded_simulator: bool = True,
                name: str = "smsgw.yaml") -> Config:
    """`write_config`, then load the file (environment ignored: the example's ${VAR:-x} take x)."""
    path = write_config(directory, overrides, carrier=carrier, embedded_simulator=embedded_simulator, name=name)
    return load_config(str(path), {})


def upgrade_schema(config: Config) -> None:
    """Create the data directory and bring the store's schema up to date (`smsgw db upgrade`)."""
    pathlib.Path(config.data_path()).mkdir(parents=True, exist_ok=True)
    engine = make_engine(config.store_url(), writer=True)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()


async def start_daemon(config: Config) -> Daemon:
    """A started Daemon on the real reactor (schema upgraded first). The caller stops it."""
    upgrade_schema(config)
    daemon = Daemon(config, R)
    await daemon.start()
    return daemon


async def stop_daemon(daemon: Daemon) -> None:
    """Stop `daemon` if it is still running (safe as a cleanup after a test stopped it itself)."""
    if daemon.running:
        await daemon.stopService()


def start_simulator(config: Config, **options: Any) -> IsmgSimulator:
    """A standalone simulator on the first carrier's host and port, knowing its SP_Id and secret.

    `options` are SimulatorConfig fields (drop_every, mo_long_ratio, seed, ...);
    mo_dest defaults to the carrier's service code. The caller stops it.
    """
    c = config.carriers[0]
    settings: dict[str, Any] = {"accounts": {c.sp_id: c.secret.get_secret_value()}, "report_delay": 0.05,
                                "mo_dest": c.service_code, "seed": 7}
    settings.update(options)
    sim = IsmgSimulator(SimulatorConfig(**settings), R, listen=(c.host, c.port))
    sim.startService()
    return sim


# --- waiting ---------------------------------------------------------------------------------------

async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition",
                   interval: float = 0.05) -> None:
    """Spin the reactor until `predicate()` holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await deferLater(R, interval, lambda: None)


async def spin(seconds: float) -> None:
    """Let the reactor run for `seconds` (for asserting that something does NOT happen)."""
    await deferLater(R, seconds, lambda: None)


# --- the REST API ------------------------------------------------------------------------------------

class ApiClient:
    """Real HTTP requests to the daemon's REST API (urllib on a reactor thread)."""

    def __init__(self, base_url: str, key: str = DEMO_KEY) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key

    @classmethod
    def for_daemon(cls, daemon: Daemon, key: str = DEMO_KEY) -> ApiClient:
        address = daemon.api_address()
        if address is None:
            raise AssertionError("the daemon has no API listening (api.enabled false?)")
        return cls(f"http://{address}", key)

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body) of one request; error statuses are returned, not raised."""
        result: tuple[int, Any] = await deferToThread(self._blocking, method, path, body)
        return result

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        return await self.call("POST", path, body)

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.call("GET", path)

    async def send(self, body: Any) -> list[str]:
        """POST /api/v1/messages, insist on 202, and return the message ids."""
        status, answer = await self.post("/api/v1/messages", body)
        if status != 202:
            raise AssertionError(f"POST /api/v1/messages answered {status}: {answer}")
        return [m["id"] for m in answer["messages"]]

    def _blocking(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raw = error.read()
            return error.code, json.loads(raw) if raw else None


# --- reading the store directly ---------------------------------------------------------------------

def db_file(config: Config) -> str:
    url = config.store_url()
    if not url.startswith("sqlite:///"):
        raise AssertionError(f"these helpers read SQLite stores only, not {config.store_url(hide_password=True)}")
    return url[len("sqlite:///"):]


def rows(config: Config, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one read-only query on the daemon's SQLite store (beside the running daemon: WAL)."""
    conn = sqlite3.connect(db_file(config), timeout=10)
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


def count(config: Config, table: str, where: str = "1 = 1", *params: Any) -> int:
    """SELECT count(*) FROM table WHERE where."""
    return int(rows(config, f"SELECT count(*) FROM {table} WHERE {where}", *params)[0][0])


def recipient_states(config: Config) -> dict[str, int]:
    """{state: number of recipients} over the whole store."""
    return {state: n for state, n in rows(config, "SELECT state, count(*) FROM recipients GROUP BY state")}


def numbers(n: int, start: int = 0, prefix: str = "138") -> list[str]:
    """`n` distinct valid mainland mobile numbers."""
    return [f"{prefix}{start + i:08d}" for i in range(n)]


# --- a trial test case that runs daemons -------------------------------------------------------------

class DaemonCase(TestCase):
    """A temporary directory per test (`self.tmp`); daemons and simulators started here are stopped afterwards."""

    timeout = 60
    tmp_prefix = "smsgw-test-"

    def setUp(self) -> None:
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix=self.tmp_prefix))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    async def daemon(self, config: Config) -> Daemon:
        daemon = await start_daemon(config)
        self.addCleanup(lambda: defer.ensureDeferred(stop_daemon(daemon)))
        return daemon

    def simulator(self, config: Config, **options: Any) -> IsmgSimulator:
        sim = start_simulator(config, **options)
        self.addCleanup(lambda: sim.stopService() if sim.running else None)
        return sim
