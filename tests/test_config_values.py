"""Values that parse but would break what uses them are configuration problems with their key
path: URLs, headers, numbers, secrets, paths and names, checked when the file is read."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.daemon import daemon_config, running_daemon
from tests.test_config import paths_of, problems_of
from virtmon import config, configfile
from virtmon.alerts import ruleconfig
from virtmon.reload import reload_daemon

ROOT = Path(__file__).resolve().parents[1]


def receiver(**keys: Any) -> dict[str, Any]:
    """A document with one valid json receiver, plus ``keys``."""
    return {"alerts": {"receivers": [
        {"name": "r", "kind": "json", "urls": ["http://127.0.0.1:9/"], **keys}]}}


def number_keys() -> list[tuple[str, str, config.Key]]:
    """(section, name, key) of every number in the schema; receivers as "alerts.receivers"."""
    found = [(section, name, key) for section, keys in config.SCHEMA.items()
             for name, key in keys.items() if key.limits is not None]
    found += [("alerts.receivers", name, key) for name, key in config.RECEIVER_SCHEMA.items()
              if key.limits is not None]
    return found


def document(section: str, name: str, value: Any) -> tuple[dict[str, Any], str]:
    """A document setting one key, and that key's path."""
    if section == "alerts.receivers":
        return receiver(**{name: value}), f"alerts.receivers[0].{name}"
    return {section: {name: value}}, f"{section}.{name}"


@pytest.mark.parametrize("url", [
    "http://grafana example/d/1", "http://grafana.example/d/a b", "grafana.example",
    "ftp://grafana.example/", "http://:3000/", "http://grafana.example:99999/",
    "http://grafana.example:0/", "http://[::1/", "http://grafana.example/%zz",
])
def test_an_external_url_that_is_no_http_url_is_rejected(url: str) -> None:
    """alerts.external_url with a space (Alertmanager answered 422 to every alert), without a
    scheme or host, or with a bad port is a problem under its key."""
    [problem] = problems_of({"alerts": {"external_url": url}})
    assert problem.startswith(f"alerts.external_url: {url!r}")


@pytest.mark.parametrize("url", [
    "", "https://grafana.example/d/abc?orgId=1&var-host=a%20b#panel", "http://[::1]:3000/",
    "http://user:pass@10.0.0.1:3000/", "HTTPS://Grafana.Example./",
])
def test_an_external_url_that_is_valid_is_kept(url: str) -> None:
    """Escaped, IPv6, with credentials or a fully qualified host: a URL stays accepted."""
    assert configfile.build({"alerts": {"external_url": url}}).alerts.external_url == url


@pytest.mark.parametrize(("url", "message"), [
    ("http://am:99999/", "Port out of range"),
    ("http://am:abc/", "Port could not be cast"),
    ("http://am:0/", "port 0 cannot be connected to"),
    ("http:///api", "not an http(s) URL with a host"),
    ("http://am_0:9093/", "'am_0' is neither an IP address nor a host name"),
    ("http://am-.example/", "is neither an IP address nor a host name"),
    ("http://am 0:9093/", "' ' must be percent-encoded"),
    ("http://am:9093/\u00e9", "'é' must be percent-encoded"),
])
def test_a_receiver_url_that_cannot_be_delivered_to_is_rejected(url: str, message: str) -> None:
    """A receiver URL with a bad or out-of-range port or no valid host is a problem (it was
    retried as a transient error for max_age instead)."""
    [problem] = problems_of(receiver(urls=[url]))
    assert problem.startswith("alerts.receivers[0].urls[0]: ") and message in problem


def test_a_receiver_url_that_is_not_a_string_is_reported_as_such() -> None:
    """A number in urls is "must be a string", not a complaint about the text '5'."""
    assert problems_of(receiver(urls=[5])) == [
        "alerts.receivers[0].urls[0]: must be a string, not 5"]


