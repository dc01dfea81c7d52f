"""
WSGI applications for tests/test_wsgi.py, one per path of L{app}.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

StartResponse = Callable[..., Any]

BLOCK = b"x" * 65536


def _query(environ: dict[str, Any], name: str, default: str) -> str:
    for part in environ.get("QUERY_STRING", "").split("&"):
        key, _, value = part.partition("=")
        if key == name:
            return value
    return default


def hello(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\n"]


def raiseEarly(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    raise ValueError("raised before start_response")


def raiseStreaming(
    environ: dict[str, Any], start_response: StartResponse
) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    for _ in range(4):  # more than is buffered: the response is under way
        yield BLOCK
    raise ValueError("raised while streaming")


def big(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
    """
    ?mb=N megabytes of x, streamed in fresh 64 KiB blocks, with no
    Content-Length.
    """
    blocks = int(_query(environ, "mb", "1")) * 16
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    for _ in range(blocks):
        yield BLOCK[:-1] + b"x"


def echo(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """
    Read wsgi.input in small pieces to its end; answer its length and
    SHA-256 (and CONTENT_LENGTH) as JSON.
    """
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    length = 0
    while True:
        piece = stream.read(8192)
        if not piece:
            break
        digest.update(piece)
        length += len(piece)
    body = json.dumps(
        {
            "length": length,
            "sha256": digest.hexdigest(),
            "CONTENT_LENGTH": environ.get("CONTENT_LENGTH"),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def remote(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """
    The peer and server variables, as JSON.
    """
    names = ["REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT"]
    body = json.dumps({k: environ.get(k) for k in names}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def showEnviron(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """
    The request's HTTP_ variables and wsgi.input_terminated, as JSON.
    """
    shown = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    shown["wsgi.input_terminated"] = environ.get("wsgi.input_terminated")
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(shown).encode()]


def block(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """
    Stuck in application code for ?s= seconds (default: very long).
    """
    environ["wsgi.errors"].write("wsgiapps: blocking now\n")
    environ["wsgi.errors"].flush()
    time.sleep(float(_query(environ, "s", "100000")))
    start_response("200 OK", [])
    return [b"unblocked\n"]


def chunks(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
    """
    ?n=N numbered lines, one a block.
    """
    count = int(_query(environ, "n", "10"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(count):
        yield b"%d\n" % i


def writer(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """
    Two blocks through the write() callable, then one in the iterable.
    """
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written 1\n")
    write(b"written 2\n")
    return [b"returned\n"]


def file(environ: dict[str, Any], start_response: StartResponse) -> Any:
    """
    The file ?path= through wsgi.file_wrapper, in 8 KiB blocks.
    """
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    wrapper = environ["wsgi.file_wrapper"]
    return wrapper(open(_query(environ, "path", ""), "rb"), 8192)


ROUTES = {
    "/write": writer,
    "/file": file,
    "/": hello,
    "/raise-early": raiseEarly,
    "/raise-streaming": raiseStreaming,
    "/big": big,
    "/echo": echo,
    "/remote": remote,
    "/environ": showEnviron,
    "/block": block,
    "/chunks": chunks,
}


def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
    """
    Dispatch on PATH_INFO.
    """
    route = ROUTES.get(environ["PATH_INFO"])
    if route is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    return route(environ, start_response)
