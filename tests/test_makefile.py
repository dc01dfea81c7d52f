"""
The README's C{make run}: serves the demo page, and a Ctrl-C on the terminal
stops it with exit status 0 (no C{make: *** [run] Interrupt}).
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, freePort, killTree, need, portAnswers


def readUntil(fd: int, done: object, timeout: float) -> bytes:
    """
    Read the terminal until C{done()} is true or it closes.
    """
    out = b""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:  # type: ignore[operator]
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def serving(port: int) -> bool:
    """
    Whether the demo page answers: the reactor runs, so twistd's SIGINT
    handler is in place.
    """
    if not portAnswers(port):
        return False
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
        return r.status == 200


def test_makeRunCtrlC() -> None:
    make = need("make")
    if sys.prefix == sys.base_prefix:
        pytest.skip("make run installs into a venv: run the tests from one")
    venv = Path(sys.prefix)
    port = freePort()
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.execv(make, [make, "-C", str(ROOT), "run", f"PORT={port}", f"VENV={venv}"])
    status = None
    try:
        out = readUntil(fd, lambda: serving(port), timeout=180)
        assert serving(port), out.decode(errors="replace")
        os.write(fd, b"\x03")
        out += readUntil(fd, lambda: False, timeout=60)
        deadline = time.monotonic() + 30
        while status is None and time.monotonic() < deadline:
            done, waited = os.waitpid(pid, os.WNOHANG)
            status = waited if done else None
            time.sleep(0.05)
    finally:
        if status is None:
            # make, foreground.py and the server in its own process group.
            killTree(pid)
            os.waitpid(pid, 0)
        os.close(fd)
    text = out.decode(errors="replace")
    assert status is not None and os.waitstatus_to_exitcode(status) == 0, text
    assert "Interrupt" not in text
    assert "Server Shut Down." in text


def test_foregroundWithoutTerminal() -> None:
    """
    Without a terminal (C{make run} from a script), a SIGINT to the process
    group stops the command, and tools/foreground.py exits 0 with no
    traceback of its own.
    """
    child = (
        "import signal, time; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "print('up', flush=True); time.sleep(120)"
    )
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "foreground.py"), sys.executable]
        + ["-c", child],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"up\n"
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        killTree(process.pid)
    assert process.returncode == 0, err.decode(errors="replace")
    assert b"Traceback" not in err
