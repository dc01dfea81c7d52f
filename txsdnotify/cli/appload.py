# -*- test-case-name: tests.test_appload -*-
"""
Import the application C{--wsgi module.app} (or gunicorn's C{module:app})
or C{--class module.Resource} names, and say in one line why not: no such
module, no such attribute, not callable.  An error raised by the
application's own code while it is imported shows the application's frames
only, not twistd's or ours.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "LoadError",
    "callApplicationCode",
    "checkDottedName",
    "loadApplication",
    "usePaths",
]

_HIDDEN = ("twisted", "txsdnotify", "importlib")


class LoadError(Exception):
    """
    The application could not be loaded; C{str()} is one line, followed by
    the application's own frames when its code raised.
    """


def _ours(filename: str) -> bool:
    """
    Whether a frame belongs to Twisted, txsdnotify or the import machinery.
    """
    if filename.startswith("<frozen importlib"):
        return True
    parts = os.path.normpath(filename).split(os.sep)
    return any(name in parts for name in _HIDDEN)


def applicationFrames(error: BaseException) -> str:
    """
    The frames of C{error}'s traceback that are the application's, formatted
    as Python does, and the error itself on the last line.
    """
    frames = [
        f for f in traceback.extract_tb(error.__traceback__) if not _ours(f.filename)
    ]
    lines = traceback.format_list(frames)
    lines += traceback.format_exception_only(type(error), error)
    return "".join(lines).rstrip("\n")


def _describe(error: BaseException) -> str:
    words = str(error)
    return f"{type(error).__name__}: {words}" if words else type(error).__name__


def callApplicationCode(what: str, call: Callable[[], Any]) -> Any:
    """
    Run application code (an import, a constructor); an error it raises
    becomes a L{LoadError} showing the application's frames only.
    """
    try:
        return call()
    except (Exception, SystemExit) as e:
        raise _failed(what, e) from None


def _failed(what: str, error: BaseException) -> LoadError:
    return LoadError(f"{what} failed: {_describe(error)}\n{applicationFrames(error)}")


def _missing(error: ModuleNotFoundError, module: str) -> bool:
    """
    Whether C{error} says C{module} itself (or a package above it) does not
    exist, rather than that something the module imports is missing.
    """
    name = error.name or ""
    return bool(name) and (module == name or module.startswith(name + "."))


def loadApplication(dotted: str, option: str = "--wsgi") -> Any:
    """
    The object C{dotted} (C{module.attribute}, the module possibly dotted
    itself; or C{module:attribute}, which names the module exactly) names,
    which must be callable (a WSGI application, a class).

    @raise LoadError: One line: no such module, no such attribute, not
        callable; or, when the module's own code raised while it was
        imported, that line and the application's frames.
    """
    checkDottedName(dotted, option)
    if ":" in dotted:
        # gunicorn's spelling: exactly this module, then the attribute.
        moduleName, _, attributes = dotted.partition(":")
        parts = [*moduleName.split("."), *attributes.split(".")]
        cuts = [moduleName.count(".") + 1]
    else:
        parts = dotted.split(".")
        cuts = list(range(len(parts) - 1, 0, -1))
    module = None
    for cut in cuts:
        name = ".".join(parts[:cut])
        try:
            module = _importModule(name)
        except _NoSuchModule:
            continue
        except (Exception, SystemExit) as e:
            raise _failed(f"{option} {dotted!r}: importing {name!r}", e) from None
        break
    if module is None:
        missing = dotted.partition(":")[0] if ":" in dotted else parts[0]
        raise LoadError(f"{option} {dotted!r}: no module named {missing!r}")
    found: Any = module
    path = ".".join(parts[:cut])
    for attribute in parts[cut:]:
        if not hasattr(found, attribute):
            raise LoadError(
                f"{option} {dotted!r}: {path!r} has no attribute {attribute!r}"
            )
        found = getattr(found, attribute)
        path = f"{path}.{attribute}"
    if not callable(found):
        raise LoadError(f"{option} {dotted!r}: not callable (a {type(found).__name__})")
    return found


def checkDottedName(dotted: str, option: str = "--wsgi") -> None:
    """
    C{dotted} has the shape of C{module.attribute} (Python names joined by
    dots, at least two) or, as gunicorn writes it, C{module:attribute}.

    @raise LoadError: If not.
    """
    wanted = f"{option} {dotted!r}: wants module.attribute or module:attribute"
    if dotted.count(":") > 1:
        raise LoadError(wanted)
    module, colon, attribute = dotted.partition(":")
    if colon:
        if attribute.endswith(")") and "(" in attribute:
            raise LoadError(
                f"{wanted} (a call such as {attribute} is not supported: make"
                f" the application at import time, app = {attribute})"
            )
        parts = [*module.split("."), *attribute.split(".")]
    else:
        parts = dotted.split(".")
        if len(parts) < 2:
            raise LoadError(wanted)
    if not all(part.isidentifier() for part in parts):
        raise LoadError(wanted)


class _NoSuchModule(Exception):
    pass


def _importModule(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if _missing(e, name):
            raise _NoSuchModule(name) from None
        raise


def usePaths(directories: Iterable[str]) -> None:
    """
    Put C{directories} (made absolute) first on C{sys.path}, in order, as
    gunicorn and uvicorn put the working directory there.
    """
    for directory in reversed([os.path.abspath(d) for d in directories]):
        while directory in sys.path:
            sys.path.remove(directory)
        sys.path.insert(0, directory)
