"""Domain operations that change something (libvirt-domain): lifecycle, devices, tunables, jobs.

They run on the read-write connection (opened only with ``control.allow_write``) and need the
``write`` role; each call is an audit record. Bodies return None for "done" (libvirt's 0).
"""

from __future__ import annotations

from typing import Any

import libvirt

from virtmon.control.operations import names
from virtmon.control.operations.model import Operation, arg, done, enum, flags_param, need, op
from virtmon.virt.handle import (
    ConnectionSettings,
    close_connection,
    keep_alive,
    open_connection,
)

D = "domain"
W = "write"
AFFECT = flags_param(names.AFFECT)
DEVICE = flags_param(names.DEVICE_MODIFY)
DISK = need("disk", "string", "the disk's target (vda) or source path")
XML = need("xml", "xml")
TYPED = need("params", "typed")
BANDWIDTH = arg("bandwidth", "unsigned", 0, "MiB/s (bytes/s with the bandwidth_bytes flag)")


def cpumap(cpus: list[int]) -> tuple[bool, ...]:
    """A list of host CPU numbers as libvirt-python's tuple of booleans."""
    if any(c < 0 or c > 4095 for c in cpus):
        raise ValueError("CPU numbers must be between 0 and 4095")
    width = max(cpus, default=-1) + 1
    return tuple(i in cpus for i in range(width))


def vcpu_list(vcpus: list[int]) -> str:
    """vCPU numbers as libvirt's list syntax."""
    return ",".join(str(v) for v in vcpus)


SAVE_PARAMS = arg("params", "typed", {}, "virDomainSaveParams/RestoreParams' own parameters "
                  "(this libvirt's VIR_DOMAIN_SAVE_PARAM_* names); path and xml join them")


def save_params(a: dict[str, Any]) -> dict[str, Any]:
    """The params form of save and restore: ``path`` and ``xml`` as their typed parameters,
    with the caller's others (libvirt 11 added image_format and parallel_channels)."""
    params = dict(a["params"])
    params[libvirt.VIR_DOMAIN_SAVE_PARAM_FILE] = a["path"]
    if a["xml"] is not None:
        params[libvirt.VIR_DOMAIN_SAVE_PARAM_DXML] = a["xml"]
    return params


def set_metadata(dom: Any, a: dict[str, Any]) -> None:
    """virDomainSetMetadata; ``key``/``uri`` only for type=element."""
    dom.setMetadata(a["type"], a["metadata"], a["key"], a["uri"], a["flags"])


# A managed migration's destination: a name from control.migration_destinations. The executor
# resolves it to the settings of the connection virtmon opens (DESTINATION_SETTINGS): the URI,
# and the credentials it carries, never come from the request.
DESTINATION = need("destination", "string", "a name from control.migration_destinations")
DESTINATION_SETTINGS = "destination_settings"
MIGRATE_FLAGS = flags_param(names.flags("VIR_MIGRATE_"))
# The operations that run a whole migration: control.migration_timeout is their deadline.
MIGRATIONS = frozenset({"domain.migrate", "domain.migrate_to_uri"})


def migrate(dom: Any, a: dict[str, Any]) -> dict[str, str]:
    """virDomainMigrate3 to a connection of virtmon's own to the destination, closed afterwards:
    the domain's name and UUID there."""
    settings: ConnectionSettings = a[DESTINATION_SETTINGS]
    destination = open_connection(settings)
    try:
        # The migration's phases on the destination are calls on this connection.
        keep_alive(destination, settings)
        moved = dom.migrate3(destination, a["params"], a["flags"])
        return {"name": moved.name(), "uuid": moved.UUIDString()}
    finally:
        close_connection(destination, [])


