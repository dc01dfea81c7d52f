# -*- test-case-name: tests.test_http11 -*-
"""
sdweb's fast HTTP/1.1 path for a WSGI application: one protocol object per
connection, requests parsed by httptools (the Python binding of llhttp, the
C parser of Node.js), the WSGI environ built straight from the parsed
request, and a typical response written with one C{transport.write}.  No
twisted.web C{Request} is made.

It serves what L{WSGIApplication} serves, in the same threads and with the
same buffering (L{ResponseBase}), and behaves as the twisted.web path does:
keep-alive (HTTP/1.1 only, as Twisted), pipelining, chunked bodies in and
out, C{Expect: 100-continue}, the access log line of the site, its idle
timeout.  Bad input is answered, never with a traceback: 400 for a malformed
request, 414 for a request line over L{Limits.requestLine}, 431 for headers
over L{Limits.requestFields} or L{Limits.requestFieldSize}, 413 for a body
over L{Limits.requestBody}; then the connection closes.

The connection counts into, and is tracked by, an L{Owner} (C{txsdnotify}'s
C{TrackingFactory}, which this folder does not import): see L{Owner} for
exactly what it relies on.
"""

from __future__ import annotations

import collections
import tempfile
from collections.abc import Callable
from io import BytesIO
from time import monotonic
from typing import IO, Any, Optional, Protocol
from urllib.parse import unquote_to_bytes

from attrs import frozen
from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString
from twisted.web.server import Site, version
from zope.interface import implementer

from txsdnotify.wsgi.container import ERROR_BODY, ResponseBase, WSGIApplication
from txsdnotify.wsgi.environ import environKey

ABORTED_STATUS = 499
"""
The status the access log shows for a request whose client went away before
its response was complete (as C{txsdnotify.web.tracking.ABORTED_STATUS}).
"""

try:
    import httptools
except ImportError:  # pragma: no cover - the [fast] extra is not installed
    httptools = None  # type: ignore[assignment]

__all__ = [
    "HTTP11Factory",
    "Limits",
    "Owner",
    "accessLogOf",
    "available",
]

SPOOL_BYTES = 1024 * 1024
"""
A request body larger than this goes to a temporary file rather than
memory (twisted.web does the same above 100 kB).
"""

PIPELINE_DEPTH = 8
"""
The most pipelined requests parsed ahead of the one being answered; then
the connection stops reading until the queue is shorter.
"""

ABORT_TIMEOUT = 15.0
"""
Seconds a connection closed for its idle timeout may take to go before it is
aborted (Twisted's C{abortTimeout}).
"""


_log = Logger(namespace="txsdnotify.wsgi.container")


def available() -> bool:
    """
    Whether the fast path can run here (httptools is installed:
    C{pip install 'txsdnotify[fast]'}).
    """
    return httptools is not None


@frozen
class Limits:
    """
    What the fast path accepts of a request; over a limit, it answers with an
    error and closes the connection.  The defaults are gunicorn's.

    @ivar requestLine: Most bytes of the request target (414 beyond).
    @ivar requestFields: Most header fields (431 beyond).
    @ivar requestFieldSize: Most bytes of one header field, name and value
        (431 beyond).
    @ivar requestBody: Most bytes of a request body; 0: no limit (413 beyond).
    """

    requestLine: int = 4094
    requestFields: int = 100
    requestFieldSize: int = 8190
    requestBody: int = 0

    @property
    def headBytes(self) -> int:
        """
        Most bytes of a request's head, whatever its split: past this, a
        head still arriving is answered 431.
        """
        return self.requestLine + (self.requestFields + 1) * (self.requestFieldSize + 4)


class Counters(Protocol):
    """
    The request figures (C{txsdnotify.web.stats.RequestStats}).
    """

    completed: int
    bytesSent: int

    def requestBegan(self) -> None:
        """
        A request is being processed.
        """

    def responseSent(self, code: int, seconds: float, length: int) -> None:
        """
        It was answered with C{code}, C{length} body bytes, in C{seconds}.
        """

    def responseAborted(self, length: int) -> None:
        """
        Its client went away before the response was complete.
        """


