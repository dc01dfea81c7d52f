"""
sdweb's WSGI container: in-process with a real reactor, real TCP and treq;
real C{twistd -n sdweb --wsgi} processes with curl and http.client where the
process matters (memory, logs, unix sockets, shutdown).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
import pytest_twisted
import treq
from apps import flaskapp, wsgiapps
from conftest import freePort, listeningFactory, need, processEnv, waitUntil
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.web.client import HTTPConnectionPool
from twisted.web.server import Site
from zope.interface import provider

from txsdnotify.cli.tap import Options
from txsdnotify.testing import NotifyReceiver
from txsdnotify.wsgi.container import ResponseBase, WSGIApplication
from txsdnotify.wsgi.flush import Flusher
from txsdnotify.wsgi.threads import DEFAULT_THREADS, RequestThreads

TRACEBACK = "Traceback (most recent call last)"

# --- In-process ------------------------------------------------------------------


@pytest.fixture
def serve(httpParser: str) -> Iterator[Callable[..., str]]:
    """
    C{serve(app, threads=None)}: the base URL of a real TCP port serving the
    WSGI application with L{WSGIApplication}, on each HTTP path.
    """
    ports = []

    def start(app: Any, threads: RequestThreads | None = None) -> str:
        # Site is a ServerFactory[_GenericHTTPChannelProtocol]; Twisted's
        # listenTCP is typed for the invariant ServerFactory[_ProtoWithFactory].
        port = reactor.listenTCP(
            0,
            listeningFactory(Site(WSGIApplication(app, threads, reactor)), httpParser),
            interface="127.0.0.1",
        )
        ports.append(port)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        return f"http://127.0.0.1:{address.port}"

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def pool() -> Iterator[HTTPConnectionPool]:
    p = HTTPConnectionPool(reactor, persistent=False)
    yield p
    pytest_twisted.blockon(p.closeCachedConnections())


@pytest.fixture
def failures() -> Iterator[list[dict[str, Any]]]:
    """
    The log events carrying a failure, as they are logged.
    """
    events: list[dict[str, Any]] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


def fetch(
    url: str, pool: HTTPConnectionPool, method: str = "GET", **kw: Any
) -> Deferred[tuple[int, bytes, Any]]:
    async def go() -> tuple[int, bytes, Any]:
        response = await treq.request(method, url, pool=pool, **kw)
        return response.code, await response.content(), response.headers

    return Deferred.fromCoroutine(go())


@pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning")
@pytest_twisted.inlineCallbacks
def test_validatorFindsNothing(
    serve: Any, pool: HTTPConnectionPool, failures: list[Any]
) -> Generator[Any, Any, None]:
    base = serve(validator(wsgiapps.app))
    code, body, _ = yield fetch(base + "/?a=1", pool)
    assert (code, body) == (200, b"hello\n")
    code, body, _ = yield fetch(base + "/chunks?n=3", pool)
    assert (code, body) == (200, b"0\n1\n2\n")
    code, body, _ = yield fetch(base + "/write", pool)
    assert (code, body) == (200, b"written 1\nwritten 2\nreturned\n")
    data = os.urandom(100_000)
    code, body, _ = yield fetch(base + "/echo", pool, "POST", data=data)
    assert code == 200
    assert json.loads(body) == {
        "length": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "CONTENT_LENGTH": str(len(data)),
    }
    code, body, _ = yield fetch(base + "/remote", pool)
    peer = json.loads(body)
    assert peer["REMOTE_ADDR"] == "127.0.0.1"
    assert peer["REMOTE_PORT"].isdigit()
    assert peer["SERVER_PORT"] == base.rsplit(":", 1)[1]
    code, _, _ = yield fetch(base + "/nowhere", pool)
    assert code == 404
    assert failures == []


@pytest_twisted.inlineCallbacks
def test_manyBlocksArriveWhole(
    serve: Any, pool: HTTPConnectionPool
) -> Generator[Any, Any, None]:
    base = serve(wsgiapps.app)
    code, body, _ = yield fetch(base + "/chunks?n=10000", pool)
    assert code == 200
    assert body == b"".join(b"%d\n" % i for i in range(10000))


@pytest_twisted.inlineCallbacks
def test_fileWrapper(
    serve: Any, pool: HTTPConnectionPool, tmp_path: Path
) -> Generator[Any, Any, None]:
    data = os.urandom(300_000)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    code, body, _ = yield fetch(serve(wsgiapps.app) + f"/file?path={path}", pool)
    assert (code, body) == (200, data)


class Counted:
    """
    A response body that counts its C{close()} calls and blocks produced.

    @param blocks: How many blocks; L{None}: endless, 1 KiB every 10 ms.
    """

    def __init__(self, blocks: int | None) -> None:
        self.blocks = blocks
        self.produced = 0
        self.closed = 0
        self.closedEvent = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Counted:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return self

    def __iter__(self) -> Iterator[bytes]:
        while self.blocks is None or self.produced < self.blocks:
            self.produced += 1
            if self.blocks is None:
                time.sleep(0.01)
            yield b"x" * 1024

    def close(self) -> None:
        self.closed += 1
        self.closedEvent.set()


@pytest_twisted.inlineCallbacks
def test_closeCalledOnce(
    serve: Any, pool: HTTPConnectionPool
) -> Generator[Any, Any, None]:
    app = Counted(3)
    code, body, _ = yield fetch(serve(app), pool)
    assert (code, body) == (200, b"x" * 3072)
    assert app.closed == 1


def readSomeThenHangUp(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return s.recv(100)


@pytest_twisted.inlineCallbacks
def test_closeCalledOnceWhenClientGone(serve: Any) -> Generator[Any, Any, None]:
    app = Counted(None)
    base = serve(app)
    first = yield deferToThread(readSomeThenHangUp, int(base.rsplit(":", 1)[1]))
    assert first.startswith(b"HTTP/1.1 200")
    assert (yield deferToThread(app.closedEvent.wait, 20))
    produced = app.produced
    yield sleep(0.3)
    assert app.produced == produced  # the iteration stopped
    assert app.closed == 1


@pytest_twisted.inlineCallbacks
def test_slowBlockIsSentWithoutWaitingForTheNext(
    serve: Any,
) -> Generator[Any, Any, None]:
    released = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first\n"
        released.wait(20)
        yield b"second\n"

    seen: list[tuple[bytes, bool]] = []

    def collect(data: bytes) -> None:
        seen.append((data, released.is_set()))
        released.set()

    response = yield treq.get(serve(app))
    yield treq.collect(response, collect)
    assert seen[0] == (b"first\n", False)
    assert b"".join(d for d, _ in seen) == b"first\nsecond\n"


@pytest_twisted.inlineCallbacks
def test_excInfoReplacesTheResponse(
    serve: Any, pool: HTTPConnectionPool
) -> Generator[Any, Any, None]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"half a page")
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page\n"]

    code, body, _ = yield fetch(serve(app), pool)
    assert (code, body) == (500, b"error page\n")


class FailingClose:
    """
    A body whose iteration and close() both raise.
    """

    def __iter__(self) -> Iterator[bytes]:
        raise ValueError("in the iteration")

    def close(self) -> None:
        raise KeyError("in close")


@pytest_twisted.inlineCallbacks
def test_closeRaisingAfterTheApplicationKeepsThe500(
    serve: Any, failures: list[Any]
) -> Generator[Any, Any, None]:
    def app(environ: dict[str, Any], start_response: Any) -> FailingClose:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return FailingClose()

    status, body = yield deferToThread(readAll, serve(app))
    assert (status, body) == (500, b"Internal Server Error\n")
    for _ in range(100):
        if len(failures) == 2:
            break
        yield sleep(0.05)
    assert sorted(e["log_failure"].type.__name__ for e in failures) == [
        "KeyError",
        "ValueError",
    ]


def readAll(url: str) -> tuple[int | None, bytes | Exception]:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/")
    try:
        response = conn.getresponse()
    except ConnectionResetError as e:
        # Reset before the client read the status line: what it had
        # received went with the reset.
        return None, e
    try:
        return response.status, response.read()
    except Exception as e:
        return response.status, e


@pytest_twisted.inlineCallbacks
def test_excInfoOnceStreamingReraises(
    serve: Any, failures: list[Any]
) -> Generator[Any, Any, None]:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"x" * 200_000  # more than is buffered: the response is under way
        try:
            raise ValueError("too late")
        except ValueError:
            start_response("500 Oops", [], sys.exc_info())
        yield b"never"

    status, body = yield deferToThread(readAll, serve(app))
    assert status in (200, None)
    assert isinstance(body, (http.client.IncompleteRead, ConnectionResetError))
    assert [e["log_failure"].value.args for e in failures] == [("too late",)]


@pytest_twisted.inlineCallbacks
def test_startResponseTwiceIsAnError(
    serve: Any, pool: HTTPConnectionPool, failures: list[Any]
) -> Generator[Any, Any, None]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b"never\n"]

    code, body, _ = yield fetch(serve(app), pool)
    assert code == 500
    assert [e["log_failure"].type for e in failures] == [RuntimeError]


@pytest_twisted.inlineCallbacks
def test_threadsRunConcurrently(
    serve: Any, pool: HTTPConnectionPool
) -> Generator[Any, Any, None]:
    # Three requests each waiting for the others: served one by one, they
    # would all time out.
    barrier = threading.Barrier(3, timeout=20)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        barrier.wait()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"met\n"]

    threads = RequestThreads(3, reactor)
    base = serve(app, threads)
    results = yield gatherResults([fetch(base, pool) for _ in range(3)])
    assert [r[:2] for r in results] == [(200, b"met\n")] * 3
    assert threads.threads == 3


@pytest_twisted.inlineCallbacks
def test_blockingAppGetsEveryThread(
    serve: Any, pool: HTTPConnectionPool
) -> Generator[Any, Any, None]:
    """
    An application that blocks gets as many threads as --threads allows
    (the default), whatever the batching of the hand-offs: each request
    here waits until all of them are in the application.
    """
    barrier = threading.Barrier(DEFAULT_THREADS, timeout=20)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        barrier.wait()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"met\n"]

    threads = RequestThreads(reactor=reactor)
    base = serve(app, threads)
    results = yield gatherResults([fetch(base, pool) for _ in range(DEFAULT_THREADS)])
    assert [r[:2] for r in results] == [(200, b"met\n")] * DEFAULT_THREADS
    assert threads.threads == DEFAULT_THREADS


@pytest_twisted.inlineCallbacks
def test_waitingCountsRequestsWithoutAThread(
    serve: Any, pool: HTTPConnectionPool
) -> Generator[Any, Any, None]:
    go = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        go.wait(20)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done\n"]

    threads = RequestThreads(1, reactor)
    base = serve(app, threads)
    assert threads.waiting == 0
    pending = [fetch(base, pool) for _ in range(3)]
    for _ in range(400):
        if threads.waiting == 2:
            break
        yield sleep(0.05)
    assert threads.waiting == 2
    go.set()
    results = yield gatherResults(pending)
    assert [r[:2] for r in results] == [(200, b"done\n")] * 3
    assert threads.waiting == 0
    assert threads.threads == 1


def pathsApp(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    names = ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "HTTP_HOST", "SERVER_NAME")
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({name: environ[name] for name in names}).encode()]


def rawRequest(base: str, target: str) -> dict[str, str]:
    """
    Send C{GET target} as it is (proxies send absolute-form targets); the
    JSON body of the answer.
    """
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            f"GET {target} HTTP/1.1\r\nHost: front:8000\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    result: dict[str, str] = json.loads(body)
    return result


@pytest_twisted.inlineCallbacks
def test_absoluteFormTarget(serve: Any) -> Generator[Any, Any, None]:
    """
    An absolute-form target (RFC 9112 section 3.2.2) gives the application
    the environ of its path part: the scheme and host are not in PATH_INFO,
    and HTTP_HOST stays the Host header.
    """
    base = serve(pathsApp)
    cases = {
        "http://origin.example/x": ("/x", ""),
        "http://origin.example/a/b%20c?q=1&r": ("/a/b c", "q=1&r"),
        "https://origin.example:8443": ("/", ""),
        "http://origin.example?q=2": ("/", "q=2"),
        "/x": ("/x", ""),
    }
    for target, (path, query) in cases.items():
        env = yield deferToThread(rawRequest, base, target)
        assert env == {
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "HTTP_HOST": "front:8000",
            "SERVER_NAME": "front",
        }, target


@pytest_twisted.inlineCallbacks
def test_flask(serve: Any, pool: HTTPConnectionPool) -> Generator[Any, Any, None]:
    base = serve(flaskapp.app)
    assert (yield fetch(base + "/", pool))[:2] == (200, b"hello from flask\n")
    body = (yield fetch(base + "/stream?n=3", pool))[1]
    assert body == b"part 0\npart 1\npart 2\n"
    assert (yield fetch(base + "/nowhere", pool))[0] == 404


# --- Real processes ----------------------------------------------------------------


def startWsgi(
    twistd: Any,
    receiver: NotifyReceiver,
    parser: str,
    app: str = "wsgiapps.app",
    port: str | None = None,
    **env: str,
) -> tuple[Any, str]:
    listen = port or f"tcp:{freePort()}:interface=127.0.0.1"
    server = twistd(
        ["--port", listen, "--wsgi", app, "--drain-timeout", "1"]
        + ["--http-parser", parser],
        processEnv(NOTIFY_SOCKET=receiver.path, **env),
    )
    receiver.expect("READY", timeout=30)
    return server, listen


def tcpPort(listen: str) -> int:
    return int(listen.split(":")[1])


def rssKiB(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_errorBeforeStartResponse(
    twistd: Any, receiver: NotifyReceiver, httpParser: str
) -> None:
    server, listen = startWsgi(twistd, receiver, httpParser)
    conn = http.client.HTTPConnection("127.0.0.1", tcpPort(listen), timeout=30)
    conn.request("GET", "/raise-early")
    response = conn.getresponse()
    assert response.status == 500
    assert response.read() == b"Internal Server Error\n"
    waitUntil(lambda: "raised before start_response" in server.output())
    log = server.output()
    assert TRACEBACK in log
    assert "in raiseEarly" in log  # the application's own frame


def test_errorWhileStreamingAbortsTheConnection(
    twistd: Any, receiver: NotifyReceiver, httpParser: str
) -> None:
    server, listen = startWsgi(twistd, receiver, httpParser)
    conn = http.client.HTTPConnection("127.0.0.1", tcpPort(listen), timeout=30)
    conn.request("GET", "/raise-streaming")
    response = conn.getresponse()
    assert response.status == 200
    # Aborted (a reset), not closed: a close would end the body cleanly to
    # a client that does not check the chunked framing.
    with pytest.raises(ConnectionResetError):
        response.read()
    waitUntil(lambda: "raised while streaming" in server.output())
    log = server.output()
    assert "connection aborted" in log
    assert "in raiseStreaming" in log


GROWTH_KIB = 8 * 1024
"""
The most a 200 MB response may grow the server's memory (docs/wsgi.md).
"""


def test_hugeResponseInBoundedMemory(
    twistd: Any, receiver: NotifyReceiver, httpParser: str
) -> None:
    server, listen = startWsgi(twistd, receiver, httpParser)
    port, pid = tcpPort(listen), server.process.pid
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/big?mb=2")
    assert len(conn.getresponse().read()) == 2 << 20
    base = rssKiB(pid)
    conn.request("GET", "/big?mb=200")
    response = conn.getresponse()
    total, peak = 0, base
    while True:
        data = response.read(1 << 20)
        if not data:
            break
        total += len(data)
        if total % (4 << 20) == 0:
            peak = max(peak, rssKiB(pid))
            time.sleep(0.1)  # a slow reader (40 MB/s): the server must wait
    assert total == 200 << 20
    # docs/wsgi.md: the process grows by less than a few MB.
    assert (peak - base) < GROWTH_KIB, f"RSS grew by {(peak - base) // 1024} MiB"


def test_chunkedUpload(
    twistd: Any, receiver: NotifyReceiver, httpParser: str, tmp_path: Path
) -> None:
    curl = need("curl")
    server, listen = startWsgi(twistd, receiver, httpParser)
    data = os.urandom(1_000_000)
    (tmp_path / "upload").write_bytes(data)
    out = subprocess.run(
        [curl, "-sS", "--fail", "-H", "Transfer-Encoding: chunked"]
        + ["--data-binary", f"@{tmp_path / 'upload'}"]
        + [f"http://127.0.0.1:{tcpPort(listen)}/echo"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    assert json.loads(out) == {
        "length": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "CONTENT_LENGTH": str(len(data)),
    }


def test_unixSocket(
    twistd: Any, receiver: NotifyReceiver, httpParser: str, tmp_path: Path
) -> None:
    curl = need("curl")
    path = tmp_path / "web.sock"
    startWsgi(twistd, receiver, httpParser, port=f"unix:{path}")
    out = subprocess.run(
        [curl, "-sS", "--fail", "--unix-socket", str(path), "http://localhost/remote"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    assert json.loads(out) == {
        "REMOTE_ADDR": "",
        "REMOTE_PORT": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
    }


def test_django(
    twistd: Any, receiver: NotifyReceiver, httpParser: str, tmp_path: Path
) -> None:
    curl = need("curl")
    data = os.urandom(3_000_000)
    (tmp_path / "file").write_bytes(data)
    server, listen = startWsgi(
        twistd,
        receiver,
        httpParser,
        "djangoapp.wsgi.application",
        DJANGOAPP_FILE=str(tmp_path / "file"),
    )
    url = f"http://127.0.0.1:{tcpPort(listen)}"

    def get(path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", tcpPort(listen), timeout=30)
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()

    assert get("/") == (200, b"hello from django\n")
    assert get("/stream?n=3") == (200, b"line 0\nline 1\nline 2\n")
    assert get("/file") == (200, data)
    assert get("/nowhere")[0] == 404
    echoed = subprocess.run(
        [curl, "-sS", "--fail", "-H", "Transfer-Encoding: chunked"]
        + ["--data-binary", f"@{tmp_path / 'file'}", f"{url}/echo"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    assert echoed == data
    assert TRACEBACK not in server.output()


STUCK_SCRIPT = """
import socket, sys, threading, time
from twisted.internet import reactor
from twisted.web.server import Site
from txsdnotify.wsgi.container import WSGIApplication

