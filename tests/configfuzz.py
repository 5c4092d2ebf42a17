"""Hypothesis strategies for configuration documents, and the TOML writer that renders them.

Documents follow the schema (virtmon.config.SCHEMA, RECEIVER_SCHEMA, the rule keys) but each value
is, by chance, valid, at or past a boundary, of a swapped type, infinite, huge or tiny, or text
with unicode and control characters; URLs are well formed or broken; file keys name a regular
file, an empty or blank one, a directory, a FIFO, a missing path or one under a file. Plain
functions, so the suite's short run and ``make fuzz``'s long one share them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from virtmon import config
from virtmon.collectors import COLLECTORS

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


# -- TOML ----------------------------------------------------------------------------------------

def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    """A key, bare when it may be, else quoted."""
    return key if _BARE_KEY.match(key) else toml_string(key)


def toml_value(value: Any) -> str:
    """Any value as inline TOML (tables as inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def toml_document(document: Mapping[str, Any]) -> str:
    """A document: values that are not tables first (they must precede every header), then one
    ``[section]`` per table."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in document.items()
             if not isinstance(v, dict)]
    for section, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_key(section)}]")
            lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


# -- the files a document may name ---------------------------------------------------------------

@dataclass(frozen=True)
class Files:
    """Paths of every kind a file, directory or socket key may meet, under one directory."""

    root: Path
    secret: Path  # a regular file with content
    empty: Path
    blank: Path  # whitespace only
    directory: Path
    fifo: Path
    missing: Path
    under_a_file: Path
    dangling: Path  # a symbolic link to nothing
    rules: Path  # a valid rule file
    garbage_rules: Path  # not TOML

    @classmethod
    def make(cls, root: Path) -> Files:
        """Create them in ``root``."""
        files = cls(root, root / "secret", root / "empty", root / "blank", root / "dir",
                    root / "fifo", root / "missing", root / "secret" / "below",
                    root / "dangling", root / "rules.toml", root / "garbage.toml")
        files.secret.write_text("s3cret\n")
        files.empty.write_text("")
        files.blank.write_text(" \n\t\n")
        files.directory.mkdir()
        os.mkfifo(files.fifo)
        files.dangling.symlink_to(root / "nowhere")
        files.rules.write_text('[[rules]]\nname = "Mine"\nmatch = { kind = "lifecycle" }\n')
        files.garbage_rules.write_text("[[rules\nname = \n")
        return files

    def paths(self) -> list[str]:
        """Every path, as configuration text, plus "" (none) and a path with a NUL."""
        return ["", str(self.secret), str(self.empty), str(self.blank), str(self.directory),
                str(self.fifo), str(self.missing), str(self.under_a_file), str(self.dangling),
                str(self.rules), str(self.garbage_rules), f"{self.secret}\0x", "relative/x"]


# -- values --------------------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # TOML has no surrogates
SPECIAL_FLOATS = [math.inf, -math.inf, math.nan, 1e300, -1e300, 1e-300, -1e-300, 5e-324, 0.0,
                  -0.0]
SPECIAL_INTS = [0, -1, 1, 2**31, 2**32, 2**63 - 1, -(2**63)]
ANY_SCALAR = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1),
                       st.floats(allow_nan=True, allow_infinity=True), TEXT)
ANY_VALUE = st.recursive(
    ANY_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6)


class Mix:
    """How a document mixes good and bad values, one of three ways: clean (only good values, so
    valid documents are applied and started often); one mistake (good values but one bad, so
    each bad value meets a configuration that is otherwise valid, which is where a bad value that
    validation lets through shows); messy (mostly good, then a bad value of the key's kind, or
    any value at all: a swapped type)."""

    # What a one-mistake document gets wrong; what reaches delivery comes twice as often.
    KINDS = ("number", "url", "header", "file") * 2 + ("name", "string", "table", "rule",
                                                       "structure", "type")

    def __init__(self, mode: str, draw: st.DrawFn) -> None:
        self.mode = mode
        self.draw = draw
        # One mistake: in a value of this kind ("type": of any kind, swapped); a number in the
        # first to fourth one met, so it does not always fall on the first number of a table.
        self.target = draw(st.sampled_from(self.KINDS)) if mode == "one" else None
        self.skip = draw(st.integers(0, 3)) if self.target == "number" else 0

    def _mistake(self, percent: int, kind: str) -> bool:
        if self.mode == "one" and self.target in (kind, "type"):
            if self.skip > 0:
                self.skip -= 1
                return False
            self.target = None
            return True
        return self.mode == "messy" and self.draw(st.integers(0, 99)) < percent

    def pick(self, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] | None = None,
             percent_good: int = 75, kind: str = "type") -> Any:
        """A value: good, or bad (of its kind), or anything."""
        swap = self.target == "type" and self.skip == 0
        if not self._mistake(100 - percent_good, kind):
            return self.draw(good)
        if bad is not None and not swap and (self.mode == "one" or self.draw(st.booleans())):
            return self.draw(bad)
        return self.draw(ANY_VALUE)

    def chance(self, percent: int) -> bool:
        """A structural mistake (a key left out, an unknown key) ``percent`` % of the time."""
        return self._mistake(percent, "structure")


def good_number(key: config.Key) -> st.SearchStrategy[Any]:
    """A number within ``key``'s range, its ends included."""
    limits = key.limits
    assert limits is not None
    if key.type is int:
        return st.integers(int(limits.low), int(limits.high))
    return st.one_of(st.floats(limits.low, limits.high),
                     st.integers(math.ceil(limits.low), int(limits.high)),
                     st.sampled_from([limits.low, limits.high]))


def bad_number(key: config.Key) -> st.SearchStrategy[Any]:
    """Just past an end of ``key``'s range, or special: inf, nan, huge, tiny, the int limits."""
    limits = key.limits
    assert limits is not None
    if key.type is int:
        return st.sampled_from([int(limits.low) - 1, int(limits.high) + 1, *SPECIAL_INTS])
    return st.sampled_from([math.nextafter(limits.low, -math.inf),
                            math.nextafter(limits.high, math.inf), limits.high * 10,
                            *SPECIAL_FLOATS])


def good_urls(port: int) -> st.SearchStrategy[str]:
    """http(s) URLs on loopback: to ``port`` (a receiver that answers) or to nothing, with
    fuzzed paths and queries. No other host names: a lookup would depend on this machine."""
    host = st.sampled_from(["127.0.0.1"] * 6 + ["[::1]", "localhost"])
    path = st.text(st.sampled_from("abc/-._~%20?=&#:@!$'()*+,;"), max_size=10).filter(
        lambda p: not re.search(r"%(?![0-9A-Fa-f]{2})", p))
    return st.builds(lambda scheme, h, p, tail: f"{scheme}://{h}:{p}/{tail}",
                     st.sampled_from(["http", "https", "HTTP"]), host,
                     st.sampled_from([port] * 6 + [1]), path)


def bad_urls(port: int) -> st.SearchStrategy[str]:
    """Broken URLs of every kind: bad ports, no host, spaces, control characters, bad escapes,
    other schemes, and good ones with a stray character put in."""
    broken = st.sampled_from([
        "http://[::1/json", "http://127.0.0.1:99999/", "http://127.0.0.1:0/",
        "http://127.0.0.1:-1/", "http://127.0.0.1:abc/", "http:///nohost", "http://a b/",
        "http://am_0/", "ftp://127.0.0.1/", "127.0.0.1:9093", "http://127.0.0.1/a b",
        "http://127.0.0.1/%zz", "http://127.0.0.1/\u00e9", "http://127.0.0.1/\n", "", "http://",
        "http://[zz]/", "http://-a/",
    ])
    mangled = st.builds(lambda url, at, char: url[:at] + char + url[at:], good_urls(port),
                        st.integers(0, 30), st.sampled_from([" ", "\n", "\r", "\0", "\t", "%",
                                                             "[", "\u00e9", "\x7f"]))
    return st.one_of(broken, mangled, TEXT)


GOOD_HEADER_NAMES = st.text(st.sampled_from("abcXYZ019-_!#$%&'*+.^`|~"), min_size=1, max_size=8)
BAD_HEADER_NAMES = st.one_of(st.sampled_from(["X Token", "X-Token:", "", "Content-Type",
                                              "idempotency-key", "User-Agent", "X-\r\nA",
                                              "X\u00e9"]), TEXT)
GOOD_HEADER_VALUES = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12),
    st.sampled_from(["Bearer a b", "a\tb", ""]))
