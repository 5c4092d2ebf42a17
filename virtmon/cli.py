"""``virtmon``: run the daemon, check a configuration, print the version."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import structlog

from virtmon import __version__, config, configfile, logsetup

EX_OK = 0
EX_SOFTWARE = 70  # an internal error (sysexits.h)
EX_UNAVAILABLE = 69


def parser() -> argparse.ArgumentParser:
    """The command line."""
    from virtmon.collectors import COLLECTORS

    top = argparse.ArgumentParser(prog="virtmon", description="libvirt monitoring daemon")
    top.add_argument("--version", action="version", version=f"virtmon {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", type=Path, help="TOML configuration file")
    run.add_argument("--uri", help="libvirt URI (libvirt.uri), e.g. qemu:///system")
    run.add_argument("--listen", help="metrics HOST:PORT (metrics.listen)")
    run.add_argument("--control-socket", help="control socket path (control.socket)")
    run.add_argument("--state-dir", help="journal and outbox directory (state.dir)")
    run.add_argument("--collect-interval", type=float, help="seconds between collection cycles")
    run.add_argument("--collect.block-backing-chain", dest="block_backing_chain", default=None,
                     action=argparse.BooleanOptionalAction,
                     help="block stats for every backing-chain layer (collect.block_backing_chain)")
    run.add_argument("--collector.guest-agent", dest="guest_agent", default=None,
                     action=argparse.BooleanOptionalAction,
                     help="poll the guests' agents (collect.guest_agent)")
    run.add_argument("--control.allow-write", dest="allow_write", default=None,
                     action=argparse.BooleanOptionalAction,
                     help="allow operations that change state (control.allow_write)")
    run.add_argument("--web.config.file", dest="web_config_file",
                     help="TLS and basic auth for /metrics (metrics.web_config_file)")
    run.add_argument("--log-format", choices=("json", "console", "auto"))
    run.add_argument("--log-level", choices=config.LOG_LEVELS)
    run.add_argument("--demo", action="store_true",
                     help="change domains now and then (for the test driver: make run); the "
                          "control socket is then its owner's alone (no control.socket_group)")
    for name in COLLECTORS:
        run.add_argument(f"--collector.{name}", dest=f"collector_{name}", default=None,
                         action=argparse.BooleanOptionalAction, help=f"the {name} collector")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", type=Path)
    sub.add_parser("version", help="print the version")
    return top


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags that override configuration keys (None: not given)."""
    return {
        "libvirt.uri": args.uri,
        "metrics.listen": args.listen,
        "metrics.web_config_file": args.web_config_file,
        "control.socket": args.control_socket,
        "control.allow_write": args.allow_write,
        # A demo is no installation: no virtmon group to give the socket to, nothing to warn of.
        "control.socket_group": "" if args.demo else None,
        "state.dir": args.state_dir,
        "collect.interval": args.collect_interval,
        "collect.block_backing_chain": args.block_backing_chain,
        "collect.guest_agent": args.guest_agent,
        "log.format": args.log_format,
        "log.level": args.log_level,
    }


def load_config(args: argparse.Namespace) -> config.Config:
    """The configuration from the file and the flags, with ``--collector.X`` merged in."""
    loaded = configfile.load(args.config, overrides(args))
    flags = {
        key.removeprefix("collector_"): value
        for key, value in vars(args).items()
        if key.startswith("collector_") and value is not None
    }
    if not flags:
        return loaded
    collectors = {**loaded.collect.collectors, **flags}
    return replace(loaded, collect=replace(loaded.collect, collectors=collectors))


async def serve(
    cfg: config.Config, demo: bool, reload: Callable[[], config.Config] | None = None
) -> None:
    """Run the daemon; SIGTERM/SIGINT stop it gracefully, a second SIGINT forces exit.

    SIGHUP reloads the configuration with ``reload`` (virtmon.reload says what changes).
    """
    from virtmon.app import Daemon
    from virtmon.reload import reload_daemon

    log = structlog.get_logger("virtmon.cli")
    daemon = Daemon(cfg, demo=demo)
    async with anyio.create_task_group() as group:

        async def signals() -> None:
            with anyio.open_signal_receiver(
                signal.SIGTERM, signal.SIGINT, signal.SIGHUP
            ) as received:
                async for signum in received:
                    if signum == signal.SIGHUP:
                        if reload is not None and not daemon.stopping:
                            await reload_daemon(daemon, reload)
                        continue
                    if daemon.stopping and signum == signal.SIGINT:
                        log.warning("virtmon.forced_exit")
                        os._exit(130)
                    log.info("virtmon.signal", signal=signal.Signals(signum).name)
                    daemon.stop()

        async def announce() -> None:
            await daemon.started.wait()
            print(f"virtmon {__version__}: metrics at {daemon.metrics_address}/metrics, "
                  f"control socket at {daemon.control_socket}", file=sys.stderr, flush=True)
            if demo or sys.stderr.isatty():  # someone watching: what to type next
                print(first_steps(daemon.control_socket, demo, daemon.executor.allow_write),
                      file=sys.stderr, flush=True)

        group.start_soon(signals)
        group.start_soon(announce)
        # Not group.start(): a signal during start-up stops the daemon before it has started.
        group.start_soon(daemon.run)
        await daemon.finished.wait()
        group.cancel_scope.cancel()  # stop listening for signals


