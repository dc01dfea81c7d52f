"""
C{--workers N}: the master that holds the sockets and speaks to systemd,
the pool of worker processes, the pipe protocol between them, the worker's
run loop and the options that only make sense with workers.

Imports the composition (L{txsdnotify.service} and its parts), never
L{txsdnotify.cli}.
"""
