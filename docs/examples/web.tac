"""
A plain .tac file: static files under /srv/www, served as a systemd notify
service.  Run with:  twistd -ny web.tac --pidfile=

PORT and ROOT may be set in the environment (the unit's Environment=).
"""

import os

from twisted.application.service import Application
from twisted.web.server import Site
from twisted.web.static import File

from txsdnotify import WebService

port = os.environ.get("PORT", "8080")
root = File(os.environ.get("ROOT", "/srv/www"))

application = Application("web")
web = WebService(Site(root), [f"tcp:{port}"], drainTimeout=20)
web.setServiceParent(application)
