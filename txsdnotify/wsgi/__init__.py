"""
sdweb's WSGI container: the resource, its environ, the flushing of
buffered responses and the thread pool the application runs in.

Imports nothing from the rest of txsdnotify.  L{WSGIApplication} and
L{RequestThreads} are importable from here (as C{txsdnotify.wsgi} always
offered them) and L{WSGIApplication} from C{txsdnotify}.
"""

from txsdnotify.wsgi.container import WSGIApplication
from txsdnotify.wsgi.threads import RequestThreads

__all__ = ["RequestThreads", "WSGIApplication"]
