"""
A resource answering with the id of the process that served the request
(C{pid N}), with 200, or with 404 under /missing: mixed status codes for the
metrics tests.
"""

from __future__ import annotations

import os

from twisted.web.resource import Resource


class Codes(Resource):
    """
    C{pid N}; 404 for any path under /missing.
    """

    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        if request.path.startswith(b"/missing"):
            request.setResponseCode(404)
        return b"pid %d\n" % (os.getpid(),)
