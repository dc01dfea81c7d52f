"""
A WSGI application (Flask here; Django's application object works the same)
in a .tac file, with its own thread pool.  Run with:  twistd -ny wsgi.tac --pidfile=

For the simple case, the command line does the same:
    twistd -n sdweb --port 8080 --wsgi myproject.wsgi.application
"""

import os

from flask import Flask
from twisted.application.service import Application, Service
from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Site
from twisted.web.wsgi import WSGIResource

from txsdnotify import WebService

# A .tac file is no module: give Flask a name and a folder of its own.
flask = Flask("wsgi_example", root_path=os.path.dirname(os.path.abspath(__file__)))


@flask.route("/")
def index():
    return "hello from flask\n"


class ThreadPoolService(Service):
    """
    Starts the pool with the application; stops it after the web service has
    drained (children stop after their parent's drain).
    """

    def __init__(self, pool):
        self.pool = pool

    def startService(self):
        super().startService()
        self.pool.start()

    def stopService(self):
        super().stopService()
        self.pool.stop()


pool = ThreadPool(minthreads=1, maxthreads=20, name="wsgi")
application = Application("wsgi")
web = WebService(
    Site(WSGIResource(reactor, pool, flask)), [f"tcp:{os.environ.get('PORT', '8080')}"]
)
ThreadPoolService(pool).setServiceParent(web)
web.setServiceParent(application)