BAD_HEADER_VALUES = st.one_of(st.sampled_from(["a\r\nX-Evil: 1", "a\nb", "\0", "a\rb"]),
                              st.sampled_from([" padded", "tab\t", "caf\u00e9", "\x7f"]), TEXT,
                              st.integers())


def good_headers() -> st.SearchStrategy[dict[str, str]]:
    """Headers a receiver may send: token names, given once whatever their case."""
    return st.dictionaries(GOOD_HEADER_NAMES, GOOD_HEADER_VALUES, max_size=3).filter(
        lambda h: len({k.lower() for k in h}) == len(h)
        and not {k.lower() for k in h} & set(config.RESERVED_HEADERS))


def _string_key(mix: Mix, section: str, name: str, files: Files, port: int) -> Any:
    """A value for one string key of the schema, by what the string becomes."""
    good: dict[str, list[str]] = {
        "libvirt.uri": ["test:///default", "qemu:///system", "qemu+ssh://h/system", "xen://"],
        "libvirt.admin_uri": ["libvirtd:///system", "virtqemud:///system"],
        "metrics.listen": ["127.0.0.1:9100", ":9786", "[::1]:1", "::1:80", "host.example:80"],
        "control.socket": [str(files.root / "other.sock")],
        "control.socket_mode": ["0660", "660", "0600"],
        "control.socket_group": ["", "virtmon", "root"],
        "state.dir": [str(files.directory), str(files.root / "new" / "state")],
        "log.level": list(config.LOG_LEVELS),
        "log.format": ["auto", "json", "console"],
        "alerts.external_url": [""],
        "alerts.default_rules_file": ["", str(files.rules)],
        "libvirt.auth_file": ["", str(files.secret)],
        "metrics.web_config_file": [""],
    }
    bad: dict[str, list[str]] = {
        "libvirt.uri": ["qemu://[::1", "", "system", "qemu://h:99999/", "test:///default\n",
                        "qemu+ssh://h/system?keyfile=/a b"],
        "libvirt.admin_uri": ["qemu://[::1", "", "x y://"],
        "metrics.listen": ["h:0", "a b:1", "host:65536", "[::1:9786", "localhost", "",
                           ":\u00b2", "h:\u0663"],
        "control.socket": [str(files.secret), str(files.directory), "", "/" + "s" * 120,
                           f"{files.root}/s\0"],
        "control.socket_mode": ["0999", "rw", "", "06600"],
        "control.socket_group": ["a\0", "x\n"],
        "state.dir": [str(files.secret), str(files.under_a_file), "", str(files.fifo),
                      f"{files.directory}\0"],
        "log.level": ["loud", ""],
        "log.format": ["xml"],
    }
    key = f"{section}.{name}"
    if key == "alerts.external_url":
        return mix.pick(st.one_of(st.just(""), good_urls(port)), bad_urls(port), kind="url")
    return mix.pick(st.sampled_from(good[key]), st.sampled_from(bad.get(key, files.paths())),
                    kind="string" if key in bad else "file")