CPUS = need("cpus", "integers", "host CPU numbers")
OPERATIONS: list[Operation] = [
    op("domain.start", D, W, "Start a defined domain",
       "virDomainCreate virDomainCreateWithFlags",
       lambda d, a: done(d.createWithFlags(a["flags"])),
       flags_param(names.flags("VIR_DOMAIN_START_"))),
    op("domain.shutdown", D, W, "Ask the guest to shut down",
       "virDomainShutdown virDomainShutdownFlags",
       lambda d, a: done(d.shutdownFlags(a["flags"])),
       flags_param(names.flags("VIR_DOMAIN_SHUTDOWN_", exclude=names.SHUTDOWN_REASONS))),
    op("domain.reboot", D, W, "Ask the guest to reboot", "virDomainReboot",
       lambda d, a: done(d.reboot(a["flags"])), flags_param(names.flags("VIR_DOMAIN_REBOOT_"))),
    op("domain.reset", D, W, "Reset the domain (power cycle without shutdown)",
       "virDomainReset", lambda d, a: done(d.reset(0))),
    op("domain.destroy", D, W, "Stop the domain at once (power off)",
       "virDomainDestroy virDomainDestroyFlags",
       lambda d, a: done(d.destroyFlags(a["flags"])),
       flags_param(names.flags("VIR_DOMAIN_DESTROY_"))),
    op("domain.suspend", D, W, "Pause the domain's vCPUs", "virDomainSuspend",
       lambda d, a: done(d.suspend())),
    op("domain.resume", D, W, "Resume a paused domain", "virDomainResume",
       lambda d, a: done(d.resume())),
    op("domain.undefine", D, W, "Remove the persistent definition",
       "virDomainUndefine virDomainUndefineFlags",
       lambda d, a: done(d.undefineFlags(a["flags"])),
       flags_param(names.flags("VIR_DOMAIN_UNDEFINE_"))),
    op("domain.rename", D, W, "Rename an inactive domain", "virDomainRename",
       lambda d, a: done(d.rename(a["new_name"], 0)), need("new_name", "string")),
    op("domain.set_autostart", D, W, "Start (or not) with the host", "virDomainSetAutostart",
       lambda d, a: done(d.setAutostart(int(a["autostart"]))), need("autostart", "boolean")),
    op("domain.set_memory", D, W, "Set the memory (balloon target or config) in KiB",
       "virDomainSetMemory virDomainSetMemoryFlags",
       lambda d, a: done(d.setMemoryFlags(a["memory_kib"], a["flags"])),
       need("memory_kib", "unsigned"), flags_param(names.AFFECT_MEM)),
    op("domain.set_max_memory", D, W, "Set the maximum memory in KiB", "virDomainSetMaxMemory",
       lambda d, a: done(d.setMaxMemory(a["memory_kib"])), need("memory_kib", "unsigned")),
    op("domain.set_memory_stats_period", D, W, "Balloon statistics period in seconds",
       "virDomainSetMemoryStatsPeriod",
       lambda d, a: done(d.setMemoryStatsPeriod(a["period"], a["flags"])),
       need("period", "unsigned"), AFFECT),
    op("domain.set_memory_parameters", D, W, "Set memory tunables",
       "virDomainSetMemoryParameters",
       lambda d, a: done(d.setMemoryParameters(a["params"], a["flags"])), TYPED, AFFECT),
    op("domain.set_numa_parameters", D, W, "Set NUMA tunables", "virDomainSetNumaParameters",
       lambda d, a: done(d.setNumaParameters(a["params"], a["flags"])), TYPED, AFFECT),
    op("domain.set_blkio_parameters", D, W, "Set block I/O tunables",
       "virDomainSetBlkioParameters",
       lambda d, a: done(d.setBlkioParameters(a["params"], a["flags"])), TYPED, AFFECT),
    op("domain.set_scheduler_parameters", D, W, "Set scheduler parameters",
       "virDomainSetSchedulerParameters virDomainSetSchedulerParametersFlags",
       lambda d, a: done(d.setSchedulerParametersFlags(a["params"], a["flags"])), TYPED, AFFECT),
    op("domain.set_interface_parameters", D, W, "Set one interface's bandwidth",
       "virDomainSetInterfaceParameters",
       lambda d, a: done(d.setInterfaceParameters(a["device"], a["params"], a["flags"])),
       need("device", "string"), TYPED, AFFECT),
    op("domain.set_block_iotune", D, W, "Set one disk's I/O throttling",
       "virDomainSetBlockIoTune",
       lambda d, a: done(d.setBlockIoTune(a["disk"], a["params"], a["flags"])),
       DISK, TYPED, AFFECT),
    op("domain.set_perf_events", D, W, "Enable or disable perf events",
       "virDomainSetPerfEvents",
       lambda d, a: done(d.setPerfEvents(a["params"], a["flags"])), TYPED, AFFECT),
    op("domain.set_vcpus", D, W, "Set the number of vCPUs",
       "virDomainSetVcpus virDomainSetVcpusFlags",
       lambda d, a: done(d.setVcpusFlags(a["count"], a["flags"])),
       need("count", "unsigned"), flags_param(names.AFFECT_VCPU)),
    op("domain.set_vcpu", D, W, "Enable or disable individual vCPUs", "virDomainSetVcpu",
       lambda d, a: done(d.setVcpu(vcpu_list(a["vcpus"]), int(a["enable"]), a["flags"])),
       need("vcpus", "integers"), need("enable", "boolean"), AFFECT),
    op("domain.set_guest_vcpus", D, W, "Enable or disable vCPUs in the guest (guest agent)",
       "virDomainSetGuestVcpus",
       lambda d, a: done(d.setGuestVcpus(vcpu_list(a["vcpus"]), int(a["enable"]), 0)),
       need("vcpus", "integers"), need("enable", "boolean")),
    op("domain.pin_vcpu", D, W, "Pin one vCPU to host CPUs",
       "virDomainPinVcpu virDomainPinVcpuFlags",
       lambda d, a: done(d.pinVcpuFlags(a["vcpu"], cpumap(a["cpus"]), a["flags"])),
       need("vcpu", "unsigned"), CPUS, AFFECT),
    op("domain.pin_emulator", D, W, "Pin the emulator threads to host CPUs",
       "virDomainPinEmulator",
       lambda d, a: done(d.pinEmulator(cpumap(a["cpus"]), a["flags"])), CPUS, AFFECT),
    op("domain.pin_iothread", D, W, "Pin one IOThread to host CPUs", "virDomainPinIOThread",
       lambda d, a: done(d.pinIOThread(a["iothread"], cpumap(a["cpus"]), a["flags"])),
       need("iothread", "unsigned"), CPUS, AFFECT),
    op("domain.add_iothread", D, W, "Add an IOThread", "virDomainAddIOThread",
       lambda d, a: done(d.addIOThread(a["iothread"], a["flags"])),
       need("iothread", "unsigned"), AFFECT),
    op("domain.del_iothread", D, W, "Remove an IOThread", "virDomainDelIOThread",
       lambda d, a: done(d.delIOThread(a["iothread"], a["flags"])),
       need("iothread", "unsigned"), AFFECT),
    op("domain.set_iothread_params", D, W, "Set an IOThread's polling parameters",
       "virDomainSetIOThreadParams",
       lambda d, a: done(d.setIOThreadParams(a["iothread"], a["params"], a["flags"])),
       need("iothread", "unsigned"), TYPED, AFFECT),
    op("domain.set_metadata", D, W, "Set the title, description or a metadata element",
       "virDomainSetMetadata", set_metadata,
       enum("type", names.flags("VIR_DOMAIN_METADATA_"), 0),
       arg("metadata", "string", None, "the text or XML; null removes it"),
       arg("key", "string", None, "namespace prefix (type=element)"),
       arg("uri", "string", None, "namespace URI (type=element)"), AFFECT),
    op("domain.attach_device", D, W, "Attach a device from its XML",
       "virDomainAttachDevice virDomainAttachDeviceFlags",
       lambda d, a: done(d.attachDeviceFlags(a["xml"], a["flags"])), XML, DEVICE),
    op("domain.detach_device", D, W, "Detach a device given its XML",
       "virDomainDetachDevice virDomainDetachDeviceFlags",
       lambda d, a: done(d.detachDeviceFlags(a["xml"], a["flags"])), XML, DEVICE),
    op("domain.detach_device_alias", D, W, "Detach a device by its alias",
       "virDomainDetachDeviceAlias",
       lambda d, a: done(d.detachDeviceAlias(a["alias"], a["flags"])),
       need("alias", "string"), DEVICE),
    op("domain.update_device", D, W, "Change a device (e.g. eject media)",
       "virDomainUpdateDeviceFlags",
       lambda d, a: done(d.updateDeviceFlags(a["xml"], a["flags"])), XML, DEVICE),
    op("domain.managed_save", D, W, "Save the domain's state and stop it (managed image)",
       "virDomainManagedSave", lambda d, a: done(d.managedSave(a["flags"])),
       flags_param(names.flags("VIR_DOMAIN_SAVE_", exclude=("image_xml",)))),
    op("domain.managed_save_remove", D, W, "Remove the managed save image",
       "virDomainManagedSaveRemove", lambda d, a: done(d.managedSaveRemove(0))),
    op("domain.managed_save_define_xml", D, W, "Replace the XML in the managed save image",
       "virDomainManagedSaveDefineXML",
       lambda d, a: done(d.managedSaveDefineXML(a["xml"], a["flags"])), XML,
       flags_param(names.flags("VIR_DOMAIN_SAVE_", exclude=("image_xml",)))),
    op("domain.save", D, W, "Save the domain's state to a file on the host and stop it",
       "virDomainSave virDomainSaveFlags virDomainSaveParams",
       lambda d, a: done(d.saveParams(save_params(a), a["flags"]) if a["params"]
                         else d.saveFlags(a["path"], a["xml"], a["flags"])),
       need("path", "string", "a path on the host"), arg("xml", "xml"), SAVE_PARAMS,
       flags_param(names.flags("VIR_DOMAIN_SAVE_", exclude=("image_xml",)))),
    op("domain.core_dump", D, W, "Dump the guest's memory to a file on the host",
       "virDomainCoreDump virDomainCoreDumpWithFormat",
       lambda d, a: done(d.coreDumpWithFormat(a["path"], a["format"], a["flags"])),
       need("path", "string"), enum("format", names.flags("VIR_DOMAIN_CORE_DUMP_FORMAT_"), 0),
       flags_param(names.flags("VIR_DUMP_"))),
    op("domain.abort_job", D, W, "Abort the running job",
       "virDomainAbortJob virDomainAbortJobFlags",
       lambda d, a: done(d.abortJobFlags(a["flags"])),
       flags_param(names.flags("VIR_DOMAIN_ABORT_JOB_"))),
    op("domain.block_job_abort", D, W, "Abort (or pivot) a disk's block job",
       "virDomainBlockJobAbort", lambda d, a: done(d.blockJobAbort(a["disk"], a["flags"])),
       DISK, flags_param(names.flags("VIR_DOMAIN_BLOCK_JOB_ABORT_"))),
    op("domain.block_job_set_speed", D, W, "Limit a block job's bandwidth",
       "virDomainBlockJobSetSpeed",
       lambda d, a: done(d.blockJobSetSpeed(a["disk"], a["bandwidth"], a["flags"])),
       DISK, BANDWIDTH, flags_param(names.flags("VIR_DOMAIN_BLOCK_JOB_SPEED_"))),
    op("domain.block_pull", D, W, "Pull the backing chain into a disk", "virDomainBlockPull",
       lambda d, a: done(d.blockPull(a["disk"], a["bandwidth"], a["flags"])),
       DISK, BANDWIDTH, flags_param(names.flags("VIR_DOMAIN_BLOCK_PULL_"))),
    op("domain.block_rebase", D, W, "Rebase (or copy) a disk", "virDomainBlockRebase",
       lambda d, a: done(d.blockRebase(a["disk"], a["base"], a["bandwidth"], a["flags"])),
       DISK, arg("base", "string"), BANDWIDTH,
       flags_param(names.flags("VIR_DOMAIN_BLOCK_REBASE_"))),
    op("domain.block_commit", D, W, "Commit a disk's top image into its base",
       "virDomainBlockCommit",
       lambda d, a: done(d.blockCommit(a["disk"], a["base"], a["top"], a["bandwidth"],
                                       a["flags"])),
       DISK, arg("base", "string"), arg("top", "string"), BANDWIDTH,
       flags_param(names.flags("VIR_DOMAIN_BLOCK_COMMIT_"))),
    op("domain.block_copy", D, W, "Copy a disk to a destination given as disk XML",
       "virDomainBlockCopy",
       lambda d, a: done(d.blockCopy(a["disk"], a["xml"], a["params"] or None, a["flags"])),
       DISK, XML, arg("params", "typed", {}),
       flags_param(names.flags("VIR_DOMAIN_BLOCK_COPY_"))),
    op("domain.block_resize", D, W, "Grow a disk (KiB, or bytes with the bytes flag)",
       "virDomainBlockResize",
       lambda d, a: done(d.blockResize(a["disk"], a["size"], a["flags"])),
       DISK, need("size", "unsigned"), flags_param(names.flags("VIR_DOMAIN_BLOCK_RESIZE_"))),
    op("domain.set_block_threshold", D, W, "Raise an event when a disk's write offset passes",
       "virDomainSetBlockThreshold",
       lambda d, a: done(d.setBlockThreshold(a["disk"], a["threshold"], 0)),
       DISK, need("threshold", "unsigned")),
    op("domain.fs_freeze", D, W, "Freeze guest file systems (guest agent)",
       "virDomainFSFreeze",
       lambda d, a: {"frozen": d.fsFreeze(a["mountpoints"] or None, 0)},
       arg("mountpoints", "strings", [])),
    op("domain.fs_thaw", D, W, "Thaw guest file systems (guest agent)", "virDomainFSThaw",
       lambda d, a: {"thawed": d.fsThaw(a["mountpoints"] or None, 0)},
       arg("mountpoints", "strings", [])),
    op("domain.fs_trim", D, W, "Discard unused blocks in the guest (guest agent)",
       "virDomainFSTrim",
       lambda d, a: done(d.fSTrim(a["mountpoint"], a["minimum"], 0)),
       arg("mountpoint", "string"), arg("minimum", "unsigned", 0)),
    op("domain.inject_nmi", D, W, "Inject a non-maskable interrupt", "virDomainInjectNMI",
       lambda d, a: done(d.injectNMI(0))),
    op("domain.send_key", D, W, "Send key codes to the guest", "virDomainSendKey",
       lambda d, a: done(d.sendKey(a["codeset"], a["hold_ms"], a["keycodes"],
                                   len(a["keycodes"]), 0)),
       need("keycodes", "integers"),
       enum("codeset", names.flags("VIR_KEYCODE_SET_"), 0),
       arg("hold_ms", "unsigned", 0)),
    op("domain.send_process_signal", D, W, "Send a signal to a process in a container guest",
       "virDomainSendProcessSignal",
       lambda d, a: done(d.sendProcessSignal(a["pid"], a["signal"], 0)),
       need("pid", "unsigned"), enum("signal", names.flags("VIR_DOMAIN_PROCESS_SIGNAL_"))),
    op("domain.pm_suspend", D, W, "Suspend the guest to memory or disk (guest agent)",
       "virDomainPMSuspendForDuration",
       lambda d, a: done(d.pMSuspendForDuration(a["target"], a["duration"], 0)),
       enum("target", names.flags("VIR_NODE_SUSPEND_TARGET_")), arg("duration", "unsigned", 0)),
    op("domain.pm_wakeup", D, W, "Wake a guest suspended to memory", "virDomainPMWakeup",
       lambda d, a: done(d.pMWakeup(0))),
    op("domain.set_time", D, W, "Set (or sync) the guest's clock (guest agent)",
       "virDomainSetTime",
       lambda d, a: done(d.setTime({"seconds": a["seconds"], "nseconds": a["nseconds"]}
                                   if a["seconds"] is not None else None, a["flags"])),
       arg("seconds", "integer"), arg("nseconds", "unsigned", 0),
       flags_param(names.flags("VIR_DOMAIN_TIME_"))),
    op("domain.set_user_password", D, W, "Set a guest user's password (guest agent)",
       "virDomainSetUserPassword",
       lambda d, a: done(d.setUserPassword(a["user"], a["password"], a["flags"])),
       need("user", "string"), need("password", "string"),
       flags_param(names.flags("VIR_DOMAIN_PASSWORD_"))),
    op("domain.set_authorized_ssh_keys", D, W, "Set a guest user's authorized SSH keys",
       "virDomainAuthorizedSSHKeysSet",
       lambda d, a: done(d.authorizedSSHKeysSet(a["user"], a["keys"], a["flags"])),
       need("user", "string"), need("keys", "strings"),
       flags_param(names.flags("VIR_DOMAIN_AUTHORIZED_SSH_KEYS_"))),
    op("domain.agent_set_response_timeout", D, W, "Guest agent response timeout (s)",
       "virDomainAgentSetResponseTimeout",
       lambda d, a: done(d.agentSetResponseTimeout(a["timeout"], 0)),
       need("timeout", "integer", "-2 block, -1 default, 0 no wait, or seconds")),
    op("domain.set_lifecycle_action", D, W, "What to do on poweroff, reboot or crash",
       "virDomainSetLifecycleAction",
       lambda d, a: done(d.setLifecycleAction(a["type"], a["action"], a["flags"])),
       enum("type", names.flags("VIR_DOMAIN_LIFECYCLE_", exclude=("action_",))),
       enum("action", names.flags("VIR_DOMAIN_LIFECYCLE_ACTION_")), AFFECT),
    op("domain.set_launch_security_state", D, W, "Inject a launch secret (SEV)",
       "virDomainSetLaunchSecurityState",
       lambda d, a: done(d.setLaunchSecurityState(a["params"], 0)), TYPED),
    op("domain.graphics_reload", D, W, "Reload the graphics server's certificates",
       "virDomainGraphicsReload", lambda d, a: done(d.graphicsReload(a["type"], 0)),
       enum("type", names.flags("VIR_DOMAIN_GRAPHICS_RELOAD_TYPE_"), 0)),
    op("domain.start_dirty_rate_calc", D, W, "Start measuring the memory dirty rate",
       "virDomainStartDirtyRateCalc",
       lambda d, a: done(d.startDirtyRateCalc(a["seconds"], a["flags"])),
       need("seconds", "integer"), flags_param(names.flags("VIR_DOMAIN_DIRTYRATE_MODE_"))),
    op("domain.migrate_to_uri", D, W,
       "Migrate to another host peer-to-peer (its libvirtd connects to the destination)",
       "virDomainMigrateToURI virDomainMigrateToURI2 virDomainMigrateToURI3",
       lambda d, a: done(d.migrateToURI3(a["uri"], a["params"], a["flags"])),
       need("uri", "string", "the destination's libvirt URI, as the source libvirtd reaches "
            "it (with the peer2peer flag: QEMU's driver has no direct migration)"),
       arg("params", "typed", {}), MIGRATE_FLAGS),
    op("domain.migrate", D, W,
       "Migrate to a configured destination over a connection virtmon opens to it",
       "virDomainMigrate virDomainMigrate2 virDomainMigrate3", migrate, DESTINATION,
       arg("params", "typed", {}, "virDomainMigrate3's parameters (VIR_MIGRATE_PARAM_* "
           "names: migrate_uri, listen_address, bandwidth...)"), MIGRATE_FLAGS),
    op("domain.migrate_set_max_downtime", D, W, "Maximum tolerable downtime (ms)",
       "virDomainMigrateSetMaxDowntime",
       lambda d, a: done(d.migrateSetMaxDowntime(a["downtime_ms"], 0)),
       need("downtime_ms", "unsigned")),
    op("domain.migrate_set_max_speed", D, W, "Maximum migration bandwidth (MiB/s)",
       "virDomainMigrateSetMaxSpeed",
       lambda d, a: done(d.migrateSetMaxSpeed(a["bandwidth"], a["flags"])),
       BANDWIDTH, flags_param(names.flags("VIR_DOMAIN_MIGRATE_MAX_SPEED_"))),
    op("domain.migrate_set_compression_cache", D, W, "Migration compression cache (bytes)",
       "virDomainMigrateSetCompressionCache",
       lambda d, a: done(d.migrateSetCompressionCache(a["size"], 0)), need("size", "unsigned")),
    op("domain.migrate_start_post_copy", D, W, "Switch a running migration to post-copy",
       "virDomainMigrateStartPostCopy", lambda d, a: done(d.migrateStartPostCopy(0))),
    op("domain.backup_begin", D, W, "Start a backup job", "virDomainBackupBegin",
       lambda d, a: done(d.backupBegin(a["xml"], a["checkpoint_xml"], a["flags"])),
       XML, arg("checkpoint_xml", "xml"),
       flags_param(names.flags("VIR_DOMAIN_BACKUP_BEGIN_"))),
    op("domain.checkpoint_create", D, W, "Create a checkpoint from its XML",
       "virDomainCheckpointCreateXML",
       lambda d, a: {"name": d.checkpointCreateXML(a["xml"], a["flags"]).getName()}, XML,
       flags_param(names.flags("VIR_DOMAIN_CHECKPOINT_CREATE_"))),
    op("domain.checkpoint_delete", D, W, "Delete a checkpoint (and its children with flags)",
       "virDomainCheckpointLookupByName virDomainCheckpointDelete",
       lambda d, a: done(d.checkpointLookupByName(a["checkpoint"], 0).delete(a["flags"])),
       need("checkpoint", "string"),
       flags_param(names.flags("VIR_DOMAIN_CHECKPOINT_DELETE_"))),
    # Snapshots (libvirt-domain-snapshot): not in the four documents, but asked for.
    op("domain.snapshot_create", D, W, "Create a snapshot from its XML (may be <domainsnapshot/>)",
       "virDomainSnapshotCreateXML",
       lambda d, a: {"name": d.snapshotCreateXML(a["xml"], a["flags"]).getName()},
       arg("xml", "xml", "<domainsnapshot/>"),
       flags_param(names.flags("VIR_DOMAIN_SNAPSHOT_CREATE_"))),
    op("domain.snapshot_revert", D, W, "Revert the domain to a snapshot",
       "virDomainRevertToSnapshot",
       lambda d, a: done(d.revertToSnapshot(d.snapshotLookupByName(a["snapshot"], 0),
                                            a["flags"])),
       need("snapshot", "string"), flags_param(names.flags("VIR_DOMAIN_SNAPSHOT_REVERT_"))),
    op("domain.snapshot_delete", D, W, "Delete a snapshot", "virDomainSnapshotDelete",
       lambda d, a: done(d.snapshotLookupByName(a["snapshot"], 0).delete(a["flags"])),
       need("snapshot", "string"), flags_param(names.flags("VIR_DOMAIN_SNAPSHOT_DELETE_"))),
]
