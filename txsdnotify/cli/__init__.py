"""
The command lines: the C{twistd sdweb} options and the service they make,
loading the application, the start-up checks, the demo page, the unit
generator (C{python -m txsdnotify unit}) and a worker's command line.

The top of the package: imports from every other part, and nothing imports
it (but C{txsdnotify/__main__.py}).
"""
