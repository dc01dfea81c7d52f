# -*- test-case-name: tests.test_demo -*-
"""
The page C{twistd -n sdweb} serves when it is given nothing else to serve.
"""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import Request

__all__ = ["DemoPage"]

_PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>txsdnotify sdweb</title></head>
<body>
<h1>It works: txsdnotify sdweb is serving.</h1>
<p>This is the demo page of <code>twistd -n sdweb</code>.
Serve your own site with <code>--path DIR</code>,
<code>--wsgi module.app</code>, <code>--class module.Resource</code>
or <code>--resource-script file.rpy</code>; see <code>twistd sdweb --help</code>.</p>
<p>Under systemd, <code>systemctl status</code> shows this server's request figures.</p>
</body>
</html>
"""


class DemoPage(Resource):
    """
    One static HTML page, served at every path.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        """
        The page.
        """
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return _PAGE

    def render_HEAD(self, request: Request) -> bytes:
        """
        The page's headers, without the page (a body returned for HEAD is
        logged by twisted.web as an error of ours).
        """
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-length", b"%d" % len(_PAGE))
        return b""