@st.composite
def receiver(draw: st.DrawFn, mix: Mix, index: int, files: Files, port: int) -> Any:
    """A receiver table, or now and then something that is not a table."""
    if mix.chance(3):
        return draw(ANY_SCALAR)
    table: dict[str, Any] = {}
    for name, key in config.RECEIVER_SCHEMA.items():
        if key.default is None:  # required: left out now and then
            if mix.chance(5):
                continue
        elif draw(st.integers(0, 99)) < (40 if name == "headers" else 70):
            continue
        if name == "name":
            table[name] = mix.pick(st.just(f"r{index}"),
                                   st.one_of(st.sampled_from(["r0", "", " ", "a\nb"]), TEXT),
                                   kind="name")
        elif name == "kind":
            table[name] = mix.pick(st.sampled_from(config.RECEIVER_KINDS), TEXT, 90, "string")
        elif name == "urls":
            table[name] = mix.pick(st.lists(good_urls(port), min_size=1, max_size=3),
                                   st.lists(bad_urls(port), min_size=1, max_size=3), 80, "url")
        elif name == "headers":
            table[name] = mix.pick(good_headers(), st.one_of(
                st.dictionaries(GOOD_HEADER_NAMES, BAD_HEADER_VALUES, min_size=1, max_size=2),
                st.dictionaries(BAD_HEADER_NAMES, GOOD_HEADER_VALUES, min_size=1, max_size=2)),
                80, "header")
        elif key.limits is not None:
            table[name] = mix.pick(good_number(key), bad_number(key), 85, "number")
        elif name == "hmac_secret_file":
            table[name] = mix.pick(st.sampled_from(["", str(files.secret)]),
                                   st.sampled_from(files.paths()), kind="file")
        else:  # the TLS files: no valid certificates here
            table[name] = mix.pick(st.just(""), st.sampled_from(files.paths()), kind="file")
    if mix.chance(5):
        table[draw(TEXT)] = draw(ANY_SCALAR)  # an unknown key
    return table


