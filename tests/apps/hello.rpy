from twisted.web.resource import Resource


class Hello(Resource):
    def getChild(self, name, request):
        return self

    def render_GET(self, request):
        return b"hello from rpy\n"


resource = Hello()
