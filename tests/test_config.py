"""The daemon's YAML configuration: loading, every problem with its line and fix, and the objects it builds."""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re
import textwrap

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from smsgw.carrier import LinkConfig
from smsgw.config import (
    AccountConfig,
    CarrierConfig,
    Config,
    ConfigError,
    DbSourceConfig,
    check_config,
    default_config,
    load_config,
)
from smsgw.model import Account
from smsgw.protocol.cmpp import Version
from smsgw.simulator import SimulatorConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent
KEY_HASH = hashlib.sha256(b"k").hexdigest()
PROBLEM = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<path>.+?): (?P<what>.+) — fix: (?P<fix>.+)$")

# A small valid file; tests append to it or replace parts. Line numbers below refer to it.
BASE = f"""\
accounts:
  - name: app
    api_key_sha256: {KEY_HASH}
carriers:
  - name: c1
    host: 10.0.0.1
    port: 7890
    sp_id: "901234"
    secret: s3cret
    service_code: "1069000100"
"""


def write(tmp_path: pathlib.Path, text: str, name: str = "smsgw.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def problems_of(tmp_path: pathlib.Path, text: str, env: dict[str, str] | None = None) -> list[dict[str, str]]:
    """check_config's problems, each split into file, line, path, what and fix (all must parse)."""
    found = check_config(write(tmp_path, text), env or {})
    parsed = [PROBLEM.match(p) for p in found]
    assert all(parsed), found
    return [m.groupdict() for m in parsed if m]


def where(problems: list[dict[str, str]]) -> list[tuple[int, str]]:
    return [(int(p["line"]), p["path"]) for p in problems]


# --- the example files ----------------------------------------------------------------------------

def test_make_run_example_loads() -> None:
    """conf/smsgw.yaml loads without problems and sets up the simulator, its carrier and the demo account."""
    config = load_config(str(ROOT / "conf/smsgw.yaml"), {})
    assert config.simulator.enabled
    assert [c.name for c in config.simulator_carriers()] == ["sim"]
    assert config.carriers[0].secret.get_secret_value() == "simsecret"
    assert config.accounts[0].api_key_sha256 == hashlib.sha256(b"demo-key").hexdigest()
    assert config.default_link() == "sim"


def test_make_run_example_takes_the_simulator_secret_from_the_environment() -> None:
    """SMSGW_SIM_SECRET, when set, replaces the example's default simulator secret."""
    config = load_config(str(ROOT / "conf/smsgw.yaml"), {"SMSGW_SIM_SECRET": "other"})
    assert config.simulator_config().accounts == {"901234": "other"}


def test_production_example_loads() -> None:
    """conf/production-example.yaml loads without problems once its secrets are in the environment."""
    env = {"DB_PASSWORD": "pw", "CMCC_SECRET": "a", "AGG_SECRET": "b", "HOSTNAME": "fe1", "TAX_DB_PASSWORD": "t",
           "WO_DB_PASSWORD": "w"}
    config = load_config(str(ROOT / "conf/production-example.yaml"), env)
    assert config.node.name == "fe1"
    assert config.store_url() == "postgresql+psycopg://smsgw:pw@db1.example.internal:5432/smsgw"
    assert config.log_file() == "/var/log/smsgw/smsgw.log"
    assert not config.simulator.enabled
    assert [c.version for c in config.carriers] == [Version.V30, Version.V20]
    tax, wo = config.db_sources
    assert tax.plain_url(hide_password=True).startswith("oracle+oracledb://smsgw:***@taxdb")
    assert tax.dialect() == "oracle" and wo.dialect() == "mysql"
    assert wo.mapping is not None and wo.mapping.pending == {"sms_state": 0}


def test_production_example_names_its_missing_secrets() -> None:
    """Without the environment the production example reports each unset variable."""
    found = check_config(str(ROOT / "conf/production-example.yaml"), {})
    assert re.findall(r"environment variable (\w+) is not set", "\n".join(found)) == [
        "DB_PASSWORD", "CMCC_SECRET", "AGG_SECRET", "TAX_DB_PASSWORD", "WO_DB_PASSWORD"]


def _assert_defaults(section: str, written: dict[str, object], model: type[BaseModel],
                     overrides: frozenset[str] = frozenset()) -> None:
    assert set(written) == set(model.model_fields), section
    for name, info in model.model_fields.items():
        if info.is_required() or name in overrides:
            continue
        default = info.get_default(call_default_factory=True)
        default = list(default) if isinstance(default, tuple) else default
        default = default.text if isinstance(default, Version) else default
        if isinstance(default, BaseModel):  # a nested section: key by key, so that lists compare as lists
            nested = written[name]
            assert isinstance(nested, dict), f"{section}.{name}"
            _assert_defaults(f"{section}.{name}", nested, type(default))
            continue
        assert written[name] == default, f"{section}.{name}"


def test_make_run_example_lists_every_key_with_its_default() -> None:
    """conf/smsgw.yaml has every key of every section, each at its default except the documented ones."""
    raw = yaml.safe_load((ROOT / "conf/smsgw.yaml").read_text(encoding="utf-8"))
    assert set(raw) == set(Config.model_fields)
    overrides = {"log": frozenset({"file"}), "routing": frozenset({"default"}),
                 "simulator": frozenset({"enabled"})}
    for section, info in Config.model_fields.items():
        if section in ("accounts", "carriers", "db_sources"):
            continue
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        _assert_defaults(section, raw[section], model, overrides.get(section, frozenset()))
    # The demo account may manage templates, so that the quick start can show them.
    _assert_defaults("accounts[0]", raw["accounts"][0], AccountConfig, frozenset({"api_key_sha256", "permissions"}))
    _assert_defaults("carriers[0]", raw["carriers"][0], CarrierConfig)
    assert raw["db_sources"] == []


def test_make_run_example_documents_every_db_source_key_with_its_default() -> None:
    """The commented db_sources entry in conf/smsgw.yaml lists every key of DbSourceConfig, at its default."""
    text = (ROOT / "conf/smsgw.yaml").read_text(encoding="utf-8")
    block = text.split("every key with its default:\n", 1)[1].split("\ndb_sources:", 1)[0]
    entry = yaml.safe_load("\n".join(line.removeprefix("#") for line in block.splitlines()))[0]
    _assert_defaults("db_sources[0]", entry, DbSourceConfig)


# --- defaults and the built objects ---------------------------------------------------------------

def test_default_config_holds_the_documented_defaults(tmp_path: pathlib.Path) -> None:
    """default_config has no accounts or carriers, SQLite under data_dir and logs to stdout only."""
    config = default_config(str(tmp_path))
    assert config.accounts == () and config.carriers == ()
    assert config.api.port == 8080 and config.store.batch_max == 1000 and config.dispatch.report_timeout == 259200.0
    assert config.store_url() == f"sqlite:///{tmp_path}/smsgw.db"
    assert config.log_file() is None
    assert config.default_link() is None


def test_carrier_fields_and_defaults_are_those_of_link_config() -> None:
    """CarrierConfig has exactly LinkConfig's fields, with the same defaults."""
    link_fields = {f.name: f for f in dataclasses.fields(LinkConfig)}
    assert list(CarrierConfig.model_fields) == list(link_fields)
    for name, info in CarrierConfig.model_fields.items():
        default = link_fields[name].default
        if default is dataclasses.MISSING:
            assert info.is_required(), name
        else:
            assert info.default == default, name


def test_account_fields_are_those_of_the_model_account() -> None:
    """AccountConfig has exactly the fields of smsgw.model.Account, and callbacks (the daemon's, not the model's)."""
    assert list(AccountConfig.model_fields) == [f.name for f in dataclasses.fields(Account)] + ["callbacks"]


def test_link_configs_carry_every_field_and_the_plain_secret(tmp_path: pathlib.Path) -> None:
    """link_configs() builds one LinkConfig per carrier, with the secret's value and a Version."""
    config = load_config(write(tmp_path, BASE + '    version: 2.0\n    rate_limit: 20\n    connections: 3\n'), {})
    assert config.link_configs() == [LinkConfig(
        "c1", "10.0.0.1", 7890, "901234", "s3cret", "1069000100", version=Version.V20, rate_limit=20.0,
        connections=3)]


def test_account_objects_are_model_accounts(tmp_path: pathlib.Path) -> None:
    """account_objects() builds smsgw.model.Account values with tuples for the lists."""
    text = BASE.replace("    api_key_sha256:", "    interfaces: [rest, db]\n    mo_consumers: [x]\n"
                                                "    default_ext: 12\n    api_key_sha256:")
    config = load_config(write(tmp_path, text), {})
    assert config.account_objects() == [Account("app", KEY_HASH, ("rest", "db"), "12", 9, False, ("x",))]


def test_simulator_config_takes_the_accounts_of_carriers_pointing_at_it(tmp_path: pathlib.Path) -> None:
    """simulator_config() lists sp_id: secret of carriers on loopback at simulator.port, and only those."""
    text = BASE + textwrap.dedent("""\
          - {name: c2, host: localhost, port: 7900, sp_id: "111111", secret: two, service_code: "10691"}
          - {name: c3, host: 127.0.0.1, port: 7900, sp_id: "222222", secret: three, service_code: "10692"}
          - {name: c4, host: 127.0.0.1, port: 7901, sp_id: "333333", secret: four, service_code: "10693"}
        simulator: {enabled: true, port: 7900, fail_ratio: 0.25, flow_limit: 100, version: "2.0"}
        """)
    sim = load_config(write(tmp_path, text), {}).simulator_config()
    assert sim == SimulatorConfig(accounts={"111111": "two", "222222": "three"}, version=Version.V20,
                                  fail_ratio=0.25, flow_limit=100.0, mo_dest="10691")


def test_relative_paths_are_under_the_working_directory(tmp_path: pathlib.Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative data_dir is resolved against the working directory, log.file against data_dir."""
    monkeypatch.chdir(tmp_path)
    config = load_config(write(tmp_path, BASE + "node: {data_dir: data}\nlog: {file: log/x.log}\n"), {})
    assert config.data_path() == str(tmp_path / "data")
    assert config.log_file() == str(tmp_path / "data/log/x.log")
    assert config.store_url() == f"sqlite:///{tmp_path}/data/smsgw.db"


def test_store_password_is_put_into_the_url(tmp_path: pathlib.Path) -> None:
    """store.password goes into the URL percent-encoded, and hide_password masks it for logs."""
    text = BASE + 'store:\n  url: "oracle+oracledb://smsgw@db:1521/?service_name=S"\n  password: "${PW}"\n'
    config = load_config(write(tmp_path, text), {"PW": "p@ss/w"})
    assert config.store_url() == "oracle+oracledb://smsgw:p%40ss%2Fw@db:1521/?service_name=S"
    assert config.store_url(hide_password=True) == "oracle+oracledb://smsgw:***@db:1521/?service_name=S"


def test_config_is_frozen(tmp_path: pathlib.Path) -> None:
    """Assigning to a loaded section raises, and lists are tuples."""
    config = load_config(write(tmp_path, BASE), {})
    with pytest.raises(ValidationError):
        config.api.port = 1
    with pytest.raises(ValidationError):
        config.carriers = ()
    assert isinstance(config.carriers, tuple)


# --- YAML values and environment substitution -----------------------------------------------------

def test_empty_file_means_every_default_and_asks_for_an_account(tmp_path: pathlib.Path) -> None:
    """An empty file has one problem: the enabled API has no account."""
    assert where(problems_of(tmp_path, "# nothing\n")) == [(1, "api.enabled")]


def test_section_with_every_key_commented_out_is_all_defaults(tmp_path: pathlib.Path) -> None:
    """A section whose keys are all commented out (YAML null) takes its defaults."""
    config = load_config(write(tmp_path, BASE + "store:\n  # url: x\napi:\n"), {})
    assert config.store.batch_max == 1000 and config.api.enabled


def test_environment_variables_are_substituted(tmp_path: pathlib.Path) -> None:
    """${VAR} takes the variable, ${VAR:-d} the default when unset or empty; plain scalars are then typed."""
    text = BASE.replace("port: 7890", "port: ${PORT:-7890}").replace("s3cret", '"${SECRET}"') + (
        "node: {name: '${NAME:-node-a}', data_dir: '${EMPTY:-var2}'}\n"
        "mo: {auto_replies: [{keyword: A, text: 'costs $${PRICE}'}]}\n")
    config = load_config(write(tmp_path, text), {"SECRET": "from-env", "EMPTY": ""})
    assert config.carriers[0].port == 7890
    assert config.carriers[0].secret.get_secret_value() == "from-env"
    assert (config.node.name, config.node.data_dir) == ("node-a", "var2")
    assert config.mo.auto_replies[0].text == "costs ${PRICE}"
    assert load_config(write(tmp_path, text), {"SECRET": "x", "PORT": "7000"}).carriers[0].port == 7000


def test_unset_variable_without_default_is_a_problem_on_its_line(tmp_path: pathlib.Path) -> None:
    """An unset ${VAR} without default is reported once, with the line, naming the variable."""
    found = problems_of(tmp_path, BASE.replace("s3cret", "${CARRIER_SECRET}"))
    assert where(found) == [(9, "carriers[0].secret")]
    assert "CARRIER_SECRET is not set" in found[0]["what"]
    assert "${CARRIER_SECRET:-default}" in found[0]["fix"]


def test_malformed_variable_is_a_problem(tmp_path: pathlib.Path) -> None:
    """A `${` without a closing brace or a valid name is reported with how to write it."""
    found = problems_of(tmp_path, BASE.replace("s3cret", "ab${1x}"))
    assert where(found) == [(9, "carriers[0].secret")]
    assert "$${" in found[0]["fix"]


def test_numbers_keep_their_digits(tmp_path: pathlib.Path) -> None:
    """Unquoted 001234 stays "001234" (not octal 668), and unquoted digit prefixes become text."""
    text = BASE.replace('"901234"', "001234") + "routing:\n  rules: [{link: c1, prefixes: [134, 1390]}]\n"
    config = load_config(write(tmp_path, text), {})
    assert config.carriers[0].sp_id == "001234"
    assert config.routing.rules[0].prefixes == ("134", "1390")


def test_yes_and_no_stay_words(tmp_path: pathlib.Path) -> None:
    """A keyword NO is the word NO (YAML 1.1 would read false), while a bool still accepts yes."""
    text = BASE + "mo:\n  auto_replies: [{keyword: NO, text: ok}]\nlog: {mask_content: yes}\n"
    config = load_config(write(tmp_path, text), {})
    assert config.mo.auto_replies[0].keyword == "NO"
    assert config.log.mask_content is True


@pytest.mark.parametrize("written, version", [('"3.0"', Version.V30), ("2.0", Version.V20), ("3", Version.V30),
                                              ('"2"', Version.V20)])
def test_version_is_text_or_number(tmp_path: pathlib.Path, written: str, version: Version) -> None:
    """A carrier's version may be written "3.0", 2.0, 3 or "2"."""
    config = load_config(write(tmp_path, BASE + f"    version: {written}\n"), {})
    assert config.carriers[0].version is version


def test_merge_keys_share_carrier_settings(tmp_path: pathlib.Path) -> None:
    """`<<: *anchor` merges shared keys, and the entry's own keys win."""
    text = BASE.replace("  - name: c1", "  - &common\n    name: c1") + (
        "  - <<: *common\n"
        "    name: c2\n"
        "    port: 7891\n")
    config = load_config(write(tmp_path, text), {})
    assert [(c.name, c.port, c.sp_id) for c in config.carriers] == [("c1", 7890, "901234"), ("c2", 7891, "901234")]


# --- problems: where and how to fix ---------------------------------------------------------------

def test_out_of_range_port_has_the_documented_format(tmp_path: pathlib.Path) -> None:
    """A port above 65535 reads FILE:LINE: carriers[0].port: ... — fix: ..."""
    path = write(tmp_path, BASE.replace("port: 7890", "port: 99999"))
    assert check_config(path, {}) == [
        f"{path}:7: carriers[0].port: Input should be less than or equal to 65535 — fix: use a TCP port between "
        "1 and 65535"]


def test_unknown_keys_are_reported_with_their_lines(tmp_path: pathlib.Path) -> None:
    """Unknown keys at the top and nested are problems on their own lines, suggesting the right spelling."""
    text = BASE.replace("    port: 7890\n", "    port: 7890\n    windw: 8\n") + "stroe:\n  url: null\n"
    found = problems_of(tmp_path, text)
    assert where(found) == [(8, "carriers[0].windw"), (12, "stroe")]
    assert "did you mean `window`?" in found[0]["fix"]
    assert "did you mean `store`?" in found[1]["fix"]


def test_missing_required_key_is_reported_at_its_mapping(tmp_path: pathlib.Path) -> None:
    """A carrier without a host is reported at the line where the carrier starts."""
    found = problems_of(tmp_path, BASE.replace("    host: 10.0.0.1\n", ""))
    assert where(found) == [(5, "carriers[0].host")]
    assert found[0]["fix"].startswith("add `host:`")


def test_wrong_types_are_reported(tmp_path: pathlib.Path) -> None:
    """A word for a number, a number for a string list and a list for a section are each reported."""
    text = BASE + "api:\n  port: eighty\n  enabled: maybe\nvalidation: [1]\n"
    found = problems_of(tmp_path, text)
    assert where(found) == [(12, "api.port"), (13, "api.enabled"), (14, "validation")]
    assert found[1]["fix"] == "write true or false"
    assert found[2]["what"] == "must be a mapping (key: value lines)"


def test_quote_hint_for_a_number_where_digits_text_is_expected(tmp_path: pathlib.Path) -> None:
    """A float where digits are expected says to quote it."""
    found = problems_of(tmp_path, BASE.replace('"1069000100"', "1069.5"))
    assert where(found) == [(10, "carriers[0].service_code")]
    assert "quote it" in found[0]["fix"]


def test_duplicate_key_is_a_problem(tmp_path: pathlib.Path) -> None:
    """A key written twice in one mapping is reported at the second one, naming the first line."""
    found = problems_of(tmp_path, BASE + "api:\n  port: 1\n  port: 2\n")
    assert where(found) == [(13, "api.port")]
    assert "also on line 12" in found[0]["what"]


def test_yaml_syntax_error_is_one_problem_with_its_line(tmp_path: pathlib.Path) -> None:
    """Broken YAML gives a single problem at the line where the parser noticed it."""
    found = problems_of(tmp_path, BASE + "api:\n  port: 1\n listen: x\n")
    assert len(found) == 1
    assert found[0]["line"] == "13" and "invalid YAML" in found[0]["what"]


def test_top_level_must_be_a_mapping(tmp_path: pathlib.Path) -> None:
    """A file that is a list is one problem at the top level."""
    assert where(problems_of(tmp_path, "- a\n- b\n")) == [(1, "(file)")]


def test_unreadable_and_undecodable_files_are_one_problem(tmp_path: pathlib.Path) -> None:
    """A missing file and a non-UTF-8 file each give one problem naming the file."""
    missing = str(tmp_path / "nope.yaml")
    assert check_config(missing) == [f"{missing}: (file): cannot read it: No such file or directory — fix: give "
                                     "the path of a readable UTF-8 YAML file, e.g. -c conf/smsgw.yaml"]
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"node: {name: caf\xe9}\n")
    assert len(check_config(str(latin1))) == 1


def test_every_problem_is_reported_at_once(tmp_path: pathlib.Path) -> None:
    """Problems of YAML, substitution and types in different places come back together, in line order."""
    text = BASE.replace("port: 7890", "port: 0").replace("s3cret", "${NOPE}") + (
        "node:\n  id: 1024\n  data_dir: ''\nlog: {level: loud}\napi:\n  port: 1\n  port: 2\n")
    found = problems_of(tmp_path, text)
    assert where(found) == [(7, "carriers[0].port"), (9, "carriers[0].secret"), (12, "node.id"),
                            (13, "node.data_dir"), (14, "log.level"), (17, "api.port")]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {})
    assert info.value.problems == check_config(write(tmp_path, text), {})


