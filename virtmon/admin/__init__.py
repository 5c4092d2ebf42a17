"""libvirt's admin API (the daemon's own thread pools, client limits, clients, logging).

libvirt-python has no admin binding, and libvirt-admin.so cannot share a process with it (both
register the same GLib types; a process that loads both crashes: docs/adr/0002). So the admin
API runs in a child process that never imports libvirt, and the daemon talks to it in JSON lines:

- :mod:`~virtmon.admin.protocol`: the JSON lines both sides speak, the default URI and the
  error numbers of the helper's own failures;
- :mod:`~virtmon.admin.binding`: libvirt-admin.so and libvirt.so through ctypes;
- :mod:`~virtmon.admin.helper`: the child process (``python -m virtmon.admin.helper``);
- :mod:`~virtmon.admin.client`: the daemon's side, which supervises the child (anyio);
- :mod:`~virtmon.admin.stats`: the helper's ``snapshot`` reply as typed statistics, what the
  admin collector reads.

Protocol, binding and helper import only the standard library and each other (tested in
tests/admin/test_helper_protocol.py): the helper runs them in a process that must never load
libvirt-python, and they start fast. This module imports nothing.
"""
