"""The one reading of a listen address, HOST:PORT."""

from __future__ import annotations

import pytest

from virtmon.address import check_listen, split_listen


def test_a_listen_address_splits_into_host_and_port() -> None:
    """An empty host is every address (None); IPv6 loses its brackets; names stay."""
    assert split_listen(":9786") == (None, 9786)
    assert split_listen("[::1]:9786") == ("::1", 9786)
    assert split_listen("[::]:1") == ("::", 1)
    assert split_listen("host.example:65535") == ("host.example", 65535)


@pytest.mark.parametrize("listen", ["9786", "host:", "host:0", "host:65536", "host:²", ":-1",
                                    "host:9786 "])
def test_what_is_not_host_port_is_refused(listen: str) -> None:
    """No port, port 0 or beyond 65535, or not ASCII digits: refused, by the parser and the
    configuration's check alike."""
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        split_listen(listen)
    assert check_listen(listen) == f"{listen!r} is not HOST:PORT"


def test_the_check_also_refuses_a_host_that_is_no_host() -> None:
    """A host that is neither an IP address nor a host name is named in the problem."""
    assert "neither an IP address nor a host name" in str(check_listen("bad_host!:9786"))
    assert check_listen("[::1]:9786") is None and check_listen(":9786") is None