@pytest.mark.parametrize(("headers", "problem"), [
    ({"X-Token": "a\r\nX-Evil: 1"}, "X-Token: 'a\\r\\nX-Evil: 1' is not a header value"),
    ({"X-Token": "a\nb"}, "X-Token: 'a\\nb' is not a header value"),
    ({"X-Token": "a\0b"}, "X-Token: 'a\\x00b' is not a header value"),
    ({"X-Token": " padded"}, "X-Token: ' padded' is not a header value"),
    ({"X-Token": "caf\u00e9"}, "X-Token: 'café' is not a header value"),
    ({"X Token": "a"}, '"X Token": not a header name'),
    ({"X-Token:": "a"}, '"X-Token:": not a header name'),
    ({"": "a"}, '"": not a header name'),
    ({"Content-Type": "text/plain"}, "Content-Type: virtmon sets this header itself"),
    ({"idempotency-key": "1"}, "idempotency-key: virtmon sets this header itself"),
    ({"User-Agent": "me"}, "User-Agent: virtmon sets this header itself"),
    ({"X-A": "1", "x-a": "2"}, "x-a: given twice (header names ignore case)"),
    ({"X-A": 1}, "X-A: must be a string"),
])
def test_a_header_that_would_break_the_request_is_rejected(
    headers: dict[str, Any], problem: str,
) -> None:
    """Header names are RFC 9110 tokens and values visible ASCII: a CR/LF (which crashed the
    delivery task every 5 s), a space in a name, or a header virtmon sets is a problem."""
    problems = problems_of(receiver(headers=headers))
    assert len(problems) == 1 and problems[0].startswith(f"alerts.receivers[0].headers.{problem}")


def test_valid_headers_are_kept() -> None:
    """Tokens with their special characters and values with inner spaces and tabs pass."""
    headers = {"Authorization": "Bearer a b\tc", "X-Scope-OrgID": "tenant-1",
               "x!#$%&'*+.^_`|~": "", "X-Empty": ""}
    [kept] = configfile.build(receiver(headers=headers)).alerts.receivers
    assert kept.headers == headers


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e300, -1e300, 1e-300, -1.0])
def test_no_number_accepts_infinite_huge_tiny_or_negative_values(value: float) -> None:
    """inf, nan, 1e300 and 1e-300 (an OverflowError crash loop, a task asleep for ever, a rate
    that never sends) are rejected in every number of the schema, with the key's range."""
    for section, name, key in number_keys():
        raw, path = document(section, name, value)
        if key.type is int:  # a float there is a type error: try the largest integers
            raw, path = document(section, name, -1 if value < 0 else 2**63 - 1)
        problems = problems_of(raw)
        assert paths_of(problems) == [path], problems
        assert key.limits is not None and key.limits.span in problems[0], problems


def test_every_number_accepts_its_documented_bounds_and_default() -> None:
    """The low and high end of every range, and every default, are valid values."""
    for section, name, key in number_keys():
        assert key.limits is not None
        for value in (key.limits.low, key.limits.high, key.default):
            value = int(value) if key.type is int else value
            raw, _path = document(section, name, value)
            configfile.build(raw)


def test_a_huge_integer_where_a_number_of_seconds_is_expected_is_out_of_range() -> None:
    """A TOML integer is a number too: 2^63 - 1 seconds is out of range, not an overflow."""
    assert paths_of(problems_of({"collect": {"interval": 2**63 - 1}})) == ["collect.interval"]


@pytest.mark.parametrize(("rule", "path"), [
    ({"match": {"kind": "x"}, "resolve": {"kind": "y"}, "for": math.inf}, "for"),
    ({"match": {"kind": "x"}, "resolve": {"kind": "y"}, "for": 1e-300}, "for"),
    ({"match": {"kind": "x"}, "resolve_after": 1e300}, "resolve_after"),
    ({"match": {"kind": "x"}, "resolve_after": math.nan}, "resolve_after"),
    ({"metric": "m", "value": math.nan}, "value"),
    ({"metric": "m", "value": math.inf}, "value"),
    ({"metric": "m", "value": 1, "for_cycles": 2**62}, "for_cycles"),
])
def test_rule_numbers_are_finite_and_in_range(rule: dict[str, Any], path: str) -> None:
    """A rule's for, resolve_after, value and for_cycles reject inf, nan, huge and tiny values."""
    problems = problems_of({"alerts": {"rules": [{"name": "R", **rule}]}})
    assert paths_of(problems) == [f"alerts.rules[0].{path}"], problems


