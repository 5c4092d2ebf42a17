"""Tests of configuration loading: defaults, every problem reported at once with its key path,
flags overriding the file, and unreadable or malformed files as ConfigErrors."""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import run_virtmon
from tests.tools import need
from virtmon import config, configfile
from virtmon.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def problems_of(raw: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[str]:
    """The problems ``configfile.build`` reports for a parsed document (fails if it accepts it)."""
    with pytest.raises(ConfigError) as caught:
        configfile.build(raw, overrides)
    return caught.value.problems


def paths_of(problems: list[str]) -> list[str]:
    """The key path of each problem ("a.b: message" -> "a.b")."""
    return [problem.split(": ", 1)[0] for problem in problems]


def test_defaults_without_a_file() -> None:
    """With no file every key has its schema default and there are no receivers."""
    cfg = configfile.load(None)
    assert cfg.libvirt.uri == "qemu:///system"
    assert cfg.libvirt.readonly is True
    assert cfg.collect.interval == 15.0
    assert cfg.metrics.listen == f":{config.DEFAULT_PORT}"
    assert cfg.control.socket == "/run/virtmon/virtmon.sock"
    assert cfg.control.allow_write is False
    assert Path(cfg.state.dir) == Path("/var/lib/virtmon")
    assert cfg.collect.collectors == {}
    assert cfg.alerts.receivers == ()
    assert cfg.source is None
    assert cfg.document() == {section: {name: key.default for name, key in keys.items()}
                              for section, keys in config.SCHEMA.items()}


def test_valid_file_is_loaded(tmp_path: Path) -> None:
    """A file with valid keys and a receiver yields those values and a Receiver."""
    path = tmp_path / "virtmon.toml"
    path.write_text(
        '[libvirt]\nuri = "qemu+ssh://root@host/system"\n'
        "[collect]\ninterval = 5\ncollectors = { vm = true, cpu = false }\n"
        '[metrics]\nlisten = "[::1]:9100"\n'
        "[[alerts.receivers]]\n"
        'name = "am"\nkind = "alertmanager"\nurls = ["http://a:9093", "https://b:9093"]\n'
        "timeout = 3\n"
    )
    cfg = configfile.load(path)
    assert cfg.libvirt.uri == "qemu+ssh://root@host/system"
    assert cfg.collect.interval == 5
    assert cfg.collect.collectors == {"vm": True, "cpu": False}
    assert cfg.metrics.listen == "[::1]:9100"
    assert cfg.source == path
    assert cfg.alerts.receivers == (
        config.Receiver("am", "alertmanager", ("http://a:9093", "https://b:9093"), 3.0, {}),
    )


def test_every_kind_of_problem_is_reported_at_once(tmp_path: Path) -> None:
    """One document with many different mistakes gives one problem per mistake, with key paths."""
    raw = {
        "nosuch": {"a": 1},
        "libvirt": {
            "uri": "not a uri",
            "readonly": 1,  # int where a bool is expected
            "keepalive_count": True,  # bool where an int is expected
            "auth_file": str(tmp_path / "missing-credentials"),
            "bogus": "x",
        },
        "collect": {"interval": "fast", "deadline_ratio": 1.5, "collectors": {"cpu": 1}},
        "metrics": {"listen": "localhost"},
        "log": {"level": "loud"},
        "alerts": {"receivers": [
            {"name": "am", "kind": "alertmanager", "urls": ["ftp://x/", "http://"]},
            {"kind": "json"},
            "not a table",
        ]},
    }
    problems = problems_of(raw)
    assert paths_of(problems) == [
        "nosuch",
        "libvirt.uri",
        "libvirt.readonly",
        "libvirt.keepalive_count",
        "libvirt.auth_file",
        "libvirt.bogus",
        "collect.interval",
        "collect.deadline_ratio",
        "metrics.listen",
        "log.level",
        "collect.collectors.cpu",
        "alerts.receivers[0].urls[0]",
        "alerts.receivers[0].urls[1]",
        "alerts.receivers[1].name",
        "alerts.receivers[1].urls",
        "alerts.receivers[2]",
    ]
    text = "\n".join(problems)
    assert "nosuch: unknown section" in text
    assert "libvirt.bogus: unknown key" in text
    assert "not a libvirt URI" in text
    assert "collect.interval: must be a number, not 'fast'" in text
    assert "collect.deadline_ratio: must be from 0.0001 to 1, not 1.5" in text
    assert "'localhost' is not HOST:PORT" in text
    assert "log.level: must be one of debug, info, warning, error" in text
    assert "cannot read" in text and "No such file or directory" in text
    assert "alerts.receivers[1].name: required" in text
    assert "'ftp://x/' is not an http(s) URL" in text


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("libvirt", "readonly", 1, "must be true or false, not 1"),
    ("libvirt", "readonly", "yes", "must be true or false, not 'yes'"),
    ("libvirt", "max_concurrent_calls", True, "must be an integer, not True"),
    ("libvirt", "max_concurrent_calls", 2.5, "must be an integer, not 2.5"),
    ("libvirt", "open_timeout", False, "must be a number, not False"),
    ("control", "allow_write", 0, "must be true or false, not 0"),
])
def test_bool_and_int_are_not_confused(section: str, key: str, value: Any, message: str) -> None:
    """TOML keeps booleans and integers apart and so does validation (bool is not an int)."""
    assert problems_of({section: {key: value}}) == [f"{section}.{key}: {message}"]


