# -*- test-case-name: tests.test_wsgi -*-
"""
sdweb's WSGI container: L{WSGIApplication}, a twisted.web resource that
serves a PEP 3333 application from a pool of threads.

The application runs in a thread and its response body is buffered there;
a typical response reaches the reactor in one hand-off, with its status,
headers and whole body.  A body larger than L{BUFFER_BYTES}, or one whose
application keeps the server waiting longer than L{FLUSH_DELAY} for its next
block, is streamed instead: in blocks of up to L{BUFFER_BYTES}, the thread
waiting while the connection's send buffer is full, so that memory stays
bounded whatever the size of the response.  See docs/wsgi.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Optional

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from txsdnotify.wsgi.environ import FileWrapper, baseEnviron, requestEnviron
from txsdnotify.wsgi.flush import FLUSH_DELAY, Flusher
from txsdnotify.wsgi.threads import RequestThreads

__all__ = [
    "BUFFER_BYTES",
    "ERROR_BODY",
    "FLUSH_DELAY",
    "FileWrapper",
    "ResponseBase",
    "WSGIApplication",
]

BUFFER_BYTES = 64 * 1024
"""
The most body a response buffers in its thread, and the most handed to the
reactor and not yet written to the connection.
"""

_log = Logger(namespace="txsdnotify.wsgi.container")

ExcInfo = tuple[type[BaseException], BaseException, Optional[TracebackType]]
StartResponse = Callable[..., Callable[[bytes], None]]
Application = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_NO_BODY = frozenset({204, 304})
ERROR_BODY = b"Internal Server Error\n"


class WSGIApplication(Resource):
    """
    Serves a WSGI application (PEP 3333) at this resource and every path
    below it.

    @ivar application: The WSGI application.
    @ivar threads: The threads it runs in (started as requests come);
        C{threads.waiting} is how many requests wait for one.
    """

    isLeaf = True

    def __init__(
        self,
        application: Application,
        threads: RequestThreads | None = None,
        reactor: Any = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.application = application
        if threads is None:
            threads = RequestThreads(reactor=reactor)
        self.threads = threads
        reactor.addSystemEventTrigger("after", "shutdown", threads.stop)
        self._reactor = reactor
        self._flusher = Flusher()
        self._base = baseEnviron(reactor)

    def getChildWithDefault(self, name: bytes, request: Request) -> Resource:
        """
        Serve every path below: undo the traversal step that led here (when
        this resource is not the root of traversal).
        """
        assert request.prepath is not None and request.postpath is not None
        request.postpath.insert(0, request.prepath.pop())
        return self

    def render(self, request: Request) -> object:
        """
        Hand the request to a thread; the response follows.
        """
        response = _Response(self, request, requestEnviron(self._base, request))
        self.threads.submit(response.run)
        return NOT_DONE_YET


class _ClientGone(Exception):
    """
    The client went away; the application's output goes nowhere.
    """


def _applyHeaders(
    request: Request, status: tuple[int, bytes, list[tuple[bytes, bytes]]]
) -> bool:
    """
    Set the status and headers on the request; whether the application
    gave a Content-Length.
    """
    code, reason, headers = status
    request.setResponseCode(code, reason)
    add = request.responseHeaders.addRawHeader
    hasLength = False
    for name, value in headers:
        if not hasLength and name.lower() == b"content-length":
            hasLength = True
        add(name, value)
    return hasLength


def _abort(request: Request) -> None:
    """
    Drop the connection of a response that cannot be completed, so that the
    client sees it as broken.
    """
    channel: Any = request.channel
    abort = getattr(channel, "abortConnection", None)  # HTTP/2 streams have it
    if abort is None:
        abort = channel.transport.abortConnection
    abort()


@implementer(IPushProducer)
class ResponseBase:
    """
    One request's trip through a thread and back, whatever HTTP carries it.

    Thread side: L{run}, L{startResponse}, L{write}.  Reactor side: the
    methods ending in C{InReactor}, and the producer methods; a subclass
    says how a response goes out (L{_completeInReactor},
    L{_streamInReactor}, L{_sendChunks}, L{_endStreamInReactor},
    L{_sendError}, L{_dropConnection}) and what the log calls it (L{uri}).
    """

    uri: bytes = b""

    def __init__(
        self,
        application: Application,
        callFromThread: Callable[..., object],
        flusher: Flusher,
        environ: dict[str, Any],
        callAfterJob: Callable[..., object] | None = None,
    ) -> None:
        self.environ = environ
        self._application = application
        self._callFromThread = callFromThread
        self._callAfterJob = callFromThread if callAfterJob is None else callAfterJob
        self._flusher = flusher
        self.status: tuple[int, bytes, list[tuple[bytes, bytes]]] | None = None
        self.buffer: list[bytes] = []
        self.size = 0
        self.since = 0.0
        self.sent = False  # the status and headers went to the reactor
        self.gone = False  # the client disconnected
        self.failed = False  # an error response is under way
        self.lock: threading.Lock | None = None  # set while the flusher watches
        self.paused = False
        self.inFlight = 0
        self._cond: threading.Condition | None = None

    # --- the thread side ------------------------------------------------------

    def startResponse(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        """
        PEP 3333's C{start_response}.
        """
        if exc_info is not None:
            lock = self.lock
            if lock is not None:
                lock.acquire()
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
                # An error page replaces what was buffered.
                self.buffer, self.size = [], 0
            finally:
                exc_info = None
                if lock is not None:
                    lock.release()
        elif self.status is not None:
            raise RuntimeError("start_response was already called")
        if not isinstance(status, str):
            raise TypeError(f"status must be str, not {type(status).__name__}")
        codeText, _, reason = status.partition(" ")
        if len(codeText) != 3 or not codeText.isdigit():
            raise ValueError(f"bad status {status!r}")
        try:
            encoded = [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in headers
            ]
        except (AttributeError, ValueError, TypeError) as e:
            raise TypeError(f"headers must be a list of (str, str): {e}") from e
        for name, value in encoded:
            if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name:
                raise ValueError(f"newline in header {name!r}")
        self.status = (int(codeText), reason.encode("latin-1"), encoded)
        return self.write

    def write(self, data: bytes) -> None:
        """
        PEP 3333's C{write()} callable.
        """
        if self.status is None:
            raise RuntimeError("write() before start_response")
        if not isinstance(data, bytes):
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        if self.gone:
            raise OSError("the client disconnected")
        self._add(data, watch=True)

    def run(self) -> None:
        """
        Call the application and deliver its response (in a thread).
        """
        result: Iterable[bytes] | None = None
        try:
            result = self._application(self.environ, self.startResponse)
            if type(result) is list or type(result) is tuple:
                for chunk in result:
                    self._add(chunk, watch=False)
            else:
                for chunk in result:
                    self._add(chunk, watch=True)
                    if self.gone:
                        break
        except BaseException as e:
            self._closeResult(result)
            self._failed(e)
            return
        if self._closeResult(result):
            self._finish()

    def _closeResult(self, result: Iterable[bytes] | None) -> bool:
        """
        Call the iterable's C{close()}; log what it raises.  Whether all went
        well.
        """
        close = getattr(result, "close", None)
        if close is None:
            return True
        try:
            close()
        except BaseException as e:
            self._failed(e)
            return False
        return True

    def _add(self, chunk: bytes, watch: bool) -> None:
        """
        Buffer a block of the body; stream what is buffered once it is too
        much; from the second block of an iterator on, have the flusher
        watch, since the application may keep us waiting.
        """
        if type(chunk) is not bytes:
            raise TypeError(f"the body must be bytes, not {type(chunk).__name__}")
        if self.status is None:
            raise RuntimeError("a body block before start_response")
        if not chunk:
            return
        lock = self.lock
        if lock is None:
            self.buffer.append(chunk)
            self.size += len(chunk)
            if self.size >= BUFFER_BYTES:
                self._waitWritable()
                self._handOver()
            if watch:
                self.lock = self._flusher.watch(self)
            return
        with lock:
            if not self.buffer:
                self.since = time.monotonic()
            self.buffer.append(chunk)
            self.size += len(chunk)
            full = self.size >= BUFFER_BYTES
        if full:
            self._waitWritable()
            with lock:
                if self.buffer:
                    self._handOver()

    def _waitWritable(self) -> None:
        """
        Wait while the connection has enough to send (or the client is
        gone: then raise L{_ClientGone}).
        """
        cond = self._cond
        if cond is not None:
            with cond:
                while (self.paused or self.inFlight >= BUFFER_BYTES) and not self.gone:
                    cond.wait(1.0)
        if self.gone:
            raise _ClientGone()

    def _handOver(self) -> None:
        """
        Send the buffer to the reactor as a block of a streamed response
        (with the flusher's lock held, if it watches).
        """
        chunks, size = self.buffer, self.size
        self.buffer, self.size = [], 0
        if not self.sent:
            self.sent = True
            self._cond = threading.Condition()
            self.inFlight = size
            assert self.status is not None
            self._callFromThread(self._streamInReactor, self.status, chunks, size)
        else:
            assert self._cond is not None
            with self._cond:
                self.inFlight += size
            self._callFromThread(self._writeInReactor, chunks, size)

    def flushIfSlow(self, now: float) -> None:
        """
        Called by the flusher, with its lock held: send what waits longer
        than L{FLUSH_DELAY}, unless the connection has enough to send.
        """
        if (
            self.buffer
            and now - self.since >= FLUSH_DELAY
            and not self.paused
            and self.inFlight < BUFFER_BYTES
            and not self.gone
        ):
            self._handOver()

    def _finish(self) -> None:
        """
        The whole body is there: complete the response.
        """
        if self.status is None:
            self._failed(RuntimeError("the application did not call start_response"))
            return
        lock = self.lock
        if lock is not None:
            with lock:
                self._flusher.unwatch(self)
                self._finishLocked()
        else:
            self._finishLocked()

    def _finishLocked(self) -> None:
        assert self.status is not None
        chunks, size = self.buffer, self.size
        self.buffer = []
        if self.sent:
            self._callAfterJob(self._endStreamInReactor, chunks, size)
        else:
            self.sent = True
            self._callAfterJob(self._completeInReactor, self.status, chunks, size)

    def _failed(self, error: BaseException) -> None:
        """
        The application (or its iterable's C{close()}) raised: log, and
        answer 500, or drop the connection if the response is under way.
        """
        lock = self.lock
        if lock is not None:
            with lock:
                self._flusher.unwatch(self)
                self.lock = None
        if self.gone:
            return
        failure = Failure(error)
        failure.cleanFailure()
        if self.failed:
            # close() raised after the application did: the response is
            # already an error.
            self._callFromThread(self._logInReactor, failure)
            return
        self.failed = True
        if self.sent:
            self._callFromThread(self._abortInReactor, failure)
        else:
            self.sent = True
            self._callFromThread(self._errorInReactor, failure)

    # --- the reactor side -------------------------------------------------------

    def _completeInReactor(
        self,
        status: tuple[int, bytes, list[tuple[bytes, bytes]]],
        chunks: list[bytes],
        size: int,
    ) -> None:
        """
        Send the whole response: status, headers and body.
        """
        raise NotImplementedError()

    def _streamInReactor(
        self,
        status: tuple[int, bytes, list[tuple[bytes, bytes]]],
        chunks: list[bytes],
        size: int,
    ) -> None:
        """
        Send the status, the headers and a first block of a streamed
        response, registering this response as the producer.
        """
        raise NotImplementedError()

    def _sendChunks(self, chunks: list[bytes]) -> None:
        """
        Send blocks of a streamed response.
        """
        raise NotImplementedError()

    def _endStreamInReactor(self, chunks: list[bytes], size: int) -> None:
        """
        Send the last blocks of a streamed response and end it.
        """
        raise NotImplementedError()

    def _sendError(self) -> None:
        """
        Answer 500 with L{ERROR_BODY}: nothing was sent yet.
        """
        raise NotImplementedError()

    def _dropConnection(self) -> None:
        """
        Drop the connection, so that the client sees the response as broken.
        """
        raise NotImplementedError()

    def _writeInReactor(self, chunks: list[bytes], size: int) -> None:
        if not self.gone:
            self._sendChunks(chunks)
        cond = self._cond
        assert cond is not None
        with cond:
            self.inFlight -= size
            cond.notify()

    def _errorInReactor(self, failure: Failure) -> None:
        self._logInReactor(failure)
        if not self.gone:
            self._sendError()

    def _logInReactor(self, failure: Failure, outcome: str = "") -> None:
        _log.failure(
            "WSGI application error on {method} {uri}{outcome}",
            failure,
            method=self.environ["REQUEST_METHOD"],
            uri=self.uri,
            outcome=outcome,
        )

    def _abortInReactor(self, failure: Failure) -> None:
        self._logInReactor(failure, " while streaming; connection aborted")
        if not self.gone:
            self.gone = True
            self._dropConnection()

    def _lostInReactor(self, reason: Failure) -> None:
        self.gone = True
        cond = self._cond
        if cond is not None:
            with cond:
                cond.notify()

    # IPushProducer: the connection's send buffer

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        cond = self._cond
        if cond is None:
            self.paused = False
            return
        with cond:
            self.paused = False
            cond.notify()

    def stopProducing(self) -> None:
        self._lostInReactor(Failure(_ClientGone()))


class _Response(ResponseBase):
    """
    A response carried by a twisted.web L{Request}.
    """

    def __init__(
        self, container: WSGIApplication, request: Request, environ: dict[str, Any]
    ) -> None:
        super().__init__(
            container.application,
            container._reactor.callFromThread,
            container._flusher,
            environ,
        )
        self.request = request
        self.uri = request.uri
        request.defaultContentType = None
        request.notifyFinish().addErrback(self._lostInReactor)

    def _completeInReactor(
        self,
        status: tuple[int, bytes, list[tuple[bytes, bytes]]],
        chunks: list[bytes],
        size: int,
    ) -> None:
        if self.gone:
            return
        request = self.request
        if (
            not _applyHeaders(request, status)
            and status[0] not in _NO_BODY
            and (size or request.method != b"HEAD")
        ):
            request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % size])
        if chunks:
            request.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        request.finish()

    def _streamInReactor(
        self,
        status: tuple[int, bytes, list[tuple[bytes, bytes]]],
        chunks: list[bytes],
        size: int,
    ) -> None:
        if self.gone:
            return
        request = self.request
        _applyHeaders(request, status)
        request.registerProducer(self, True)
        self._writeInReactor(chunks, size)

    def _sendChunks(self, chunks: list[bytes]) -> None:
        write = self.request.write
        for chunk in chunks:
            write(chunk)

    def _endStreamInReactor(self, chunks: list[bytes], size: int) -> None:
        if self.gone:
            return
        request = self.request
        for chunk in chunks:
            request.write(chunk)
        request.unregisterProducer()
        request.finish()

    def _sendError(self) -> None:
        request = self.request
        request.setResponseCode(500)
        request.responseHeaders.setRawHeaders(b"content-type", [b"text/plain"])
        request.responseHeaders.setRawHeaders(
            b"content-length", [b"%d" % len(ERROR_BODY)]
        )
        request.write(ERROR_BODY)
        request.finish()

    def _dropConnection(self) -> None:
        _abort(self.request)