@pytest.mark.parametrize("enabled", ["no", 0, "false"])
def test_a_rule_switched_off_with_a_non_boolean_names_only_enabled(enabled: Any) -> None:
    """``{ name = "DomainCrashed", enabled = "no" }`` says enabled must be true or false, not
    that the rule needs a match or a metric (which it does not, to be switched off)."""
    problems = problems_of({"alerts": {"rules": [{"name": "DomainCrashed", "enabled": enabled}]}})
    assert problems == [f"alerts.rules[0].enabled: must be true or false, not {enabled!r}"]


def test_a_whole_rule_with_a_non_boolean_enabled_names_enabled() -> None:
    """A complete rule with enabled = "no" is reported under enabled, and only there."""
    rule = {"name": "R", "match": {"kind": "x"}, "enabled": "no"}
    assert paths_of(problems_of({"alerts": {"rules": [rule]}})) == ["alerts.rules[0].enabled"]


@pytest.mark.parametrize("name", ["", " ", " am", "am\n", "a\x7fb"])
def test_a_receiver_name_must_be_printable_and_not_empty(name: str) -> None:
    """A receiver named "" (or only spaces, or with a control character) is a problem."""
    assert paths_of(problems_of(receiver(name=name))) == ["alerts.receivers[0].name"]


@pytest.mark.parametrize("content", ["", "  \n\t"])
def test_an_empty_hmac_secret_is_rejected(tmp_path: Path, content: str) -> None:
    """An hmac_secret_file with nothing but whitespace would sign with an empty key."""
    secret = tmp_path / "secret"
    secret.write_text(content)
    [problem] = problems_of(receiver(hmac_secret_file=str(secret)))
    assert problem == (f"alerts.receivers[0].hmac_secret_file: {str(secret)!r} is empty "
                       "(a signature with an empty key proves nothing)")
    secret.write_text("s3cret\n")
    assert configfile.build(receiver(hmac_secret_file=str(secret))).alerts.receivers


@pytest.mark.parametrize("key", ["auth_file", "web_config_file", "hmac_secret_file",
                                 "tls_ca_file", "default_rules_file"])
def test_a_file_key_naming_a_directory_or_device_is_rejected(tmp_path: Path, key: str) -> None:
    """Files are regular files: a directory, /dev/zero (read for ever) or a NUL is refused."""
    sections = {"auth_file": "libvirt", "web_config_file": "metrics",
                "default_rules_file": "alerts"}
    for value, message in ((str(tmp_path), "not a regular file"),
                           ("/dev/zero", "not a regular file"),
                           ("a\0b", "holds a NUL character")):
        if key in sections:
            raw, path = {sections[key]: {key: value}}, f"{sections[key]}.{key}"
        else:
            raw, path = receiver(**{key: value}), f"alerts.receivers[0].{key}"
        problems = problems_of(raw)
        assert paths_of(problems) == [path] and message in problems[0], problems


def test_a_fifo_as_a_file_key_is_rejected_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer: the check must not (it would hang a
    reload), and a FIFO is not a regular file."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    [problem] = problems_of({"libvirt": {"auth_file": str(fifo)}})
    assert problem == f"libvirt.auth_file: {str(fifo)!r} is not a regular file"


def test_state_dir_must_be_a_directory_or_makeable(tmp_path: Path) -> None:
    """state.dir at a file, under a file, empty or with a NUL is a problem; a directory that
    does not exist yet (under one that does) is fine, since the daemon makes it."""
    a_file = tmp_path / "file"
    a_file.write_text("")
    for value, message in ((str(a_file), "exists and is not a directory"),
                           (str(a_file / "sub"), f"cannot be made: {a_file} is not a directory"),
                           ("", "must name a directory"), ("a\0b", "NUL")):
        [problem] = problems_of({"state": {"dir": value}})
        assert problem.startswith("state.dir: ") and message in problem, problem
    fresh = tmp_path / "new" / "state"
    assert configfile.build({"state": {"dir": str(fresh)}}).state.dir == str(fresh)


