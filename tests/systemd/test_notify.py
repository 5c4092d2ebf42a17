"""sd_notify as systemd sees it: a daemon subprocess on the test driver, a notify socket of the
test's own, and the READY / STATUS / WATCHDOG / RELOADING / STOPPING sequences of start, reload,
a rejected reload and stop."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import free_port
from tests.procfs import child_pids
from tests.systemd.notifyhelpers import DaemonProcess, NotifySocket, daemon_process, write_config
from virtmon.systemd import Notifier


@pytest.fixture(params=["path", "abstract"])
def notify(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[NotifySocket]:
    """The test's own notify socket: a filesystem path or an abstract (@) name."""
    sock = NotifySocket(short_tmp, abstract=request.param == "abstract")
    yield sock
    sock.close()


def start(daemon: DaemonProcess) -> dict[str, str]:
    """Wait for READY=1 and return that message."""
    return daemon.notify.wait_for(lambda m: m.get("READY") == "1", timeout=30)


def stop(daemon: DaemonProcess) -> list[dict[str, str]]:
    """SIGTERM by pid; wait for STOPPING=1 and the exit; return what came after the signal,
    everything the daemon sent before it exited included. STOPPING=1 came once, and last:
    nothing (no watchdog ping, no READY) follows it."""
    before = len(daemon.notify.received)
    daemon.signal(signal.SIGTERM)
    daemon.notify.wait_for(lambda m: m.get("STOPPING") == "1", timeout=30)
    assert daemon.proc.wait(timeout=30) == 0
    daemon.notify.drain()
    after = daemon.notify.received[before:]
    stopping = [i for i, m in enumerate(after) if m.get("STOPPING") == "1"]
    assert stopping == [len(after) - 1], after
    return after


def test_start_sends_ready_with_status_then_watchdog_then_stopping(
    short_tmp: Path, notify: NotifySocket
) -> None:
    """Start: READY=1 with a STATUS line; WATCHDOG=1 at half WATCHDOG_USEC; stop: STOPPING=1."""
    cfg = short_tmp / "virtmon.toml"
    # Cycles every 30 s, the watchdog at 2 s: pings follow the watchdog, not the cycle.
    write_config(cfg, short_tmp, free_port(), interval=30.0)
    with daemon_process(short_tmp, cfg, notify, watchdog_usec=2_000_000) as daemon:
        ready = start(daemon)
        assert "libvirt connected" in ready["STATUS"], ready
        assert "domains" in ready["STATUS"]
        first = time.monotonic()
        for _ in range(3):
            notify.wait_for(lambda m: m.get("WATCHDOG") == "1", timeout=15)
        # Three pings at 1 s come in about 3 s; had they followed the cycle, 90 s.
        assert time.monotonic() - first < 15
        assert not any("READY" in m for m in notify.received[1:])
        after = stop(daemon)
        assert after[-1] == {"STOPPING": "1"}
        assert not any(m.get("READY") == "1" for m in after)


def test_reload_sends_reloading_with_monotonic_usec_then_ready_and_applies(
    short_tmp: Path, notify: NotifySocket
) -> None:
    """SIGHUP: RELOADING=1 + MONOTONIC_USEC (CLOCK_MONOTONIC now), READY=1; runtime keys applied,
    restart-only keys logged."""
    cfg = short_tmp / "virtmon.toml"
    port = free_port()
    write_config(cfg, short_tmp, port)
    with daemon_process(short_tmp, cfg, notify) as daemon:
        start(daemon)
        write_config(cfg, short_tmp, free_port(), extra="resync_interval = 30.0")
        cfg.write_text(cfg.read_text().replace('level = "info"', 'level = "debug"')
                       .replace("interval = 0.5", "interval = 0.25"))
        sent = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        daemon.signal(signal.SIGHUP)
        reloading = notify.wait_for(lambda m: m.get("RELOADING") == "1")
        usec = int(reloading["MONOTONIC_USEC"])
        assert sent <= usec < sent + 10_000_000
        at_reloading = len(notify.received)
        ready = notify.wait_for(lambda m: m.get("READY") == "1")
        assert notify.received[-1] is ready and len(notify.received) > at_reloading
        assert "failed" not in ready["STATUS"]
        # The debug level is live: cycle logs appear after the reload.
        deadline = time.monotonic() + 10
        while not any(r.get("event") == "virtmon.collect.cycle" for r in daemon.log()):
            assert time.monotonic() < deadline, "no debug record after raising the level"
            time.sleep(0.1)
        records = {r["event"]: r for r in daemon.log()}
        assert sorted(records["virtmon.reload.done"]["applied"]) == [
            "collect.interval", "collect.resync_interval", "log.level"]
        assert records["virtmon.reload.restart_needed"]["keys"] == ["metrics.listen"]
        stop(daemon)


