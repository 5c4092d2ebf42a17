"""The libvirt package: event loop adapter, connection supervisor, calls, stats.

libvirt's camelCase stops here; everything outside sees plain Python values. Outside this
package, only these modules import libvirt (docs/adr/0002 says why; a test holds the list):

- ``virtmon/collectors/__init__.py``, ``virtmon/events/catalog.py``, ``virtmon/events/decode.py``:
  constants only (stats groups, event ids and their enums);
- ``virtmon/control/executor.py``: constants only (libvirt error codes as HTTP statuses);
- ``virtmon/control/operations/``: the operations are thin libvirt calls, run by the executor;
- ``virtmon/control/console.py``: consoles and channels, a libvirt stream bridged to a
  WebSocket on a connection of its own (docs/adr/0005);
- ``virtmon/demo.py``: drives the in-process test driver for ``make run``.

The admin helper must never import it (loading libvirt-admin next to libvirt crashes).
"""