def first_steps(control_socket: Path, demo: bool, allow_write: bool) -> str:
    """The lines printed under the start-up logs: how to reach this daemon from another shell."""
    ctl = "virtmonctl"
    beside = Path(sys.argv[0]).absolute().parent / "virtmonctl"  # this installation's
    on_path = shutil.which("virtmonctl")
    if beside.exists() and (on_path is None or Path(on_path).resolve() != beside.resolve()):
        ctl = os.path.relpath(beside) if beside.is_relative_to(Path.cwd()) else str(beside)
    lines = ["In another shell:",
             f"  export VIRTMON_SOCKET={control_socket.absolute()}",
             f"  {ctl} events -n 5 --follow"]
    if demo and allow_write:
        lines.append(f"Writes are on, e.g.: {ctl} suspend test")
    elif demo:
        lines.append("Writes are off: make run ALLOW_WRITE=1 turns them on.")
    lines.append("Ctrl-C stops virtmon.")
    return "\n".join(lines)


def leaves(errors: list[BaseException]) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    found: list[BaseException] = []
    for error in errors:
        if isinstance(error, BaseExceptionGroup):
            found.extend(leaves(list(error.exceptions)))
        else:
            found.append(error)
    return found


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``virtmon`` command."""
    args = parser().parse_args(argv)
    if args.command == "version":
        print(__version__)
        return EX_OK
    if args.command == "check-config":
        try:
            configfile.load(args.file)
        except config.ConfigError as exc:
            for problem in exc.problems:
                print(f"{args.file}: {problem}", file=sys.stderr)
            return config.EX_CONFIG
        print(f"{args.file}: ok")
        return EX_OK
    try:
        cfg = load_config(args)
    except config.ConfigError as exc:
        for problem in exc.problems:
            print(f"virtmon: config: {problem}", file=sys.stderr)
        return config.EX_CONFIG
    # Off a terminal (journald), the C libraries' own lines become log records too.
    stream = logsetup.route_native_stderr() if not sys.stderr.isatty() else sys.stderr
    logsetup.configure(cfg.log.level, cfg.log.format, stream)
    from virtmon.app import ControlSocketInUse

    failures: list[BaseException] = []
    code = EX_SOFTWARE  # unless the run ends as below: an unexpected error's traceback follows
    try:
        try:
            anyio.run(serve, cfg, args.demo, lambda: load_config(args), backend="asyncio")
        except* (ControlSocketInUse, OSError) as group:
            # Listeners that cannot be opened (address in use, another instance): one line.
            failures.extend(group.exceptions)
        for failure in leaves(failures):
            print(f"virtmon: cannot start: {failure}", file=sys.stderr)
        code = EX_UNAVAILABLE if failures else EX_OK
    finally:
        exit_past_blocked_calls(code, sys.exc_info()[1])  # also after an unexpected error
    return code


def exit_past_blocked_calls(code: int, error: BaseException | None = None,
                            grace: float = 1.0) -> None:
    """Exit now with ``code`` if worker threads are still blocked in libvirt calls.

    libvirt cannot cancel a call, and the interpreter would wait at exit for every thread blocked
    in one (a hung libvirtd: for ever). By now the daemon has closed its journal and state
    database, so such a thread holds nothing worth waiting for. ``error``, an exception on its
    way out, is printed first, since exiting here cuts its way short.
    """
    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    blocked = [thread.name for thread in threading.enumerate()
               if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()]
    if blocked:
        if error is not None:
            traceback.print_exception(error)
        structlog.get_logger("virtmon.cli").warning("virtmon.exit_past_blocked_calls",
                                                    threads=len(blocked))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
