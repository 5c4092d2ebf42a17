"""docs/metrics.md, written from the families' declarations (`python -m virtmon.metrics_reference`).

Every collector declares its families (`Collector.families`), and so do virtmon's own metrics
(`run_collectors`' outcomes, `selfmetrics`, the alerts, the control API) and the process series;
the reference lists them in that order, one section per collector. A test fails when
docs/metrics.md differs from what this writes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from virtmon.alerts.metrics import FAMILIES as ALERT_FAMILIES
from virtmon.collectors import COLLECTORS, DEFAULT_ENABLED
from virtmon.collectors.base import FACTS_EVERY, OUTCOME_FAMILIES
from virtmon.collectors.guest_agent import FAMILIES as GUEST_AGENT_FAMILIES
from virtmon.collectors.jobs import FAMILIES as JOB_FAMILIES
from virtmon.control.console import CONSOLE_FAMILIES
from virtmon.control.executor import REQUESTS_FAMILY
from virtmon.exposition.family import FamilySpec
from virtmon.exposition.process import FAMILIES as PROCESS_FAMILIES
from virtmon.selfmetrics import FAMILIES as SELF_FAMILIES
from virtmon.virt.jobs import MAX_WATCHED

HEADER = f"""\
# Metrics reference

<!-- Written by `python -m virtmon.metrics_reference > docs/metrics.md` from the declarations
in the code; tests/test_docs.py fails when this page is stale. Edit the declarations. -->

Every family `/metrics` can carry, with its type, labels, unit and where the value comes from,
by collector. Units are base units (seconds, bytes); libvirt's nanoseconds, KiB and MiB are
converted. Values are those of the last collection cycle unless the table says otherwise; host
facts (node info, CPU map, host interfaces) are re-read every {FACTS_EVERY} cycles. A family
appears only when it has a series: a domain without IOThreads has no IOThread series, a host
without a PMU no hardware perf counters, and so on. Info metrics are gauges of value 1 in the
text format (`info` in OpenMetrics).

