"""Domain operations that only read (libvirt-domain): state, XML, statistics, tunables, jobs.

Each body runs in a worker thread with the domain object looked up by name, UUID or id, on the
connection the caller's role gives (read-only for the read role). What libvirt refuses on a
read-only connection needs the write role: guest-agent queries, launch security, peeks, and the
flags and sources declared with ``write_when``.
"""

from __future__ import annotations

import base64
from typing import Any

import libvirt

from virtmon.control.operations import names
from virtmon.control.operations.model import (
    Operation,
    WriteWhen,
    arg,
    enum,
    flags_param,
    need,
    op,
)

D = "domain"
INTERFACE_STATS = ("rx_bytes", "rx_packets", "rx_errs", "rx_drop",
                   "tx_bytes", "tx_packets", "tx_errs", "tx_drop")
BLOCK_STATS = ("rd_req", "rd_bytes", "wr_req", "wr_bytes", "errs")
METADATA_TYPES = names.flags("VIR_DOMAIN_METADATA_")
ADDRESS_SOURCES = names.flags("VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_")
JOB_TYPES = names.flags("VIR_DOMAIN_JOB_", only=(
    "none", "bounded", "unbounded", "completed", "failed", "cancelled"))
CONTROL_STATES = names.flags("VIR_DOMAIN_CONTROL_", exclude=("error_",))


def identity(dom: Any) -> dict[str, Any]:
    """Name, UUID and id: the three ways to address a domain."""
    return {"name": dom.name(), "uuid": dom.UUIDString(), "id": dom.ID()}


def info(dom: Any, _a: dict[str, Any]) -> dict[str, Any]:
    """virDomainGetInfo as named fields."""
    state, max_mem, mem, vcpus, cpu_time = dom.info()
    return {"state": names.named(names.STATES, state), "max_memory_kib": max_mem,
            "memory_kib": mem, "vcpus": vcpus, "cpu_time_ns": cpu_time}


def state(dom: Any, a: dict[str, Any]) -> dict[str, Any]:
    """virDomainGetState, state and reason named."""
    st, reason = dom.state(a["flags"])
    return names.state_and_reason(st, reason)


def vcpus(dom: Any, _a: dict[str, Any]) -> dict[str, Any]:
    """virDomainGetVcpus: per-vCPU state, CPU time, physical CPU, and affinity."""
    infos, maps = dom.vcpus()
    return {"vcpus": [{"number": n, "state": s, "cpu_time_ns": t, "cpu": c,
                       "affinity": [i for i, on in enumerate(m) if on]}
                      for (n, s, t, c), m in zip(infos, maps, strict=False)]}


def job_info(dom: Any, _a: dict[str, Any]) -> dict[str, Any]:
    """virDomainGetJobInfo as named fields."""
    fields = ("type", "time_elapsed", "time_remaining", "data_total", "data_processed",
              "data_remaining", "mem_total", "mem_processed", "mem_remaining",
              "file_total", "file_processed", "file_remaining")
    values = dom.jobInfo()
    out: dict[str, Any] = dict(zip(fields, values, strict=False))
    out["type"] = names.named(JOB_TYPES, values[0])
    return out


def control_info(dom: Any, a: dict[str, Any]) -> dict[str, Any]:
    """virDomainGetControlInfo as named fields."""
    st, details, since = dom.controlInfo(a["flags"])
    return {"state": names.named(CONTROL_STATES, st), "details": details, "state_time_ms": since}


def block_stats(dom: Any, a: dict[str, Any]) -> Any:
    """virDomainBlockStatsFlags (every field) or virDomainBlockStats (the classic five)."""
    try:
        return dom.blockStatsFlags(a["disk"], a["flags"])
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
    return dict(zip(BLOCK_STATS, dom.blockStats(a["disk"]), strict=False))


def screenshot(dom: Any, a: dict[str, Any]) -> dict[str, Any]:
    """virDomainScreenshot: the image bytes the stream carries, base64."""
    stream = dom.connect().newStream(0)
    try:
        mime = dom.screenshot(stream, a["screen"], 0)
        chunks = []
        while True:
            chunk = stream.recv(256 * 1024)
            if not chunk:
                break
            chunks.append(chunk)
        stream.finish()
    except BaseException:
        stream.abort()
        raise
    data = b"".join(chunks)
    return {"mime_type": mime, "size": len(data), "base64": base64.b64encode(data).decode()}


def peek(data: bytes) -> dict[str, Any]:
    """Peeked bytes, base64."""
    return {"size": len(data), "base64": base64.b64encode(data).decode()}


def snapshots(dom: Any, a: dict[str, Any]) -> dict[str, Any]:
    """virDomainSnapshotNum and the snapshots' names."""
    listing = dom.listAllSnapshots(a["flags"])
    return {"count": len(listing), "snapshots": [s.getName() for s in listing]}