def test_run_with_state_dir_at_a_file_exits_78_naming_the_key(tmp_path: Path) -> None:
    """`virtmon run` with state.dir pointing at a file exits 78 with the key path (it exited
    69, "cannot start", with no key), and check-config says the same."""
    a_file = tmp_path / "state-file"
    a_file.write_text("")
    path = tmp_path / "virtmon.toml"
    path.write_text(f'[libvirt]\nuri = "test:///default"\n[state]\ndir = "{a_file}"\n'
                    f'[control]\nsocket = "{tmp_path / "s"}"\n')
    expected = f"state.dir: {str(a_file)!r} exists and is not a directory"
    for command, prefix in (("run", "virtmon: config: "), ("check-config", f"{path}: ")):
        args = [command, "--config", str(path)] if command == "run" else [command, str(path)]
        done = subprocess.run([sys.executable, "-m", "virtmon.cli", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stderr.strip()) == (78, prefix + expected)


def test_control_socket_must_not_replace_a_file(tmp_path: Path) -> None:
    """control.socket at an existing regular file is a problem: starting would delete it."""
    a_file = tmp_path / "precious"
    a_file.write_text("keep me")
    [problem] = problems_of({"control": {"socket": str(a_file)}})
    assert problem == f"control.socket: {str(a_file)!r} exists and is not a socket"
    assert paths_of(problems_of({"control": {"socket": ""}})) == ["control.socket"]


@pytest.mark.parametrize(("section", "key", "value"), [
    ("control", "socket_group", "vm\0mon"),
    ("control", "read_groups", ["ok", "bad\nname"]),
    ("control", "admin_groups", [""]),
    ("control", "admin_uids", [2**40]),
    ("control", "write_groups", [-1]),
])
def test_group_names_and_ids_are_checked(section: str, key: str, value: Any) -> None:
    """Group names without control characters (a NUL crashed getgrnam), ids within 32 bits."""
    assert paths_of(problems_of({section: {key: value}})) == [f"{section}.{key}"]


@pytest.mark.parametrize(("listen", "ok"), [
    ("a b:9786", False), ("host_name:9786", False), ("[::1:9786", False),
    (":\u00b2", False), (":\u0663", False), ("h:\u0661\u0662", False),
    ("[::1]:9786", True), ("::1:9786", True), ("host.example:9786", True),
])
def test_listen_host_is_an_address_or_a_host_name(listen: str, ok: bool) -> None:
    """metrics.listen's host must be one the listener can bind (it failed at start, exit 69),
    its port ASCII digits (":²" raised ValueError out of check-config, ":٣" listened on 3)."""
    if ok:
        assert configfile.build({"metrics": {"listen": listen}})
    else:
        assert paths_of(problems_of({"metrics": {"listen": listen}})) == ["metrics.listen"]


@pytest.mark.parametrize("uri", ["qemu+ssh://host/system?keyfile=/a b", "qemu:///system\n",
                                 "test:///default\0"])
def test_a_libvirt_uri_with_characters_a_uri_cannot_hold_is_rejected(uri: str) -> None:
    """Spaces and control characters in libvirt.uri are problems, not a failing connect."""
    assert paths_of(problems_of({"libvirt": {"uri": uri}})) == ["libvirt.uri"]


@pytest.mark.parametrize(("path", "message"), [
    ("[[", "is not a path ElementTree can follow"),
    ("nova:instance/@uuid", "prefix 'nova' not found"),
    ("", "is not a path ElementTree can follow"),
])
def test_a_metadata_label_path_elementtree_cannot_follow_is_rejected(
    path: str, message: str,
) -> None:
    """A metadata label path that ElementTree cannot evaluate is found when the file is read,
    not by every domain's read failing."""
    [problem] = problems_of({"collect": {"metadata_labels": {"project": path}}})
    assert problem.startswith("collect.metadata_labels.project: ") and message in problem


DOCS = {"configuration": ROOT / "docs" / "configuration.md", "alerts": ROOT / "docs" / "alerts.md"}


def documented_ranges(doc: Path) -> dict[str, str]:
    """The range column of a doc's table of numbers: ``key`` -> range text."""
    rows = re.findall(r"^\| `([a-z_.\[\]]+)` \| ([^|]+?) \|", doc.read_text(encoding="utf-8"),
                      flags=re.M)
    return dict(rows)


def test_every_number_range_is_in_the_configuration_reference() -> None:
    """docs/configuration.md lists each number key with exactly the range the schema enforces."""
    expected = {f"{section}.{name}" if section != "alerts.receivers"
                else f"alerts.receivers[].{name}": str(key.limits)
                for section, name, key in number_keys()}
    documented = documented_ranges(DOCS["configuration"])
    assert {k: documented.get(k) for k in expected} == expected


def test_every_rule_number_range_is_in_the_alerts_reference() -> None:
    """docs/alerts.md lists the ranges of a rule's for, resolve_after and for_cycles."""
    expected = {"for": str(ruleconfig.FOR_SECONDS), "resolve_after": str(config.LONG_SECONDS),
                "for_cycles": str(ruleconfig.FOR_CYCLES)}
    documented = documented_ranges(DOCS["alerts"])
    assert {k: documented.get(k) for k in expected} == expected


def test_odd_keys_are_quoted_in_key_paths() -> None:
    """An empty key, or one with a space, dot or colon, is quoted in its key path, so a problem
    still reads "path: message" (an empty section read ": unknown section")."""
    problems = problems_of({"": {}, "metrics": {"a b": 1, "x.y:": 2},
                            "collect": {"collectors": {"": True}}})
    assert problems[:3] == ['"": unknown section', 'metrics."a b": unknown key',
                            'metrics."x.y:": unknown key']
    assert problems[3].startswith('collect.collectors."": unknown collector')


def test_a_multi_line_parser_message_is_one_problem_line(tmp_path: Path) -> None:
    """A web config file that is not YAML gives a problem on one line (the YAML parser's
    message has several; check-config printed them as lines without a key path)."""
    bad = tmp_path / "web.yml"
    bad.write_text('[[rules]]\nname = "Mine"\n')
    [problem] = problems_of({"metrics": {"web_config_file": str(bad)}})
    assert problem.startswith("metrics.web_config_file: ") and "\n" not in problem


def test_unknown_rule_keys_are_listed_in_the_file_order() -> None:
    """Unknown keys of a rule and of a matcher come in the file's order, the same in every
    process (a set's order changed with the hash seed, so check-config and a reload differed)."""
    keys = ["zeta", "alpha", "mu", "beta", "omega"]
    rule = {"name": "R", "match": {"kind": "x", **dict.fromkeys(keys, 1)},
            **dict.fromkeys(keys, 1)}
    code = ("from virtmon import config, configfile\n"
            "try:\n"
            f"    configfile.build({{'alerts': {{'rules': [{rule!r}]}}}})\n"
            "except config.ConfigError as exc:\n"
            "    print('\\n'.join(exc.problems))\n")
    outputs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
               for seed in range(4)}
    [output] = outputs
    assert [line.split(": ")[0] for line in output.splitlines()] == [
        *(f"alerts.rules[0].{k}" for k in keys), *(f"alerts.rules[0].match.{k}" for k in keys)]