The values are checked too: `tests/integration/test_metrics_crosscheck.py` compares every
series a daemon exports on a real libvirtd with values the test reads itself (libvirt's
per-domain calls, `virsh`, `virt-admin`, `/proc`, `/sys`) before and after a cycle, fails on an
exported family it has no check for, and fails when this page lists a family it does not know
or misses one.
"""

# What a section says before its table (a collector's caveats), by collector name.
NOTES = {
    "cpu": "CPU series exist only for domains that have a hypervisor process (running, paused, "
           "...): for a shut-off domain libvirt 9.0 reports libvirtd's own CPU time in the "
           "`cpu_total` group.",
    "interface": "`target_device` is libvirt's name (`vnet0`); an interface without a name "
                 "gets `net<n>`.",
    "block": "`target_device` is libvirt's name (`vda`); a backing-chain layer is "
             "`vda[<index>]` (with `collect.block_backing_chain`).",
    "perf": "perf series exist for the events enabled on a domain (`<perf>` in its XML or "
            "virDomainSetPerfEvents). The software events (clocks, faults, switches, "
            "migrations) work on any Linux host; the hardware ones (cycles, instructions, "
            "caches, branches, bus, stalls) need a PMU that many virtual machines lack, and "
            "resctrl's cmt, mbmt, mbml need Intel RDT.",
    "vm": "Opt-in (`collect.collectors.vm = true`): hypervisor names carry no stability "
          "promise, and they are many series per domain.",
    "node": "`mode` of the CPU series is libvirt's, which differs from node_exporter's `mode`: "
            "libvirt's `user` is /proc/stat's user + nice, its `kernel` is system + irq + "
            "softirq, `idle` and `iowait` are the same, and steal and guest time are in none "
            "of them. So `kernel` is not node_exporter's `system`, and the four modes do not "
            "add up to the wall time on a host with steal time.",
    "admin": "Per server of the daemon (`libvirtd` and `admin` on a monolithic libvirtd), "
             "through the admin API helper. virtmon is itself a client (of both servers) and "
             "its own cycle keeps a `libvirtd` worker busy while the pools are read. Read every "
             "`collect.admin_interval` seconds (60 by default; at most the interval: every "
             "cycle), the cycles between carry the last values: a read costs the helper one "
             "admin call per server and per client.",
    "events": "Counted since virtmon started, for the domains of the current listing (a "
              "deleted domain's counts go with it).",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(specs: Iterable[FamilySpec]) -> list[str]:
    """The Markdown table of some families."""
    lines = ["| family | type | labels | unit | source |", "|---|---|---|---|---|"]
    for spec in specs:
        labels = ", ".join(spec.labels)
        if spec.labels_note:
            labels = f"{labels} ({spec.labels_note})" if labels else spec.labels_note
        lines.append(f"| `{spec.name}` | {_cell(spec.type_note or spec.type)} | {_cell(labels)} "
                     f"| {_cell(spec.unit)} | {_cell(spec.source)} |")
    return lines


def reference() -> str:
    """The whole page."""
    default = [name for name in COLLECTORS if name in DEFAULT_ENABLED]
    opt_in = [name for name in COLLECTORS if name not in DEFAULT_ENABLED]
    out = [HEADER,
           "Collectors on by default: " + ", ".join(f"`{name}`" for name in default) + "; "
           "opt-in: " + ", ".join(f"`{name}`" for name in opt_in) + " (`collect.collectors.NAME "
           "= true` or `--collector.NAME`)."]
    for name, collector in COLLECTORS.items():
        title = f"## `{name}`" + (" (opt-in)" if name in opt_in else "")
        doc = (collector.__doc__ or "").strip().splitlines()[0]
        out += ["", title, "", doc]
        if name in NOTES:
            out += ["", NOTES[name]]
        out += ["", *table(collector.families)]
    out += ["", "## guest agent (opt-in)", "",
            "What each guest's agent says (`collect.guest_agent = true` or "
            "`--collector.guest-agent`): polled every `collect.guest_agent_interval` seconds, "
            "apart from the collection cycle, and only for domains whose agent channel is "
            "connected. The guest's series are absent while its agent does not answer.", "",
            *table(GUEST_AGENT_FAMILIES)]
    out += ["", "## jobs", "",
            "A running domain job's progress (`virDomainGetJobStats`: a migration, save, dump, "
            "snapshot, backup), asked every `collect.interval` seconds apart from the collection "
            "cycle, and only of the domains known to have a job (at most "
            f"{MAX_WATCHED}): a migration started through the control API, a domain that sent "
            "`migration_iteration` or a migration's lifecycle event, or one a cycle found paused "
            "for a job. The series are absent when no job runs, and go at the job's end "
            "(`job_completed`, or libvirt answering that none runs). A job another tool started "
            "(virsh) has no series until its first such event or pause: a live migration's disk "
            "copy before the first pass over the memory, a live dump or save, a backup are not "
            "seen. A migration's destination has none: libvirt keeps an incoming migration's "
            "statistics to the source. A failed or cancelled job's figures are in its "
            "`job_completed` event where libvirt sends one (docs/compatibility.md).", "",
            *table(JOB_FAMILIES)]
    out += ["", "## virtmon itself", "",
            "The collection, the libvirt connection, the event bus, alerts, webhooks and the "
            "control API.", "",
            *table((*OUTCOME_FAMILIES, *SELF_FAMILIES, *ALERT_FAMILIES, REQUESTS_FAMILY,
                    *CONSOLE_FAMILIES))]
    out += ["", "## Processes", "",
            "The standard series every exporter has, from prometheus_client's process "
            "collector: the daemon's, and (while it runs) the admin helper's.", "",
            *table(PROCESS_FAMILIES)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
