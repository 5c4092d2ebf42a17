"""Host operations (libvirt-host, plus the connection-level calls of libvirt-domain).

Bodies take the libvirt connection. Reads run on the monitoring connection; defining, creating
and restoring domains need ``write``; changing the host itself (memory tunables, huge pages,
suspending the host) needs ``admin``.
"""

from __future__ import annotations

from typing import Any

import libvirt

from virtmon.control.operations import names
from virtmon.control.operations.domain_read import identity
from virtmon.control.operations.domain_write import SAVE_PARAMS, save_params
from virtmon.control.operations.model import Operation, arg, done, enum, flags_param, need, op

H = "host"
XML = need("xml", "xml")
CPU_STATS_ALL = libvirt.VIR_NODE_CPU_STATS_ALL_CPUS
MEMORY_STATS_ALL = libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS


def node_info(conn: Any, _a: dict[str, Any]) -> dict[str, Any]:
    """virNodeGetInfo as named fields."""
    model, memory, cpus, mhz, nodes, sockets, cores, threads = conn.getInfo()
    return {"model": model, "memory_mib": memory, "cpus": cpus, "mhz": mhz,
            "numa_nodes": nodes, "sockets_per_node": sockets, "cores_per_socket": cores,
            "threads_per_core": threads}


def version_text(number: int) -> dict[str, Any]:
    """libvirt's packed version number with its dotted form."""
    return {"value": number,
            "text": f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"}


def domains(conn: Any, a: dict[str, Any]) -> dict[str, Any]:
    """virConnectListAllDomains: every domain's name, UUID, id and state."""
    out = []
    for dom in conn.listAllDomains(a["flags"]):
        entry = identity(dom)
        st, reason = dom.state(0)
        entry.update(names.state_and_reason(st, reason))
        out.append(entry)
    return {"count": len(out), "domains": out}


def all_stats(conn: Any, a: dict[str, Any]) -> list[dict[str, Any]]:
    """virConnectGetAllDomainStats: the bulk statistics of every domain."""
    return [{"domain": dom.name(), "uuid": dom.UUIDString(), "stats": stats}
            for dom, stats in conn.getAllDomainStats(a["groups"], a["flags"])]


def cpu_map(conn: Any, _a: dict[str, Any]) -> dict[str, Any]:
    """virNodeGetCPUMap: host CPUs present and online."""
    present, online_map, online = conn.getCPUMap(0)
    return {"present": present, "online_count": online,
            "online": [i for i, on in enumerate(online_map) if on]}


def security_model(conn: Any, _a: dict[str, Any]) -> dict[str, Any]:
    """virNodeGetSecurityModel."""
    model, doi = conn.getSecurityModel()
    return {"model": model, "doi": doi}


def connection(conn: Any, _a: dict[str, Any]) -> dict[str, Any]:
    """The monitoring connection's own facts."""
    return {"uri": conn.getURI(), "type": conn.getType(), "alive": bool(conn.isAlive()),
            "encrypted": bool(conn.isEncrypted()), "secure": bool(conn.isSecure())}


def cells_free(conn: Any, a: dict[str, Any]) -> list[int]:
    """virNodeGetCellsFreeMemory (bytes per NUMA cell)."""
    cells = a["cells"] if a["cells"] is not None else conn.getInfo()[4]
    result: list[int] = conn.getCellsFreeMemory(a["start"], cells)
    return result


def free_pages(conn: Any, a: dict[str, Any]) -> Any:
    """virNodeGetFreePages: free pages of each size per cell."""
    cells = a["cells"] if a["cells"] is not None else conn.getInfo()[4]
    return conn.getFreePages(a["pages"], a["start"], cells, 0)


def alloc_pages(conn: Any, a: dict[str, Any]) -> dict[str, Any]:
    """virNodeAllocPages: page size (KiB) -> count."""
    pages = {int(k): int(v) for k, v in a["pages"].items()}
    cells = a["cells"] if a["cells"] is not None else conn.getInfo()[4]
    return {"changed_cells": conn.allocPages(pages, a["start"], cells, a["flags"])}


def defined(dom: Any) -> dict[str, Any]:
    """A domain just defined or created: how to address it."""
    return identity(dom)


START = arg("start", "integer", 0, "first NUMA cell")
# Which hypervisor a capabilities question is about (each may be left out for the default).
HYPERVISOR = (arg("emulator", "string", None, "a binary on the host: libvirtd runs it"),
              arg("arch", "string"), arg("machine", "string"), arg("virttype", "string"))
CELLS = arg("cells", "unsigned", None, "number of cells (default: all)")
OPERATIONS: list[Operation] = [
    op("host.info", H, "read", "CPU model, memory, CPU topology", "virNodeGetInfo", node_info),
    op("host.capabilities", H, "read", "The capabilities XML", "virConnectGetCapabilities",
       lambda c, a: c.getCapabilities()),
    op("host.domain_capabilities", H, "write", "What the hypervisor offers domains (XML)",
       "virConnectGetDomainCapabilities",
       lambda c, a: c.getDomainCapabilities(a["emulator"], a["arch"], a["machine"],
                                            a["virttype"], a["flags"]),
       *HYPERVISOR, flags_param(names.flags("VIR_CONNECT_GET_DOMAIN_CAPABILITIES_"))),
    op("host.hostname", H, "read", "The host's name", "virConnectGetHostname",
       lambda c, a: c.getHostname()),
    op("host.sysinfo", H, "read", "The host's SMBIOS information (XML)",
       "virConnectGetSysinfo", lambda c, a: c.getSysinfo(0)),
    op("host.connection", H, "read", "URI, driver type, alive, encrypted, secure",
       "virConnectGetURI virConnectGetType virConnectIsAlive virConnectIsEncrypted "
       "virConnectIsSecure", connection),
    op("host.version", H, "read", "Hypervisor version", "virConnectGetVersion",
       lambda c, a: version_text(c.getVersion())),
    op("host.lib_version", H, "read", "libvirt's version (daemon and client library)",
       "virConnectGetLibVersion virGetVersion",
       lambda c, a: {"daemon": version_text(c.getLibVersion()),
                     "client": version_text(libvirt.getVersion())}),
    op("host.max_vcpus", H, "read", "Maximum vCPUs of a guest of this type",
       "virConnectGetMaxVcpus", lambda c, a: c.getMaxVcpus(a["type"]),
       arg("type", "string", None, "e.g. kvm")),
    op("host.cpu_stats", H, "read", "CPU times, for all CPUs or one",
       "virNodeGetCPUStats", lambda c, a: c.getCPUStats(
           CPU_STATS_ALL if a["cpu"] is None else a["cpu"], 0),
       arg("cpu", "unsigned")),
    op("host.memory_stats", H, "read", "Memory totals, for all cells or one",
       "virNodeGetMemoryStats", lambda c, a: c.getMemoryStats(
           MEMORY_STATS_ALL if a["cell"] is None else a["cell"], 0),
       arg("cell", "unsigned")),
    op("host.free_memory", H, "read", "Free memory in bytes", "virNodeGetFreeMemory",
       lambda c, a: c.getFreeMemory()),
    op("host.cells_free_memory", H, "read", "Free memory per NUMA cell",
       "virNodeGetCellsFreeMemory", cells_free, START, CELLS),
    op("host.free_pages", H, "read", "Free pages of each size per NUMA cell",
       "virNodeGetFreePages", free_pages,
       need("pages", "integers", "page sizes in KiB"), START, CELLS),
    op("host.cpu_map", H, "read", "Present and online host CPUs", "virNodeGetCPUMap",
       cpu_map),
    op("host.memory_parameters", H, "read", "Kernel same-page merging tunables",
       "virNodeGetMemoryParameters", lambda c, a: c.getMemoryParameters(0)),
    op("host.security_model", H, "read", "The security driver and its DOI",
       "virNodeGetSecurityModel", security_model),
    op("host.cpu_model_names", H, "read", "CPU models known for an architecture",
       "virConnectGetCPUModelNames", lambda c, a: c.getCPUModelNames(a["arch"], 0),
       need("arch", "string")),
    op("host.compare_cpu", H, "read", "Compare a CPU description with the host's",
       "virConnectCompareCPU", lambda c, a: names.named(
           names.flags("VIR_CPU_COMPARE_"), c.compareCPU(a["xml"], a["flags"])),
       XML, flags_param(names.flags("VIR_CONNECT_COMPARE_CPU_"))),
    op("host.baseline_cpu", H, "read", "The CPU model every given CPU supports",
       "virConnectBaselineCPU", lambda c, a: c.baselineCPU(a["cpus"], a["flags"]),
       need("cpus", "strings", "CPU XML documents"),
       flags_param(names.flags("VIR_CONNECT_BASELINE_CPU_"))),
    # These three make libvirtd run an emulator of the caller's choosing, or read the host's
    # platform secrets: libvirt refuses them on a read-only connection, so they need write.
    op("host.compare_hypervisor_cpu", H, "write",
       "Compare a CPU description with what the hypervisor can offer",
       "virConnectCompareHypervisorCPU", lambda c, a: names.named(
           names.flags("VIR_CPU_COMPARE_"), c.compareHypervisorCPU(
               a["emulator"], a["arch"], a["machine"], a["virttype"], a["xml"], a["flags"])),
       XML, *HYPERVISOR, flags_param(names.flags("VIR_CONNECT_COMPARE_CPU_"))),
    op("host.baseline_hypervisor_cpu", H, "write",
       "The CPU model every given CPU supports, on this hypervisor",
       "virConnectBaselineHypervisorCPU", lambda c, a: c.baselineHypervisorCPU(
           a["emulator"], a["arch"], a["machine"], a["virttype"], a["cpus"], a["flags"]),
       need("cpus", "strings", "CPU XML documents"), *HYPERVISOR,
       flags_param(names.flags("VIR_CONNECT_BASELINE_CPU_"))),
    op("host.sev_info", H, "write", "The host's SEV platform parameters",
       "virNodeGetSEVInfo", lambda c, a: c.getSEVInfo(0)),
    op("host.set_memory_parameters", H, "admin", "Set kernel same-page merging tunables",
       "virNodeSetMemoryParameters",
       lambda c, a: done(c.setMemoryParameters(a["params"], 0)), need("params", "typed")),
    op("host.alloc_pages", H, "admin", "Allocate or free huge pages",
       "virNodeAllocPages", alloc_pages,
       need("pages", "typed", "page size in KiB -> count"), START, CELLS,
       flags_param(names.flags("VIR_NODE_ALLOC_PAGES_"))),
    op("host.suspend_for_duration", H, "admin", "Suspend the host for a while",
       "virNodeSuspendForDuration",
       lambda c, a: done(c.suspendForDuration(a["target"], a["duration"], 0)),
       enum("target", names.flags("VIR_NODE_SUSPEND_TARGET_")),
       need("duration", "unsigned", "seconds")),
    # Connection-level domain calls (libvirt-domain).
    op("domain.list", H, "read", "Every domain with its state, straight from libvirt",
       "virConnectListAllDomains virConnectListDomains virConnectListDefinedDomains "
       "virConnectNumOfDomains virConnectNumOfDefinedDomains", domains,
       flags_param(names.flags("VIR_CONNECT_LIST_DOMAINS_"))),
    op("domain.all_stats", H, "read", "Bulk statistics of every domain",
       "virConnectGetAllDomainStats", all_stats,
       flags_param(names.flags("VIR_DOMAIN_STATS_"), "groups", "stats groups; 0: all"),
       flags_param(names.flags("VIR_CONNECT_GET_ALL_DOMAINS_STATS_"))),
    op("domain.define", H, "write", "Define (or redefine) a domain from its XML",
       "virDomainDefineXML virDomainDefineXMLFlags",
       lambda c, a: defined(c.defineXMLFlags(a["xml"], a["flags"])), XML,
       flags_param(names.flags("VIR_DOMAIN_DEFINE_"))),
    op("domain.create_xml", H, "write", "Create and start a transient domain from its XML",
       "virDomainCreateXML virDomainCreateLinux",
       lambda c, a: defined(c.createXML(a["xml"], a["flags"])), XML,
       flags_param(names.flags("VIR_DOMAIN_START_"))),
    op("domain.restore", H, "write", "Start a domain from a saved state file",
       "virDomainRestore virDomainRestoreFlags virDomainRestoreParams",
       lambda c, a: done(c.restoreParams(save_params(a), a["flags"]) if a["params"]
                         else c.restoreFlags(a["path"], a["xml"], a["flags"])),
       need("path", "string"), arg("xml", "xml"), SAVE_PARAMS,
       flags_param(names.flags("VIR_DOMAIN_SAVE_", exclude=("image_xml",)))),
    op("domain.save_image_xml", H, "write", "The XML inside a saved state file",
       "virDomainSaveImageGetXMLDesc",
       lambda c, a: c.saveImageGetXMLDesc(a["path"], a["flags"]), need("path", "string"),
       flags_param(names.flags("VIR_DOMAIN_SAVE_IMAGE_XML_"))),
    op("domain.save_image_define_xml", H, "write", "Replace the XML inside a saved state file",
       "virDomainSaveImageDefineXML",
       lambda c, a: done(c.saveImageDefineXML(a["path"], a["xml"], a["flags"])),
       need("path", "string"), XML,
       flags_param(names.flags("VIR_DOMAIN_SAVE_", exclude=("image_xml",)))),
    op("domain.xml_from_native", H, "write", "Convert a native config (e.g. qemu-argv) to XML",
       "virConnectDomainXMLFromNative",
       lambda c, a: c.domainXMLFromNative(a["format"], a["config"], 0),
       need("format", "string"), need("config", "string")),
    op("domain.xml_to_native", H, "write", "Convert domain XML to a native config",
       "virConnectDomainXMLToNative",
       lambda c, a: c.domainXMLToNative(a["format"], a["xml"], 0),
       need("format", "string"), XML),
]