def test_a_malformed_url_on_sighup_is_a_rejected_reload_not_a_dead_daemon(
    short_tmp: Path, notify: NotifySocket
) -> None:
    """URLs urlsplit cannot read (an unclosed IPv6 bracket, a port out of range) in the admin URI
    and a receiver: SIGHUP rejects the reload naming each key, and the daemon runs on."""
    cfg = short_tmp / "virtmon.toml"
    write_config(cfg, short_tmp, free_port())
    good = cfg.read_text()
    with daemon_process(short_tmp, cfg, notify) as daemon:
        start(daemon)
        cfg.write_text(good.replace("[libvirt]\n", '[libvirt]\nadmin_uri = "qemu://[::1"\n') + (
            '\n[[alerts.receivers]]\nname = "hook"\nkind = "json"\n'
            'urls = ["http://[::1/json", "http://h:70000/"]\n'))
        daemon.signal(signal.SIGHUP)
        ready = notify.wait_for(lambda m: m.get("READY") == "1")
        assert "config reload failed (3 problems)" in ready["STATUS"], ready
        problems = sorted(r["problem"].split(":")[0] for r in daemon.log()
                          if r.get("event") == "virtmon.reload.invalid")
        assert problems == ["alerts.receivers[0].urls[0]", "alerts.receivers[0].urls[1]",
                            "libvirt.admin_uri"]
        assert daemon.proc.poll() is None
        stop(daemon)


def test_rejected_reload_keeps_the_old_config_logs_every_problem_and_status_says_so(
    short_tmp: Path, notify: NotifySocket
) -> None:
    """An invalid file on SIGHUP: each problem logged, READY=1 with STATUS "reload failed", the
    periodic STATUS keeps saying so, and a later good reload clears it."""
    cfg = short_tmp / "virtmon.toml"
    port = free_port()
    write_config(cfg, short_tmp, port)
    good = cfg.read_text()
    with daemon_process(short_tmp, cfg, notify) as daemon:
        start(daemon)
        cfg.write_text(good.replace("interval = 0.5", "interval = -1\nbogus = 1"))
        daemon.signal(signal.SIGHUP)
        notify.wait_for(lambda m: m.get("RELOADING") == "1")
        ready = notify.wait_for(lambda m: m.get("READY") == "1")
        assert "config reload failed (2 problems)" in ready["STATUS"], ready
        periodic = notify.wait_for(lambda m: "READY" not in m and "STATUS" in m, timeout=5)
        assert "config reload failed" in periodic["STATUS"]
        problems = sorted(r["problem"] for r in daemon.log()
                          if r.get("event") == "virtmon.reload.invalid")
        assert problems == ["collect.bogus: unknown key",
                            "collect.interval: must be from 0.01 to 86400, not -1"]
        assert all(r.get("level") == "error" for r in daemon.log()
                   if r.get("event") == "virtmon.reload.invalid")
        cfg.write_text(good)
        daemon.signal(signal.SIGHUP)
        notify.wait_for(lambda m: m.get("RELOADING") == "1")
        ready = notify.wait_for(lambda m: m.get("READY") == "1")
        assert "failed" not in ready["STATUS"]
        stop(daemon)


def test_notify_and_watchdog_variables_are_not_inherited_by_the_admin_helper(
    short_tmp: Path
) -> None:
    """The admin helper child's /proc/PID/environ has no NOTIFY_SOCKET or WATCHDOG_*."""
    notify = NotifySocket(short_tmp)
    cfg = short_tmp / "virtmon.toml"
    write_config(cfg, short_tmp, free_port())
    cfg.write_text(cfg.read_text().replace("admin = false", "admin = true"))
    try:
        with daemon_process(short_tmp, cfg, notify) as daemon:
            start(daemon)
            children = child_pids(daemon.proc.pid)
            assert children, "the admin helper is not running"
            for child in children:
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                names = {entry.split(b"=", 1)[0] for entry in environ if entry}
                assert b"NOTIFY_SOCKET" not in names
                assert not {b"WATCHDOG_USEC", b"WATCHDOG_PID"} & names
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                assert b"virtmon.admin.helper" in cmdline
            # The daemon itself was started with it (and removed it from its own environment).
            assert "NOTIFY_SOCKET" in daemon.env
            stop(daemon)
    finally:
        notify.close()


def test_notifier_ignores_a_watchdog_meant_for_another_pid() -> None:
    """WATCHDOG_PID of another process: no watchdog; all the variables leave the environment."""
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}
    notifier = Notifier(environ=env)
    assert notifier.watchdog_interval is None or os.getpid() == 1
    assert notifier.address == "\0x"
    assert env == {}
    mine = Notifier(environ={"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval == 2.0
