"""
A resource that calls another HTTP service, for the hardened unit tests:
/fetch?port=N answers with what http://localhost:N/ answered (the host name
resolved, the connection made from a thread).
"""

from __future__ import annotations

import urllib.request

from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET


def fetch(port: int) -> bytes:
    with urllib.request.urlopen(f"http://localhost:{port}/", timeout=30) as r:
        return b"fetched " + r.read()


class Outbound(Resource):
    """
    /fetch?port=N fetches http://localhost:N/; anything else answers at once.
    """

    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        if request.path != b"/fetch":
            return b"fast\n"
        port = int(request.args[b"port"][0])

        def answer(body: bytes) -> None:
            request.write(body)
            request.finish()

        def failed(reason):  # type: ignore[no-untyped-def]
            request.setResponseCode(502)
            request.write(repr(reason.value).encode())
            request.finish()

        deferToThread(fetch, port).addCallbacks(answer, failed)
        return NOT_DONE_YET
