"""
What the benchmark scripts in this folder share.

The scripts are run as ``python bench/NAME.py``, which puts this folder on
C{sys.path}, so they import this module as C{_common}.  It holds:

* the two-server set-up of compare_web.py and memory.py: bare
  ``twistd -n web`` (A) and ``twistd -n sdweb`` (B) as child processes, with
  a L{NotifyListener} standing in for systemd, started, waited for and
  stopped;
* running and parsing wrk;
* the in-process set-up of notify_cost.py and status_tick.py: txsdnotify
  from the repository when it is not installed, a L{DatagramReceiver} read
  empty between chunks of timed work, its L{queueCapacity}, and
  L{timeInterleaved}, which runs those chunks side by side, A B B A ...;
* reporting: ratios of medians, versions, Markdown tables, ``--out``.

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import importlib.util
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT = 60.0  # seconds for a server to become ready
STOP_TIMEOUT = 15.0  # seconds a server gets to exit on SIGTERM
CHUNK_CAP = 256  # never time more steps than this between two drains
LABELS = {"A": "twistd web", "B": "twistd sdweb"}


class BenchError(Exception):
    """
    Something that makes the benchmark meaningless: exit status 2.
    """


# --- Running the scripts ---------------------------------------------------------


def useRepositoryTxsdnotify() -> None:
    """
    When txsdnotify is not installed, import it from the repository this
    folder belongs to.  Call before importing txsdnotify.
    """
    try:
        import txsdnotify  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exitOnSigterm() -> None:
    """
    Turn SIGTERM into C{SystemExit}, so that the C{finally} clauses stop the
    servers and remove the temporary directory.
    """
    signal.signal(signal.SIGTERM, _terminate)


def addOutArgument(parser: argparse.ArgumentParser) -> None:
    """
    The C{--out FILE} option every script has.
    """
    parser.add_argument(
        "--out", type=Path, help="also write the summary as Markdown here"
    )


def writeOut(path: Path, text: str) -> None:
    """
    Write the Markdown summary to C{path} and say so.
    """
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")


# --- The notification socket of a server process ---------------------------------


class NotifyListener:
    """
    Binds an C{AF_UNIX} datagram socket and reads it in a background thread,
    as systemd would, counting what sdweb sends.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.ready = threading.Event()
        self.datagrams = 0
        self.statusMessages = 0
        self.stopping = 0
        self.lastStatus: str | None = None
        self.mainPid: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)

    def start(self) -> None:
        """
        Start reading.
        """
        self._thread.start()

    def reset(self) -> None:
        """
        Forget what arrived so far (after a warm-up start).
        """
        with self._lock:
            self.ready.clear()
            self.datagrams = self.statusMessages = self.stopping = 0
            self.lastStatus = None
            self.mainPid = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self._handle(data)

    def _handle(self, data: bytes) -> None:
        fields: dict[str, str] = {}
        for line in data.decode("utf-8", "replace").split("\n"):
            key, sep, value = line.partition("=")
            if sep:
                fields[key] = value
        with self._lock:
            self.datagrams += 1
            if "STATUS" in fields:
                self.statusMessages += 1
                self.lastStatus = fields["STATUS"]
            if fields.get("STOPPING") == "1":
                self.stopping += 1
            if fields.get("READY") == "1":
                if fields.get("MAINPID", "").isdigit():
                    self.mainPid = int(fields["MAINPID"])
                self.ready.set()

    def statusCount(self) -> int:
        """
        How many messages carrying C{STATUS=} have arrived so far.
        """
        with self._lock:
            return self.statusMessages

    def close(self) -> None:
        """
        Stop reading and close the socket.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.sock.close()


# --- The server processes ---------------------------------------------------------


@dataclass
class Server:
    """
    One twistd process under test.

    @ivar key: C{"A"} (bare web) or C{"B"} (sdweb).
    @ivar path: The path of the URL it is measured on.
    """

    key: str
    argv: list[str]
    port: int
    log: Path
    env: dict[str, str]
    path: str = "/"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def label(self) -> str:
        return LABELS[self.key]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, cwd: Path) -> None:
        """
        Start the process with its output going to its log file.
        """
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def checkAlive(self) -> None:
        """
        Raise L{BenchError} with the end of the log if the process has exited.
        """
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise BenchError(
                f"{self.key} ({self.label}) exited with status {code}.\n"
                f"  command: {' '.join(self.argv)}\n"
                f"  last lines of its output ({self.log}):\n{tail(self.log)}"
            )

    def stop(self) -> int | None:
        """
        SIGTERM, then SIGKILL if it does not exit in time; the exit status.
        """
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        return proc.returncode

    def failure(self, what: str) -> BenchError:
        """
        A L{BenchError} saying C{what} went wrong, with the command and the
        end of the log.
        """
        return BenchError(
            f"{self.key} ({self.label}) {what}.\n"
            f"  command: {' '.join(self.argv)}\n"
            f"  last lines of its output ({self.log}):\n{tail(self.log)}"
        )


def tail(path: Path, lines: int = 20) -> str:
    """
    The last lines of a log file, indented.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"    (cannot read: {e})"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def freePorts(n: int) -> list[int]:
    """
    Distinct TCP ports on 127.0.0.1 that nothing listens on right now.
    """
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def twistdCommand() -> list[str]:
    """
    twistd run by this very interpreter, so that the process measured is
    Python itself (no shell or pyenv shim in between).
    """
    script = Path(sys.executable).parent / "twistd"
    if script.is_file():
        return [sys.executable, str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd';"
        " run()",
    ]