class Owner(Protocol):
    """
    What the fast path relies on of the factory that tracks its connections
    (C{txsdnotify.web.tracking.TrackingFactory}): the figures in C{stats},
    the drain in progress in C{drain} (L{None} while serving; read when a
    response's headers are written) and C{release(connection)}, called when a
    connection is lost.  A drain calls back the connection's C{drainBegan},
    C{drainBusy}, C{drainIdle} and C{drainClose}.
    """

    @property
    def stats(self) -> Counters:
        """
        The figures.
        """

    @property
    def drain(self) -> object | None:
        """
        The drain in progress, or L{None}.
        """

    @property
    def timed(self) -> bool:
        """
        Whether each request is timed and counted by status (metrics on).
        """

    def release(self, connection: Any) -> None:
        """
        C{connection} is gone.
        """


HealthAnswer = Callable[[], "tuple[int, bytes]"]
"""
Answers a health check: the status code and the JSON body.
"""


_sendNowTypes: dict[type, bool] = {}


def canSendNow(transport: Any) -> bool:
    """
    Whether L{sendNow} may write straight to C{transport}'s socket: a TCP or
    UNIX transport of Twisted's with the attributes it reads (asked once per
    transport class).
    """
    kind = type(transport)
    able = _sendNowTypes.get(kind)
    if able is None:
        able = _sendNowTypes[kind] = all(
            hasattr(transport, name)
            for name in ("socket", "dataBuffer", "_tempDataBuffer", "disconnecting")
        )
    return able


def sendNow(transport: Any, data: bytes) -> None:
    """
    Write C{data}, sent at once when nothing waits in C{transport}'s buffer:
    Twisted's C{write} would register for writability and send on the next
    turn of the reactor (two C{epoll_ctl} calls and a turn more per
    response).  What the socket does not take goes through C{write}.  The
    one place that reads Twisted's private C{FileDescriptor} buffers
    (C{dataBuffer}, C{_tempDataBuffer}); C{tests/test_http11.py} fails if
    Twisted changes them.
    """
    if transport.dataBuffer or transport._tempDataBuffer or transport.disconnecting:
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        # Twisted's own write path reports the error as a lost connection.
        transport.write(data)
        return
    if sent < len(data):
        transport.write(data[sent:])


def accessLogOf(site: Site) -> Callable[[], tuple[Optional[IO[str]], Optional[str]]]:
    """
    Where C{site} writes its access log now, and the date string it caches
    (once a second): the one place that reads Twisted's private
    C{Site._logFile} and C{Site._logDateTime}; C{tests/test_http11.py} fails
    if Twisted changes them.
    """

    def current() -> tuple[Optional[IO[str]], Optional[str]]:
        return site._logFile, site._logDateTime  # type: ignore[return-value]

    return current


def _escape(value: str) -> str:
    """
    As Twisted escapes the fields of its combined log format.
    """
    if value.isascii() and value.isprintable() and '"' not in value:
        if "\\" not in value:
            return value
    text = repr(value.encode("latin-1"))[2:-1]
    return text.replace('"', '\\"').replace("\\'", "'")


_METHODS = {
    m: m.decode("ascii")
    for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")
}

_STATUS = {
    400: b"Bad Request",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}

_NO_BODY = frozenset({204, 304})