def app(environ, start_response):
    reactor.callFromThread(reactor.stop)
    time.sleep(100000)

port = reactor.listenTCP(0, Site(WSGIApplication(app)), interface="127.0.0.1")

def client():
    s = socket.create_connection(("127.0.0.1", port.getHost().port))
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    s.recv(1)

threading.Thread(target=client, daemon=True).start()
reactor.run()
print("reactor stopped", flush=True)
"""


def test_stuckThreadDoesNotHoldUpInterpreterExit() -> None:
    # A library user's program, ending when its reactor stops.
    done = subprocess.run(
        [sys.executable, "-c", STUCK_SCRIPT],
        env=processEnv(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout == "reactor stopped\n", done.stderr
    assert done.returncode == 0


def test_stuckThreadDoesNotHoldUpExit(
    twistd: Any, receiver: NotifyReceiver, httpParser: str
) -> None:
    server, listen = startWsgi(twistd, receiver, httpParser)

    def stuck() -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", tcpPort(listen), timeout=60)
            conn.request("GET", "/block")
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            pass

    threading.Thread(target=stuck, daemon=True).start()
    waitUntil(lambda: "wsgiapps: blocking now" in server.output(), timeout=30)
    # SIGINT: twistd ends by re-raising it, and Python then waits for every
    # thread that is not a daemon thread.
    server.process.send_signal(signal.SIGINT)
    server.wait(30)
    assert "Server Shut Down." in server.output()


def test_threadsOption() -> None:
    options = Options(environ={})
    options.parseOptions(["--wsgi", "apps.wsgiapps.app", "--threads", "3"])
    root = options["root"]
    assert isinstance(root, WSGIApplication)
    assert root.application is wsgiapps.app
    assert root.threads.size == 3
    options = Options(environ={})
    options.parseOptions(["--wsgi", "apps.wsgiapps.app"])
    assert options["root"].threads.size == DEFAULT_THREADS == 10


@pytest.mark.parametrize("value", ["0", "-1", "ten", ""])
def test_badThreads(twistd: Any, value: str) -> None:
    server = twistd(["--wsgi", "wsgiapps.app", "--threads", value])
    assert server.wait(timeout=30) == 1
    lines = server.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("twistd sdweb: ")
    assert "--threads wants a whole number >= 1" in lines[0]


# --- What the fast path could silently lose: pinned on both paths --------------


def rawExchange(base: str, data: bytes) -> bytes:
    """
    Send C{data} to the server at C{base}; what it answers until it closes.
    """
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


@pytest_twisted.inlineCallbacks
def test_bufferedBodyHasContentLength(serve: Any) -> Generator[Any, Any, None]:
    """
    A whole body without a Content-Length from the application gets one (it
    is not sent chunked).
    """
    base = serve(wsgiapps.app)
    out = yield deferToThread(
        rawExchange, base, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == b"hello\n"
    assert b"content-length: 6\r\n" in head.lower() + b"\r\n"
    assert b"chunked" not in head.lower()


@pytest_twisted.inlineCallbacks
def test_underscoreHeadersDropped(serve: Any) -> Generator[Any, Any, None]:
    """
    A request header with an underscore in its name never reaches the
    environ (it would pass for the one with a dash); wsgi.input_terminated
    is true.
    """
    base = serve(wsgiapps.app)
    out = yield deferToThread(
        rawExchange,
        base,
        b"GET /environ HTTP/1.1\r\nHost: x\r\nX_Forged: 1\r\nX-Real: 2\r\n"
        b"X_Real: 3\r\nConnection: close\r\n\r\n",
    )
    shown = json.loads(out.partition(b"\r\n\r\n")[2])
    assert shown["HTTP_X_REAL"] == "2"
    assert "HTTP_X_FORGED" not in shown
    assert shown["wsgi.input_terminated"] is True


@pytest_twisted.inlineCallbacks
def test_writeRaisesOnceClientGone(serve: Any) -> Generator[Any, Any, None]:
    """
    The write() callable raises OSError once the client has gone, so that
    an application writing a long stream stops.
    """
    raised: list[BaseException] = []
    done = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            for _ in range(6000):  # a minute at most
                write(b"x" * 1024)
                time.sleep(0.01)
        except BaseException as e:
            raised.append(e)
            raise
        finally:
            done.set()
        return []

    base = serve(app)
    first = yield deferToThread(readSomeThenHangUp, int(base.rsplit(":", 1)[1]))
    assert first.startswith(b"HTTP/1.1 200")
    assert (yield deferToThread(done.wait, 30))
    assert len(raised) == 1 and isinstance(raised[0], OSError)


class Recorder(ResponseBase):
    """
    A response whose reactor side records what it is handed (run in the
    application's thread: enough to see the container's buffering).
    """

    def __init__(self, app: Any) -> None:
        super().__init__(app, self._call, Flusher(), {"REQUEST_METHOD": "GET"})
        self.handed: list[tuple[int, float]] = []

    def _call(self, f: Any, *args: Any) -> None:
        f(*args)

    def _completeInReactor(self, status: Any, chunks: list[bytes], size: int) -> None:
        self.handed.append((size, time.monotonic()))

    def _streamInReactor(self, status: Any, chunks: list[bytes], size: int) -> None:
        self._writeInReactor(chunks, size)

    def _sendChunks(self, chunks: list[bytes]) -> None:
        self.handed.append((sum(map(len, chunks)), time.monotonic()))

    def _endStreamInReactor(self, chunks: list[bytes], size: int) -> None:
        self.handed.append((size, time.monotonic()))


def test_bufferBound() -> None:
    """
    A body handed over at once is buffered up to 64 KiB, then streamed in
    blocks of 64 KiB (both paths share this thread side).
    """
    response = Recorder(lambda e, s: (s("200 OK", []), [b"x" * 8192] * 20)[1])
    response.run()
    assert [size for size, _ in response.handed] == [65536, 65536, 32768]


def test_flushDelay() -> None:
    """
    A block the application follows slowly is sent on after 20 ms, not when
    the next one comes.
    """
    yielded: list[float] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yielded.append(time.monotonic())
        yield b"first"
        time.sleep(1.0)
        yield b"second"

    response = Recorder(app)
    response.run()
    (first, at), (second, _) = response.handed
    assert (first, second) == (5, 6)
    assert 0.02 <= at - yielded[0] < 0.15, at - yielded[0]