def serverEnvironment(pycache: Path | None = None) -> tuple[dict[str, str], str]:
    """
    The environment for both servers, and a note on where txsdnotify is
    imported from.

    @param pycache: Where the servers write bytecode (C{PYTHONPYCACHEPREFIX});
        when L{None} they write none (C{PYTHONDONTWRITEBYTECODE}).  Either
        way nothing is written into the source tree.
    """
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if importlib.util.find_spec("txsdnotify") is not None:
        return env, "installed"
    parts = [str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env, f"PYTHONPATH={REPO_ROOT}"


S = TypeVar("S", bound=Server)


def makeServers(
    cls: type[S],
    base: Path,
    env: dict[str, str],
    notify: Path,
    extra: Sequence[str] = (),
    path: str = "/",
) -> list[S]:
    """
    A (C{twistd -n web}) and B (C{twistd -n sdweb}, with C{NOTIFY_SOCKET}
    set to C{notify}), not started yet, each on a free port on L{HOST}, with
    the same C{extra} arguments and logging to C{base}.
    """
    twistd = twistdCommand()
    plugins = [
        ("A", "web", "--listen", env),
        ("B", "sdweb", "--port", dict(env, NOTIFY_SOCKET=str(notify))),
    ]
    return [
        cls(
            key,
            twistd
            + ["-n", "--pidfile=", plugin, option, f"tcp:{port}:interface={HOST}"]
            + list(extra),
            port,
            base / f"{plugin}.log",
            serverEnv,
            path,
        )
        for (key, plugin, option, serverEnv), port in zip(plugins, freePorts(2))
    ]


def waitAnswers(
    server: Server, probe: Callable[[Server], str | None], deadline: float
) -> None:
    """
    Poll until the server's port answers.

    @param probe: Makes one request: L{None} when the answer is right, else
        what was wrong with it; raises L{OSError} when there is none.
    """
    last: object = None
    while time.monotonic() < deadline:
        server.checkAlive()
        try:
            last = probe(server)
        except OSError as e:
            last = e
        else:
            if last is None:
                return
        time.sleep(0.1)
    raise server.failure(
        f"did not answer on {server.url} within {START_TIMEOUT:.0f}s (last: {last})"
    )


def waitReady(server: Server, listener: NotifyListener, deadline: float) -> None:
    """
    Wait for C{READY=1} on the notification socket.
    """
    while not listener.ready.wait(0.1):
        server.checkAlive()
        if time.monotonic() >= deadline:
            raise server.failure(
                f"sent no READY=1 within {START_TIMEOUT:.0f}s"
                f" ({listener.datagrams} datagram(s) received)"
            )


def startAndWait(
    servers: Sequence[Server],
    listener: NotifyListener,
    cwd: Path,
    probe: Callable[[Server], str | None],
) -> tuple[float, float]:
    """
    Start A and B and wait until A answers, and B has sent C{READY=1} and
    then answers.  The seconds from the start until A answered and until B
    sent C{READY=1}.
    """
    a, b = servers
    for s in servers:
        s.start(cwd)
    started = time.monotonic()
    deadline = started + START_TIMEOUT
    waitAnswers(a, probe, deadline)
    answeredA = time.monotonic() - started
    waitReady(b, listener, deadline)
    readyB = time.monotonic() - started
    waitAnswers(b, probe, deadline)
    return answeredA, readyB


def stopServers(
    servers: Sequence[Server], listener: NotifyListener | None
) -> dict[str, int | None]:
    """
    Stop the servers, give their last datagrams (C{STOPPING=1}, the final
    C{STATUS=}) a moment, and close the listener; the exit statuses.
    """
    codes = {s.key: s.stop() for s in servers}
    time.sleep(0.3)
    if listener is not None:
        listener.close()
    return codes


def describeExit(code: int | None) -> str:
    """
    An exit status for people.  twistd stops cleanly on SIGTERM and then
    re-raises the signal, so "exited by SIGTERM" is the normal outcome.
    """
    if code is None:
        return "not started"
    if code < 0:
        return f"exited by {signal.Signals(-code).name}"
    return f"exit status {code}"


def describeExits(codes: Mapping[str, int | None]) -> str:
    """
    The line saying how the servers exited.
    """
    return "servers stopped on SIGTERM: " + ", ".join(
        f"{k} {describeExit(c)}" for k, c in codes.items()
    )


# --- wrk ---------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def toMs(text: str) -> float:
    """
    A wrk duration (C{812.00us}, C{1.23ms}, C{2.00s}) in milliseconds.
    """
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class WrkResult:
    """
    What one wrk run reported.
    """

    rps: float
    requests: int
    seconds: float
    non2xx: int
    socketErrors: dict[str, int]
    p50ms: float
    p99ms: float
    output: str

    @property
    def failed(self) -> int:
        return self.non2xx + sum(self.socketErrors.values())


def runWrk(
    url: str,
    connections: int,
    duration: int,
    latency: bool = True,
    headers: Sequence[str] = (),
    timeout: int | None = None,
) -> WrkResult:
    """
    Run C{wrk -t1} once against C{url} and parse its report.

    @param latency: Pass C{--latency} (the percentiles are only parsed then).
    @param headers: Request headers (C{"Connection: close"}), one C{-H} each.
    @param timeout: Seconds after which wrk counts a request as timed out
        (and leaves it out of the latency figures); wrk's default is 2.
    """
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        *(["--latency"] if latency else []),
        *([f"--timeout={timeout}s"] if timeout is not None else []),
        *(a for h in headers for a in ("-H", h)),
        url,
    ]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration + 30 + (timeout or 0),
        )
    except subprocess.TimeoutExpired:
        raise BenchError(
            f"wrk did not finish within {duration + 30 + (timeout or 0)}s:"
            f" {' '.join(argv)}"
        ) from None
    out = done.stdout
    if done.returncode != 0:
        raise BenchError(
            f"wrk failed with status {done.returncode}: {' '.join(argv)}\n"
            f"{out}\n{done.stderr}"
        )
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h),", out)
    if not rps or not total:
        raise BenchError(f"cannot parse wrk's output:\n{out}\n{done.stderr}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    socketErrors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups())))
        if errors
        else {}
    )
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    return WrkResult(
        rps=float(rps.group(1)),
        requests=int(total.group(1)),
        seconds=toMs(total.group(2) + total.group(3)) / 1e3,
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socketErrors=socketErrors,
        p50ms=toMs(p50.group(1)) if p50 else float("nan"),
        p99ms=toMs(p99.group(1)) if p99 else float("nan"),
        output=out,
    )