@pytest.mark.parametrize("op", [[], {}, [">"], 1])
def test_a_threshold_operator_that_is_not_a_string_is_a_problem(op: Any) -> None:
    """op = [] (an array, which cannot be looked up in the operator table) is reported under
    its key; it raised TypeError out of check-config."""
    rule = {"name": "R", "metric": "m", "value": 1, "op": op}
    assert paths_of(problems_of({"alerts": {"rules": [rule]}})) == ["alerts.rules[0].op"]


async def test_a_reload_with_values_that_would_break_delivery_is_rejected(
    short_tmp: Path,
) -> None:
    """On reload as at start: a CR/LF header, an infinite timeout, an external URL with a space
    and an empty secret reject the reload with each key path; the running configuration stays
    and so does the daemon."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"})
    empty = short_tmp / "empty-secret"
    empty.write_text("\n")
    path = short_tmp / "reload.toml"
    path.write_text(
        '[alerts]\nexternal_url = "http://grafana example/"\n'
        '[[alerts.receivers]]\nname = "r"\nkind = "json"\nurls = ["http://127.0.0.1:9/"]\n'
        f'timeout = inf\nheaders = {{ X-Token = "a\\r\\nX-Evil: 1" }}\n'
        f'hmac_secret_file = "{empty}"\n')
    async with running_daemon(cfg) as daemon:
        with structlog.testing.capture_logs() as logs:
            assert await reload_daemon(daemon, lambda: configfile.load(path)) is None
        assert paths_of([e["problem"] for e in logs if e["event"] == "virtmon.reload.invalid"]) \
            == ["alerts.external_url", "alerts.receivers[0].timeout",
                "alerts.receivers[0].headers.X-Token", "alerts.receivers[0].hmac_secret_file"]
        assert daemon.config is cfg and daemon.alerts.targets == []
        assert not daemon.finished.is_set()