# --- problems of meaning --------------------------------------------------------------------------

def test_api_enabled_without_accounts_is_a_problem(tmp_path: pathlib.Path) -> None:
    """With the API on, an empty account list is a problem; with it off, it is not."""
    text = BASE.replace(f"  - name: app\n    api_key_sha256: {KEY_HASH}\n", "  []\n").replace("accounts:\n  []",
                                                                                             "accounts: []")
    found = problems_of(tmp_path, text)
    assert where(found) == [(1, "accounts")]
    assert found[0]["what"] == "api is enabled but no account can use it"
    assert problems_of(tmp_path, text + "api: {enabled: false}\n") == []


def test_routing_to_an_unknown_carrier_lists_the_configured_ones(tmp_path: pathlib.Path) -> None:
    """routing.default and a rule naming a missing carrier are problems that list the carriers."""
    text = BASE + "routing:\n  default: cmcc\n  rules:\n    - {link: c2, prefixes: ['134']}\n"
    found = problems_of(tmp_path, text)
    assert where(found) == [(12, "routing.default"), (14, "routing.rules[0].link")]
    assert all(p["fix"] == "use one of the carriers: c1" for p in found)


def test_prefix_routed_to_two_carriers_is_a_problem(tmp_path: pathlib.Path) -> None:
    """The same prefix in rules for different carriers is reported at its second use."""
    text = BASE + textwrap.dedent("""\
          - {name: c2, host: 10.0.0.2, port: 7890, sp_id: "901235", secret: x, service_code: "10691"}
        routing:
          rules:
            - {link: c1, prefixes: ['134', '135']}
            - {link: c2, prefixes: ['136', '135']}
        """)
    found = problems_of(tmp_path, text)
    assert where(found) == [(15, "routing.rules[1].prefixes[1]")]
    assert "already routed to 'c1' by routing.rules[0]" in found[0]["what"]


