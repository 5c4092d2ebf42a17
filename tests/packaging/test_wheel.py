"""Packaging: a wheel builds, installs in a clean virtual environment, and carries what it needs."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import virtmon

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    """Run a command; its standard output (raises with its output on failure)."""
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_wheel_installs_cleanly_and_reports_its_one_version(tmp_path: Path) -> None:
    """pip builds a wheel; in a fresh venv `virtmon version` and check-config work from it."""
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp_path / "dist",
        ROOT)
    wheel = next((tmp_path / "dist").glob("virtmon-*.whl"))
    assert wheel.name.startswith(f"virtmon-{virtmon.__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "virtmon/alerts/default_rules.toml" in names  # the default alert rules ship
    assert not any(name.startswith("tests/") for name in names)
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    run(env / "bin" / "pip", "install", "--quiet", wheel)
    assert run(env / "bin" / "virtmon", "version").strip() == virtmon.__version__
    # The installed copy finds its default alert rules outside the source tree.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "virtmon.toml").write_text('[libvirt]\nuri = "test:///default"\n')
    assert "ok" in run(env / "bin" / "virtmon", "check-config", outside / "virtmon.toml",
                       cwd=outside)
    assert "usage" in run(env / "bin" / "virtmonctl", "--help").lower()
