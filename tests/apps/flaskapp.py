"""
A Flask application, served by sdweb through --wsgi flaskapp.app.
"""

import time

from flask import Flask, Response, request

app = Flask(__name__)


@app.route("/")
def index() -> str:
    return "hello from flask\n"


@app.route("/slow")
def slow() -> str:
    time.sleep(float(request.args.get("s", "2")))
    return "flask slow done\n"


@app.route("/stream")
def stream() -> Response:
    count = int(request.args.get("n", "4"))

    def chunks():  # type: ignore[no-untyped-def]
        for i in range(count):
            time.sleep(0.2)
            yield f"part {i}\n"

    return Response(chunks(), mimetype="text/plain")
