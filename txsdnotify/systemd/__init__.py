"""
The systemd side: the notify protocol and everything that decides what
systemd is told.  Knows no HTTP: the notify client and its message format,
the lifecycle state machine, socket activation and the fd store, the
watchdog, journal priorities, and the failures' C{ERRNO=}.

Imports nothing from the rest of txsdnotify.
"""
