"""
The options and service of "twistd myapp".
"""

from twisted.python import usage
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from txsdnotify import WebService


class Options(usage.Options):
    optParameters = [
        ["port", "p", "tcp:8080", "Where to listen (an strports description)."],
        ["drain-timeout", None, 30.0, "Seconds to drain on stop.", float],
    ]


def makeService(options):
    root = Resource()
    root.putChild(b"", Data(b"myapp is running\n", "text/plain"))
    return WebService(
        Site(root), [options["port"]], drainTimeout=options["drain-timeout"]
    )