# --- In-process timing against a datagram receiver --------------------------------


class DatagramReceiver:
    """
    A bound, non-blocking C{AF_UNIX} datagram socket standing in for the
    service manager, read empty on demand.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    def drain(self) -> list[bytes]:
        """
        Every datagram waiting now.
        """
        got = []
        recv = self.sock.recv
        while True:
            try:
                got.append(recv(65536))
            except BlockingIOError:
                return got

    def close(self) -> None:
        self.sock.close()


def queueCapacity(base: Path, message: bytes) -> int:
    """
    How many datagrams of this size one sender can queue at a receiver that
    does not read, before a send would block.
    """
    receiver = DatagramReceiver(base / "probe.sock")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.connect(str(receiver.path))
            sent = 0
            while sent < 100_000:
                try:
                    s.send(message)
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno == errno.EAGAIN:
                        break
                    raise
                sent += 1
        return sent
    finally:
        receiver.close()


def chunkSize(capacity: int) -> int:
    """
    How many steps to time between two drains of a receiver that takes
    C{capacity} datagrams: fewer than that, so no send ever blocks or queues.
    """
    return max(1, min(capacity - 1, CHUNK_CAP))


class Keyed(Protocol):
    """
    Anything timed side by side: it has a key (C{"A"}, C{"B"}, ...).
    """

    key: str


K = TypeVar("K", bound=Keyed)


def timeInterleaved(
    order: Sequence[K], steps: int, chunk: int, timeChunk: Callable[[K, int], int]
) -> dict[str, float]:
    """
    Time C{steps} steps of every subject, interleaved chunk by chunk with the
    order reversed after each chunk (A B ... B A ...), so that the subjects
    are measured side by side; microseconds per step by key.

    @param timeChunk: Times C{n} steps of one subject; nanoseconds.
    """
    totals = {s.key: 0 for s in order}
    left = steps
    flip = False
    while left:
        n = min(chunk, left)
        for s in reversed(order) if flip else order:
            totals[s.key] += timeChunk(s, n)
        flip = not flip
        left -= n
    return {key: total / steps / 1000 for key, total in totals.items()}


# --- Reporting ----------------------------------------------------------------------


def medianRatios(
    values: Sequence[float], reference: Sequence[float]
) -> tuple[float, float]:
    """
    How C{values} compare to C{reference}, round by round: the ratio of the
    medians, and the median of the per-round ratios (steadier when the
    machine's speed changes between rounds).
    """
    perRound = [x / r for x, r in zip(values, reference)]
    return (
        statistics.median(values) / statistics.median(reference),
        statistics.median(perRound),
    )


def packageVersion(name: str, missing: str = "?") -> str:
    """
    The installed version of a distribution, or C{missing}.
    """
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return missing


def versionLine(*extra: str) -> str:
    """
    C{Python X, Twisted Y, EXTRA..., kernel K, N cores}.
    """
    return ", ".join(
        [
            f"Python {platform.python_version()}",
            f"Twisted {packageVersion('twisted')}",
            *extra,
            f"kernel {platform.release()}",
            f"{os.cpu_count()} cores",
        ]
    )


def markdownTable(
    header: Sequence[str], align: str, rows: Iterable[Sequence[object]]
) -> str:
    """
    A Markdown table, each line ending in a newline.

    @param align: One letter per column: C{l} (left) or C{r} (right).
    """
    marks = {"l": "---", "r": "---:"}
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(marks[a] for a in align) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "".join(line + "\n" for line in lines)
