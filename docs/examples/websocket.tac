"""
WebSockets (autobahn) and a Server-Sent-Events stream that end well on stop.
Run with:  twistd -ny websocket.tac --pidfile=      (pip install autobahn)

/ws echoes WebSocket messages; /events sends an event every second.  When the
stop begins, the drain hook closes every WebSocket with 1001 ("going away")
and ends every event stream, so a stop with open sockets takes milliseconds
instead of --drain-timeout, and clients know to reconnect elsewhere.
"""

import os

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.application.service import Application
from twisted.internet import task
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from txsdnotify import WebService

GOING_AWAY = 1001


class Echo(WebSocketServerProtocol):
    def onOpen(self):
        self.factory.open.add(self)

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)

    def onClose(self, wasClean, code, reason):
        self.factory.open.discard(self)


class EchoFactory(WebSocketServerFactory):
    protocol = Echo

    def __init__(self):
        super().__init__()
        self.open = set()


class Events(Resource):
    """
    text/event-stream: a "tick" every second until the drain ends it.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.streams = set()

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        ticks = task.LoopingCall(request.write, b"data: tick\n\n")
        ticks.start(1.0)
        stream = (request, ticks)
        self.streams.add(stream)
        request.notifyFinish().addBoth(lambda _: self._ended(stream))
        return NOT_DONE_YET

    def _ended(self, stream):
        request, ticks = stream
        self.streams.discard(stream)
        if ticks.running:
            ticks.stop()

    def endAll(self):
        for request, ticks in list(self.streams):
            ticks.stop()
            request.write(b"event: bye\ndata: server stopping\n\n")
            request.finish()


sockets = EchoFactory()
events = Events()
root = Resource()
root.putChild(b"ws", WebSocketResource(sockets))
root.putChild(b"events", events)


def goingAway(secondsLeft):
    # Called once the ports are closed; whatever is still open after
    # secondsLeft is aborted.
    for protocol in list(sockets.open):
        # autobahn's sendClose() accepts only 1000 and 3000-4999 from
        # applications; 1001 ("going away") is what a server that stops
        # sends, and sendCloseFrame() sends it.
        protocol.sendCloseFrame(code=GOING_AWAY, reasonUtf8=b"server stopping")
    events.endAll()


application = Application("websocket")
web = WebService(Site(root), [f"tcp:{os.environ.get('PORT', '8080')}"])
web.addDrainHook(goingAway)
web.setServiceParent(application)
