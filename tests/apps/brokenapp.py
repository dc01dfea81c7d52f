"""
A WSGI application module that fails while being imported.
"""


def _configure() -> dict[str, str]:
    return {"answer": str(1 // 0)}


settings = _configure()


def app(environ: object, start_response: object) -> list[bytes]:
    return [b"never\n"]