GOOD_MATCHER = st.fixed_dictionaries({"kind": st.sampled_from(["lifecycle", "watchdog", "*"])},
                                     optional={"name": st.sampled_from(["stopped", "started"]),
                                               "domain": st.sampled_from(["web-*", "*", "["])})
BAD_MATCHER = st.one_of(st.just({}), st.fixed_dictionaries({}, optional={
    "kind": st.one_of(st.just([]), ANY_SCALAR), "domain": ANY_VALUE,
    "payload": st.one_of(st.dictionaries(TEXT, ANY_VALUE, max_size=2), ANY_SCALAR),
    "synthetic": ANY_SCALAR, "colour": ANY_SCALAR}))


@st.composite
def rule(draw: st.DrawFn, mix: Mix, index: int) -> Any:
    """A rule table: an event rule, a threshold rule, a switch of a default rule, or another
    value. Optional keys are drawn only when present (a one-mistake document's mistake goes
    into the document)."""

    def pick(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] | None = None) -> Any:
        return mix.pick(good, bad, kind="rule")

    shape = draw(st.sampled_from(["event", "threshold", "switch", "other"]))
    if shape == "other" and mix.mode != "messy":
        shape = "switch"
    if shape == "other":
        return draw(ANY_VALUE)
    name = pick(st.just(f"Rule{index}"),
                st.one_of(st.sampled_from(["", "1x", "a b", "Rule0"]), TEXT))
    if shape == "switch":
        default_rule = ["DomainCrashed", "LibvirtdDown", "DomainStatsIncomplete"][index % 3]
        return {"name": pick(st.just(default_rule), st.just(name)),
                "enabled": pick(st.booleans(), st.sampled_from(["no", 0, "false"]))}
    bad_seconds = st.one_of(st.sampled_from([*SPECIAL_FLOATS, 1e-3, 1e9]), ANY_SCALAR)
    optional: dict[str, Callable[[], Any]] = {
        "severity": lambda: pick(st.sampled_from(["critical", "warning", "info"]),
                                 st.sampled_from(["loud", ""])),
        "summary": lambda: pick(st.sampled_from(["{host} says", "plain"]),
                                st.one_of(st.sampled_from(["{domain.__init__}", "{", "{nope}"]),
                                          TEXT)),
        "labels": lambda: pick(st.dictionaries(st.sampled_from(["team", "tier"]),
                                               st.sampled_from(["infra", "{host}"]), max_size=2),
                               st.dictionaries(st.sampled_from(["alertname", "bad-label", ""]),
                                               ANY_SCALAR, min_size=1, max_size=2)),
        "enabled": lambda: pick(st.booleans(), ANY_SCALAR),
    }
    table: dict[str, Any] = {"name": name}
    if shape == "event":
        table["match"] = pick(st.one_of(GOOD_MATCHER,
                                        st.lists(GOOD_MATCHER, min_size=1, max_size=2)),
                              BAD_MATCHER)
        table["resolve"] = pick(GOOD_MATCHER, BAD_MATCHER)
        optional.update({
            "for": lambda: pick(st.floats(0, 366 * 86400), bad_seconds),
            "resolve_after": lambda: pick(st.floats(0.01, 366 * 86400), bad_seconds),
            "same": lambda: pick(st.lists(st.sampled_from(["domain", "uri"]), max_size=2,
                                          unique=True), st.lists(TEXT, min_size=1, max_size=2)),
        })
    else:
        table["metric"] = pick(st.sampled_from(["libvirt_domain_info", "up"]),
                               st.sampled_from(["bad metric", ""]))
        table["value"] = pick(st.floats(-1e9, 1e9),
                              st.one_of(st.sampled_from(SPECIAL_FLOATS), ANY_SCALAR))
        optional.update({
            "op": lambda: pick(st.sampled_from([">", "<=", "!="]), st.sampled_from(["=>", ""])),
            "divide_by": lambda: pick(st.just("libvirt_domain_info"), st.just("x y")),
            "series": lambda: pick(st.dictionaries(st.just("domain"), st.just("web-*"),
                                                   max_size=1),
                                   st.dictionaries(TEXT, ANY_SCALAR, min_size=1, max_size=2)),
            "for_cycles": lambda: pick(st.integers(1, 1_000_000),
                                       st.sampled_from([0, -1, 10**7, *SPECIAL_INTS])),
        })
    for key in draw(st.lists(st.sampled_from(sorted(optional)), max_size=3, unique=True)):
        table[key] = optional[key]()
    if mix.chance(5):
        table[draw(TEXT)] = draw(ANY_SCALAR)
    return table