class _Rejected(Exception):
    """
    The request breaks a limit: answer C{code} and close.
    """

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class HTTP11Factory:
    """
    Builds the fast path's connections for one WSGI application; shared by
    them (the clock, the limits, the access log).

    @ivar container: The application, its threads and flusher.
    @ivar owner: Tracks and counts the connections (L{Owner}).
    @ivar limits: What a request may be.
    @ivar timeout: Seconds a connection may stay idle (no request being
        answered, nothing received); L{None}: forever.
    @ivar now: The time, updated once a second while connections are open.
    @ivar connections: The connections open now.
    """

    def __init__(
        self,
        container: WSGIApplication,
        owner: Owner,
        site: Site,
        *,
        limits: Limits = Limits(),
        health: tuple[bytes, HealthAnswer] | None = None,
        reactor: Any = None,
    ) -> None:
        if httptools is None:
            raise RuntimeError("the fast HTTP path needs httptools")
        if reactor is None:
            reactor = container._reactor
        self.container = container
        self.owner = owner
        self.limits = limits
        self.health = health
        self.timeout: float | None = site.timeOut
        self.reactor = reactor
        self.accessLog = accessLogOf(site)
        self.base = container._base
        self.submit = container.threads.submit
        self.application = container.application
        self.callFromThread = container.threads.callFromThread
        self.callAfterJob = container.threads.callAfterJob
        self.flusher = container._flusher
        self.connections: set[HTTP11Connection] = set()
        self.now = 0.0
        self.date = b""
        self._tick = LoopingCall(self._everySecond)
        self._tick.clock = reactor

    def __call__(self, addr: IAddress) -> HTTP11Connection:
        """
        A new connection.
        """
        if not self._tick.running:
            self._tick.start(1.0, now=True)
        connection = HTTP11Connection(self)
        self.connections.add(connection)
        return connection

    def lost(self, connection: HTTP11Connection) -> None:
        """
        A connection is gone.
        """
        self.connections.discard(connection)
        if not self.connections and self._tick.running:
            self._tick.stop()

    def _everySecond(self) -> None:
        now = self.now = self.reactor.seconds()
        self.date = (
            b"Date: " + datetimeToString(now) + b"\r\nServer: " + version + b"\r\n"
        )
        timeout = self.timeout
        if timeout is None:
            return
        for connection in list(self.connections):
            connection.checkTimeout(now, timeout)


