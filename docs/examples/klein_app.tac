"""
A Klein application with a readiness condition and a reload hook.
Run with:  twistd -ny klein_app.tac --pidfile=

READY=1 waits until the (pretend) cache is warm; "systemctl reload" (SIGHUP)
reloads the greeting from a file, and a failing reload shows in the status.
"""

import os
from pathlib import Path

from klein import Klein
from twisted.application.service import Application
from twisted.internet import reactor, task
from twisted.web.server import Site

from txsdnotify import WebService

app = Klein()
greeting = {"text": "hello"}
GREETING_FILE = Path(os.environ.get("GREETING_FILE", "greeting.txt"))


@app.route("/")
def home(request):
    return greeting["text"] + "\n"


@app.route("/slow")
def slow(request):
    # A Deferred: the drain waits for it on stop.
    return task.deferLater(reactor, 2, lambda: "slow done\n")


def warmCache():
    # Stands for "the database pool is connected": READY=1 waits for it.
    return task.deferLater(reactor, 0.5, lambda: None)


def reloadGreeting():
    greeting["text"] = GREETING_FILE.read_text().strip()


application = Application("klein")
web = WebService(Site(app.resource()), [f"tcp:{os.environ.get('PORT', '8080')}"])
web.addReadinessCondition(warmCache)
web.addReloadHook(reloadGreeting, "reload greeting")
web.setServiceParent(application)
