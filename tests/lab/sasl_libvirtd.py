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
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.lab.private_libvirtd import PrivateLibvirtd, private_libvirtd

# SCRAM sends no password over the socket and needs no security layer, which libvirt asks of a
# mechanism only on TCP without TLS; the sasldb keeps the secret the mechanism needs.
MECHANISM = "scram-sha-256"
SASL_APP = "libvirt"  # the name libvirtd gives Cyrus SASL: its configuration is libvirt.conf
# Anyone may reach the socket: the credentials, not the file mode, keep clients out.
CONFIG = 'auth_unix_rw = "sasl"\nunix_sock_rw_perms = "0777"\n'


@dataclass(frozen=True)
class SaslLibvirtd:
    """A running private libvirtd and the one user it lets in."""

    daemon: PrivateLibvirtd
    username: str
    password: str

    @property
    def uri(self) -> str:
        return self.daemon.uri


def _write_sasl_configuration(directory: Path, username: str, password: str) -> None:
    """SASL's configuration file and the sasldb with the one user."""
    sasl = directory / "sasl"
    sasl.mkdir(mode=0o700)
    (sasl / f"{SASL_APP}.conf").write_text(
        f"mech_list: {MECHANISM}\nsasldb_path: {sasl / 'passwd.db'}\n"
    )
    subprocess.run(
        ["saslpasswd2", "-p", "-c", "-a", SASL_APP, "-f", str(sasl / "passwd.db"), username],
        input=password.encode(), check=True, capture_output=True,
    )


@contextlib.contextmanager
def sasl_libvirtd(username: str = "monitor", password: str = "right horse battery",
                  timeout: float = 30.0) -> Iterator[SaslLibvirtd]:
    """A private libvirtd requiring SASL as ``username``/``password`` for the body; stopped and
    its directory removed after."""
    # libvirtd runs in its directory: SASL_CONF_PATH relative to it.
    with private_libvirtd(
        CONFIG, env={"SASL_CONF_PATH": "sasl"},
        prepare=lambda directory: _write_sasl_configuration(directory, username, password),
        timeout=timeout,
    ) as daemon:
        yield SaslLibvirtd(daemon, username, password)


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
