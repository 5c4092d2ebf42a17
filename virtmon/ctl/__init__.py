"""``virtmonctl``: the command-line client of virtmon's control socket.

It talks HTTP/1.1 + JSON over the Unix socket with the standard library only
(:mod:`virtmon.ctl.client`), so it starts fast and never imports libvirt, aiohttp or anyio; no
module of this package imports anything outside it but the standard library and
:mod:`virtmon` itself (for the version). tests/test_ctl.py holds it to that.

The modules, each importing only those above it:

- :mod:`~virtmon.ctl.client`: requests to the socket, :class:`~virtmon.ctl.client.Problem` and
  :class:`~virtmon.ctl.client.Unreachable`;
- :mod:`~virtmon.ctl.terminal`, :mod:`~virtmon.ctl.format`, :mod:`~virtmon.ctl.help`: colour and
  pager, values and tables for people, one operation's help;
- :mod:`~virtmon.ctl.problems`: exit codes and what a problem document means on the command line;
- :mod:`~virtmon.ctl.command`: what every command runs with (:class:`~virtmon.ctl.command.Context`,
  its output helpers, running an operation, ``KEY=VALUE`` arguments);
- the commands, each in one module with its rows of the command table: :mod:`~virtmon.ctl.daemon`
  (status, version, openapi), :mod:`~virtmon.ctl.domains` (domains, domain, the lifecycle verbs,
  define, set-memory, set-vcpus), :mod:`~virtmon.ctl.events`, :mod:`~virtmon.ctl.ops` (call,
  operations, host, interfaces, admin), :mod:`~virtmon.ctl.alerts`, :mod:`~virtmon.ctl.complete`
  (completion);
- :mod:`~virtmon.ctl.cli`: the command line built from every table, and ``main``
  (``virtmonctl``, ``python -m virtmon.ctl``).
"""
