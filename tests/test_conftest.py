"""
The suite's own set-up: what every process a test starts inherits.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from conftest import STOP_SIGNALS, processEnv

TESTS = Path(__file__).resolve().parent


def ignoredSignals(status: str) -> set[int]:
    """
    The signals a C{/proc/PID/status} text says are ignored.
    """
    for line in status.splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    raise AssertionError("no SigIgn line")


def test_childrenDoNotInheritIgnoredStopSignals() -> None:
    """
    A suite started with the stop signals ignored (as a background job is)
    still starts every process with their default dispositions, so that a
    test's SIGINT or SIGHUP reaches twistd.
    """
    script = (
        "import subprocess, sys; sys.path.insert(0, sys.argv[1]); import conftest; "
        "print(subprocess.check_output(['cat', '/proc/self/status'], text=True))"
    )

    def ignoreStopSignals() -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)

    # Without the conftest import, the child's child would ignore them all.
    bare = subprocess.run(
        [sys.executable, "-c", "print(open('/proc/self/status').read())"],
        preexec_fn=ignoreStopSignals,
        capture_output=True,
        text=True,
        check=True,
    )
    assert set(STOP_SIGNALS) <= ignoredSignals(bare.stdout)
    out = subprocess.run(
        [sys.executable, "-c", script, str(TESTS)],
        preexec_fn=ignoreStopSignals,
        env=processEnv(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert ignoredSignals(out.stdout) & set(STOP_SIGNALS) == set()