def checkpoints(dom: Any, a: dict[str, Any]) -> dict[str, Any]:
    """virDomainListAllCheckpoints: the checkpoints' names."""
    return {"checkpoints": [c.getName() for c in dom.listAllCheckpoints(a["flags"])]}


def stats(dom: Any, a: dict[str, Any]) -> Any:
    """virDomainListGetStats for one domain."""
    records = dom.connect().domainListGetStats([dom], a["groups"], a["flags"])
    return records[0][1] if records else {}


def security_labels(dom: Any, _a: dict[str, Any]) -> dict[str, Any]:
    """virDomainGetSecurityLabelList: label and enforcing, per security driver."""
    return {"labels": [{"label": lbl, "enforcing": bool(enf)}
                       for lbl, enf in dom.securityLabelList()]}


SOURCE = enum("source", ADDRESS_SOURCES, 0)
DISK = need("disk", "string", "the disk's target (vda) or source path")
XML_FLAGS = flags_param(names.flags("VIR_DOMAIN_XML_"))
# Secure XML shows passwords, and migratable XML implies it: libvirt refuses both read-only.
SECURE_XML = WriteWhen("flags", ("secure", "migratable"))
AFFECT = flags_param(names.AFFECT)

OPERATIONS: list[Operation] = [
    op("domain.lookup", D, "read", "The domain's name, UUID and id",
       "virDomainLookupByName virDomainLookupByID virDomainLookupByUUID "
       "virDomainLookupByUUIDString virDomainGetName virDomainGetID virDomainGetUUID "
       "virDomainGetUUIDString", lambda d, a: identity(d)),
    op("domain.info", D, "read", "State, memory, vCPUs and CPU time", "virDomainGetInfo", info),
    op("domain.state", D, "read", "State and its reason, named", "virDomainGetState", state,
       flags_param({})),
    op("domain.xml", D, "read", "The domain's XML description", "virDomainGetXMLDesc",
       lambda d, a: d.XMLDesc(a["flags"]), XML_FLAGS, write_when=SECURE_XML),
    op("domain.os_type", D, "read", "The guest OS type", "virDomainGetOSType",
       lambda d, a: d.OSType()),
    op("domain.max_memory", D, "read", "Maximum memory in KiB", "virDomainGetMaxMemory",
       lambda d, a: d.maxMemory()),
    op("domain.max_vcpus", D, "read", "Maximum vCPUs of a running domain",
       "virDomainGetMaxVcpus", lambda d, a: d.maxVcpus()),
    op("domain.is_active", D, "read", "Whether the domain runs", "virDomainIsActive",
       lambda d, a: bool(d.isActive())),
    op("domain.is_persistent", D, "read", "Whether the domain has a persistent definition",
       "virDomainIsPersistent", lambda d, a: bool(d.isPersistent())),
    op("domain.is_updated", D, "read", "Whether the live definition differs from the persistent",
       "virDomainIsUpdated", lambda d, a: bool(d.isUpdated())),
    op("domain.autostart", D, "read", "Whether the domain starts with the host",
       "virDomainGetAutostart", lambda d, a: bool(d.autostart())),
    op("domain.stats", D, "read", "The bulk statistics of one domain (groups as flags)",
       "virDomainListGetStats", stats,
       flags_param(names.flags("VIR_DOMAIN_STATS_"), "groups", "stats groups; 0: all"),
       flags_param(names.flags("VIR_CONNECT_GET_ALL_DOMAINS_STATS_"))),
    op("domain.block_stats", D, "read", "I/O statistics of one disk",
       "virDomainBlockStats virDomainBlockStatsFlags", block_stats, DISK, flags_param({})),
    op("domain.block_info", D, "read", "Capacity, allocation and physical size of one disk",
       "virDomainGetBlockInfo", lambda d, a: dict(zip(
           ("capacity", "allocation", "physical"), d.blockInfo(a["disk"], 0), strict=False)),
       DISK),
    op("domain.block_iotune", D, "read", "I/O throttling of one disk",
       "virDomainGetBlockIoTune", lambda d, a: d.blockIoTune(a["disk"], a["flags"]),
       DISK, AFFECT),
    op("domain.block_job_info", D, "read", "The block job running on one disk",
       "virDomainGetBlockJobInfo virDomainBlockJobInfo",
       lambda d, a: d.blockJobInfo(a["disk"], a["flags"]), DISK,
       flags_param(names.flags("VIR_DOMAIN_BLOCK_JOB_INFO_"))),
    op("domain.disk_errors", D, "read", "Disks with I/O errors", "virDomainGetDiskErrors",
       lambda d, a: d.diskErrors(0)),
    op("domain.interface_stats", D, "read", "Traffic counters of one interface",
       "virDomainInterfaceStats", lambda d, a: dict(zip(
           INTERFACE_STATS, d.interfaceStats(a["device"]), strict=False)),
       need("device", "string", "the interface's target device (vnet0) or MAC")),
    op("domain.interface_addresses", D, "read", "IP addresses of the guest's interfaces",
       "virDomainInterfaceAddresses virDomainInterfaceFree",
       lambda d, a: d.interfaceAddresses(a["source"], 0), SOURCE,
       write_when=WriteWhen("source", ("agent",))),
    op("domain.interface_parameters", D, "read", "Bandwidth settings of one interface",
       "virDomainGetInterfaceParameters",
       lambda d, a: d.interfaceParameters(a["device"], a["flags"]),
       need("device", "string"), AFFECT),
    op("domain.memory_stats", D, "read", "Balloon and guest memory statistics",
       "virDomainMemoryStats", lambda d, a: d.memoryStats()),
    op("domain.memory_parameters", D, "read", "Memory tunables",
       "virDomainGetMemoryParameters", lambda d, a: d.memoryParameters(a["flags"]), AFFECT),
    op("domain.numa_parameters", D, "read", "NUMA tunables", "virDomainGetNumaParameters",
       lambda d, a: d.numaParameters(a["flags"]), AFFECT),
    op("domain.blkio_parameters", D, "read", "Block I/O tunables",
       "virDomainGetBlkioParameters", lambda d, a: d.blkioParameters(a["flags"]), AFFECT),
    op("domain.vcpus", D, "read", "Per-vCPU state, time, placement and affinity",
       "virDomainGetVcpus", vcpus),
    op("domain.vcpus_count", D, "read", "vCPU count (live/config, current/maximum)",
       "virDomainGetVcpusFlags", lambda d, a: d.vcpusFlags(a["flags"]),
       flags_param(names.AFFECT_VCPU), write_when=WriteWhen("flags", ("guest",))),
    op("domain.vcpu_pin_info", D, "read", "vCPU affinity as CPU lists",
       "virDomainGetVcpuPinInfo", lambda d, a: [
           [i for i, on in enumerate(m) if on] for m in d.vcpuPinInfo(a["flags"])], AFFECT),
    op("domain.emulator_pin_info", D, "read", "Emulator threads' CPU affinity",
       "virDomainGetEmulatorPinInfo", lambda d, a: [
           i for i, on in enumerate(d.emulatorPinInfo(a["flags"])) if on], AFFECT),
    op("domain.iothreads", D, "read", "IOThreads and their CPU affinity",
       "virDomainGetIOThreadInfo virDomainIOThreadInfoFree", lambda d, a: [
           {"id": i, "cpus": [c for c, on in enumerate(m) if on]}
           for i, m in d.ioThreadInfo(a["flags"])], AFFECT),
    op("domain.scheduler_type", D, "read", "The scheduler and its parameter count",
       "virDomainGetSchedulerType", lambda d, a: dict(zip(
           ("scheduler", "nparams"), d.schedulerType(), strict=False))),
    op("domain.scheduler_parameters", D, "read", "Scheduler parameters",
       "virDomainGetSchedulerParameters virDomainGetSchedulerParametersFlags",
       lambda d, a: d.schedulerParametersFlags(a["flags"]), AFFECT),
    op("domain.cpu_stats", D, "read", "CPU time in total (or per host CPU with per_cpu)",
       "virDomainGetCPUStats", lambda d, a: d.getCPUStats(not a["per_cpu"], 0),
       arg("per_cpu", "boolean", False)),
    op("domain.perf_events", D, "read", "Enabled perf events", "virDomainGetPerfEvents",
       lambda d, a: d.perfEvents(a["flags"]), AFFECT),
    op("domain.job_info", D, "read", "The running job's progress", "virDomainGetJobInfo",
       job_info),
    op("domain.job_stats", D, "read", "The running (or completed) job's statistics",
       "virDomainGetJobStats", lambda d, a: d.jobStats(a["flags"]),
       flags_param(names.flags("VIR_DOMAIN_JOB_STATS_"))),
    op("domain.control_info", D, "read", "The state of the control interface",
       "virDomainGetControlInfo", control_info, flags_param({})),
    op("domain.metadata", D, "read", "Title, description or a custom metadata element",
       "virDomainGetMetadata", lambda d, a: d.metadata(a["type"], a["uri"], a["flags"]),
       enum("type", METADATA_TYPES, 0),
       arg("uri", "string", None, "the element's namespace URI (type=element)"), AFFECT),
    op("domain.security_label", D, "read", "Security labels of the domain's process",
       "virDomainGetSecurityLabel virDomainGetSecurityLabelList", security_labels),
    op("domain.launch_security_info", D, "write", "Launch security (SEV) measurement",
       "virDomainGetLaunchSecurityInfo", lambda d, a: d.launchSecurityInfo(0)),
    op("domain.messages", D, "read", "Taint and deprecation messages",
       "virDomainGetMessages", lambda d, a: d.messages(a["flags"]),
       flags_param(names.flags("VIR_DOMAIN_MESSAGE_"))),
    op("domain.has_managed_save", D, "read", "Whether a managed save image exists",
       "virDomainHasManagedSaveImage", lambda d, a: bool(d.hasManagedSaveImage(0))),
    op("domain.managed_save_xml", D, "read", "The XML stored in the managed save image",
       "virDomainManagedSaveGetXMLDesc", lambda d, a: d.managedSaveGetXMLDesc(a["flags"]),
       flags_param(names.flags("VIR_DOMAIN_SAVE_IMAGE_XML_")),
       write_when=WriteWhen("flags", ("secure",))),
    op("domain.migrate_max_downtime", D, "read", "Maximum tolerable downtime (ms)",
       "virDomainMigrateGetMaxDowntime", lambda d, a: d.migrateGetMaxDowntime(0)),
    op("domain.migrate_max_speed", D, "write", "Maximum migration bandwidth (MiB/s)",
       "virDomainMigrateGetMaxSpeed", lambda d, a: d.migrateGetMaxSpeed(a["flags"]),
       flags_param(names.flags("VIR_DOMAIN_MIGRATE_MAX_SPEED_"))),
    op("domain.migrate_compression_cache", D, "read", "Migration compression cache (bytes)",
       "virDomainMigrateGetCompressionCache",
       lambda d, a: d.migrateGetCompressionCache(0)),
    op("domain.snapshots", D, "read", "Snapshot count and names",
       "virDomainSnapshotNum", snapshots,
       flags_param(names.flags("VIR_DOMAIN_SNAPSHOT_LIST_"))),
    op("domain.checkpoints", D, "read", "Checkpoint names", "virDomainListAllCheckpoints",
       checkpoints, flags_param(names.flags("VIR_DOMAIN_CHECKPOINT_LIST_"))),
    op("domain.backup_xml", D, "read", "The running backup job's XML",
       "virDomainBackupGetXMLDesc", lambda d, a: d.backupGetXMLDesc(0)),
    # Guest-agent queries: libvirt refuses them on a read-only connection, so they need write.
    op("domain.time", D, "write", "The guest's clock (guest agent)", "virDomainGetTime",
       lambda d, a: d.getTime(0)),
    op("domain.hostname", D, "write", "The guest's hostname (guest agent or lease)",
       "virDomainGetHostname", lambda d, a: d.hostname(a["flags"]),
       flags_param(names.flags("VIR_DOMAIN_GET_HOSTNAME_"))),
    op("domain.fs_info", D, "write", "Mounted guest file systems (guest agent)",
       "virDomainGetFSInfo virDomainFSInfoFree", lambda d, a: d.fsInfo(0)),
    op("domain.guest_info", D, "write", "Users, OS, time zone, disks... (guest agent)",
       "virDomainGetGuestInfo", lambda d, a: d.guestInfo(a["types"], 0),
       flags_param(names.flags("VIR_DOMAIN_GUEST_INFO_"), "types", "0: everything")),
    op("domain.guest_vcpus", D, "write", "vCPUs as the guest sees them (guest agent)",
       "virDomainGetGuestVcpus", lambda d, a: d.guestVcpus(0)),
    op("domain.authorized_ssh_keys", D, "write", "A guest user's authorized SSH keys",
       "virDomainAuthorizedSSHKeysGet",
       lambda d, a: d.authorizedSSHKeysGet(a["user"], 0), need("user", "string")),
    # Byte streams and peeks: guest contents, so they need more than the read role.
    op("domain.screenshot", D, "write", "A screenshot of one screen (base64 image)",
       "virDomainScreenshot", screenshot, arg("screen", "unsigned", 0), returns_bytes=True),
    op("domain.block_peek", D, "write", "Bytes of a disk image (base64)", "virDomainBlockPeek",
       lambda d, a: peek(d.blockPeek(a["disk"], a["offset"], a["size"], 0)),
       DISK, need("offset", "unsigned"), need("size", "unsigned", "at most 65536"),
       returns_bytes=True),
    op("domain.memory_peek", D, "write", "Bytes of guest memory (base64)",
       "virDomainMemoryPeek", lambda d, a: peek(d.memoryPeek(a["start"], a["size"], a["flags"])),
       need("start", "unsigned"), need("size", "unsigned", "at most 65536"),
       flags_param(names.flags("VIR_MEMORY_")), returns_bytes=True),
]