def test_duplicate_names_are_problems(tmp_path: pathlib.Path) -> None:
    """Two carriers or two accounts with one name are reported at the second name."""
    text = BASE.replace("carriers:", f"  - name: app\n    api_key_sha256: {KEY_HASH}\ncarriers:") + \
        '  - {name: c1, host: h, port: 1, sp_id: "1", secret: x, service_code: "1"}\n'
    assert where(problems_of(tmp_path, text)) == [(4, "accounts[1].name"), (13, "carriers[1].name")]


def test_simulator_enabled_without_a_carrier_pointing_at_it_is_a_problem(tmp_path: pathlib.Path) -> None:
    """Enabling the simulator while every carrier connects elsewhere is reported with the address to use."""
    found = problems_of(tmp_path, BASE + "simulator:\n  enabled: true\n")
    assert where(found) == [(12, "simulator.enabled")]
    assert "127.0.0.1, port 7890" in found[0]["fix"]


def test_order_and_mo_problems(tmp_path: pathlib.Path) -> None:
    """retry_max below retry_initial and one auto reply keyword twice (in any case) are problems."""
    text = BASE + textwrap.dedent("""\
        dispatch: {retry_initial: 60, retry_max: 10}
        mo:
          routes:
            - {consumer: app, ext: "01"}
          auto_replies:
            - {keyword: td, text: a}
            - {keyword: TD, text: b}
        """)
    assert where(problems_of(tmp_path, text)) == [(11, "dispatch.retry_max"), (17, "mo.auto_replies[1]")]