@pytest.mark.parametrize("uri", [
    "qemu:///system", "test:///default", "qemu+ssh://root@host/system",
    "qemu+tls://host.example/system", "qemu+tcp://10.0.0.1:16509/system", "xen://",
])
def test_libvirt_uris_are_accepted(uri: str) -> None:
    """Local and remote libvirt URIs pass the URI check."""
    assert configfile.build({"libvirt": {"uri": uri}}).libvirt.uri == uri


@pytest.mark.parametrize("uri", ["", "system", "qemu:/system", "/var/run/libvirt", "qemu"])
def test_bad_uris_are_rejected(uri: str) -> None:
    """Strings that are not driver://... URIs are reported under libvirt.uri."""
    assert paths_of(problems_of({"libvirt": {"uri": uri}})) == ["libvirt.uri"]


@pytest.mark.parametrize(("listen", "ok"), [
    (":9786", True), ("127.0.0.1:1", True), ("[::1]:65535", True), ("0.0.0.0:80", True),
    ("localhost", False), ("host:0", False), ("host:65536", False), ("host:http", False),
    ("host:", False), ("", False), ("host:-1", False),
])
def test_listen_address(listen: str, ok: bool) -> None:
    """metrics.listen must be HOST:PORT with a port from 1 to 65535."""
    if ok:
        assert configfile.build({"metrics": {"listen": listen}}).metrics.listen == listen
    else:
        assert paths_of(problems_of({"metrics": {"listen": listen}})) == ["metrics.listen"]


def test_unreadable_auth_file_is_reported(tmp_path: Path) -> None:
    """An auth_file that cannot be opened (missing, or a directory) is a problem; a file is not."""
    missing = problems_of({"libvirt": {"auth_file": str(tmp_path / "nope")}})
    assert paths_of(missing) == ["libvirt.auth_file"]
    assert "No such file or directory" in missing[0]
    directory = problems_of({"libvirt": {"auth_file": str(tmp_path)}})
    assert paths_of(directory) == ["libvirt.auth_file"]
    good = tmp_path / "auth.conf"
    good.write_text("[credentials-x]\n")
    assert configfile.build({"libvirt": {"auth_file": str(good)}}).libvirt.auth_file == str(good)


UNREADABLE_CHECK = """
import sys
import typing
from virtmon import config, configfile
try:
    configfile.build({"libvirt": {"auth_file": sys.argv[1]}})
except config.ConfigError as exc:
    print("\\n".join(exc.problems))
"""


