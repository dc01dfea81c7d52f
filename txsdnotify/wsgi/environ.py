# -*- test-case-name: tests.test_wsgi -*-
"""
The WSGI environ of a twisted.web request, and the objects in it
(C{wsgi.errors}, C{wsgi.file_wrapper}, an empty C{wsgi.input}).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import IO, Any

from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.web.http import unquote
from twisted.web.server import Request

__all__ = [
    "FILE_BLOCK",
    "absoluteFormSegments",
    "ErrorStream",
    "FileWrapper",
    "baseEnviron",
    "peerEnviron",
    "requestEnviron",
]

FILE_BLOCK = 64 * 1024
"""
The default block size of L{FileWrapper}.
"""

_log = Logger(namespace="txsdnotify.wsgi.container")


class FileWrapper:
    """
    C{wsgi.file_wrapper}: a file's content as an iterable of blocks, read in
    the request's thread.
    """

    def __init__(self, filelike: IO[bytes], blksize: int = FILE_BLOCK) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        size = self.blksize
        while True:
            block = read(size)
            if not block:
                return
            yield block

    def close(self) -> None:
        """
        Close the file, as PEP 3333 asks.
        """
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


class ErrorStream:
    """
    C{wsgi.errors}: what the application writes goes to the log, one event
    per line.
    """

    def __init__(self, reactor: IReactorFromThreads) -> None:
        self._reactor = reactor
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"wsgi.errors takes str, not {type(text).__name__}")
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._reactor.callFromThread(_log.error, "{line}", line=line)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            line, self._partial = self._partial, ""
        if line:
            self._reactor.callFromThread(_log.error, "{line}", line=line)


_headerKeys: dict[bytes, str] = {}


def environKey(name: bytes) -> str | None:
    """
    The environ key of a request header (C{HTTP_X_FOO}); L{None} for a name
    with an underscore, which would be taken for one with a dash.
    """
    key = _headerKeys.get(name)
    if key is None:
        text = name.decode("latin-1")
        if "_" in text:
            return None
        upper = text.upper().replace("-", "_")
        key = upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + upper
        if len(_headerKeys) < 512:
            _headerKeys[name] = key
    return key


def bodyLength(content: IO[bytes]) -> int:
    """
    The length of a seekable request body.
    """
    position = content.tell()
    content.seek(0, 2)
    length = content.tell()
    content.seek(position)
    return length


def peerEnviron(request: Request) -> tuple[str, str]:
    """
    C{REMOTE_ADDR} and C{REMOTE_PORT}: empty for a peer without a host or
    port, as on a C{unix:} listener.
    """
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    return ("" if host is None else str(host), "" if port is None else str(port))


class EmptyInput:
    """
    C{wsgi.input} of a request whose body is gone.
    """

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


def absoluteFormSegments(uri: bytes) -> list[bytes] | None:
    """
    The path segments (unquoted, as Twisted splits an origin-form target) of
    an absolute-form request target, C{http://host/a/b?q} (what proxies send,
    RFC 9112 section 3.2.2): C{[b"a", b"b"]}; the host part is no part of the
    path.  L{None} for a target in another form.
    """
    schemeEnd = uri.find(b"://")
    if schemeEnd <= 0 or b"/" in uri[:schemeEnd]:
        return None
    authorityStart = schemeEnd + 3
    query = uri.find(b"?", authorityStart)
    end = len(uri) if query < 0 else query
    start = uri.find(b"/", authorityStart, end)
    path = b"/" if start < 0 else uri[start:end]
    return [unquote(segment) for segment in path[1:].split(b"/")]


def baseEnviron(reactor: IReactorFromThreads) -> dict[str, Any]:
    """
    The keys every request of one container shares.
    """
    return {
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.errors": ErrorStream(reactor),
        "wsgi.file_wrapper": FileWrapper,
        "wsgi.input_terminated": True,
        "SCRIPT_NAME": "",
    }


def requestEnviron(base: dict[str, Any], request: Request) -> dict[str, Any]:
    """
    The WSGI environment of a request: a copy of C{base} (L{baseEnviron})
    with the request's own keys.
    """
    env = base.copy()
    uri = request.uri
    prepath = request.prepath
    postpath = request.postpath
    if uri[:1] != b"/":
        segments = absoluteFormSegments(uri)
        if segments is not None:
            # Twisted made the segments from the whole target, scheme and
            # host included; keep only how many of them the site consumed.
            consumed = len(prepath) if prepath else 0
            prepath, postpath = segments[:consumed], segments[consumed:]
    if prepath:
        env["SCRIPT_NAME"] = "/" + "/".join(p.decode("latin-1") for p in prepath)
    env["PATH_INFO"] = (
        "/" + "/".join(p.decode("latin-1") for p in postpath) if postpath else ""
    )
    mark = uri.find(b"?")
    env["QUERY_STRING"] = "" if mark < 0 else uri[mark + 1 :].decode("latin-1")
    env["REQUEST_METHOD"] = request.method.decode("latin-1")
    env["SERVER_PROTOCOL"] = request.clientproto.decode("latin-1")
    secure = request.isSecure()
    env["wsgi.url_scheme"] = "https" if secure else "http"
    env["SERVER_NAME"] = request.getRequestHostname().decode("latin-1")
    port = getattr(request.getHost(), "port", None)
    env["SERVER_PORT"] = str(port) if port is not None else ("443" if secure else "80")
    env["REMOTE_ADDR"], env["REMOTE_PORT"] = peerEnviron(request)
    chunked = False
    for name, values in request.requestHeaders.getAllRawHeaders():
        key = environKey(name)
        if key is None:
            continue
        if key == "HTTP_TRANSFER_ENCODING":
            chunked = True
        env[key] = (values[0] if len(values) == 1 else b",".join(values)).decode(
            "latin-1"
        )
    content = request.content
    if content is None:
        content = EmptyInput()
    else:
        content.seek(0)
        if chunked and "CONTENT_LENGTH" not in env:
            env["CONTENT_LENGTH"] = str(bodyLength(content))
    env["wsgi.input"] = content
    return env