@implementer(IPushProducer)
class HTTP11Connection(TwistedProtocol):
    """
    One HTTP/1.1 connection of the fast path.

    Every attribute is set here, in the constructor, in one order: CPython
    then keeps them inline in the object.
    """

    def __init__(self, factory: HTTP11Factory) -> None:
        self.server = factory
        self.transport: Any = None
        self.connected = 0
        self.sendNow = False
        self.parser = httptools.HttpRequestParser(self)
        self.current: _FastResponse | _HealthCheck | None = None
        self.queue: collections.deque[_FastResponse | _HealthCheck] = (
            collections.deque()
        )
        self.streaming: _FastResponse | None = None
        self.used = False
        self.closing = False
        self.gone = False
        self.queueFull = False
        self.sendBufferFull = False
        self.lastActive = factory.now
        self.timedOutAt = 0.0
        self.rejected = 0
        self.serverName = ""
        self.serverPort = ""
        self.remoteAddr = ""
        self.remotePort = ""
        # The request being received.
        self.receiving = False
        self.inHead = False
        self.headBytes = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.environ: dict[str, Any] | None = None
        self.keepAlive = False
        self.chunkedIn = False
        self.owesContinue = False
        self.body: list[bytes] = []
        self.bodySize = 0
        self.bodyFile: IO[bytes] | None = None

    # --- the connection --------------------------------------------------------

    def connectionMade(self) -> None:
        """
        Note the addresses once for all its requests.
        """
        transport = self.transport
        host = transport.getHost()
        peer = transport.getPeer()
        hostName = getattr(host, "host", None)
        self.serverName = "" if hostName is None else str(hostName)
        port = getattr(host, "port", None)
        self.serverPort = "80" if port is None else str(port)
        address = getattr(peer, "host", None)
        self.remoteAddr = "" if address is None else str(address)
        port = getattr(peer, "port", None)
        self.remotePort = "" if port is None else str(port)
        transport.registerProducer(self, True)
        self.sendNow = canSendNow(transport)

    def dataReceived(self, data: bytes) -> None:
        """
        Parse what arrived; requests that are complete are answered in turn.
        """
        if self.rejected or self.closing:
            return
        server = self.server
        self.lastActive = server.now
        if self.inHead:
            self.headBytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol switch here: answer what came, then close.
            self.closing = True
            self._pauseReading()
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            self._reject(cause.code if isinstance(cause, _Rejected) else 400)
            return
        except httptools.HttpParserError:
            self._reject(400)
            return
        if self.inHead and self.headBytes > server.limits.headBytes:
            self._reject(431)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        The client went away: the request being answered ends (counted and
        logged as the twisted.web path does), the pipelined ones are dropped.
        """
        self.gone = True
        current, self.current = self.current, None
        self.queue.clear()
        if isinstance(current, _FastResponse):
            current._lostInReactor(reason or Failure(ConnectionError()))
            self._ended(current, aborted=True)
        bodyFile, self.bodyFile = self.bodyFile, None
        if bodyFile is not None:
            bodyFile.close()
        self.server.lost(self)
        self.server.owner.release(self)

    def checkTimeout(self, now: float, timeout: float) -> None:
        """
        Close if idle (nothing being answered) for longer than C{timeout};
        abort if that close has not happened in L{ABORT_TIMEOUT}.
        """
        if self.transport is None:
            return
        if self.timedOutAt:
            if now - self.timedOutAt > ABORT_TIMEOUT:
                self.transport.abortConnection()
        elif self.current is None and now - self.lastActive > timeout:
            self.timedOutAt = now
            self.transport.loseConnection()

    # IPushProducer: the connection's send buffer.

    def pauseProducing(self) -> None:
        """
        The send buffer is full: stop reading (so no more requests come in)
        and pause the streamed response.
        """
        self.sendBufferFull = True
        if not self.gone:
            self.transport.pauseProducing()
        if self.streaming is not None:
            self.streaming.pauseProducing()

    def resumeProducing(self) -> None:
        """
        The send buffer has room again.
        """
        self.sendBufferFull = False
        if self.streaming is not None:
            self.streaming.resumeProducing()
        self._resumeReading()

    def stopProducing(self) -> None:
        """
        The connection is going.
        """
        if self.streaming is not None:
            self.streaming.stopProducing()

    def _pauseReading(self) -> None:
        self.queueFull = True
        self.transport.pauseProducing()

    def _resumeReading(self) -> None:
        if not self.sendBufferFull and not self.gone and not self.closing:
            if self.queueFull and len(self.queue) < PIPELINE_DEPTH:
                self.queueFull = False
            if not self.queueFull:
                self.transport.resumeProducing()

    # --- httptools' callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        self.receiving = True
        self.inHead = True
        self.headBytes = 0
        self.url = b""
        self.headers = []
        self.body = []
        self.bodySize = 0

    def on_url(self, url: bytes) -> None:
        url = self.url = self.url + url
        if len(url) > self.server.limits.requestLine:
            raise _Rejected(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        headers.append((name, value))
        limits = self.server.limits
        if (
            len(headers) > limits.requestFields
            or len(name) + len(value) > limits.requestFieldSize
        ):
            raise _Rejected(431)

    def on_headers_complete(self) -> None:
        self.inHead = False
        parser = self.parser
        version = parser.get_http_version()
        self.keepAlive = version == "1.1" and parser.should_keep_alive()
        method = parser.get_method()
        env = self.server.base.copy()
        url = self.url
        mark = url.find(b"?")
        if mark >= 0:
            path, query = url[:mark], url[mark + 1 :]
        else:
            path, query = url, b""
        if path[:1] != b"/":
            path, query = _absolutePath(url)
        env["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path else path).decode(
            "latin-1"
        )
        env["QUERY_STRING"] = query.decode("latin-1")
        env["REQUEST_METHOD"] = _METHODS.get(method) or method.decode("latin-1")
        env["SERVER_PROTOCOL"] = "HTTP/1.1" if version == "1.1" else "HTTP/" + version
        env["wsgi.url_scheme"] = "http"
        env["SERVER_PORT"] = self.serverPort
        env["REMOTE_ADDR"] = self.remoteAddr
        env["REMOTE_PORT"] = self.remotePort
        chunked = False
        expect = None
        for name, value in self.headers:
            key = environKey(name)
            if key is None:
                continue
            text = value.decode("latin-1")
            if key in env:
                env[key] = env[key] + "," + text
            else:
                env[key] = text
            if key == "HTTP_TRANSFER_ENCODING":
                chunked = True
            elif key == "HTTP_EXPECT":
                expect = text
        host = env.get("HTTP_HOST")
        env["SERVER_NAME"] = self.serverName if host is None else _hostName(host)
        self.environ = env
        self.chunkedIn = chunked
        limit = self.server.limits.requestBody
        length = env.get("CONTENT_LENGTH")
        if limit and length is not None and length.isdigit() and int(length) > limit:
            raise _Rejected(413)
        if (
            expect is not None
            and version == "1.1"
            and expect.lower() == "100-continue"
            and not parser.should_upgrade()
        ):
            if self.current is None and not self.queue:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:
                self.owesContinue = True

    def on_body(self, data: bytes) -> None:
        size = self.bodySize = self.bodySize + len(data)
        limit = self.server.limits.requestBody
        if limit and size > limit:
            raise _Rejected(413)
        bodyFile = self.bodyFile
        if bodyFile is not None:
            bodyFile.write(data)
            return
        self.body.append(data)
        if size > SPOOL_BYTES:
            bodyFile = self.bodyFile = tempfile.TemporaryFile()
            bodyFile.writelines(self.body)
            self.body = []

    def on_message_complete(self) -> None:
        self.receiving = False
        self.owesContinue = False
        env = self.environ
        assert env is not None
        self.environ = None
        bodyFile = self.bodyFile
        content: IO[bytes]
        if bodyFile is not None:
            self.bodyFile = None
            bodyFile.seek(0)
            content = bodyFile
        else:
            body = self.body
            content = BytesIO(body[0] if len(body) == 1 else b"".join(body))
        if self.chunkedIn and "CONTENT_LENGTH" not in env:
            env["CONTENT_LENGTH"] = str(self.bodySize)
        env["wsgi.input"] = content
        self.used = True
        server = self.server
        head = env["REQUEST_METHOD"] == "HEAD"
        health = server.health
        item: _FastResponse | _HealthCheck
        if health is not None and health[0] == self.url.partition(b"?")[0]:
            item = _HealthCheck(self.keepAlive, head)
        else:
            item = _FastResponse(self, env, self.url, head, self.keepAlive)
        if self.current is None:
            self._start(item)
        else:
            self.queue.append(item)
            if len(self.queue) >= PIPELINE_DEPTH and not self.queueFull:
                self._pauseReading()

    # --- answering ---------------------------------------------------------------

    def _start(self, item: _FastResponse | _HealthCheck) -> None:
        self.current = item
        if isinstance(item, _HealthCheck):
            self._answerHealth(item)
            return
        self.server.owner.stats.requestBegan()
        item.counted = True
        if self.server.owner.timed:
            item.began = monotonic()
        self.server.submit(item.run)

    def _persistent(self, keepAlive: bool) -> bool:
        """
        Whether the connection stays open after the response whose headers
        are being written: not once it should close, nor during a drain when
        no request is pipelined behind this one.
        """
        if not keepAlive or self.closing:
            return False
        if self.server.owner.drain is not None and not self.queue:
            return self.receiving
        return True

    def _head(
        self,
        status: tuple[int, bytes, list[tuple[bytes, bytes]]],
        response: _FastResponse,
        size: int | None,
    ) -> bytes:
        """
        The status line and headers; C{size} is the body's length if it is
        all there (L{None}: streamed).  Decides whether the connection
        stays open (C{response.persistent}) and how the body is framed.
        """
        code, reason, headers = status
        persistent = self._persistent(response.keepAlive)
        lines = [
            (
                b"HTTP/1.1 %d %s\r\n"
                if response.environ["SERVER_PROTOCOL"] == "HTTP/1.1"
                else b"HTTP/1.0 %d %s\r\n"
            )
            % (code, reason)
        ]
        add = lines.append
        hasLength = False
        saysClose = False
        for name, value in headers:
            size_ = len(name)
            if size_ == 14 and name.lower() == b"content-length":
                hasLength = True
            elif size_ == 10 and name.lower() == b"connection":
                if value.lower() == b"close":
                    saysClose = True
                    persistent = False
            add(b"%s: %s\r\n" % (name, value))
        noBody = code in _NO_BODY or code < 200
        if not hasLength and not noBody:
            if size is not None:
                if size or not response.head:
                    add(b"Content-Length: %d\r\n" % size)
            elif response.head:
                pass
            elif response.environ["SERVER_PROTOCOL"] == "HTTP/1.1":
                response.chunked = True
                add(b"Transfer-Encoding: chunked\r\n")
            else:
                persistent = False
        if not persistent and not saysClose:
            add(b"Connection: close\r\n")
        add(self.server.date)
        add(b"\r\n")
        response.persistent = persistent
        response.code = code
        response.noBody = noBody or response.head
        return b"".join(lines)

    def complete(
        self,
        response: _FastResponse,
        status: tuple[int, bytes, list[tuple[bytes, bytes]]],
        chunks: list[bytes],
        size: int,
    ) -> None:
        """
        The whole response is there: write it at once.
        """
        head = self._head(status, response, size)
        if response.noBody or not chunks:
            data = head
            size = 0
        elif len(chunks) == 1:
            data = head + chunks[0]
        else:
            data = head + b"".join(chunks)
        if self.sendNow:
            sendNow(self.transport, data)
        else:
            self.transport.write(data)
        response.sentBytes = size
        self._done(response)

    def stream(
        self,
        response: _FastResponse,
        status: tuple[int, bytes, list[tuple[bytes, bytes]]],
    ) -> None:
        """
        A streamed response begins: its head goes out with its first block.
        """
        response.pendingHead = self._head(status, response, None)
        self.streaming = response
        if self.sendBufferFull:
            response.pauseProducing()

    def send(self, response: _FastResponse, chunks: list[bytes]) -> None:
        """
        Blocks of a streamed response.
        """
        out: list[bytes] = []
        if response.pendingHead:
            out.append(response.pendingHead)
            response.pendingHead = b""
        if not response.noBody:
            if response.chunked:
                for chunk in chunks:
                    out += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
            else:
                out += chunks
            response.sentBytes += sum(map(len, chunks))
        if out:
            self.transport.writeSequence(out)

    def endStream(self, response: _FastResponse, chunks: list[bytes]) -> None:
        """
        The last blocks of a streamed response.
        """
        self.send(response, chunks)
        if response.chunked:
            self.transport.write(b"0\r\n\r\n")
        self.streaming = None
        self._done(response)

    def error(self, response: _FastResponse) -> None:
        """
        The application failed before its response began: 500.
        """
        self.complete(
            response,
            (500, b"Internal Server Error", [(b"Content-Type", b"text/plain")]),
            [ERROR_BODY],
            len(ERROR_BODY),
        )

    def _answerHealth(self, check: _HealthCheck) -> None:
        health = self.server.health
        assert health is not None
        code, body = health[1]()
        persistent = self._persistent(check.keepAlive)
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
            b"Cache-Control: no-store\r\nContent-Length: %d\r\n%s%s\r\n"
            % (
                code,
                b"OK" if code == 200 else b"Service Unavailable",
                len(body),
                b"" if persistent else b"Connection: close\r\n",
                self.server.date,
            )
        )
        self.transport.write(head if check.head else head + body)
        self.current = None
        self._next(persistent)

    def _ended(self, response: _FastResponse, aborted: bool = False) -> None:
        """
        Count a response that was begun as sent (or C{aborted}: its client
        went away first), and write its log line.
        """
        if not response.counted:
            return
        response.counted = False
        stats = self.server.owner.stats
        if aborted:
            stats.responseAborted(response.sentBytes)
            response.code = ABORTED_STATUS
        elif response.began:
            stats.responseSent(
                response.code, monotonic() - response.began, response.sentBytes
            )
        else:
            # Not timed (no metrics): the twisted.web path's counting.
            stats.completed += 1
            stats.bytesSent += response.sentBytes
        logFile, date = self.server.accessLog()
        if logFile is not None:
            env = response.environ
            logFile.write(
                '"%s" - - %s "%s %s %s" %d %s "%s" "%s"\n'  # noqa: UP031
                % (
                    self.remoteAddr or "-",
                    date,
                    _escape(env["REQUEST_METHOD"]),
                    _escape(response.uri.decode("latin-1")),
                    env["SERVER_PROTOCOL"],
                    response.code,
                    response.sentBytes or "-",
                    _escape(env.get("HTTP_REFERER", "-")),
                    _escape(env.get("HTTP_USER_AGENT", "-")),
                )
            )

    def _done(self, response: _FastResponse) -> None:
        self.current = None
        if self.streaming is response:
            self.streaming = None
        self._ended(response)
        self._next(response.persistent)

    def _next(self, persistent: bool) -> None:
        """
        A response is out: close, or answer the next request.
        """
        if self.gone:
            return
        if not persistent:
            self.closing = True
            self.queue.clear()
            self.transport.unregisterProducer()
            self.transport.loseConnection()
            return
        self.lastActive = self.server.now
        if self.queue:
            self._start(self.queue.popleft())
            if self.queueFull:
                self._resumeReading()
            return
        if self.rejected:
            self._sendRejection()
            return
        if self.owesContinue:
            self.owesContinue = False
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._resumeReading()

    def _reject(self, code: int) -> None:
        """
        Answer C{code} once the responses before it are out, then close.
        """
        self.rejected = code
        self.receiving = False
        self.inHead = False
        self.transport.pauseProducing()
        if self.current is None and not self.queue:
            self._sendRejection()

    def _sendRejection(self) -> None:
        code = self.rejected
        body = b"%d %s\n" % (code, _STATUS[code])
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n%s\r\n%s"
            % (code, _STATUS[code], len(body), self.server.date, body)
        )
        self.closing = True
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    # --- the drain (see txsdnotify.web.tracking.OwnConnection) --------------------

    def drainBegan(self) -> bool:
        """
        Close if idle; otherwise close after what is being answered (the
        response's headers, written later, will say so).  Whether it waits
        for the drain's grace.
        """
        if self.current is not None:
            return False
        if self.receiving or not self.used:
            return True
        self.drainClose()
        return False

    def drainBusy(self) -> bool:
        """
        Whether a request is being answered.
        """
        return self.current is not None

    def drainIdle(self) -> bool:
        """
        Whether it has answered a request and waits for the next: nothing
        being answered, no byte of a request arrived (which the drain's idle
        grace keeps open; a request that arrives in it is answered with
        C{Connection: close}).
        """
        return (
            self.used
            and self.current is None
            and not self.receiving
            and not self.closing
        )

    def drainClose(self) -> None:
        """
        Close now if nothing is being answered.
        """
        if self.current is None and not self.gone:
            self.closing = True
            self.transport.unregisterProducer()
            self.transport.loseConnection()


class _HealthCheck:
    """
    A health check waiting its turn on a connection.
    """

    __slots__ = ("keepAlive", "head")

    def __init__(self, keepAlive: bool, head: bool) -> None:
        self.keepAlive = keepAlive
        self.head = head


class _FastResponse(ResponseBase):
    """
    A WSGI response carried by an L{HTTP11Connection}.
    """

    def __init__(
        self,
        connection: HTTP11Connection,
        environ: dict[str, Any],
        uri: bytes,
        head: bool,
        keepAlive: bool,
    ) -> None:
        server = connection.server
        super().__init__(
            server.application,
            server.callFromThread,
            server.flusher,
            environ,
            server.callAfterJob,
        )
        self.connection = connection
        self.uri = uri
        self.head = head
        self.keepAlive = keepAlive
        self.persistent = False
        self.counted = False
        self.began = 0.0
        self.code = 200
        self.sentBytes = 0
        self.chunked = False
        self.noBody = False
        self.pendingHead = b""

    def _completeInReactor(
        self,
        status: tuple[int, bytes, list[tuple[bytes, bytes]]],
        chunks: list[bytes],
        size: int,
    ) -> None:
        if not self.gone:
            self.connection.complete(self, status, chunks, size)

    def _streamInReactor(
        self,
        status: tuple[int, bytes, list[tuple[bytes, bytes]]],
        chunks: list[bytes],
        size: int,
    ) -> None:
        if self.gone:
            return
        self.connection.stream(self, status)
        self._writeInReactor(chunks, size)

    def _sendChunks(self, chunks: list[bytes]) -> None:
        self.connection.send(self, chunks)

    def _endStreamInReactor(self, chunks: list[bytes], size: int) -> None:
        if not self.gone:
            self.connection.endStream(self, chunks)

    def _sendError(self) -> None:
        self.connection.error(self)

    def _dropConnection(self) -> None:
        connection = self.connection
        connection.closing = True
        if connection.transport is not None:
            connection.transport.abortConnection()


def _absolutePath(url: bytes) -> tuple[bytes, bytes]:
    """
    The path and query of a request target in absolute form
    (C{http://host/path?query}); C{*} stays as it is.
    """
    if url == b"*":
        return url, b""
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        raise _Rejected(400) from None
    return parsed.path or b"/", parsed.query or b""


def _hostName(host: str) -> str:
    """
    The name in a C{Host} header, without its port (as Twisted's
    C{getRequestHostname}).
    """
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    return host.partition(":")[0]
