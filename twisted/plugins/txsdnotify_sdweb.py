"""
The C{sdweb} twistd plugin: C{twistd -n sdweb --port 8080}.

Kept to one line of work so that twistd's plugin scan stays cheap; the code
lives in L{txsdnotify.cli.tap}.
"""

from twisted.application.service import ServiceMaker

sdweb = ServiceMaker(
    "txsdnotify sdweb",
    "txsdnotify.cli.tap",
    "A twisted.web server that is a systemd Type=notify service.",
    "sdweb",
)
