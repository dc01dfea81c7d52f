"""
A resource that leaks: each request keeps 200 kB for good, for the
--max-worker-memory tests.  Answers with the id of the process that
served it, as pidapp does.
"""

from __future__ import annotations

import os

from twisted.web.resource import Resource

KEPT: list[bytes] = []


class Leak(Resource):
    """
    Answers C{pid N}, and keeps 200 kB (written, so resident) each time.
    """

    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        KEPT.append(os.urandom(16) * (200 * 1024 // 16))
        return b"pid %d\n" % (os.getpid(),)
