"""
A WSGI application (Flask here; Django's application object works the same)
in a .tac file, served by sdweb's WSGI container.  Run with:
    twistd -ny wsgi.tac --pidfile=

For the simple case, the command line does the same:
    twistd -n sdweb --port 8080 --wsgi myproject.wsgi.application --threads 10
"""

import os

from flask import Flask
from twisted.application.service import Application
from twisted.web.server import Site

from txsdnotify import WebService, WSGIApplication
from txsdnotify.wsgi import RequestThreads

# A .tac file is no module: give Flask a name and a folder of its own.
flask = Flask("wsgi_example", root_path=os.path.dirname(os.path.abspath(__file__)))


@flask.route("/")
def index():
    return "hello from flask\n"


# The threads start with the first request and stop after the reactor has
# shut down, i.e. after the drain.
root = WSGIApplication(flask, RequestThreads(size=10))
application = Application("wsgi")
web = WebService(Site(root), [f"tcp:{os.environ.get('PORT', '8080')}"])
web.setServiceParent(application)