def test_mo_route_needs_ext_or_keyword(tmp_path: pathlib.Path) -> None:
    """A route with only a consumer would take every MO: it is reported at the route."""
    found = problems_of(tmp_path, BASE + "mo:\n  routes:\n    - consumer: app\n")
    assert where(found) == [(13, "mo.routes[0]")]
    assert "default_consumer" in found[0]["fix"]


@pytest.mark.parametrize("url, hint", [
    ("postgresql://u@h/db", "postgresql+psycopg://"),
    ("mssql+pyodbc://h/db", "oracle+oracledb://"),
    ("not a url", "sqlite:///"),
])
def test_store_url_must_be_a_supported_database(tmp_path: pathlib.Path, url: str, hint: str) -> None:
    """An unsupported dialect, a missing driver or no URL at all is reported with a URL that works."""
    found = problems_of(tmp_path, BASE + f"store: {{url: '{url}'}}\n")
    assert where(found) == [(11, "store.url")]
    assert hint in found[0]["fix"]


def test_api_key_hash_problem_shows_how_to_compute_it(tmp_path: pathlib.Path) -> None:
    """An API key written where its hash belongs is refused with the sha256sum command, and not echoed."""
    found = problems_of(tmp_path, BASE.replace(KEY_HASH, "my-real-api-key"))
    assert where(found) == [(3, "accounts[0].api_key_sha256")]
    assert "printf %s 'THE-KEY' | sha256sum" in found[0]["fix"]
    assert "my-real-api-key" not in str(found)


