"""
sdweb's fast HTTP/1.1 path (txsdnotify.wsgi.http11): what only it has (its
limits and answers to bad input, the option that switches it), and the
HTTP/1.1 behaviours it must share with the twisted.web path, each run on
both paths.  Real TCP, real twistd processes, raw sockets as clients.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from apps import wsgiapps
from conftest import freePort, processEnv, waitUntil
from test_service import live, makeService, portOf, readToEnd, sleep
from test_tls import curlWithHTTP2, makeCertificate
from twisted.web.resource import Resource
from twisted.web.server import Site

from txsdnotify.service import WebService
from txsdnotify.testing import NotifyReceiver
from txsdnotify.wsgi.container import WSGIApplication
from txsdnotify.wsgi.http11 import (
    HTTP11Connection,
    Limits,
    accessLogOf,
    canSendNow,
)

__all__ = ["live"]

TRACEBACK = "Traceback (most recent call last)"


def exchange(port: int, data: bytes, wait: float = 10.0) -> bytes:
    """
    Send C{data} on a new connection; everything received until the server
    closes (or C{wait} seconds pass, then C{<open>} is appended).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out
                out += chunk
        except socket.timeout:
            return out + b"<open>"


@pytest.fixture
def server(twistd: Any, receiver: NotifyReceiver, httpParser: str) -> Iterator[Any]:
    """
    A twistd serving tests/apps/wsgiapps.py on the HTTP path under test,
    with a body limit of 1000 bytes; its port is C{server.port}.
    """
    port = freePort()
    process = twistd(
        ["--port", f"tcp:{port}:interface=127.0.0.1", "--wsgi", "wsgiapps.app"]
        + ["--http-parser", httpParser, "--limit-request-body", "1000"]
        + ["--health", "/healthz"],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    receiver.expect("READY", timeout=30)
    process.port = port
    yield process
    assert TRACEBACK not in process.output()


def test_fastPathChosen(twistd: Any, receiver: NotifyReceiver, httpParser: str) -> None:
    """
    --http-parser picks the path; the log says when the fast one serves.
    """
    port = freePort()
    process = twistd(
        ["--port", f"tcp:{port}:interface=127.0.0.1", "--wsgi", "wsgiapps.app"]
        + ["--http-parser", httpParser],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    receiver.expect("READY", timeout=30)
    waitUntil(lambda: "sdweb ready" in process.output())
    fast = "(WSGI on the fast HTTP/1.1 path)" in process.output()
    assert fast == (httpParser == "fast")


def test_choice() -> None:
    """
    auto serves a WSGI root on the fast path, never another site; twisted
    never.
    """
    wsgi = Site(WSGIApplication(wsgiapps.app))
    other = Site(Resource())
    for site, parser, fast in [
        (wsgi, "auto", True),
        (wsgi, "fast", True),
        (wsgi, "twisted", False),
        (other, "auto", False),
        (other, "fast", False),
    ]:
        service = WebService(site, ["tcp:0"], environ={}, httpParser=parser)
        assert (service.fastPath is not None) == fast, (parser, fast)
    with pytest.raises(ValueError, match="httpParser must be one of"):
        WebService(wsgi, ["tcp:0"], environ={}, httpParser="h3")


def test_tlsPortsKeepTwisted(
    twistd: Any, receiver: NotifyReceiver, tmp_path: Path
) -> None:
    """
    With the fast path on, a TLS port is served by Twisted's stack (HTTP/2
    by ALPN), the plain port by the fast path.
    """
    curl = curlWithHTTP2()
    key, cert = makeCertificate(tmp_path)
    tls, plain = freePort(), freePort()
    process = twistd(
        ["--port", f"ssl:{tls}:privateKey={key}:certKey={cert}:interface=127.0.0.1"]
        + ["--port", f"tcp:{plain}:interface=127.0.0.1"]
        + ["--wsgi", "wsgiapps.app", "--http-parser", "fast"],
        processEnv(NOTIFY_SOCKET=receiver.path),
    )
    receiver.expect("READY", timeout=30)
    out = subprocess.run(
        [curl, "-sS", "-k", "--http2", "-o", "/dev/null", "-w", "%{http_version}"]
        + [f"https://127.0.0.1:{tls}/"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout == "2", out.stderr
    assert exchange(plain, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1).endswith(
        b"hello\n<open>"
    )
    assert "(WSGI on the fast HTTP/1.1 path)" in process.output()
    assert TRACEBACK not in process.output()


def test_accessLogPrivatesOfTwisted() -> None:
    """
    The one place reading Twisted's private Site attributes: fails loudly if
    Twisted renames them.
    """
    site = Site(Resource())
    site.startFactory()
    try:
        logFile, date = accessLogOf(site)()
        assert logFile is not None and hasattr(logFile, "write")
        assert isinstance(date, str) and date.startswith("[")
    finally:
        site.stopFactory()
    assert accessLogOf(site)()[0] is None


# --- The same on both paths ----------------------------------------------------


def test_keepAliveAndPipelining(server: Any) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    out = exchange(server.port, request * 3, wait=1.5)
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert out.count(b"hello\n") == 3
    assert out.endswith(b"<open>")
    assert b"Content-Length: 6\r\n" in out


def test_http10ClosesAfterTheResponse(server: Any) -> None:
    out = exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.0 200 OK\r\n") or out.startswith(
        b"HTTP/1.1 200 OK\r\n"
    )
    assert out.endswith(b"hello\n"), out


def test_expectContinue(server: Any) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"abc")
        out = b""
        while b'"CONTENT_LENGTH": "3"' not in out:
            chunk = s.recv(65536)
            assert chunk
            out += chunk
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")


def test_chunkedOutOnHTTP11(server: Any) -> None:
    out = exchange(server.port, b"GET /big?mb=1 HTTP/1.1\r\nHost: x\r\n\r\n", 2)
    head = out.split(b"\r\n\r\n", 1)[0]
    assert b"Transfer-Encoding: chunked" in head
    assert out.endswith(b"\r\n0\r\n\r\n<open>")


def test_healthAnsweredBeforeTheApplication(server: Any, receiver: Any) -> None:
    out = exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"state": "ready"' in out


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"400"),
    ],
)
def test_malformedGets400(server: Any, data: bytes, code: bytes) -> None:
    out = exchange(server.port, data)
    assert out.startswith(b"HTTP/1.1 " + code), out


