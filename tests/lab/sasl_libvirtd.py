"""A private libvirtd that lets no client in without SASL credentials (scram-sha-256, sasldb).

The lab's libvirtd lets its group in without authentication, and other tests use it while this
one runs, so it is left alone: this is a second, unprivileged (session) libvirtd run as the lab's
test user, in a directory of its own, with one UNIX socket whose clients must authenticate
(``auth_unix_rw = "sasl"``) as the one user of its own sasldb. Cyrus SASL takes its configuration
from ``SASL_CONF_PATH``, so nothing under /etc changes (Debian's /etc/sasl2/libvirt.conf asks for
GSSAPI and stays as it is). The URI is the test driver's through that socket: a real remote
connection (authentication, keepalive, events) with no QEMU behind it.

Started and stopped by the tests that use it (by its pid); ``python -m tests.lab.sasl_libvirtd``
runs one in the foreground to try it by hand.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.lab import lab as lab_module

# SCRAM sends no password over the socket and needs no security layer, which libvirt asks of a
# mechanism only on TCP without TLS; the sasldb keeps the secret the mechanism needs.
MECHANISM = "scram-sha-256"
SASL_APP = "libvirt"  # the name libvirtd gives Cyrus SASL: its configuration is libvirt.conf


@dataclass(frozen=True)
class SaslLibvirtd:
    """A running private libvirtd: how to reach it, who may, and where it logs."""

    directory: Path
    username: str
    password: str
    pid: int

    @property
    def socket(self) -> Path:
        return self.directory / "run" / "libvirt" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"test+unix:///default?socket={self.socket}"

    @property
    def log(self) -> Path:
        return self.directory / "home" / "libvirtd.log"

    def log_tail(self, lines: int = 20) -> str:
        """The daemon's last log lines and its stdio, for a failure message."""
        out = []
        for path in (self.log, self.directory / "stdio.log"):
            with contextlib.suppress(OSError):
                out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)


def _write_configuration(directory: Path, username: str, password: str) -> None:
    """libvirtd's and SASL's configuration files and the sasldb with the one user."""
    sasl = directory / "sasl"
    for sub in ("sasl", "home", "run"):
        (directory / sub).mkdir(mode=0o700)
    (sasl / f"{SASL_APP}.conf").write_text(
        f"mech_list: {MECHANISM}\nsasldb_path: {sasl / 'passwd.db'}\n"
    )
    subprocess.run(
        ["saslpasswd2", "-p", "-c", "-a", SASL_APP, "-f", str(sasl / "passwd.db"), username],
        input=password.encode(), check=True, capture_output=True,
    )
    (directory / "libvirtd.conf").write_text(
        'auth_unix_rw = "sasl"\n'
        # Anyone may reach the socket: the credentials, not the file mode, keep clients out.
        'unix_sock_rw_perms = "0777"\n'
        f'log_outputs = "3:file:{directory / "home" / "libvirtd.log"}"\n'
    )


def _chown_tree(directory: Path, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(directory):
        for name in [root, *(os.path.join(root, entry) for entry in dirs + files)]:
            os.chown(name, uid, gid)


def _stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM by pid, SIGKILL after the timeout; reaped either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def sasl_libvirtd(username: str = "monitor", password: str = "right horse battery",
                  timeout: float = 30.0) -> Iterator[SaslLibvirtd]:
    """A private libvirtd requiring SASL as ``username``/``password`` for the body; stopped and
    its directory removed after."""
    lab_module.ensure_test_user()
    user = pwd.getpwnam(lab_module.TEST_USER)
    # Short: the socket path must fit in an AF_UNIX address (about 100 bytes).
    directory = Path(tempfile.mkdtemp(prefix="vm-sasl-", dir="/tmp"))
    process: subprocess.Popen[bytes] | None = None
    try:
        _write_configuration(directory, username, password)
        _chown_tree(directory, user.pw_uid, user.pw_gid)
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "HOME": str(directory / "home"), "XDG_RUNTIME_DIR": str(directory / "run"),
               "SASL_CONF_PATH": str(directory / "sasl")}
        with (directory / "stdio.log").open("wb") as stdio:
            process = subprocess.Popen(
                ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                 "--clear-groups", "libvirtd", "-f", str(directory / "libvirtd.conf")],
                cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio,
            )
        daemon = SaslLibvirtd(directory, username, password, process.pid)
        deadline = time.monotonic() + timeout
        while not daemon.socket.is_socket():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the SASL libvirtd did not listen on {daemon.socket} "
                                   f"within {timeout:g} s (exit {process.poll()}):\n"
                                   f"{daemon.log_tail()}")
            time.sleep(0.05)
        yield daemon
        if process.poll() is not None:
            raise RuntimeError(f"the SASL libvirtd died (exit {process.returncode}):\n"
                               f"{daemon.log_tail()}")
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    """Run one until Ctrl-C, printing its URI and credentials."""
    with sasl_libvirtd() as daemon:
        print(f"uri: {daemon.uri}\nusername={daemon.username}\npassword={daemon.password}",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
