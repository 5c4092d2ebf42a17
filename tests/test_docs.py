"""The docs say what the code does: the metrics reference, the libvirt import list, the ADRs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import virtmon.virt
from virtmon.metrics_reference import reference

ROOT = Path(__file__).resolve().parent.parent
ADR = ROOT / "docs" / "adr"
METRICS = ROOT / "docs" / "metrics.md"
LIBVIRT_MODULES = {"libvirt", "libvirt_qemu", "libvirtaio", "libvirt_lxc"}


def imports_libvirt(path: Path) -> bool:
    """Whether the module imports a libvirt-python module anywhere (at the top or inside)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name.split(".")[0] in LIBVIRT_MODULES for name in names):
            return True
    return False


def test_the_modules_outside_virt_that_import_libvirt_are_the_ones_virt_lists() -> None:
    """virtmon/virt/__init__.py's docstring names every module outside virtmon/virt/ that
    imports libvirt (a package by its directory), and no module that does not."""
    listed = set(re.findall(r"``(virtmon/[\w/.]+)``", virtmon.virt.__doc__ or ""))
    assert listed
    importing = {path.relative_to(ROOT).as_posix() for path in (ROOT / "virtmon").rglob("*.py")
                 if not path.is_relative_to(ROOT / "virtmon" / "virt") and imports_libvirt(path)}

    def covered(module: str) -> bool:
        return any(module == entry or (entry.endswith("/") and module.startswith(entry))
                   for entry in listed)

    assert sorted(m for m in importing if not covered(m)) == []
    assert sorted(e for e in listed if not any(m == e or m.startswith(e) for m in importing)) == []


def test_the_adrs_are_numbered_from_one_without_gaps() -> None:
    """docs/adr/NNNN-*.md are 0001, 0002, ... and each title carries its file's number."""
    numbers = []
    for path in sorted(ADR.glob("*.md")):
        number = path.name[:4]
        assert re.fullmatch(r"\d{4}-[a-z0-9-]+\.md", path.name), path.name
        assert path.read_text().startswith(f"# ADR {number}: "), path.name
        numbers.append(int(number))
    assert numbers == list(range(1, len(numbers) + 1))


def test_the_metrics_reference_is_what_the_declarations_write() -> None:
    """docs/metrics.md is exactly `python -m virtmon.metrics_reference`'s output."""
    assert METRICS.read_text() == reference(), (
        "docs/metrics.md is stale: python -m virtmon.metrics_reference > docs/metrics.md")


def test_the_performance_document_has_the_generators_written_sections_and_no_other() -> None:
    """docs/PERFORMANCE.md holds the written sections of `python -m bench` verbatim, and nothing
    between them and the curves: a hand edit there would vanish with the next `make bench`.
    (The tables come from bench/results/, which a clone does not have.)"""
    from bench.__main__ import DOC, SECTIONS
    from bench.sweep_plots import BEGIN

    document = DOC.read_text(encoding="utf-8")
    written = "\n".join(SECTIONS)
    assert written in document, (
        "docs/PERFORMANCE.md's written sections differ from bench/__main__.py's: edit those, "
        "then python -m bench --rewrite")
    after = document[document.index(written) + len(written):]
    assert after[:after.find(BEGIN)].strip() == ""
