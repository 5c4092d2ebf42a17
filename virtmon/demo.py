"""Demo activity for ``make run``: domains defined, started, paused, stopped now and then.

Runs on libvirt's in-process test driver (``test:///default``), whose state every connection in the
process shares, so virtmon's own read-only connection sees the changes and their events.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import anyio
import libvirt
import structlog

from virtmon.virt.calls import LibvirtCaller

log = structlog.get_logger("virtmon.demo").bind(component="demo")

DOMAIN_XML = """<domain type='test'>
  <name>{name}</name>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>"""


def step(conn: Any, rng: random.Random, serial: int) -> str:
    """One random change to the test driver's domains; returns what it did (blocking)."""
    domains = [d for d in conn.listAllDomains(0) if d.name().startswith("demo-")]
    if len(domains) < 3 or (len(domains) < 6 and rng.random() < 0.2):
        name = f"demo-{serial}"
        xml = DOMAIN_XML.format(name=name, memory=rng.choice((256, 512, 1024)),
                                vcpus=rng.choice((1, 2, 4)))
        conn.defineXML(xml).create()
        return f"defined and started {name}"
    dom = rng.choice(domains)
    state = dom.state()[0]
    if state == libvirt.VIR_DOMAIN_RUNNING:
        action = rng.choice(("suspend", "destroy", "shutdown"))
        getattr(dom, action)()
    elif state == libvirt.VIR_DOMAIN_PAUSED:
        action = "resume"
        dom.resume()
    elif len(domains) > 4 and rng.random() < 0.4:
        action = "undefine"
        dom.undefine()
    else:
        action = "start"
        dom.create()
    return f"{action} {dom.name()}"


async def run_demo(uri: str, caller: LibvirtCaller, period: float = 2.0, seed: int = 7) -> None:
    """Change something every ``period`` seconds, until cancelled."""
    rng = random.Random(seed)
    conn = await caller.call(libvirt.open, uri)
    serial = 0
    try:
        while True:
            serial += 1
            try:
                did = await caller.call(step, conn, rng, serial)
                # Debug: at info they bury the first steps; `virtmonctl events` shows them.
                log.debug("virtmon.demo.step", did=did)
            except libvirt.libvirtError as exc:
                log.debug("virtmon.demo.step_failed", error=exc.get_error_message())
            await anyio.sleep(period)
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await caller.call(conn.close)