def test_auth_file_without_read_permission_is_reported(tmp_path: Path) -> None:
    """An auth_file with mode 000 is reported as unreadable (permission denied), checked by a
    process without CAP_DAC_OVERRIDE (root reads any file; setpriv drops the capability)."""
    secret = tmp_path / "auth.conf"
    secret.write_text("x")
    secret.chmod(0)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
            "--inh-caps", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    if drop:
        need("setpriv")
    done = subprocess.run([*drop, sys.executable, "-c", UNREADABLE_CHECK, str(secret)],
                          capture_output=True, text=True, timeout=60, check=True, cwd=ROOT)
    assert done.stdout.startswith("libvirt.auth_file: ") and "Permission denied" in done.stdout
    secret.chmod(0o600)  # the same file, readable: no problem (the check can tell them apart)
    readable = subprocess.run([*drop, sys.executable, "-c", UNREADABLE_CHECK, str(secret)],
                              capture_output=True, text=True, timeout=60, check=True, cwd=ROOT)
    assert readable.stdout == ""


def test_receiver_problems() -> None:
    """A receiver missing keys, with an unknown key, a bad kind or non-http URLs is reported."""
    problems = problems_of({"alerts": {"receivers": [
        {"name": "a", "kind": "pager", "urls": ["https://ok/"], "colour": "red"},
        {"name": "b", "kind": "json", "urls": ["mailto:x@y", "https:///nohost"]},
        {},
    ]}})
    assert paths_of(problems) == [
        "alerts.receivers[0].kind",
        "alerts.receivers[0].colour",
        "alerts.receivers[1].urls[0]",
        "alerts.receivers[1].urls[1]",
        "alerts.receivers[2].name",
        "alerts.receivers[2].kind",
        "alerts.receivers[2].urls",
    ]
    assert problems[0].endswith("must be one of alertmanager, json, cloudevents")
    assert problems[1] == "alerts.receivers[0].colour: unknown key"


def test_section_that_is_not_a_table() -> None:
    """A section given as a scalar is reported as needing to be a table."""
    assert problems_of({"libvirt": "qemu:///system"}) == ["libvirt: must be a table"]


def test_socket_path_length() -> None:
    """control.socket must fit in sun_path (107 bytes plus the NUL)."""
    assert configfile.build({"control": {"socket": "/" + "s" * 106}})
    assert paths_of(problems_of({"control": {"socket": "/" + "s" * 107}})) == ["control.socket"]


def test_flags_override_the_file(tmp_path: Path) -> None:
    """A flag given on the command line wins over the file; None means 'not given'."""
    path = tmp_path / "virtmon.toml"
    path.write_text('[libvirt]\nuri = "qemu:///system"\n[metrics]\nlisten = ":9000"\n'
                    '[collect]\ninterval = 30\n')
    cfg = configfile.load(path, {
        "libvirt.uri": "test:///default", "collect.interval": 2.5, "metrics.listen": None,
        "state.dir": str(tmp_path / "state"),
    })
    assert cfg.libvirt.uri == "test:///default"
    assert cfg.collect.interval == 2.5
    assert cfg.metrics.listen == ":9000"
    assert Path(cfg.state.dir) == tmp_path / "state"


def test_bad_flags_are_reported_with_the_file_problems(tmp_path: Path) -> None:
    """Problems in flags are named "(command line)" and listed along with the file's."""
    path = tmp_path / "virtmon.toml"
    path.write_text("[collect]\ninterval = -1\n")
    with pytest.raises(ConfigError) as caught:
        configfile.load(path, {"libvirt.uri": "nonsense", "metrics.listen": "nohost"})
    assert caught.value.problems == [
        "collect.interval: must be from 0.01 to 86400, not -1",
        "libvirt.uri (command line): 'nonsense' is not a libvirt URI "
        "(like qemu:///system or qemu+ssh://host/system)",
        "metrics.listen (command line): 'nohost' is not HOST:PORT",
    ]


