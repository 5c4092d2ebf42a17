"""Run a command as the child of a child-subreaper that reaps every orphan at once.

libvirt waits for a destroyed QEMU process to vanish; PID 1 on the lab machines reaps orphans
lazily, which makes every destroy take 1.3-1.9 s. Under this reaper it takes about 0.25 s.
The reaper exits with the command's status once the command and every orphan it left have exited.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def detach(pidfile: str) -> None:
    """Leave the caller at once (it waits for nothing) and go on in a session of our own."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    with open(pidfile, "w") as out:
        out.write(f"{os.getpid()}\n")


def main(argv: list[str]) -> int:
    """Become a subreaper, start argv, forward SIGTERM/SIGINT to it and reap until it exits.

    ``--detach PIDFILE`` first: return to the caller at once, writing our pid to PIDFILE.
    """
    if argv[:1] == ["--detach"]:
        detach(argv[1])
        argv = argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    child = os.fork()
    if child == 0:
        os.setsid()
        os.execvp(argv[0], argv)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    while True:
        try:
            pid, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:
            return status
        except InterruptedError:
            continue
        if pid == child:
            # QEMU processes outlive libvirtd (they survive a daemon restart) and are
            # re-parented to us: keep reaping until none is left, then report the status.
            status = os.waitstatus_to_exitcode(wait_status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