# --- What only the fast path has ------------------------------------------------


@pytest.mark.parametrize("httpParser", ["fast"])
@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nX-A: " + b"b" * 9000 + b"\r\n\r\n", b"431"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", b"413"),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"3e9\r\n"
            + b"x" * 1001
            + b"\r\n0\r\n\r\n",
            b"413",
        ),
    ],
)
def test_limits(server: Any, data: bytes, code: bytes) -> None:
    """
    Over a limit: the error, then the connection closes; never a traceback.
    """
    out = exchange(server.port, data)
    assert out.startswith(b"HTTP/1.1 " + code), out[:100]
    assert b"Connection: close\r\n" in out


@pytest.mark.parametrize("httpParser", ["fast"])
def test_limitAfterPipelinedResponses(server: Any) -> None:
    """
    The error for a request over a limit comes after the responses to the
    requests before it.
    """
    out = exchange(
        server.port,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2
        + b"GET /"
        + b"a" * 5000
        + b" HTTP/1.1\r\n\r\n",
    )
    assert out.count(b"hello\n") == 2
    assert out.split(b"hello\n")[-1].startswith(b"HTTP/1.1 414")


def test_limitsDefaultAsGunicorn() -> None:
    assert Limits() == Limits(
        requestLine=4094, requestFields=100, requestFieldSize=8190, requestBody=0
    )


@pytest.mark.parametrize("value", ["-1", "ten"])
def test_badLimit(twistd: Any, value: str) -> None:
    process = twistd(["--wsgi", "wsgiapps.app", "--limit-request-line", value])
    assert process.wait(timeout=30) == 1
    lines = process.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert "--limit-request-line wants a whole number >= 0" in lines[0]


@pytest_twisted.inlineCallbacks
def test_idleTimeout(live: NotifyReceiver) -> Generator[Any, Any, None]:
    """
    An idle connection is closed after the site's timeout.
    """
    site = Site(WSGIApplication(wsgiapps.app))
    site.timeOut = 1
    service = makeService(live, site, httpParser="fast")
    service.startService()
    yield service.whenReady()
    client = socket.create_connection(("127.0.0.1", portOf(service)))
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    data = yield readToEnd(client, timeout=10)
    assert data.endswith(b"hello\n")
    assert 1 <= time.monotonic() - started < 5
    client.close()
    yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_sendNowPrivatesOfTwisted(live: NotifyReceiver) -> Generator[Any, Any, None]:
    """
    The fast path writes a response straight to the socket of a real TCP
    connection (the one place reading Twisted's private buffers): fails
    loudly if Twisted renames them.
    """
    service = makeService(live, Site(WSGIApplication(wsgiapps.app)), httpParser="fast")
    service.startService()
    yield service.whenReady()
    client = socket.create_connection(("127.0.0.1", portOf(service)))
    # The connection is looked at before the request: answered, an HTTP/1.0
    # connection would be gone at once.
    while not service.tracker.connections:
        yield sleep(0.01)
    (connection,) = service.tracker.connections
    assert isinstance(connection, HTTP11Connection)
    assert canSendNow(connection.transport)
    assert connection.sendNow
    client.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = yield readToEnd(client)
    assert data.endswith(b"hello\n")
    client.close()
    yield service.stopService()