# --- secrets --------------------------------------------------------------------------------------

def test_secrets_never_appear_in_problems_or_repr(tmp_path: pathlib.Path) -> None:
    """Carrier secrets and database passwords are absent from problems, repr and str of the config."""
    secret = "Zq9-secret-value"
    text = BASE.replace("s3cret", "${S}") + "    version: 9.0\n" + \
        "store: {url: 'postgresql+psycopg://u:${S}@h/db'}\napi: {port: -1}\n"
    found = check_config(write(tmp_path, text), {"S": secret})
    assert len(found) == 2 and secret not in "\n".join(found)
    config = load_config(write(tmp_path, text.replace("    version: 9.0\n", "").replace("-1", "1")), {"S": secret})
    assert secret not in repr(config) and secret not in str(config)
    assert config.link_configs()[0].secret == secret


def test_non_ascii_secret_is_reported_without_its_value(tmp_path: pathlib.Path) -> None:
    """A secret CMPP cannot hash is refused without showing it."""
    found = check_config(write(tmp_path, BASE.replace("s3cret", "密码secret")), {})
    assert len(found) == 1 and "carriers[0].secret" in found[0] and "密码" not in found[0]


def test_yaml_error_does_not_quote_the_line(tmp_path: pathlib.Path) -> None:
    """A syntax error on a secret's line does not echo the line's text."""
    found = check_config(write(tmp_path, BASE.replace("s3cret", '"Zq9-unclosed')), {})
    assert len(found) == 1 and "Zq9" not in found[0]


