"""Opening connections: read-only by default, SASL credentials from a file through openAuth, and
a real libvirtd that requires SASL (right credentials connect, wrong ones are refused, and a
daemon with wrong ones says why and keeps retrying)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
import structlog

from tests.daemon import daemon_config, running_daemon
from tests.lab.sasl_libvirtd import SaslLibvirtd, sasl_libvirtd
from tests.streamclient import get_json
from tests.tools import need
from tests.waiting import exposition_until, wait_until
from virtmon.virt.handle import ConnectionSettings, open_connection, read_credentials


def test_credentials_file_gives_username_and_password(tmp_path: Path) -> None:
    """username= and password= lines are read; other lines and spaces are ignored."""
    path = tmp_path / "creds"
    path.write_text("# SASL\nusername = monitor\npassword=s3 cret\nrealm=x\n")
    assert read_credentials(path) == {"username": "monitor", "password": "s3 cret"}


def test_open_with_an_auth_file_goes_through_open_auth(tmp_path: Path) -> None:
    """With auth_file, the connection is opened by openAuth and is read-only by default."""
    path = tmp_path / "creds"
    path.write_text("username=a\npassword=b\n")
    conn = open_connection(ConnectionSettings("test:///default", auth_file=path))
    try:
        assert conn.getType() == "TEST"
        with pytest.raises(libvirt.libvirtError):
            conn.defineXML("<domain type='test'><name>x</name><memory>1024</memory>"
                           "<os><type>hvm</type></os></domain>")
    finally:
        conn.close()


# -- against a real libvirtd that requires SASL (tests/lab/sasl_libvirtd.py) ----------------------


@pytest.fixture(scope="module")
def sasl_daemon() -> Iterator[SaslLibvirtd]:
    """A private libvirtd that lets in only its one SASL user (for this module's tests)."""
    need("saslpasswd2")
    need("setpriv")
    with sasl_libvirtd() as daemon:
        yield daemon


def auth_file(directory: Path, username: str, password: str) -> Path:
    """An auth_file as an operator writes it (mode 0600)."""
    path = directory / "libvirt-auth"
    path.write_text(f"username={username}\npassword={password}\n")
    path.chmod(0o600)
    return path


def open_error(uri: str, path: Path) -> libvirt.libvirtError:
    """The error virtmon's own open raises with the credentials in ``path``."""
    with pytest.raises(libvirt.libvirtError) as caught:
        open_connection(ConnectionSettings(uri, auth_file=path)).close()
    return caught.value


def test_the_sasl_libvirtd_lets_in_no_client_without_credentials(
    sasl_daemon: SaslLibvirtd,
) -> None:
    """Without an auth_file the SASL libvirtd refuses the connection: SASL is really required."""
    with pytest.raises(libvirt.libvirtError) as caught:
        open_connection(ConnectionSettings(sasl_daemon.uri)).close()
    assert caught.value.get_error_code() == libvirt.VIR_ERR_AUTH_FAILED


def test_right_sasl_credentials_connect_read_only(
    sasl_daemon: SaslLibvirtd, tmp_path: Path
) -> None:
    """The auth_file's user and password open a working connection, read-only by default."""
    good = auth_file(tmp_path, sasl_daemon.username, sasl_daemon.password)
    conn = open_connection(ConnectionSettings(sasl_daemon.uri, auth_file=good))
    try:
        assert conn.getType() == "TEST"
        assert [dom.name() for dom in conn.listAllDomains(0)] == ["test"]
        with pytest.raises(libvirt.libvirtError) as caught:
            conn.lookupByName("test").suspend()
        assert caught.value.get_error_code() == libvirt.VIR_ERR_OPERATION_DENIED
    finally:
        conn.close()


@pytest.mark.parametrize("who", ["wrong password", "unknown user"])
def test_wrong_sasl_credentials_fail_with_an_authentication_error(
    sasl_daemon: SaslLibvirtd, tmp_path: Path, who: str
) -> None:
    """A wrong password or an unknown user is refused with libvirt's authentication error."""
    username, password = sasl_daemon.username, sasl_daemon.password
    if who == "wrong password":
        password += "x"
    else:
        username = "nobody-" + username
    error = open_error(sasl_daemon.uri, auth_file(tmp_path, username, password))
    assert error.get_error_code() == libvirt.VIR_ERR_AUTH_FAILED
    assert "authentication failed" in str(error.get_error_message())


async def test_virtmon_monitors_through_sasl_and_says_why_it_cannot(
    sasl_daemon: SaslLibvirtd, short_tmp: Path
) -> None:
    """A daemon whose auth_file holds a wrong password logs libvirt's authentication error at
    each attempt, exports libvirt_up 0 and keeps retrying; once the file is right, the next
    attempt connects and libvirt_up is 1."""
    path = auth_file(short_tmp, sasl_daemon.username, "not the password")
    cfg = daemon_config(short_tmp, libvirt={"uri": sasl_daemon.uri, "auth_file": str(path)},
                        collect={"collectors": {"admin": False}})

    def failed_opens() -> list[dict[str, Any]]:
        return [entry for entry in logs if entry["event"] == "virtmon.connection.open_failed"]

    with structlog.testing.capture_logs() as logs:
        async with running_daemon(cfg) as daemon:
            await wait_until(lambda: len(failed_opens()) >= 3, timeout=30)
            await exposition_until(daemon.scheduler, lambda text: "libvirt_up 0" in text)
            status = await get_json(daemon.control_socket, "/v1/status")
            assert status["libvirt"]["state"] in {"connecting", "backoff"}
            assert all("authentication failed" in entry["error"] for entry in failed_opens())
            # The same wait with the right password: the retries reach libvirt and connect.
            path.write_text(f"username={sasl_daemon.username}\n"
                            f"password={sasl_daemon.password}\n")
            await exposition_until(daemon.scheduler, lambda text: "libvirt_up 1" in text)
            # The events connection comes back after its back-off (seconds by now), and with
            # it the test driver's one domain.
            await wait_until(lambda: daemon.supervisor.connected, timeout=60)
            await exposition_until(
                daemon.scheduler, lambda text: 'libvirt_domain_info_state{domain="test"}' in text)
            status = await get_json(daemon.control_socket, "/v1/status")
    assert status["libvirt"]["state"] == "connected"
