"""Tests of the ``virtmon`` command line: check-config, version, a bad config stopping `run`
before anything starts, and flags merged into the configuration."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import virtmon
from tests.daemon import free_port
from virtmon import cli, config
from virtmon.config import Config

VIRTMON = Path(sys.executable).parent / "virtmon"


def run_virtmon(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed console script and capture its output."""
    return subprocess.run(
        [str(VIRTMON), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory under /tmp with a path short enough for an AF_UNIX socket."""
    path = Path(tempfile.mkdtemp(prefix="vmcli-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_console_script_is_installed() -> None:
    """The venv has the `virtmon` console script these tests run."""
    assert VIRTMON.is_file()


def test_check_config_reports_three_mistakes_and_exits_78(tmp_path: Path) -> None:
    """check-config prints each of three different mistakes with its key path and exits 78."""
    path = tmp_path / "bad.toml"
    path.write_text(
        "[libvirt]\n"
        'uri = "system"\n'          # bad URI
        "[collect]\n"
        'interval = "often"\n'      # wrong type
        "[metrics]\n"
        'listne = ":9786"\n'        # unknown key (typo)
    )
    result = run_virtmon("check-config", str(path))
    assert result.returncode == config.EX_CONFIG == 78
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{path}: libvirt.uri: 'system' is not a libvirt URI "
        "(like qemu:///system or qemu+ssh://host/system)",
        f"{path}: collect.interval: must be a number, not 'often'",
        f"{path}: metrics.listne: unknown key",
    ]
    assert result.stdout == ""


def test_check_config_reports_malformed_urls_without_a_traceback(tmp_path: Path) -> None:
    """URLs urlsplit cannot read, a port out of range, no host: each is a problem with its key
    path and exit 78, never a traceback (they crashed check-config and run with exit 1)."""
    path = tmp_path / "urls.toml"
    path.write_text(
        "[libvirt]\n"
        'uri = "qemu://host:99999/system"\n'
        'admin_uri = "qemu://[::1"\n'
        "[[alerts.receivers]]\n"
        'name = "hook"\n'
        'kind = "json"\n'
        'urls = ["http://[::1/json", "http:///nohost", "http://h:0/", "https://ok:8443/x"]\n'
    )
    for command in ("check-config", "run"):
        args = (command, str(path)) if command == "check-config" else (
            command, "--config", str(path))
        result = run_virtmon(*args)
        assert result.returncode == config.EX_CONFIG, (command, result.stderr)
        assert "Traceback" not in result.stderr
        keys = sorted(next(part for part in line.split(": ") if part.startswith(("libvirt.",
                                                                              "alerts.")))
                      for line in result.stderr.strip().splitlines())
        assert keys == ["alerts.receivers[0].urls[0]", "alerts.receivers[0].urls[1]",
                        "alerts.receivers[0].urls[2]", "libvirt.admin_uri", "libvirt.uri"]


def test_check_config_accepts_a_valid_file(tmp_path: Path) -> None:
    """check-config on a valid file prints ok and exits 0."""
    path = tmp_path / "good.toml"
    path.write_text('[libvirt]\nuri = "test:///default"\n[collect]\ninterval = 5\n')
    result = run_virtmon("check-config", str(path))
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, f"{path}: ok", "")


def test_check_config_on_a_missing_file_exits_78(tmp_path: Path) -> None:
    """check-config on a file that does not exist says so and exits 78."""
    result = run_virtmon("check-config", str(tmp_path / "absent.toml"))
    assert result.returncode == 78
    assert "cannot read: No such file or directory" in result.stderr


def test_version_prints_the_package_version() -> None:
    """`virtmon version` prints virtmon.__version__ and nothing else."""
    result = run_virtmon("version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"{virtmon.__version__}\n", ""
    )


def test_run_with_a_bad_config_exits_78_before_starting(short_dir: Path) -> None:
    """`virtmon run --config bad.toml` exits 78 and creates neither socket nor state directory."""
    sock = short_dir / "ctl.sock"
    state = short_dir / "state"
    path = short_dir / "bad.toml"
    path.write_text(
        f'[control]\nsocket = "{sock}"\n[state]\ndir = "{state}"\n'
        '[libvirt]\nuri = "test:///default"\n[collect]\ninterval = 0\n'
    )
    result = run_virtmon("run", "--config", str(path), timeout=30)
    assert result.returncode == 78
    assert result.stderr.strip() == (
        "virtmon: config: collect.interval: must be from 0.01 to 86400, not 0")
    assert not sock.exists()
    assert not state.exists()


def test_run_with_a_bad_flag_exits_78(short_dir: Path) -> None:
    """A bad flag value on `virtmon run` is a config problem too (exit 78, named command line)."""
    sock = short_dir / "ctl.sock"
    result = run_virtmon("run", "--uri", "nonsense", "--control-socket", str(sock),
                         "--state-dir", str(short_dir / "state"), timeout=30)
    assert result.returncode == 78
    assert "libvirt.uri (command line)" in result.stderr
    assert not sock.exists()


def test_collector_flags_merge_into_the_config(tmp_path: Path) -> None:
    """--collector.X/--no-collector.X override collect.collectors from the file, key by key."""
    path = tmp_path / "c.toml"
    path.write_text("[collect]\ncollectors = { cpu = true, block = false }\n")
    args = cli.parser().parse_args([
        "run", "--config", str(path), "--collector.vm", "--no-collector.cpu",
        "--uri", "test:///default", "--collect-interval", "2.5",
    ])
    cfg = cli.load_config(args)
    assert cfg.collect.collectors == {"cpu": False, "block": False, "vm": True}
    assert cfg.libvirt.uri == "test:///default"
    assert cfg.collect.interval == 2.5
    assert cfg.source == path


def test_no_collector_flags_keep_the_file_values(tmp_path: Path) -> None:
    """Without collector flags the file's collect.collectors stands unchanged."""
    path = tmp_path / "c.toml"
    path.write_text("[collect]\ncollectors = { vm = true }\n")
    cfg = cli.load_config(cli.parser().parse_args(["run", "--config", str(path)]))
    assert cfg.collect.collectors == {"vm": True}


def run_config(*argv: str, file: Path | None = None) -> Config:
    """The configuration ``virtmon run`` would use with these flags (and ``file``)."""
    config_args = ["--config", str(file)] if file is not None else []
    return cli.load_config(cli.parser().parse_args(["run", *config_args, *argv]))


def test_allow_write_flag_and_the_demos_socket_without_a_group(tmp_path: Path) -> None:
    """--control.allow-write / --no-control.allow-write override the file's control.allow_write;
    --demo gives the socket no group, which otherwise stays the file's (or the default)."""
    path = tmp_path / "c.toml"
    path.write_text('[control]\nallow_write = true\nsocket_group = "ops"\n')
    assert run_config(file=path).control.allow_write is True
    assert run_config("--no-control.allow-write", file=path).control.allow_write is False
    assert run_config("--control.allow-write").control.allow_write is True
    assert run_config(file=path).control.socket_group == "ops"
    assert run_config("--demo", file=path).control.socket_group == ""


def test_guest_agent_flag_overrides_the_file(tmp_path: Path) -> None:
    """--collector.guest-agent / --no-collector.guest-agent override collect.guest_agent (not a
    collectors entry: the poller is no cycle collector); without it the file's value stands."""
    path = tmp_path / "c.toml"
    path.write_text("[collect]\nguest_agent = true\n")
    assert run_config(file=path).collect.guest_agent is True
    assert run_config("--no-collector.guest-agent", file=path).collect.guest_agent is False
    assert run_config("--collector.guest-agent").collect.guest_agent is True
    assert run_config("--collector.guest-agent").collect.collectors == {}


def test_every_collector_has_a_flag_pair() -> None:
    """Each collector in the table has --collector.NAME and --no-collector.NAME."""
    from virtmon.collectors import COLLECTORS

    for name in COLLECTORS:
        on = cli.parser().parse_args(["run", f"--collector.{name}"])
        off = cli.parser().parse_args(["run", f"--no-collector.{name}"])
        assert getattr(on, f"collector_{name}") is True
        assert getattr(off, f"collector_{name}") is False


def test_main_check_config_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cli.main returns 78 for a bad file and prefixes each problem with the file name."""
    path = tmp_path / "bad.toml"
    path.write_text("[log]\nlevel = 3\n")
    assert cli.main(["check-config", str(path)]) == 78
    assert capsys.readouterr().err == f"{path}: log.level: must be a string, not 3\n"


def test_libxml_lines_become_log_records(short_dir: Path) -> None:
    """libxml2 prints its warnings straight to stderr ("I/O warning : failed to load external
    entity", here for a test-driver file that is missing): off a terminal they come out as JSON
    log records like every other line, not raw between them."""
    missing = short_dir / "missing.xml"
    proc = subprocess.Popen(
        [str(VIRTMON), "run", "--uri", f"test://{missing}", "--log-format", "json",
         "--listen", f"127.0.0.1:{free_port()}", "--control-socket", str(short_dir / "c.sock"),
         "--state-dir", str(short_dir / "state"), "--no-collector.admin"],
        stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "virtmon ended: " + "".join(lines)
            lines.append(line)
            if "I/O warning" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    lines += rest.splitlines(keepends=True)
    # The one line virtmon prints for people when it has started is not a record; all else is.
    records = [json.loads(line) for line in lines if not line.startswith("virtmon 0")]
    warnings = [r for r in records if r["event"] == "virtmon.native.stderr"]
    assert warnings and warnings[0]["level"] == "warning"
    assert warnings[0]["line"] == f'I/O warning : failed to load external entity "{missing}"'
