"""
The package's layering, read from its imports (C{ast}): each concern is one
subpackage, the composition sits above them, and imports only run downwards.

    cli/        the command lines                      (imports anything below)
    workers/    --workers: master, pool, worker        (imports the composition)
    *.py        the composition: WebService and parts  (imports the three below)
    systemd/  web/  wsgi/                              (import nothing of ours but
                                                        their own folder)

C{txsdnotify/__main__.py} is the one exception: it is the entry point of
C{python -m txsdnotify} and calls L{txsdnotify.cli.main}.
"""

from __future__ import annotations

import ast
import configparser
import shutil
from pathlib import Path

import pytest

import txsdnotify

PACKAGE = Path(txsdnotify.__file__).resolve().parent

LAYERS = {"systemd": 0, "web": 0, "wsgi": 0, "": 1, "workers": 2, "cli": 3}
"""
Each folder's layer ("" is the package's top level, the composition).  A
module may import its own folder and any folder of a lower layer.
"""

ENTRY_POINTS = {"txsdnotify.__main__"}

MOST_TOP_LEVEL_MODULES = 12


def moduleName(root: Path, path: Path) -> str:
    """
    The dotted name of the module at C{path} in the package at C{root}.
    """
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([root.name, *parts])


def importedModules(root: Path, path: Path) -> list[tuple[int, str]]:
    """
    Every module of the package that the file at C{path} imports, anywhere in
    it (imports inside functions too), with the line: C{from . import x} and
    C{from .x import y} resolved against the file's own package.
    """
    name = moduleName(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # from txsdnotify import web: the name may be a subpackage.
            found.extend(
                (node.lineno, f"{target}.{alias.name}")
                for alias in node.names
                if root.parent.joinpath(*f"{target}.{alias.name}".split(".")).is_dir()
            )
    return [
        (line, target) for line, target in found if target.split(".")[0] == root.name
    ]


def folderOf(root: Path, module: str) -> str:
    """
    The folder (a key of L{LAYERS}) that a dotted module name lies in.
    """
    parts = module.split(".")[1:]
    if parts and (root / parts[0]).is_dir():
        return parts[0]
    return ""


def violations(root: Path) -> list[str]:
    """
    Every import in the package at C{root} that runs upward or sideways, as
    C{file:line: a -> b} lines.
    """
    found = []
    for path in sorted(root.rglob("*.py")):
        module = moduleName(root, path)
        if module in ENTRY_POINTS:
            continue
        folder = folderOf(root, module)
        for line, target in importedModules(root, path):
            to = folderOf(root, target)
            if to == folder or LAYERS[to] < LAYERS[folder]:
                continue
            found.append(
                f"{path.relative_to(root.parent)}:{line}: {module} ({folder or 'top'})"
                f" imports {target} ({to or 'top'})"
            )
    return found


def test_everyFolderHasALayer() -> None:
    """
    Each subpackage has its place in L{LAYERS}: a new folder must be given
    one before it can hold code.
    """
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == set(LAYERS) - {""}


def test_importsRunDownwards() -> None:
    """
    No module imports from a folder above it or beside it in its layer: the
    systemd side knows no HTTP, the HTTP side no systemd, neither the
    composition, the workers or the command line.
    """
    assert violations(PACKAGE) == []


@pytest.mark.parametrize(
    ("module", "line", "words"),
    [
        ("systemd/notify.py", "from txsdnotify.web import tracking", "imports"),
        ("web/drain.py", "from txsdnotify.systemd.lifecycle import State", "imports"),
        ("web/tracking.py", "from .. import service", "imports"),
        ("wsgi/threads.py", "from ..web.stats import RequestStats", "imports"),
        ("service.py", "from txsdnotify.workers import pool", "imports"),
        ("workers/pool.py", "from txsdnotify.cli.tap import Options", "imports"),
        ("systemd/lifecycle.py", "import txsdnotify.service", "imports"),
    ],
)
def test_upwardImportFound(tmp_path: Path, module: str, line: str, words: str) -> None:
    """
    The check finds a deliberate upward or sideways import, wherever in the
    module it stands (here: inside a function).
    """
    copy = tmp_path / PACKAGE.name
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(copy) == []
    target = copy / module
    target.write_text(
        target.read_text() + f"\n\ndef _upward() -> None:\n    {line}  # noqa\n"
    )
    found = violations(copy)
    assert len(found) == 1
    assert found[0].startswith(f"txsdnotify/{module}:")
    assert words in found[0]


def test_topLevelIsSmall() -> None:
    """
    The package's top level holds the composition and the public faces only:
    about a dozen modules.
    """
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MOST_TOP_LEVEL_MODULES, modules


def test_everyModuleNamesItsTests() -> None:
    """
    Every module names the tests that exercise it (C{test-case-name}), and
    those tests exist.
    """
    tests = Path(__file__).resolve().parent
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        first = path.read_text().splitlines()[0]
        if "test-case-name:" not in first:
            missing.append(f"{path.relative_to(PACKAGE)}: no test-case-name")
            continue
        for name in first.split("test-case-name:")[1].split("-*-")[0].split(","):
            module = name.strip().split(".")[-1]
            if not (tests / f"{module}.py").exists():
                missing.append(f"{path.relative_to(PACKAGE)}: no {name.strip()}")
    assert missing == []


def test_everyFolderIsPackaged() -> None:
    """
    setup.cfg lists every subpackage (its list is explicit, because
    twisted/plugins must ship without an C{__init__.py}): a folder missing
    there would be missing from the wheel, and C{pip install .} would give a
    broken sdweb.
    """
    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    folders = {
        moduleName(PACKAGE, p / "__init__.py")
        for p in PACKAGE.rglob("*")
        if (p / "__init__.py").exists()
    }
    assert folders | {"txsdnotify"} <= listed
