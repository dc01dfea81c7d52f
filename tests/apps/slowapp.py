"""
Test applications: resources and a WSGI app that answer slowly or stream,
for the drain tests.  Importable by twistd from tests/apps.
"""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET


class Slow(Resource):
    """
    /slow?s=SECONDS answers after that long (default 2); /stream?n=N&s=S
    writes N chunks S seconds apart; anything else answers at once; a POST
    is answered with the length of its body.
    """

    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        path = request.path
        if path == b"/slow":
            delay = float(request.args.get(b"s", [b"2"])[0])

            def answer() -> None:
                if not request._disconnected:
                    request.write(b"slow done\n")
                    request.finish()

            reactor.callLater(delay, answer)
            return NOT_DONE_YET
        if path == b"/stream":
            count = int(request.args.get(b"n", [b"5"])[0])
            delay = float(request.args.get(b"s", [b"0.3"])[0])

            def chunk(i: int) -> None:
                if request._disconnected:
                    return
                request.write(b"chunk %d\n" % (i,))
                if i + 1 < count:
                    reactor.callLater(delay, chunk, i + 1)
                else:
                    request.finish()

            chunk(0)
            return NOT_DONE_YET
        if path == b"/block":
            time.sleep(float(request.args.get(b"s", [b"1000"])[0]))
        return b"fast\n"

    def render_POST(self, request):  # type: ignore[no-untyped-def]
        """
        Any POST: how many body bytes arrived.
        """
        return b"got %d bytes\n" % len(request.content.read())


def wsgi(environ, start_response):  # type: ignore[no-untyped-def]
    """
    A plain WSGI app: /slow?s=SECONDS sleeps in its thread, then answers.
    """
    if environ.get("PATH_INFO") == "/slow":
        qs = environ.get("QUERY_STRING", "")
        delay = float(qs.split("s=", 1)[1]) if "s=" in qs else 2.0
        time.sleep(delay)
        body = b"wsgi slow done\n"
    else:
        body = b"wsgi fast\n"
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]