def test_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not TOML gives one ConfigError naming the file, not a traceback."""
    path = tmp_path / "broken.toml"
    path.write_text("[libvirt\nuri = \n")
    with pytest.raises(ConfigError) as caught:
        configfile.load(path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{path}: not valid TOML")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported as invalid TOML, not raised as UnicodeDecodeError."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[state]\ndir = "/var/lib/\xe9"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        configfile.load(path)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_file_is_a_config_error(tmp_path: Path, kind: str) -> None:
    """A configuration file that cannot be read is a ConfigError naming the file."""
    path = tmp_path / "missing.toml" if kind == "missing" else tmp_path
    with pytest.raises(ConfigError) as caught:
        configfile.load(path)
    assert caught.value.problems == [f"{path}: cannot read: " + (
        "No such file or directory" if kind == "missing" else "Is a directory")]


def test_config_error_message_lists_every_problem() -> None:
    """str(ConfigError) has one line per problem (what a log line or traceback shows)."""
    error = ConfigError(["a.b: x", "c.d: y"])
    assert str(error) == "a.b: x\nc.d: y"


def test_unknown_collector_name_is_reported() -> None:
    """A collector name that does not exist is a problem under collect.collectors.NAME."""
    assert paths_of(problems_of({"collect": {"collectors": {"cpuu": True}}})) == [
        "collect.collectors.cpuu"
    ]


def test_bad_socket_mode_is_reported() -> None:
    """control.socket_mode must be an octal permission string."""
    assert paths_of(problems_of({"control": {"socket_mode": "rw"}})) == ["control.socket_mode"]


def test_a_receiver_ca_file_that_is_not_a_certificate_is_reported(tmp_path: Path) -> None:
    """A readable tls_ca_file that holds no certificate: reported with the receiver's key path."""
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    receiver = {"name": "r", "kind": "json", "urls": ["https://127.0.0.1:9/"],
                "tls_ca_file": str(bad)}
    [problem] = problems_of({"alerts": {"receivers": [receiver]}})
    assert problem.startswith("alerts.receivers[0]: cannot load the TLS files")


def test_no_field_of_the_configuration_is_typed_any() -> None:
    """Every field of every section (and of a receiver) has a concrete type, down to the items
    of its tuples and tables: what users read is typed for mypy, never Any."""
    def parts(hint: object) -> list[object]:
        return [hint, *(part for arg in typing.get_args(hint) for part in parts(arg))]

    untyped = [f"{cls.__name__}.{name}"
               for cls in (*config.SECTIONS.values(), config.Receiver, config.Config)
               for name, hint in typing.get_type_hints(cls).items()
               if typing.Any in parts(hint)]
    assert untyped == []


def test_migration_destinations_are_checked_each_with_its_key() -> None:
    """A destination whose URI is not a libvirt URI, one that is not a string, and a name a
    request could not give are each a problem under control.migration_destinations.NAME."""
    problems = problems_of({"control": {"migration_destinations": {
        "peer": "peer.example", "numbered": 3, "two words": "qemu+tcp://peer/system",
        "good": "qemu+ssh://peer.example/system?keyfile=/etc/virtmon/id_ed25519"}}})
    assert paths_of(problems) == [
        "control.migration_destinations.peer", "control.migration_destinations.numbered",
        'control.migration_destinations."two words"']
    assert "'peer.example' is not a libvirt URI" in problems[0]


def test_migration_destinations_load_as_a_mapping() -> None:
    """Valid destinations load as name -> URI, with the migration deadline beside them."""
    cfg = configfile.build({"control": {
        "migration_destinations": {"peer-1.lab": "qemu+tcp://169.254.213.2/system"},
        "migration_timeout": 600}})
    assert cfg.control.migration_destinations == {"peer-1.lab": "qemu+tcp://169.254.213.2/system"}
    assert cfg.control.migration_timeout == 600.0


def test_check_config_names_a_bad_migration_destination_and_exits_78(tmp_path: Path) -> None:
    """A migration destination with a URI libvirt cannot read: its key, and exit 78."""
    path = tmp_path / "bad.toml"
    path.write_text('[control.migration_destinations]\npeer = "169.254.213.2"\n')
    result = run_virtmon("check-config", str(path))
    assert result.returncode == config.EX_CONFIG
    assert result.stderr.strip().splitlines() == [
        f"{path}: control.migration_destinations.peer: '169.254.213.2' is not a libvirt URI "
        "(like qemu:///system or qemu+ssh://host/system)"]
