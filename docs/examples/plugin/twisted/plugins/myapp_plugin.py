"""
The drop-in that makes "twistd myapp" exist (no __init__.py in this folder).
"""

from twisted.application.service import ServiceMaker

myapp = ServiceMaker("myapp", "myapp.tap", "My application's web server.", "myapp")
