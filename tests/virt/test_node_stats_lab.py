"""Node statistics on the real libvirtd: a host lacking a page size or a CPU loses that alone."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import call
from virtmon.virt import stats
from virtmon.virt.stats import HostFacts, node_stats

pytestmark = pytest.mark.lab


async def test_a_page_size_the_host_lacks_loses_only_that_size(
    lab_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libvirt refuses a free-pages call naming a size the host has not (16 KiB on x86): the
    sizes it has are still read, as libvirt itself gives them one by one."""
    with pytest.raises(Exception, match="page size"):
        await call(lab_conn.getFreePages, [4, 16, 2048], 0, 1)
    monkeypatch.setattr(stats, "PAGE_SIZES_KIB", (4, 16, 2048))
    node = await call(node_stats, lab_conn)
    direct = {size: (await call(lab_conn.getFreePages, [size], 0, 1))[0][size]
              for size in (4, 2048)}
    assert set(node.free_pages[0]) == {4, 2048}
    # Free 2 MiB pages do not move here (none are reserved); the base pages may, a little.
    assert node.free_pages[0][2048] == direct[2048]
    assert abs(node.free_pages[0][4] - direct[4]) < direct[4] // 10


async def test_per_cpu_statistics_follow_the_cpu_map(lab_conn: Any) -> None:
    """Per-CPU statistics are read for the online CPUs of the map, by their own numbers: with
    CPU 0 marked offline, CPU 1's statistics are CPU 1's and there is none for CPU 0."""
    info = await call(lab_conn.getInfo)
    cpus = info[2]
    offline = {0} if cpus > 1 else set()  # a one-CPU host cannot spare one
    online = tuple(cpu not in offline for cpu in range(cpus))
    node = await call(node_stats, lab_conn, HostFacts(tuple(info), online, None))
    assert sorted(node.cpu_per_cpu) == [cpu for cpu in range(cpus) if cpu not in offline]
    last = cpus - 1
    assert set(node.cpu_per_cpu[last]) == set(await call(lab_conn.getCPUStats, last))
