"""
The HTTP side: what twisted.web needs to be tracked and drained.  Knows
no systemd: connection tracking and the request figures, the drain, HTTP/2
GOAWAY, TLS checks, the listen backlog and strports descriptions.

Imports nothing from the rest of txsdnotify.
"""
