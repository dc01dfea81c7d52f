"""
A resource answering with the id of the process that served the request,
for the --workers tests; /slow?s=SECONDS answers after that long,
/block?s=SECONDS too but blocking the reactor meanwhile.
"""

from __future__ import annotations

import os
import time

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET


class Pid(Resource):
    """
    Answers C{pid N}; /slow?s=S answers it after S seconds; /stream?s=S
    sends it at once and finishes with C{done} after S seconds (so a client
    knows which worker serves it while the request is still in flight);
    /block?s=S sleeps S seconds in the render, blocking the reactor (a slow
    synchronous render), after creating the file C{mark=PATH} if given.
    """

    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        body = b"pid %d\n" % (os.getpid(),)
        if request.path == b"/block":
            for mark in request.args.get(b"mark", []):
                open(mark, "wb").close()
            time.sleep(float(request.args.get(b"s", [b"2"])[0]))
            return body
        if request.path == b"/slow":
            delay = float(request.args.get(b"s", [b"2"])[0])

            def answer() -> None:
                if not request._disconnected:
                    request.write(body)
                    request.finish()

            reactor.callLater(delay, answer)
            return NOT_DONE_YET
        if request.path == b"/stream":
            delay = float(request.args.get(b"s", [b"2"])[0])
            request.write(body)

            def finish() -> None:
                if not request._disconnected:
                    request.write(b"done\n")
                    request.finish()

            reactor.callLater(delay, finish)
            return NOT_DONE_YET
        return body


def wsgi(environ, start_response):  # type: ignore[no-untyped-def]
    """
    L{Pid} as a WSGI application (for the fast HTTP path with workers).
    """
    import time
    from urllib.parse import parse_qs

    body = b"pid %d\n" % (os.getpid(),)
    delay = float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["2"])[0])
    start_response("200 OK", [("Content-Type", "text/plain")])
    path = environ["PATH_INFO"]
    if path == "/slow":
        time.sleep(delay)
        return [body]
    if path == "/stream":

        def stream():  # type: ignore[no-untyped-def]
            yield body
            time.sleep(delay)
            yield b"done\n"

        return stream()
    return [body]