def _table_key(mix: Mix, section: str, name: str, key: config.Key, files: Files,
               port: int) -> Any:
    draw = mix.draw
    if key.limits is not None:
        return mix.pick(good_number(key), bad_number(key), 80, "number")
    if key.type is bool:
        return mix.pick(st.booleans(), None, 90)
    if key.type is str:
        return _string_key(mix, section, name, files, port)
    if section == "alerts" and name == "receivers":
        count = draw(st.integers(0 if mix.mode == "messy" else 1, 3))
        return mix.pick(st.just([draw(receiver(mix, i, files, port)) for i in range(count)]),
                        None, 95)
    if section == "alerts" and name == "rules":
        count = draw(st.integers(0, 3))
        return mix.pick(st.just([draw(rule(mix, i)) for i in range(count)]), None, 95)
    if name == "collectors":
        names = [n for n in COLLECTORS if n != "admin"]
        return mix.pick(st.dictionaries(st.sampled_from(names), st.booleans(), max_size=3),
                        st.dictionaries(st.sampled_from([*names, "cpuu"]), ANY_SCALAR,
                                        min_size=1, max_size=3), kind="table")
    if name == "metadata_labels":
        return mix.pick(st.dictionaries(st.sampled_from(["project", "owner"]),
                                        st.sampled_from(["title", "metadata/x/@y"]), max_size=2),
                        st.dictionaries(st.sampled_from(["project", "bad-label", ""]),
                                        st.one_of(st.sampled_from(["[[", "", "nova:a/@b"]),
                                                  ANY_SCALAR), min_size=1, max_size=2))
    if name == "metadata_namespaces":
        return mix.pick(st.dictionaries(st.just("nova"), st.just("http://openstack.org/x"),
                                        max_size=1),
                        st.dictionaries(TEXT, ANY_SCALAR, min_size=1, max_size=2))
    if name.endswith("_uids"):
        return mix.pick(st.lists(st.integers(0, 2**32 - 2), max_size=2),
                        st.lists(st.sampled_from([-1, 2**32, 2**40]), min_size=1, max_size=2))
    if name.endswith("_groups"):
        return mix.pick(st.lists(st.one_of(st.sampled_from(["virtmon", "wheel"]),
                                           st.integers(0, 2**32 - 2)), max_size=2),
                        st.lists(st.sampled_from(["", "a\0", -1, 2**40]), min_size=1,
                                 max_size=2))
    return draw(ANY_VALUE)


@st.composite
def documents(draw: st.DrawFn, files: Files, port: int) -> dict[str, Any]:
    """A configuration document: a few keys of a few sections, now and then an unknown one,
    clean, with one mistake, or messy (Mix)."""
    mix = Mix(draw(st.sampled_from(["clean", "one", "one", "messy"])), draw)
    document: dict[str, Any] = {}
    for section, keys in config.SCHEMA.items():
        # Receivers are where a bad value shows latest (at delivery): alerts come most often.
        if draw(st.sampled_from([True] + [False] * 4 if section == "alerts" else [True, False])):
            continue
        if mix.chance(3):
            document[section] = draw(ANY_SCALAR)  # a section that is not a table
            continue
        table: dict[str, Any] = {}
        names = draw(st.lists(st.sampled_from(list(keys)), max_size=4, unique=True))
        if section == "alerts" and "receivers" not in names and draw(
                st.sampled_from([True, True, True, False])):
            names.append("receivers")
        for name in names:
            table[name] = _table_key(mix, section, name, keys[name], files, port)
        if mix.chance(3):
            table[draw(TEXT)] = draw(ANY_SCALAR)
        document[section] = table
    if mix.chance(3):
        document[draw(TEXT)] = {}
    return document


@st.composite
def receiver_documents(draw: st.DrawFn, files: Files, port: int) -> dict[str, Any]:
    """A document of receivers alone (and alerts.external_url): what delivery is made of,
    fuzzed on its own, since in a whole document a bad receiver value rarely meets an otherwise
    valid configuration."""
    mix = Mix(draw(st.sampled_from(["clean", "one", "one", "messy"])), draw)
    if mix.mode == "one":
        mix.target = draw(st.sampled_from(["number", "url", "header", "file", "name", "string",
                                           "structure", "type"]))
    count = draw(st.integers(1, 3))
    alerts: dict[str, Any] = {"receivers": [draw(receiver(mix, i, files, port))
                                            for i in range(count)]}
    if draw(st.booleans()):
        alerts["external_url"] = _string_key(mix, "alerts", "external_url", files, port)
    return {"alerts": alerts}
