"""
A WebService whose reload has an asynchronous step: its reload hook takes
0.3 s; a connection that sends nothing holds a stop for the 1 s grace.
Run with PORT=N twistd -n --pidfile= -y slowreload.tac
"""

import os

from twisted.application.service import Application
from twisted.internet import reactor, task
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from txsdnotify import WebService

log = Logger(namespace="slowreload")


def slowHook():
    return task.deferLater(reactor, 0.3, log.info, "slow reload hook done")


root = Resource()
root.putChild(b"", Data(b"hello\n", "text/plain"))
application = Application("slowreload")
web = WebService(
    Site(root),
    [f"tcp:{os.environ['PORT']}:interface=127.0.0.1"],
    statusInterval=0.05,
    drainTimeout=5,
    drainGrace=1.0,
)
web.addReloadHook(slowHook, "slow hook")
web.setServiceParent(application)
