# -*- test-case-name: tests.test_makefile -*-
"""
Run a command in the terminal's foreground on its own, for C{make run}.

Ctrl-C goes to the terminal's foreground process group: with make in it,
make dies of the SIGINT too and says C{make: *** [run] Interrupt} however
cleanly the server stopped.  This runs the command in a process group of its
own and hands it the terminal, so that only the command gets the Ctrl-C;
its clean stop (SIGINT, SIGTERM, status 0) exits 0.  Without a terminal
(C{make run} from a script) a SIGINT to the process group stops the command
and this exits 0 too, without a traceback; make itself, hit by the same
signal, still reports it (C{make: *** [run] Interrupt}, status 130): GNU
make always re-raises a SIGINT it received.

Usage: python foreground.py COMMAND [ARGUMENT...]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

CLEAN = (0, -signal.SIGINT, -signal.SIGTERM)


def _terminal() -> int | None:
    try:
        fd = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        return None
    if os.tcgetpgrp(fd) != os.getpgrp():
        # Not in the foreground (make run &): leave the terminal alone.
        os.close(fd)
        return None
    return fd


def main(command: list[str]) -> int:
    """
    Run C{command}; 0 if it stopped cleanly, else its status.
    """
    tty = _terminal()
    if tty is None:
        # No terminal: a SIGINT goes to the whole process group, the command
        # included, which stops cleanly; this process only waits for it.
        child = subprocess.Popen(command)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        status = child.wait()
    else:
        # Giving the terminal away and back from a background group would
        # stop us with SIGTTOU.
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        child = subprocess.Popen(command, preexec_fn=os.setpgrp)
        os.tcsetpgrp(tty, child.pid)
        try:
            status = child.wait()
        finally:
            os.tcsetpgrp(tty, os.getpgrp())
            os.close(tty)
    return 0 if status in CLEAN else (status if status > 0 else 128 - status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
