"""
Shared fixtures: real notification receivers, free ports and real twistd
processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The private systemd managers' fixtures, for every module: one manager of
# each systemd for the whole session.
from systemd_harness import (  # noqa: F401
    manager,
    units,
    user_manager,
    user_manager_254,
)

import txsdnotify
from txsdnotify.testing import NotifyReceiver
from txsdnotify.web.tracking import TrackingFactory
from txsdnotify.wsgi.http11 import HTTP11Factory

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def resetSignalDispositions() -> None:
    """
    Undo the signal dispositions the suite inherited, for itself and every
    process a test starts.

    A suite started in the background (C{make test &}, C{nohup}) has SIGINT
    (and maybe SIGHUP) ignored, and an ignored signal stays ignored across
    C{exec}: every twistd, make or worker a test starts would then ignore the
    very signals the tests send it.  A handled signal is reset to the default
    at C{exec}, so handling them here (SIGINT as Python does by default, the
    others by their default action) gives every child the defaults.
    """
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) == signal.SIG_IGN:
            signal.signal(
                signum,
                signal.default_int_handler
                if signum == signal.SIGINT
                else signal.SIG_DFL,
            )


resetSignalDispositions()


def descendants(pid: int) -> list[int]:
    """
    The pids of every process below C{pid}, children first.
    """
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def killTree(pid: int) -> None:
    """
    Kill C{pid} and every process below it (servers a failing test started
    must not stay behind, listening).
    """
    for each in [pid, *descendants(pid)]:
        try:
            os.kill(each, signal.SIGKILL)
        except ProcessLookupError:
            pass


ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
IN_CI = os.environ.get("CI") == "true"


def need(tool: str) -> str:
    """
    The path of a command the test needs: under CI its absence fails the
    test (CI installs it), elsewhere it skips.
    """
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (make test installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def twistdCommand() -> list[str]:
    """
    The twistd of the Python running the tests.
    """
    candidate = Path(sys.executable).parent / "twistd"
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("twistd")
    assert found, "twistd not found"
    return [found]


def processEnv(**extra: str) -> dict[str, str]:
    """
    An environment for a child twistd: the package importable (installed,
    or from this checkout), the test apps importable, no NOTIFY_SOCKET unless
    given.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NOTIFY_SOCKET", "LISTEN_", "WATCHDOG_"))
    }
    paths = [str(APPS)]
    # Tests of an installed copy (make test runs from tests/) leave it alone;
    # tests of this checkout have the child import it too.
    if Path(txsdnotify.__file__).resolve().is_relative_to(ROOT):
        paths.append(str(ROOT))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def portAnswers(port: int) -> bool:
    """
    Whether a TCP connection to 127.0.0.1:port is accepted.
    """
    with socket.socket() as s:
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def receiver() -> Iterator[NotifyReceiver]:
    """
    A real notification socket playing systemd.
    """
    r = NotifyReceiver()
    yield r
    r.close()


class Twistd:
    """
    A real C{twistd -n sdweb} process.
    """

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.args = args
        self.log = cwd / "twistd.out"
        self._out = open(self.log, "wb")
        self.process = subprocess.Popen(
            twistdCommand() + ["-n", "--pidfile=", "sdweb", *args],
            env=env,
            cwd=cwd,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        """
        Everything the process printed so far.
        """
        self._out.flush()
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 30) -> int:
        """
        Wait for the process to exit; its status.
        """
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"twistd did not exit in {timeout}s:\n{self.output()}"
            ) from None

    def stop(self) -> None:
        """
        Make sure it is gone.
        """
        if self.process.poll() is None:
            killTree(self.process.pid)
            self.process.wait()
        self._out.close()


@pytest.fixture
def twistd(tmp_path: Path) -> Iterator[object]:
    """
    Start real C{twistd -n sdweb} processes: C{twistd(args, env)}; all are
    killed at the end of the test.
    """
    started: list[Twistd] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> Twistd:
        t = Twistd(args, env if env is not None else processEnv(), tmp_path)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def waitUntil(predicate, timeout: float = 10.0, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    """
    Poll C{predicate} until it is true.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


HTTP_PARSERS = ("twisted", "fast")
"""
The two HTTP/1.1 paths a WSGI site is served by (C{--http-parser}): every
test of a WSGI behaviour runs on both.
"""


@pytest.fixture(params=HTTP_PARSERS)
def httpParser(request: pytest.FixtureRequest) -> str:
    """
    C{twisted} or C{fast}: the HTTP/1.1 path under test.
    """
    return str(request.param)


def listeningFactory(site: Any, parser: str) -> Any:
    """
    What a port serving C{site} (whose root is a C{WSGIApplication}) listens
    with on the HTTP path C{parser}, as C{WebService} sets it up.
    """
    if parser == "twisted":
        return site
    tracker = TrackingFactory(site)
    tracker.connectionFactory = HTTP11Factory(site.resource, tracker, site)
    return tracker
