"""
The hardened unit C{python -m txsdnotify unit} writes by default, installed
in the private systemd managers (252 and 254) and run for real: as a
C{DynamicUser=} from a virtualenv outside /root and /tmp, it starts (READY),
serves, reloads, stops with a drain, is killed by the watchdog, is socket
activated, keeps its fd store, serves HTTPS with ALPN from a root-only key
handed over as a credential, and runs C{--workers 2}.

Some sandboxing cannot work inside this CI's container (a private manager in
a container: C{ProtectHome=yes} fails with 226/NAMESPACE, and with
C{ProtectProc=} the manager never accepts READY=1).  Each sandbox line is
tried alone once per manager (L{sandbox}); those that fail there are left out
of the units below, said so in the test output (a warning), and every other
line is tested for real.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IN_CI, freePort, need, portAnswers
from systemd_harness import (
    UserManager,
    every_manager,
    exec_line,
)
from test_tls import makeCertificate
from test_unitfile import exposure, settings

from txsdnotify.cli.unitfile import UnitSpec, serviceUnit

pytestmark = pytest.mark.timeout(900)

CHECKOUT = Path(__file__).resolve().parent.parent
APPS = CHECKOUT / "tests" / "apps"
VENV_ROOT = Path("/opt")
VENV_PREFIX = "txsd-test-venv-"
START_TIMEOUT = 60
# What the checkout's package is built from: a venv is reused while these
# are unchanged.
SOURCES = ("txsdnotify", "twisted", "setup.cfg", "setup.py", "pyproject.toml")
# The venv holds the test applications too.
KEYED = (*SOURCES, "tests/apps")
EXTRA_PACKAGES = ("flask",)
# Changed whenever buildVenv changes what it builds.
RECIPE = "plugin cache"
# Written last into a venv that is complete.
COMPLETE = "txsd-complete"

NOTIFY_CODE = textwrap.dedent(
    """
    import os, socket, time
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", address)
    time.sleep(300)
    """
)


# -- the service's virtualenv -------------------------------------------------


def sourceKey() -> str:
    """
    A digest of the package's sources and of what else the venv holds.
    """
    digest = hashlib.sha256(f"{RECIPE} {' '.join(EXTRA_PACKAGES)}".encode())
    for name in KEYED:
        top = CHECKOUT / name
        files = sorted(top.rglob("*")) if top.is_dir() else [top]
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(CHECKOUT)).encode() + b"\0")
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def buildVenv(target: Path) -> None:
    """
    A virtualenv of the system's /usr/bin/python3 at C{target}, with this
    checkout installed (not editable: from a copy, so no old build/ leaks
    in), its TLS and HTTP/2 extras, Flask, and the test applications in
    C{target/apps}; readable by every user.
    """
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        pytest.fail(f"{python} is needed for a venv other users may run")
    # Built in place: scripts name their Python by its absolute path.
    building = target
    shutil.rmtree(building, ignore_errors=True)
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "src"
        source.mkdir()
        for name in (*SOURCES, "README.md"):
            path = CHECKOUT / name
            if path.is_dir():
                shutil.copytree(
                    path, source / name, ignore=shutil.ignore_patterns("__pycache__")
                )
            elif path.exists():
                shutil.copy(path, source / name)
        made = subprocess.run(
            [python, "-m", "venv", str(building)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if made.returncode != 0:
            pytest.fail(
                f"{python} -m venv failed (Debian: apt-get install python3-venv):"
                f" {made.stdout}{made.stderr}"
            )
        subprocess.run(
            [
                str(building / "bin" / "pip"),
                "install",
                "-q",
                f"{source}[tls,http2]",
                *EXTRA_PACKAGES,
            ],
            check=True,
            timeout=900,
            capture_output=True,
        )
    # Twisted's plugin cache, which the service (read-only /opt) cannot
    # write: made once, as the quick start's "twistd --help" does.
    subprocess.run(
        [str(building / "bin" / "twistd"), "--help"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    shutil.copytree(
        APPS, building / "apps", ignore=shutil.ignore_patterns("__pycache__")
    )
    for directory, _dirs, files in os.walk(building):
        os.chmod(directory, 0o755)
        for name in files:
            file = os.path.join(directory, name)
            if not os.path.islink(file):
                mode = os.stat(file).st_mode
                os.chmod(file, mode | 0o444 | (0o111 if mode & 0o100 else 0))
    (target / COMPLETE).write_text("built\n")


@pytest.fixture(scope="session")
def serviceVenv() -> Path:
    """
    The virtualenv hardened units run from: under /opt (a dynamic user
    cannot reach this test run's Python under /root, nor /tmp behind
    C{PrivateTmp=}), built once per change of the sources and reused.
    """
    if os.geteuid() != 0:
        message = "builds a venv under /opt: needs root"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    target = VENV_ROOT / f"{VENV_PREFIX}{sourceKey()}"
    with open(VENV_ROOT / f"{VENV_PREFIX}lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / COMPLETE).exists():
            buildVenv(target)
        os.utime(target / COMPLETE)
        pruneVenvs(keep=target)
    return target


def pruneVenvs(keep: Path, unused: float = 3600) -> None:
    """
    Remove the venvs of earlier sources that no session used for
    C{unused} seconds.
    """
    for venv in VENV_ROOT.glob(f"{VENV_PREFIX}*"):
        if venv == keep or not venv.is_dir():
            continue
        marker = venv / COMPLETE
        used = (marker if marker.exists() else venv).stat().st_mtime
        if time.time() - used > unused:
            shutil.rmtree(venv, ignore_errors=True)


# -- which sandbox lines this machine allows ----------------------------------


def sandboxLines() -> list[str]:
    """
    The sandbox lines of the default hardened unit.
    """
    text = serviceUnit(UnitSpec(twistd="/opt/x/bin/twistd"))
    plain = serviceUnit(UnitSpec(twistd="/opt/x/bin/twistd", hardening=False))
    plainSettings = settings(plain)
    return [f"{k}={v}" for k, v in settings(text)[len(plainSettings) :]]


_IMPOSSIBLE: dict[str, list[str]] = {}

CONTAINER_LIMITS = {
    "ProtectHome=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
}
"""
The sandbox lines that may be impossible in a container (measured: a
private manager in this CI's container); any other line failing is a
failure of the sandbox, not of the machine.
"""


def impossibleHere(manager: UserManager) -> list[str]:
    """
    The sandbox lines with which a minimal notify service run by a dynamic
    user does not become ready under C{manager} on this machine: each line
    tried alone, once per manager, all at once.  Said in a warning.
    """
    name = manager.build.name
    if name in _IMPOSSIBLE:
        return _IMPOSSIBLE[name]
    lines = sandboxLines()
    units = {}
    for line in lines:
        unit = manager.unique_name("probe")
        manager.unit_dir.joinpath(unit).write_text(
            textwrap.dedent(
                f"""\
                [Service]
                Type=notify
                TimeoutStartSec=15
                DynamicUser=yes
                {line}
                ExecStart={exec_line(["/usr/bin/python3", "-c", NOTIFY_CODE])}
                """
            )
        )
        units[unit] = line
    manager.systemctl("daemon-reload")
    manager.systemctl("start", "--no-block", *units)
    impossible = []
    for unit, line in units.items():
        state = manager.wait_for(
            unit, "ActiveState", lambda v: v in ("active", "failed"), timeout=60
        )
        if state != "active":
            impossible.append(line)
    for unit in units:
        manager.remove_unit(unit)
    _IMPOSSIBLE[name] = impossible
    unexpected = [line for line in impossible if line not in CONTAINER_LIMITS]
    assert not unexpected, (
        f"systemd {name}: a minimal notify service does not start with"
        f" {unexpected}: that is the sandbox's fault, not the container's"
    )
    if impossible:
        warnings.warn(
            f"systemd {name} in this container cannot run a service with"
            f" {', '.join(impossible)} (tried alone, a minimal notify service"
            " never became ready): the hardened units are tested without"
            f" them, with the other {len(lines) - len(impossible)} sandbox"
            " lines",
            stacklevel=1,
        )
    return impossible


# -- generated units under the manager ----------------------------------------


class Hardened:
    """
    One generated hardened unit installed in a manager.
    """

    def __init__(
        self, manager: UserManager, venv: Path, directory: Path, name: str
    ) -> None:
        self.manager = manager
        self.venv = venv
        self.log = directory / "unit.log"
        self.name = name
        self.unitText = ""

    def generate(self, *args: str, sdweb: list[str]) -> str:
        """
        Run the generator (this checkout's, as the user would with the
        venv's) and return what it printed, or wrote.
        """
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "txsdnotify",
                "unit",
                "--name",
                self.name.removesuffix(".service"),
                "--twistd",
                str(self.venv / "bin" / "twistd"),
                "--working-directory",
                str(self.venv / "apps"),
                "--service-line",
                f"StandardOutput=append:{self.log}",
                "--service-line",
                "StandardError=inherit",
                "--service-line",
                f"TimeoutStartSec={START_TIMEOUT}",
                *args,
                "--",
                *sdweb,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result
        return result.stdout

    def install(self, text: str, name: str | None = None) -> None:
        """
        Write C{text} as unit C{name} (this service by default) with the
        lines impossible here commented out.
        """
        impossible = impossibleHere(self.manager)
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line in impossible:
                lines[i] = f"# Impossible in this container: {line}"
        kept = "\n".join(lines) + "\n"
        if name is None:
            self.unitText = kept
        self.manager.write_unit(name or self.name, kept)

    def start(self) -> None:
        """
        C{systemctl start}: returns once READY=1 came; on failure, says why.
        """
        result = self.manager.systemctl(
            "start", self.name, check=False, timeout=START_TIMEOUT + 10
        )
        if result.returncode != 0:
            status = self.manager.systemctl("status", self.name, check=False).stdout
            raise AssertionError(
                f"{self.name} did not start: {result.stderr}\n{status}\n"
                f"{self.output()}\n{self.manager.log_tail(20)}\n{self.unitText}"
            )

    def show(self, *props: str) -> dict[str, str]:
        return self.manager.show(self.name, *props)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def waitForLog(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return self.output()
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.output()}")

    def sandboxed(self) -> None:
        """
        The running main process really is sandboxed: not root, no new
        privileges, a seccomp filter, no capabilities (none it could get
        either), a mount namespace of its own.
        """
        pid = int(self.show("MainPID")["MainPID"])
        status = dict(
            line.split(":\t", 1)
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if ":\t" in line
        )
        assert status["Uid"].split()[0] != "0", status["Uid"]
        assert status["NoNewPrivs"].strip() == "1"
        assert status["Seccomp"].strip() == "2"
        assert int(status["CapEff"], 16) == 0
        # CapabilityBoundingSet= (a dynamic user alone keeps them all).
        assert int(status["CapBnd"], 16) == 0
        assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")


@pytest.fixture
def hardened(
    manager: UserManager,
    units: list[str],
    serviceVenv: Path,
    tmp_path: Path,
) -> Iterator[Hardened]:
    unit = Hardened(manager, serviceVenv, tmp_path, manager.unique_name("hardened"))
    units.append(unit.name)
    yield unit


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


def startAndServe(unit: Hardened, port: int) -> None:
    unit.start()
    assert unit.show("ActiveState") == {"ActiveState": "active"}, unit.output()
    assert get(f"http://127.0.0.1:{port}/") == (200, b"fast\n")


@every_manager
def test_lifecycle(hardened: Hardened) -> None:
    """
    The default unit (DynamicUser=yes and the whole sandbox): READY,
    serving, a reload in the same process, a stop that drains a request in
    flight; the watchdog kills it when the reactor blocks.  The generated
    unit is rated OK.
    """
    port = freePort()
    text = hardened.generate(
        "--watchdog",
        "3",
        sdweb=[
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--class",
            "slowapp.Slow",
            "--drain-timeout",
            "20",
        ],
    )
    assert "DynamicUser=yes" in text and "ProtectSystem=strict" in text
    path = hardened.log.parent / "scored" / hardened.name
    path.parent.mkdir()
    path.write_text(text)
    score, word = exposure(hardened.manager.build.name, path)
    assert score <= 2.0 and word == "OK", score
    hardened.install(text)
    startAndServe(hardened, port)
    hardened.sandboxed()
    pid = hardened.show("MainPID")["MainPID"]

    hardened.manager.systemctl("reload", hardened.name)
    hardened.waitForLog("sdweb reloaded")
    assert hardened.show("MainPID", "ActiveState") == {
        "MainPID": pid,
        "ActiveState": "active",
    }

    # A request in flight when the stop begins is answered.
    answers: list[tuple[int, bytes]] = []
    client = threading.Thread(
        target=lambda: answers.append(get(f"http://127.0.0.1:{port}/slow?s=3"))
    )
    client.start()
    hardened.manager.wait_for(
        hardened.name, "StatusText", lambda v: "In flight: 1;" in v, timeout=30
    )
    hardened.manager.systemctl("stop", hardened.name, timeout=60)
    client.join(60)
    assert answers == [(200, b"slow done\n")]
    assert hardened.show("ActiveState", "Result") == {
        "ActiveState": "inactive",
        "Result": "success",
    }
    assert "Traceback (most recent call last)" not in hardened.output()
    # Nothing the sandbox refused, Twisted's plugin cache included.
    assert "Unable to write" not in hardened.output()

    # The watchdog: a blocked reactor is killed.
    hardened.start()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as blocked:
        blocked.sendall(b"GET /block HTTP/1.1\r\nHost: localhost\r\n\r\n")
        hardened.manager.wait_for(
            hardened.name, "Result", "watchdog", timeout=START_TIMEOUT
        )


@every_manager
def test_socketActivation(hardened: Hardened) -> None:
    """
    A generated hardened .socket + .service pair: the first connection
    starts the service, which serves the socket systemd passed.
    """
    port = freePort()
    name = hardened.name.removesuffix(".service")
    text = hardened.generate(
        "--socket", f"127.0.0.1:{port}", sdweb=["--class", "slowapp.Slow"]
    )
    service, _, socketText = text.partition(f"# ---- {name}.socket ----\n")
    hardened.install(socketText, f"{name}.socket")
    hardened.install(service)
    try:
        hardened.manager.systemctl("start", f"{name}.socket")
        assert hardened.show("ActiveState") == {"ActiveState": "inactive"}
        assert get(f"http://127.0.0.1:{port}/") == (200, b"fast\n")
        hardened.manager.wait_for(hardened.name, "ActiveState", "active")
        hardened.sandboxed()
        assert "[web]" in hardened.waitForLog(f"127.0.0.1:{port}")
    finally:
        hardened.manager.remove_unit(f"{name}.socket")


@every_manager
def test_outbound(hardened: Hardened) -> None:
    """
    The default sandbox lets the application call other services: a
    request makes the service resolve localhost and fetch a page from a
    server outside it.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"other\n")

        def log_message(self, *args: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        port = freePort()
        text = hardened.generate(
            sdweb=[
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
                "--class",
                "outboundapp.Outbound",
            ]
        )
        hardened.install(text)
        hardened.start()
        hardened.sandboxed()
        url = f"http://127.0.0.1:{port}/fetch?port={other.server_address[1]}"
        assert get(url) == (200, b"fetched other\n")
    finally:
        other.shutdown()
        other.server_close()


def listeningInode(port: int) -> str:
    """
    The inode of the socket listening on 127.0.0.1:C{port}.
    """
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":
            return fields[9]
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@every_manager
def test_fdStore(hardened: Hardened) -> None:
    """
    --fd-store: the port goes into systemd's fd store and the very same
    listening socket serves again after a restart.
    """
    port = freePort()
    text = hardened.generate(
        "--fd-store",
        sdweb=["--port", f"tcp:{port}:interface=127.0.0.1", "--class", "slowapp.Slow"],
    )
    hardened.install(text)
    startAndServe(hardened, port)
    hardened.manager.wait_for(hardened.name, "NFileDescriptorStore", "1")
    inode = listeningInode(port)
    hardened.manager.systemctl("restart", hardened.name, timeout=START_TIMEOUT + 10)
    assert get(f"http://127.0.0.1:{port}/again") == (200, b"fast\n")
    assert listeningInode(port) == inode
    hardened.sandboxed()


@every_manager
def test_httpsFromCredential(hardened: Hardened, tmp_path: Path) -> None:
    """
    --tls-key/--tls-cert: a key readable by root only (0600) reaches the
    dynamic user as a credential; HTTPS with ALPN (HTTP/2 and HTTP/1.1).
    """
    curl = need("curl")
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    key, cert = makeCertificate(secrets)
    key.chmod(0o600)
    port = freePort()
    text = hardened.generate(
        "--tls-key",
        str(key),
        "--tls-cert",
        str(cert),
        "--tls-port",
        str(port),
        sdweb=["--class", "slowapp.Slow"],
    )
    # pyOpenSSL's ALPN callback (cffi) needs memory both writable and
    # executable.
    assert "\nMemoryDenyWriteExecute=" not in text
    hardened.install(text)
    hardened.start()
    hardened.sandboxed()
    for option, version in (("--http2", "2"), ("--http1.1", "1.1")):
        result = subprocess.run(
            [
                curl,
                "-sS",
                "-k",
                option,
                "--max-time",
                "30",
                "-w",
                "\n%{http_code} %{http_version}",
                f"https://127.0.0.1:{port}/",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.stdout == f"fast\n\n200 {version}", (result, hardened.output())
    assert oct(key.stat().st_mode & 0o777) == "0o600"


@every_manager
def test_workers(hardened: Hardened) -> None:
    """
    --workers 2 in the hardened unit: both workers serve, sandboxed too,
    and the stop is clean.
    """
    port = freePort()
    text = hardened.generate(
        sdweb=[
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--class",
            "pidapp.Pid",
            "--workers",
            "2",
        ]
    )
    hardened.install(text)
    hardened.start()
    hardened.sandboxed()
    pids: set[bytes] = set()
    deadline = time.monotonic() + 60
    while len(pids) < 2 and time.monotonic() < deadline:
        status, body = get(f"http://127.0.0.1:{port}/")
        assert status == 200
        pids.add(body)
    assert len(pids) == 2, pids
    for body in pids:
        worker = int(re.fullmatch(rb"pid (\d+)\n", body).group(1))  # type: ignore[union-attr]
        assert "NoNewPrivs:\t1" in Path(f"/proc/{worker}/status").read_text()
    hardened.manager.systemctl("stop", hardened.name, timeout=60)
    assert hardened.show("Result") == {"Result": "success"}
    assert not portAnswers(port)
    assert "Traceback (most recent call last)" not in hardened.output()