# --- fuzz -----------------------------------------------------------------------------------------

_FRAGMENTS = ["node:", "carriers:", "accounts:", "routing:", "  - ", "    ", "name: x", "port: 99999", "id: -1",
              "secret: ${S}", "${", "$${", ":-", "}", "[", "]", "{", "}", ",", ": ", "'", '"', "&a ", "*a", "<<: ",
              "!!int ", "!!binary ", "!x ", "? ", "---", "#", "\n", "\n  ", "\t", "001234", "3.0", "yes", "~"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join))
def test_any_text_gives_problems_never_an_exception(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    """check_config returns well-formed problem lines for any text, and raises nothing."""
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text, encoding="utf-8")
    found = check_config(str(path), {"S": "x"})
    assert isinstance(found, list)
    assert all(PROBLEM.match(p) for p in found), found


_KEYS = ["node", "log", "store", "api", "accounts", "carriers", "routing", "simulator", "name", "id", "url", "port",
         "host", "sp_id", "secret", "service_code", "version", "rules", "link", "prefixes", "default", "enabled",
         "routes", "ext", "keyword", "consumer", "api_key_sha256", "password", "file", "level"]
_SCALARS = st.none() | st.booleans() | st.integers(-10, 100_000) | st.floats() | st.text(max_size=8) | st.sampled_from(
    ["3.0", "127.0.0.1", "901234", "${S}", "sqlite:///x", "postgresql+psycopg://u:p@h/d"])
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(_KEYS), inner, max_size=4), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=6))
def test_any_mapping_of_known_keys_gives_problems_never_an_exception(
        tmp_path_factory: pytest.TempPathFactory, data: dict[str, object]) -> None:
    """Well-formed YAML with the schema's keys in wrong places and types gives problem lines, never an exception."""
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert all(PROBLEM.match(p) for p in check_config(str(path), {"S": "x"}))
