"""A private libvirtd of one's own, to stop, restart or misconfigure without touching the lab's.

The lab's libvirtd (``qemu:///system``) is shared by everything running on the machine at the
time, so whatever needs to restart a libvirtd, or to configure one differently, runs a second one:
an unprivileged (session) libvirtd run as the lab's test user, with its configuration file, home,
runtime directory (sockets, pid file) and logs all in one directory of its own. Serving the test
driver through its socket (``test+unix:///default?socket=...``) it is a real remote connection
(keepalive, events, a close on EOF) with no QEMU behind it. Being unprivileged it loads no
system-wide state, so it can be killed and started again at will. The test driver's default
state lives in the daemon's memory: every start begins from the same one domain ("test").
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from tests.lab import lab as lab_module


def chown_tree(directory: Path, uid: int, gid: int) -> None:
    """``chown -R uid:gid directory``."""
    for root, dirs, files in os.walk(directory):
        for name in [root, *(os.path.join(root, entry) for entry in dirs + files)]:
            os.chown(name, uid, gid)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM by pid, SIGKILL after the timeout; reaped either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PrivateLibvirtd:
    """A session libvirtd in ``directory``, run as the lab's test user; started and restarted
    by :meth:`start` and :meth:`restart`, stopped by :meth:`stop`."""

    def __init__(self, directory: Path, config: str, env: Mapping[str, str] | None = None,
                 timeout: float = 30.0) -> None:
        self.directory = directory
        self.config = config
        self.env = dict(env or {})
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def socket(self) -> Path:
        return self.directory / "run" / "libvirt" / "libvirt-sock"

    @property
    def uri(self) -> str:
        """The test driver through this daemon."""
        return f"test+unix:///default?socket={self.socket}"

    @property
    def log(self) -> Path:
        return self.directory / "home" / "libvirtd.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def log_tail(self, lines: int = 20) -> str:
        """The daemon's last log lines and its stdio, for a failure message."""
        out = []
        for path in (self.log, self.directory / "stdio.log"):
            with contextlib.suppress(OSError):
                out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    def prepare(self) -> None:
        """The directories and the configuration file (``log_outputs`` added), owned by the
        test user; called by :func:`private_libvirtd` before anything else is put there."""
        for sub in ("home", "run"):
            (self.directory / sub).mkdir(mode=0o700, exist_ok=True)
        (self.directory / "libvirtd.conf").write_text(
            self.config + f'log_outputs = "3:file:{self.log}"\n'
        )

    def start(self) -> None:
        """Start the daemon and wait until it listens."""
        lab_module.ensure_test_user()
        user = pwd.getpwnam(lab_module.TEST_USER)
        chown_tree(self.directory, user.pw_uid, user.pw_gid)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "HOME": str(self.directory / "home"),
               "XDG_RUNTIME_DIR": str(self.directory / "run"), **self.env}
        with (self.directory / "stdio.log").open("ab") as stdio:
            self.process = process = subprocess.Popen(
                ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                 "--clear-groups", "libvirtd", "-f", str(self.directory / "libvirtd.conf")],
                cwd=self.directory, env=env, stdin=subprocess.DEVNULL, stdout=stdio,
                stderr=stdio,
            )
        self.starts += 1
        deadline = time.monotonic() + self.timeout
        while not self.socket.is_socket():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the private libvirtd did not listen on {self.socket} "
                                   f"within {self.timeout:g} s (exit {process.poll()}):\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, SIGKILL after 20 s), if it runs."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def restart(self) -> None:
        """Stop and start again: its clients see the connection close (EOF)."""
        self.stop()
        self.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The daemon SIGSTOPped for the body (calls to it hang), then SIGCONTinued."""
        assert self.process is not None, "the private libvirtd is not running"
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGCONT)

    def check_alive(self) -> None:
        """Raise if the daemon died on its own."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the private libvirtd died (exit {self.process.returncode}):\n"
                               f"{self.log_tail()}")


@contextlib.contextmanager
def private_libvirtd(config: str = "", env: Mapping[str, str] | None = None,
                     prepare: Callable[[Path], None] = lambda _directory: None,
                     timeout: float = 30.0) -> Iterator[PrivateLibvirtd]:
    """A running private libvirtd with ``config`` (libvirtd.conf lines) for the body; stopped and
    its directory removed after. ``prepare`` puts more files into the directory first."""
    # Short: the socket path must fit in an AF_UNIX address (about 100 bytes).
    directory = Path(tempfile.mkdtemp(prefix="vm-lvd-", dir="/tmp"))
    daemon = PrivateLibvirtd(directory, config, env, timeout)
    try:
        daemon.prepare()
        prepare(directory)
        daemon.start()
        yield daemon
        daemon.check_alive()
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)
