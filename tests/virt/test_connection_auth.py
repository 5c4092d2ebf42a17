"""Opening connections: read-only by default, SASL credentials from a file through openAuth."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

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
