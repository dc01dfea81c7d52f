"""
An application with its own twistd plugin, "myapp", built on txsdnotify:
    twistd -n myapp --port 8080
"""
