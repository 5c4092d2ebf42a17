"""config/virtmon.toml, the file operators copy: valid, every key documented with its default."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from virtmon import config

SHIPPED = Path(__file__).resolve().parents[1] / "config" / "virtmon.toml"


def section_texts(text: str) -> dict[str, str]:
    """The raw text under each ``[section]`` header (sub-tables folded into their section)."""
    sections: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        header = re.match(r"^#?\s*\[\[?([a-z_]+)[.\]]", line)
        if header and not line.startswith("#"):
            current = header.group(1)
        sections[current] = sections.get(current, "") + line + "\n"
    return sections


def documented_value(section_text: str, name: str) -> Any:
    """A key given as a commented-out ``# name = value`` line (for arrays of tables)."""
    match = re.search(rf"^#\s*{name}\s*=\s*(\S.*?)\s*(#.*)?$", section_text, flags=re.M)
    assert match, f"{name} is not documented"
    return tomllib.loads(f"v = {match.group(1)}")["v"]


def test_shipped_config_is_valid() -> None:
    """`virtmon check-config`'s loader accepts the shipped file as it is."""
    config.load(SHIPPED)


def test_every_schema_key_is_documented_with_its_default() -> None:
    """Each key of config.SCHEMA appears in its section with exactly the default value."""
    text = SHIPPED.read_text(encoding="utf-8")
    parsed = tomllib.loads(text)
    sections = section_texts(text)
    missing_or_wrong = []
    for section, keys in config.SCHEMA.items():
        for name, key in keys.items():
            if name in parsed.get(section, {}):
                value = parsed[section][name]
            else:
                try:
                    value = documented_value(sections.get(section, ""), name)
                except AssertionError:
                    missing_or_wrong.append(f"{section}.{name}: missing")
                    continue
            if value != key.default or type(value) is not type(key.default):
                missing_or_wrong.append(f"{section}.{name}: {value!r} != {key.default!r}")
    assert missing_or_wrong == []


def test_every_key_has_a_comment_or_a_commented_example() -> None:
    """No key is shown bare: each live ``key = value`` line carries a comment or follows one."""
    lines = SHIPPED.read_text(encoding="utf-8").splitlines()
    bare = [
        line for index, line in enumerate(lines)
        if re.match(r"^[a-z_]+\s*=", line) and "#" not in line
        and not lines[index - 1].startswith(("#", "[")) and not lines[index - 1].endswith("#")
    ]
    assert bare == []


def test_receiver_example_documents_every_receiver_key() -> None:
    """The commented [[alerts.receivers]] example names every receiver key, with its default."""
    example = section_texts(SHIPPED.read_text(encoding="utf-8"))["alerts"]
    example = example[example.index("[[alerts.receivers]]"):]
    for name, key in config.RECEIVER_SCHEMA.items():
        value = documented_value(example, name)
        if key.default is not None:
            assert value == key.default, name
