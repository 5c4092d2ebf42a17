"""A configuration file read and validated as a whole, into a :class:`virtmon.config.Config`.

virtmon.config knows the keys and checks each value; the checks here need the parts that use a
key: the collectors' names, the domain cache's label paths, the web config file, the alert
rules. They live apart so that config imports none of those parts (each imports config for its
section's type). Every problem of the document is gathered and reported at once.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from virtmon.config import Config, ConfigError, check_document, from_values, key_text


def _collector_problems(collect: Mapping[str, Any]) -> list[str]:
    """Each ``collect.collectors`` name that is no collector."""
    from virtmon.collectors import COLLECTORS  # here: the collectors import libvirt

    return [f"collect.collectors.{key_text(name)}: unknown collector "
            f"(known: {', '.join(COLLECTORS)})"
            for name in collect["collectors"] if name not in COLLECTORS]


def _metadata_path_problems(collect: Mapping[str, Any]) -> list[str]:
    """Each metadata label path that ElementTree cannot evaluate (bad syntax, unknown prefix):
    found here, not by every domain's read failing later."""
    from virtmon.virt.domain_cache import MetadataLabels  # here: it imports libvirt

    namespaces = {k: v for k, v in collect["metadata_namespaces"].items() if isinstance(v, str)}
    problems = []
    for label, path in collect["metadata_labels"].items():
        if not isinstance(path, str):
            continue  # reported by check_document
        try:
            MetadataLabels({label: path}, namespaces).read(ElementTree.Element("domain"))
        except Exception as exc:  # ElementPath reports a bad path with several types
            problems.append(f"collect.metadata_labels.{key_text(label)}: {path!r} is not a path "
                            f"ElementTree can follow: {exc}")
    return problems


def _web_config_problems(metrics: Mapping[str, Any]) -> list[str]:
    """The web config file's own problems (certificates, users), each under its key."""
    from virtmon.exposition.webconfig import WebConfigError, load_web_config

    try:
        load_web_config(Path(metrics["web_config_file"]))
    except WebConfigError as exc:
        return [f"metrics.web_config_file: {p}" for p in exc.problems]
    return []


def build(
    raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, source: Path | None = None
) -> Config:
    """Validate a parsed TOML document plus ``section.key`` overrides; raise ConfigError."""
    from virtmon.alerts.ruleconfig import load_rules

    problems: list[str] = []
    values = check_document(raw, overrides, problems)
    problems.extend(_collector_problems(values["collect"]))
    problems.extend(_metadata_path_problems(values["collect"]))
    if values["metrics"]["web_config_file"] and not any(
            p.startswith("metrics.web_config_file") for p in problems):
        problems.extend(_web_config_problems(values["metrics"]))
    load_rules(values["alerts"], problems)  # every rule problem with its key path
    if problems:
        raise ConfigError(problems)
    return from_values(values, source)


def load(path: Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate a TOML file (None: defaults only); raise ConfigError with every problem."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return build(raw, overrides, path)
