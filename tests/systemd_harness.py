"""
A private systemd user manager for tests.

L{UserManager} runs C{systemd --user} as root inside its own mount and cgroup
namespaces, so tests can start real units (C{Type=notify}, watchdogs, ...)
on a machine that does not boot with systemd, without touching the host's
C{/run/systemd} or any real user manager.  Only the standard library and
pytest are used.

Use the session fixture (pytest puts C{tests/} on C{sys.path}; tests/conftest.py
registers the fixtures)::

    import sys
    from pathlib import Path

    from systemd_harness import exec_line

    def test_sdweb(user_manager, tmp_path):
        name = user_manager.unique_name("sdweb")
        twistd = str(Path(sys.executable).parent / "twistd")
        user_manager.write_unit(name, f'''
            [Service]
            Type=notify
            WorkingDirectory={tmp_path}
            Environment=PYTHONPATH=/path/to/checkout
            ExecStart={exec_line([twistd, "-n", "--pidfile=", "sdweb"])}
            StandardOutput=append:{tmp_path}/unit.log
            StandardError=inherit
            ''')
        try:
            user_manager.systemctl("start", name)  # returns after READY=1
            assert user_manager.show(name, "ActiveState")["ActiveState"] == "active"
        finally:
            user_manager.remove_unit(name)

Without root, C{unshare}/C{nsenter}/systemd or a usable cgroup hierarchy, or
if the manager does not come up, the fixture skips - except when
C{CI=true}: then it fails, with the reason and the tail of the manager's log
(L{start_or_skip} does the same for a test wanting a manager of its own).

Another systemd
===============

A L{SystemdBuild} says where one systemd's C{systemd} and C{systemctl} are
(L{BUILDS}: the installed one, and systemd 254 unpacked - not installed - by
tests/fetch_systemd254.sh into C{.cache/systemd-254}, run by the dynamic
loader with its own libraries first, for those two processes only).  The
C{manager} fixture is the installed one's session manager unless a test is
parametrized with L{every_manager} (once on each) or L{only_254} (for what
252 cannot do: C{Type=notify-reload}, C{$FDSTORE}); C{user_manager_254} is
the 254 session manager itself.  Without the unpacked 254, its tests skip
(fail when C{CI=true}).  tests/conftest.py registers these fixtures.

Writing units
=============

  - B{Use absolute paths} in C{ExecStart=}: L{exec_line} quotes an argv
    list for it (double quotes, C{%} and C{$} doubled, so neither specifiers
    nor variables are expanded); L{python_exec_start} builds a
    C{sys.executable -c CODE} line.  A user manager replaces C{PATH} with its
    own default (C{/usr/local/bin:/usr/bin:...}); L{UserManager.start} sets
    the manager's C{PATH} to the test process's C{PATH} (C{systemctl --user
    set-environment}), so C{twistd} is also found by name, but the absolute
    path next to C{sys.executable} is safest.
  - Units inherit the test process's environment except C{NOTIFY_SOCKET},
    C{LISTEN_*}, C{WATCHDOG_*}, C{PYTEST_*}, C{XDG_*} and the like; give
    C{PYTHONPATH} etc. explicitly (C{Environment=}: C{%} must be C{%%}).
    Their working directory defaults to C{$HOME}: set C{WorkingDirectory=}.
  - There is no journald, so C{journalctl --user} finds nothing ("No journal
    files were found").  Unless a unit sets C{StandardOutput=}, its output
    goes to the manager's console, i.e. L{UserManager.log_path}, interleaved
    with the manager's own log; C{StandardOutput=append:/some/file} plus
    C{StandardError=inherit} captures it separately.
  - Unit names are shared by the whole session: use L{UserManager.unique_name}
    and L{UserManager.remove_unit} (stop, reset-failed, delete, reload).
  - C{DefaultLimitCORE=0} is set: this machine's C{core_pattern} is a
    relative C{core}, so a unit aborted by the watchdog (C{SIGABRT}) would
    otherwise leave a core file in its working directory.

How it works
============

The manager is started as C{sh -> setpriv --pdeathsig TERM -> unshare
--mount --cgroup --propagation private -> sh -> systemd --user}; every step
execs, so L{UserManager.pid} is both the manager and the process whose mount
namespace C{nsenter --target PID --mount} joins for C{systemctl} (which must
see the private C{/run/systemd}).  Should the test process die, the manager
gets SIGTERM and stops its units.  Before unsharing, the launcher moves
itself into a fresh cgroup (C{txsdnotify-harness-PID-*}, a child of the test
process's own cgroup) in the unified and C{name=systemd} hierarchies, so the
cgroup namespace is rooted there.  Inside the namespaces:

  - a tmpfs is mounted on C{/run/systemd} (on C{/run} if that does not
    exist) and C{/run/systemd/system} created, what C{sd_booted()} checks,
    with the C{/run/systemd/inaccessible/} nodes PID 1 makes at boot (a
    sandboxed unit, C{ProtectHome=} for one, mounts them over what it
    hides; without them it fails with 226/NAMESPACE);
  - a tmpfs, shared (as systemd makes C{/} on a booted machine), is
    mounted on the runtime directory: C{LoadCredential=} mounts a
    service's credentials there from a mount namespace of its own, and
    only a shared mount lets that mount reach the manager;
  - C{/sys/fs/cgroup} is remounted to show only the unified and/or
    C{name=systemd} hierarchy, rooted at that fresh cgroup.  B{This
    matters}: a user manager whose cgroup is the root cgroup moves I{every}
    process of the root cgroup - PID 1 included - into its C{init.scope},
    and creates cgroups in every v1 controller hierarchy.  With the v1
    controllers hidden, units stay in the test process's v1 cgroups
    (memory, pids, ...);
  - a pseudo-terminal is bind-mounted over C{/dev/console}: a user manager
    with C{--log-target=console} writes to C{/dev/console}, not to its
    stderr, and C{DefaultStandardOutput=tty} sends units' output there too.
    A thread copies it all into L{UserManager.log_path}.

Configuration is private: C{XDG_CONFIG_HOME} (unit files in
C{$XDG_CONFIG_HOME/systemd/user}, L{UserManager.unit_dir}; C{user.conf} with
short default timeouts, C{DefaultLimitCORE=0} and the standard output
defaults, which must be there because C{daemon-reload} resets defaults given
on the command line), C{XDG_DATA_HOME}, and C{XDG_RUNTIME_DIR} (short, under
C{/run}, mode 0755: a unit with C{PrivateTmp=} or C{DynamicUser=} sees no
C{/tmp} of the host, and a dynamic user must reach the notify socket in it,
which the harness makes writable by all, as C{/run/systemd/notify} is).
C{systemctl --user} reaches the manager through
C{$XDG_RUNTIME_DIR/systemd/private}; C{DBUS_SESSION_BUS_ADDRESS} points into
the private runtime directory so a real session bus is never reached by
mistake.  L{UserManager.stop} sends SIGTERM (the manager stops its units and
exits), SIGKILLs whatever is left in its cgroup, and removes the cgroups;
empty cgroups left by a test process that was killed are removed by the next
L{UserManager.start}.
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import tty
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import pytest

__all__ = [
    "BUILDS",
    "INSTALLED",
    "SYSTEMD_254",
    "SystemdBuild",
    "UserManager",
    "UserManagerError",
    "SystemctlError",
    "every_manager",
    "exec_line",
    "installed_systemd",
    "manager",
    "only_254",
    "python_exec_start",
    "start_or_skip",
    "systemd_254",
    "unavailable_reason",
    "units",
    "unpacked_systemd",
    "user_manager",
    "user_manager_254",
]

SYSTEMD_CANDIDATES = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd")
# The names of the managers tests can ask for (L{BUILDS}).
INSTALLED = "installed"
SYSTEMD_254 = "254"
SYSTEMD_254_DIR = Path(__file__).resolve().parent.parent / ".cache" / "systemd-254"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Where the managers' runtime directories go: not under /tmp, which
# PrivateTmp= hides from a unit.
RUN_ROOT = "/run"
# Made empty by systemd on the host's /run when a sandboxed unit starts;
# removed again by the manager that saw it appear.
HOST_CREDENTIALS = Path("/run/credentials")
CGROUP_PREFIX = "txsdnotify-harness-"

# Variables of the test process that must not reach the manager or its units.
_DROP_EXACT = frozenset(
    {
        "NOTIFY_SOCKET",
        "INVOCATION_ID",
        "JOURNAL_STREAM",
        "MANAGERPID",
        "SYSTEMD_EXEC_PID",
        "DBUS_SESSION_BUS_ADDRESS",
        "XDG_RUNTIME_DIR",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_SESSION_ID",
        "XDG_SEAT",
        "XDG_VTNR",
    }
)
_DROP_PREFIXES = ("LISTEN_", "WATCHDOG_", "PYTEST_", "TRIGGER_", "MONITOR_")

Expected = Union[str, Callable[[str], bool]]


class UserManagerError(RuntimeError):
    """
    The private user manager could not be started or misbehaved.
    """


class _NotUnsharedYet(UserManagerError):
    """
    The launcher has not reached its own mount namespace yet.
    """


class SystemctlError(subprocess.CalledProcessError):
    """
    A C{systemctl --user} call failed; unlike its base class, C{str()} shows
    the output.
    """

    def __str__(self) -> str:
        return (
            f"{shlex.join(self.cmd)} exited with {self.returncode}\n"
            f"stdout: {self.stdout or ''}\nstderr: {self.stderr or ''}"
        )


def exec_line(argv: Sequence[str]) -> str:
    """
    Quote C{argv} for C{ExecStart=} and friends: every word in double quotes,
    backslash, quote and control characters escaped, C{%} and C{$} doubled so
    neither specifiers nor variables are expanded.
    """
    words = []
    for arg in argv:
        s = (
            str(arg)
            .replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\t", "\\t")
            .replace("\r", "\\r")
            .replace("%", "%%")
            .replace("$", "$$")
        )
        words.append(f'"{s}"')
    return " ".join(words)


def python_exec_start(code: str, *args: str) -> str:
    """
    An C{ExecStart=} value running C{code} with this test run's interpreter.
    """
    return exec_line([sys.executable, "-c", code, *args])


@dataclass(frozen=True)
class SystemdBuild:
    """
    Where one systemd's binaries are: the only place the harness learns
    which C{systemd} and C{systemctl} it runs.

    @ivar name: What tests call it (C{"installed"}, C{"254"}).
    @ivar systemd: The manager binary, or C{None} if not found.
    @ivar systemctl: The matching C{systemctl}, or C{None} if not found.
    @ivar library_path: Where the libraries of an unpacked (not installed)
        systemd are, searched first by those two binaries only; or C{""}.
    @ivar loader: The dynamic loader that runs them with C{library_path}.
    @ivar missing: Why this build cannot be used, if it cannot.
    @ivar analyze: Its C{systemd-analyze}, or C{None} if not found (run it
        through L{command} too).
    """

    name: str
    systemd: str | None
    systemctl: str | None
    library_path: str = ""
    loader: str = ""
    missing: str | None = None
    analyze: str | None = None

    def command(self, binary: str, *args: str) -> list[str]:
        """
        An argv running C{binary} (L{systemd} or L{systemctl}) with C{args}.
        With a L{library_path}, the dynamic loader runs it (C{ld.so
        --library-path}): unlike C{LD_LIBRARY_PATH}, that reaches no child
        process - a user manager hands its own environment to its units.
        """
        if self.library_path:
            return [self.loader, "--library-path", self.library_path, binary, *args]
        return [binary, *args]


def elf_interpreter(path: Path) -> str:
    """
    The program interpreter (C{PT_INTERP}, the dynamic loader) of 64-bit
    little-endian ELF executable C{path}, or C{""}.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:6] != b"\x7fELF\x02\x01":
                return ""
            (phoff,) = struct.unpack_from("<Q", head, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                kind, _, offset, _, _, size = struct.unpack("<IIQQQQ", f.read(40))
                if kind == 3:  # PT_INTERP
                    f.seek(offset)
                    return f.read(size).rstrip(b"\0").decode()
    except (OSError, struct.error, UnicodeDecodeError):
        pass
    return ""


def installed_systemd() -> SystemdBuild:
    """
    The machine's own systemd (C{$TXSD_SYSTEMD_BINARY} overrides the
    manager binary).
    """
    override = os.environ.get("TXSD_SYSTEMD_BINARY")
    candidates = (override,) if override else SYSTEMD_CANDIDATES
    systemd = next((c for c in candidates if os.access(c, os.X_OK)), None)
    missing = None
    if systemd is None:
        missing = f"systemd not found at {' or '.join(candidates)}"
    return SystemdBuild(
        INSTALLED,
        systemd,
        shutil.which("systemctl"),
        missing=missing,
        analyze=shutil.which("systemd-analyze"),
    )


def unpacked_systemd(root: Path, name: str) -> SystemdBuild:
    """
    A systemd unpacked (C{dpkg -x}) into C{root}, not installed: its
    C{lib/systemd/systemd} and C{bin/systemctl}, run with its own libraries
    (C{libsystemd-shared-*.so}, C{libsystemd.so.0}) first on
    C{LD_LIBRARY_PATH}.
    """
    systemd = root / "lib" / "systemd" / "systemd"
    systemctl = root / "bin" / "systemctl"
    libraries = sorted(
        {
            str(lib.parent)
            for pattern in (
                "usr/lib/*/systemd/libsystemd-shared-*.so",
                "usr/lib/*/libsystemd.so.0",
            )
            for lib in root.glob(pattern)
        }
    )
    loader = elf_interpreter(systemd)
    missing = None
    if not (os.access(systemd, os.X_OK) and os.access(systemctl, os.X_OK)):
        missing = (
            f"systemd {name} is not unpacked in {root}"
            " (make test fetches it: sh tests/fetch_systemd254.sh)"
        )
    elif not libraries or not os.access(loader, os.X_OK):
        missing = f"no libraries or no dynamic loader for systemd {name} in {root}"
    return SystemdBuild(
        name,
        str(systemd),
        str(systemctl),
        library_path=":".join(libraries),
        loader=loader,
        missing=missing,
        analyze=str(root / "usr" / "bin" / "systemd-analyze"),
    )


def systemd_254() -> SystemdBuild:
    """
    systemd 254 as tests/fetch_systemd254.sh unpacks it, in the checkout's
    C{.cache/systemd-254} (C{$TXSD_SYSTEMD_254} overrides the folder).
    """
    root = os.environ.get("TXSD_SYSTEMD_254") or str(SYSTEMD_254_DIR)
    return unpacked_systemd(Path(root), SYSTEMD_254)


BUILDS: dict[str, Callable[[], SystemdBuild]] = {
    INSTALLED: installed_systemd,
    SYSTEMD_254: systemd_254,
}


def _mounts() -> dict[str, tuple[str, str]]:
    """
    Mount point -> (filesystem type, super options) in our mount namespace.
    """
    result: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rfields = right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            mountpoint = fields[4].replace("\\040", " ")
            # A later mount shadows earlier ones on or below its mount point.
            below = mountpoint.rstrip("/") + "/"
            for shadowed in [m for m in result if m.startswith(below)]:
                del result[shadowed]
            result[mountpoint] = (rfields[0], rfields[2])
    return result


def _own_cgroups() -> dict[str, str]:
    """
    Controller list ("" for the unified hierarchy) -> our cgroup path.
    """
    result = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) == 3:
                result[parts[1]] = parts[2]
    return result


class _CgroupLayout:
    """
    Where the hierarchies systemd uses are mounted, and where we are in them.

    C{mode} is C{"unified"}, C{"hybrid"} or C{"legacy"}; C{dirs} maps a
    hierarchy (C{"unified"}/C{"systemd"}) to the host directory of our own
    cgroup in it; C{systemd_options} are the super options to remount the
    C{name=systemd} hierarchy with.
    """

    def __init__(self) -> None:
        mounts = _mounts()
        own = _own_cgroups()
        self.dirs: dict[str, Path] = {}
        self.systemd_options = "none,name=systemd"
        root = str(CGROUP_ROOT)
        fstype = mounts.get(root, ("", ""))[0]
        if fstype == "cgroup2":
            self.mode = "unified"
            self.dirs["unified"] = self._join(CGROUP_ROOT, own.get("", "/"))
            return
        if fstype != "tmpfs":
            raise UserManagerError(
                f"{root} is neither cgroup2 nor a tmpfs of v1 hierarchies "
                f"({fstype or 'not mounted'})"
            )
        unified = mounts.get(f"{root}/unified", ("", ""))
        legacy = mounts.get(f"{root}/systemd", ("", ""))
        if legacy[0] == "cgroup" and "name=systemd" in legacy[1].split(","):
            opts = [o for o in legacy[1].split(",") if o not in ("rw", "ro")]
            self.systemd_options = ",".join(["none", *opts])
            key = next((k for k in own if "name=systemd" in k.split(",")), None)
            if key is None:
                raise UserManagerError("no name=systemd line in /proc/self/cgroup")
            self.dirs["systemd"] = self._join(CGROUP_ROOT / "systemd", own[key])
        if unified[0] == "cgroup2":
            self.mode = "hybrid"
            self.dirs["unified"] = self._join(CGROUP_ROOT / "unified", own.get("", "/"))
        elif "systemd" in self.dirs:
            self.mode = "legacy"
        else:
            raise UserManagerError(f"no cgroup hierarchy usable by systemd in {root}")

    @staticmethod
    def _join(mount: Path, path: str) -> Path:
        # In a cgroup namespace whose root is not ours, paths start with "/..".
        if path.startswith("/.."):
            raise UserManagerError(f"own cgroup {path!r} is outside {mount}")
        return mount / path.lstrip("/")

    def mount_script(self) -> str:
        """
        Shell commands remounting C{/sys/fs/cgroup} inside the new
        namespaces: only the hierarchies systemd needs, rooted at the
        namespace's (fresh) cgroup.
        """
        q = shlex.quote
        if self.mode == "unified":
            # Not straight onto the host's cgroup2 mount: the kernel refuses
            # (EBUSY) to mount a filesystem on the root of a mount of itself.
            return (
                "mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup\n"
                "mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup\n"
            )
        lines = ["mount -t tmpfs -o mode=0755,nosuid,nodev,noexec tmpfs /sys/fs/cgroup"]
        if self.mode == "hybrid":
            lines += [
                "mkdir /sys/fs/cgroup/unified",
                "mount -t cgroup2 -o nosuid,nodev,noexec cgroup2"
                " /sys/fs/cgroup/unified",
            ]
        if "systemd" in self.dirs:
            lines += [
                "mkdir /sys/fs/cgroup/systemd",
                f"mount -t cgroup -o {q(self.systemd_options)},nosuid,nodev,noexec "
                "cgroup /sys/fs/cgroup/systemd",
            ]
        return "\n".join(lines) + "\n"


def _cgroup_pids(top: Path) -> set[int]:
    pids: set[int] = set()
    if not top.is_dir():
        return pids
    for dirpath, _dirs, _files in os.walk(top):
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                pids.update(int(x) for x in f.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return pids


def _remove_cgroup_tree(top: Path) -> None:
    """
    rmdir a cgroup and its children, deepest first (cgroupfs only allows
    rmdir of empty cgroups, with their control files still listed).
    """
    if not top.is_dir():
        return
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        try:
            os.rmdir(dirpath)
        except FileNotFoundError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unavailable_reason(build: SystemdBuild | None = None) -> str | None:
    """
    Why a private user manager of C{build} (by default the installed
    systemd) cannot run here, or C{None} if it may.  Cheap checks only;
    L{UserManager.start} finds the rest.
    """
    if build is None:
        build = installed_systemd()
    if not sys.platform.startswith("linux"):
        return f"needs Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "needs root (mount and cgroup namespaces, cgroup delegation)"
    if build.missing is not None:
        return build.missing
    if build.systemctl is None:
        return "systemctl not found on PATH"
    for tool in ("unshare", "nsenter", "mount", "sh"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH"
    try:
        _CgroupLayout()
    except (OSError, UserManagerError) as e:
        return f"cgroups: {e}"
    return None


class UserManager:
    """
    A C{systemd --user} in private namespaces, controlled with
    C{systemctl --user} run through C{nsenter}.

    @ivar env: The environment for commands talking to this manager
        (C{XDG_RUNTIME_DIR}, C{DBUS_SESSION_BUS_ADDRESS}, no pager...).
    """

    def __init__(
        self,
        base_dir: Path | str | None = None,
        *,
        log_level: str = "info",
        unit_environment: Mapping[str, str] | None = None,
        default_timeout_sec: float = 20,
        keep_files: bool = False,
        build: SystemdBuild | None = None,
    ) -> None:
        """
        @param base_dir: Where the configuration, data and log go (created if
            needed); a fresh temporary directory (removed by L{stop} unless
            C{keep_files}) if C{None}.
        @param log_level: The manager's C{--log-level} (C{debug} is verbose).
        @param unit_environment: Set in the manager after start (units
            inherit it); defaults to C{{"PATH": os.environ["PATH"]}}.
        @param default_timeout_sec: C{DefaultTimeoutStartSec} and
            C{DefaultTimeoutStopSec} of the manager.
        @param build: Which systemd to run; the installed one by default.
        """
        self.build = build if build is not None else installed_systemd()
        self._owns_base = base_dir is None
        self.keep_files = keep_files
        if base_dir is None:
            base_dir = tempfile.mkdtemp(prefix="txsd-systemd-")
        self.base_dir = Path(base_dir).resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.config_home = self.base_dir / "config"
        self.data_home = self.base_dir / "data"
        self._log_path = self.base_dir / "manager.log"
        # Sockets live here: keep the path short (sun_path is 108 bytes).
        self.runtime_dir: Path | None = None
        self.log_level = log_level
        self.unit_environment = dict(
            unit_environment
            if unit_environment is not None
            else {"PATH": os.environ.get("PATH", os.defpath)}
        )
        self.default_timeout_sec = default_timeout_sec
        self.process: subprocess.Popen[bytes] | None = None
        self._layout: _CgroupLayout | None = None
        self._cgroup_dirs: list[Path] = []
        self._pty_master: int | None = None
        self._pty_slave: int | None = None
        self._reader: threading.Thread | None = None
        self._reader_stop = threading.Event()
        self._env: dict[str, str] = {}
        self._made_credentials_dir = False

    # -- properties ---------------------------------------------------------

    @property
    def unit_dir(self) -> Path:
        """
        C{$XDG_CONFIG_HOME/systemd/user}: unit files written here are found
        by the manager (after C{daemon-reload}, which L{write_unit} does).
        """
        return self.config_home / "systemd" / "user"

    @property
    def log_path(self) -> Path:
        """
        The manager's own log plus the output of units that do not redirect
        theirs.  Kept after L{stop} when C{base_dir} was given.
        """
        return self._log_path

    @property
    def env(self) -> dict[str, str]:
        """
        A copy of the environment for commands run in the namespace.
        """
        return dict(self._env)

    @property
    def pid(self) -> int:
        """
        The manager's PID, also the target for C{nsenter}.
        """
        if self.process is None:
            raise UserManagerError("the user manager is not started")
        return self.process.pid

    @property
    def cgroup_paths(self) -> list[Path]:
        """
        The host paths of the manager's own cgroups (one per hierarchy),
        empty when not started; everything it runs lives below them.
        """
        return list(self._cgroup_dirs)

    def is_running(self) -> bool:
        """
        Whether the manager process is alive.
        """
        return self.process is not None and self.process.poll() is None

    # -- lifecycle ----------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """
        Start the manager and wait until C{systemctl --user
        is-system-running} says C{running} (or C{degraded}); then set the
        unit environment (C{PATH}).

        Call it from a thread that outlives the manager (the session's main
        thread): C{--pdeathsig} fires when the I{thread} that started the
        manager exits.

        @raise UserManagerError: with the reason and the log's tail; nothing
            is left running then.
        """
        if self.process is not None:
            raise UserManagerError("already started")
        reason = unavailable_reason(self.build)
        if reason is not None:
            raise UserManagerError(reason)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        systemd = self.build.systemd
        assert systemd is not None
        self._layout = layout = _CgroupLayout()
        self._sweep_stale_cgroups(layout)
        # systemd makes it (for units' namespaces) on the host's /run.
        self._made_credentials_dir = not HOST_CREDENTIALS.exists()

        # Under /run, not /tmp: a unit with PrivateTmp= (DynamicUser= implies
        # it) would not see a runtime directory under /tmp, nor its notify
        # socket.  Readable by all, as /run/systemd is.
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="txsd-sd-run-", dir=RUN_ROOT))
        os.chmod(self.runtime_dir, 0o755)
        for d in (self.unit_dir, self.data_home):
            d.mkdir(parents=True, exist_ok=True)
        timeout_s = f"{self.default_timeout_sec:g}s"
        (self.config_home / "systemd" / "user.conf").write_text(
            "[Manager]\n"
            f"DefaultTimeoutStartSec={timeout_s}\n"
            f"DefaultTimeoutStopSec={timeout_s}\n"
            "DefaultLimitCORE=0\n"
            # Not --default-standard-output=: daemon-reload resets
            # command-line defaults to the configuration files' values.
            "DefaultStandardOutput=tty\n"
            "DefaultStandardError=tty\n"
        )

        base_env = {
            k: v
            for k, v in os.environ.items()
            if k not in _DROP_EXACT and not k.startswith(_DROP_PREFIXES)
        }
        base_env.update(
            XDG_RUNTIME_DIR=str(self.runtime_dir),
            XDG_CONFIG_HOME=str(self.config_home),
            XDG_DATA_HOME=str(self.data_home),
            DBUS_SESSION_BUS_ADDRESS=f"unix:path={self.runtime_dir}/bus",
            # libmount (mount(8), and systemd watching mounts) would otherwise
            # create the host's /run/mount/ for its utab.
            LIBMOUNT_UTAB=f"{self.runtime_dir}/libmount/utab",
        )
        self._env = dict(base_env, SYSTEMD_PAGER="cat", PAGER="cat", SYSTEMD_COLORS="0")

        # Our own cgroup, a child of the test process's one, in every
        # hierarchy systemd uses.
        name = f"{CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        for d in layout.dirs.values():
            path = d / name
            path.mkdir()
            self._cgroup_dirs.append(path)

        # The console: a pty whose other side we copy into the log.
        self._pty_master, self._pty_slave = os.openpty()
        tty.setraw(self._pty_slave)
        console = os.ttyname(self._pty_slave)
        self._reader_stop.clear()
        self._reader = threading.Thread(
            target=self._copy_console, name="systemd-console", daemon=True
        )
        self._reader.start()

        q = shlex.quote
        runtime = q(str(self.runtime_dir))
        inner = (
            "set -eu\n"
            "if [ -d /run/systemd ]; then\n"
            "  mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run/systemd\n"
            "else\n"
            "  mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run\n"
            "fi\n"
            "mkdir -p /run/systemd/system\n"
            # What PID 1 makes at boot, and sandboxed units mount over
            # what they must not see (InaccessiblePaths=, other services'
            # credentials).
            "mkdir -m 0755 /run/systemd/inaccessible\n"
            "mkdir -m 0000 /run/systemd/inaccessible/dir\n"
            "install -m 0000 /dev/null /run/systemd/inaccessible/reg\n"
            "mkfifo -m 0000 /run/systemd/inaccessible/fifo\n"
            "mknod -m 0000 /run/systemd/inaccessible/chr c 0 0\n"
            "mknod -m 0000 /run/systemd/inaccessible/blk b 0 0\n"
            # The runtime directory: a tmpfs of its own, shared (as systemd
            # makes / on a booted machine), because LoadCredential= mounts a
            # service's credentials there from a namespace of its own.
            + f"mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs {runtime}\n"
            + f"mount --make-shared {runtime}\n"
            + f"mkdir -m 0755 {runtime}/credentials\n"
            + layout.mount_script()
            + "if [ -e /dev/console ]; then\n"
            + f"  mount --bind {q(console)} /dev/console\n"
            + "fi\n"
            + "exec "
            + shlex.join(
                self.build.command(
                    systemd,
                    "--user",
                    "--log-target=console",
                    f"--log-level={self.log_level}",
                    "--log-color=no",
                    "--log-time=yes",
                )
            )
            + "\n"
        )
        unshare = ["unshare", "--mount", "--cgroup", "--propagation", "private"]
        unshare += ["--", "sh", "-c", inner]
        if shutil.which("setpriv"):
            # Should the test process die, the manager gets SIGTERM and
            # stops its units.
            unshare = ["setpriv", "--pdeathsig", "TERM", *unshare]
        outer = "set -eu\n"
        for path in self._cgroup_dirs:
            outer += f"echo $$ > {q(str(path / 'cgroup.procs'))}\n"
        outer += "exec " + shlex.join(unshare) + "\n"

        with open(self._log_path, "ab") as log:
            log.write(f"--- harness: starting {systemd} --user\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                ["sh", "-c", outer],
                env=base_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd="/",
                start_new_session=True,
            )

        deadline = time.monotonic() + timeout
        state = ""
        while True:
            if self.process.poll() is not None:
                raise UserManagerError(
                    f"systemd --user exited with {self.process.returncode} "
                    f"during startup\n{self.log_tail()}"
                )
            try:
                result = self.systemctl("is-system-running", check=False, timeout=10)
                state = result.stdout.strip()
            except subprocess.TimeoutExpired:
                state = "(systemctl timed out)"
            except _NotUnsharedYet:
                state = "(not in its namespaces yet)"
            if state in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                raise UserManagerError(
                    f"systemd --user not running after {timeout}s "
                    f"(is-system-running: {state!r})\n{self.log_tail()}"
                )
            time.sleep(0.05)
        self._open_notify_socket()
        if self.unit_environment:
            self.set_environment(**self.unit_environment)

    def _open_notify_socket(self) -> None:
        """
        Let units of every user reach the manager's notify socket, as they
        reach C{/run/systemd/notify} of a system manager (directories 0755,
        the socket writable by all): a user manager makes them its own.
        """
        assert self.runtime_dir is not None
        notify = self.runtime_dir / "systemd" / "notify"
        # In the manager's mount namespace: the runtime directory is a tmpfs
        # there.
        self.run_in_namespace(
            ["sh", "-c", 'chmod 0755 "$1" && chmod 0777 "$2"', "sh"]
            + [str(notify.parent), str(notify)],
            check=True,
        )

    def stop(self, timeout: float = 30) -> None:
        """
        Stop the manager (SIGTERM: a user manager then stops all its units
        and exits), SIGKILL whatever is left in its cgroup, remove its
        cgroups and private directories.  Idempotent.

        @raise UserManagerError: if a process could not be killed.
        """
        leftovers: set[int] = set()
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    os.kill(self.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._note("manager did not exit after SIGTERM; SIGKILL")
                    self.process.kill()
                    self.process.wait()
            if self.process.returncode not in (0, None):
                self._note(f"manager exited with {self.process.returncode}")
        for path in self._cgroup_dirs:
            leftovers |= self._kill_cgroup(path)
        for path in self._cgroup_dirs:
            try:
                _remove_cgroup_tree(path)
            except OSError as e:
                self._note(f"could not remove cgroup {path}: {e}")
        self._cgroup_dirs = []
        self._stop_reader()
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            self.runtime_dir = None
        if self._made_credentials_dir:
            self._made_credentials_dir = False
            try:
                HOST_CREDENTIALS.rmdir()
            except OSError:
                pass
        if self._owns_base and not self.keep_files:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        if leftovers:
            raise UserManagerError(f"processes survived the manager: {leftovers}")

    def _kill_cgroup(self, top: Path, timeout: float = 5) -> set[int]:
        """
        SIGKILL everything still in cgroup C{top}; the PIDs that survived.
        """
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while True:
            pids = _cgroup_pids(top)
            if not pids:
                return set()
            if time.monotonic() > deadline:
                return pids
            new = pids - killed
            if new:
                self._note(f"killing leftover processes {sorted(new)} in {top}")
            kill_file = top / "cgroup.kill"
            if kill_file.exists():
                try:
                    kill_file.write_text("1")
                except OSError:
                    pass
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            killed |= pids
            time.sleep(0.05)

    def _sweep_stale_cgroups(self, layout: _CgroupLayout) -> None:
        """
        Remove empty harness cgroups left by test processes that died.
        """
        for d in layout.dirs.values():
            try:
                entries = list(d.iterdir())
            except OSError:
                continue
            for entry in entries:
                if not entry.name.startswith(CGROUP_PREFIX):
                    continue
                try:
                    owner = int(entry.name[len(CGROUP_PREFIX) :].split("-")[0])
                except ValueError:
                    continue
                if owner == os.getpid() or _pid_alive(owner):
                    continue
                if not _cgroup_pids(entry):
                    try:
                        _remove_cgroup_tree(entry)
                    except OSError:
                        pass

    # -- console ------------------------------------------------------------

    def _copy_console(self) -> None:
        master = self._pty_master
        assert master is not None
        with open(self._log_path, "ab", buffering=0) as out:
            while not self._reader_stop.is_set():
                try:
                    ready, _, _ = select.select([master], [], [], 0.1)
                    if not ready:
                        continue
                    data = os.read(master, 65536)
                except OSError:  # EIO: no slave left
                    break
                if not data:
                    break
                out.write(data.replace(b"\r\n", b"\n"))

    def _stop_reader(self) -> None:
        if self._pty_slave is not None:
            os.close(self._pty_slave)
            self._pty_slave = None
        if self._reader is not None:
            # Let it drain what the manager wrote last.
            self._reader.join(0.5)
            self._reader_stop.set()
            self._reader.join(2)
            self._reader = None
        if self._pty_master is not None:
            os.close(self._pty_master)
            self._pty_master = None

    def _note(self, message: str) -> None:
        try:
            with open(self._log_path, "a") as f:
                f.write(f"--- harness: {message}\n")
        except OSError:
            pass

    def log_tail(self, lines: int = 60) -> str:
        """
        The last C{lines} lines of L{log_path}.
        """
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no manager log: {e})"
        tail = text.splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self._log_path}:\n" + "\n".join(tail)

    # -- commands -----------------------------------------------------------

    def run_in_namespace(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = 60,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[Any]:
        """
        Run C{argv} in the manager's mount namespace (C{nsenter --target
        PID --mount}) with L{env} (updated with C{env}).  Keyword arguments
        go to C{subprocess.run}; output is captured as text unless told
        otherwise, and C{check} defaults to false.
        """
        self._check_namespace()
        full_env = self.env
        if env:
            full_env.update(env)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        if "stdout" not in kwargs and "stderr" not in kwargs:
            kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        cmd = ["nsenter", f"--target={self.pid}", "--mount", "--", *argv]
        return subprocess.run(cmd, env=full_env, timeout=timeout, **kwargs)

    def _check_namespace(self) -> None:
        """
        Refuse to run anything unless the manager runs in a mount namespace
        of its own: never let C{systemctl} loose on the host's.
        """
        if not self.is_running():
            raise UserManagerError(f"systemd --user is not running\n{self.log_tail()}")
        try:
            theirs = os.readlink(f"/proc/{self.pid}/ns/mnt")
        except OSError as e:
            raise UserManagerError(f"systemd --user is gone: {e}") from e
        if theirs == os.readlink("/proc/self/ns/mnt"):
            raise _NotUnsharedYet(f"PID {self.pid} has not unshared its mounts yet")

    def systemctl(
        self, *args: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """
        C{systemctl --user --no-pager ARGS} against this manager, output
        captured as text.

        @raise SystemctlError: if C{check} and it exits non-zero.
        """
        assert self.build.systemctl is not None
        argv = self.build.command(self.build.systemctl, "--user", "--no-pager", *args)
        result = self.run_in_namespace(argv, timeout=timeout)
        if check and result.returncode != 0:
            raise SystemctlError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def set_environment(self, **variables: str) -> None:
        """
        C{systemctl --user set-environment}: units started afterwards get
        these variables.
        """
        if variables:
            self.systemctl(
                "set-environment", *(f"{k}={v}" for k, v in variables.items())
            )

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """
        C{systemctl --user show UNIT -p PROP...} as a dict (all properties if
        none are named).
        """
        args = ["show", unit]
        if props:
            args.append("--property=" + ",".join(props))
        out = self.systemctl(*args).stdout
        result: dict[str, str] = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                result[key] = value
        return result

    def wait_for(
        self,
        unit: str,
        prop: str,
        expected: Expected,
        timeout: float = 10,
        interval: float = 0.05,
    ) -> str:
        """
        Poll property C{prop} of C{unit} until it equals C{expected} (a
        string) or C{expected(value)} is true; the value.

        @raise AssertionError: on timeout, with the last value, the unit's
            status and the manager log's tail.
        """

        def matches(value: str) -> bool:
            if callable(expected):
                return bool(expected(value))
            return value == expected

        deadline = time.monotonic() + timeout
        value = ""
        while True:
            value = self.show(unit, prop).get(prop, "")
            if matches(value):
                return value
            if time.monotonic() > deadline:
                break
            time.sleep(interval)
        status = self.systemctl("status", unit, check=False).stdout
        raise AssertionError(
            f"{unit}: {prop}={value!r}, wanted {expected!r} within {timeout}s\n"
            f"{status}\n{self.log_tail(30)}"
        )

    # -- units --------------------------------------------------------------

    def unique_name(self, prefix: str = "test", suffix: str = ".service") -> str:
        """
        A unit name no other test of the session uses.
        """
        return f"{prefix}-{uuid.uuid4().hex[:10]}{suffix}"

    def write_unit(self, name: str, text: str) -> Path:
        """
        Write unit file C{name} (dedented) into L{unit_dir} and run
        C{daemon-reload}; its path.
        """
        if "/" in name or "." not in name:
            raise ValueError(f"not a unit file name: {name!r}")
        path = self.unit_dir / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        self.systemctl("daemon-reload")
        return path

    def remove_unit(self, name: str) -> None:
        """
        Stop C{name} (ignoring failures), reset its failed state, delete its
        file and C{daemon-reload}.
        """
        if not self.is_running():
            return
        self.systemctl("stop", name, check=False)
        self.systemctl("reset-failed", name, check=False)
        path = self.unit_dir / name
        if path.exists():
            path.unlink()
            self.systemctl("daemon-reload", check=False)

    def __enter__(self) -> UserManager:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_or_skip(base_dir: Path | str | None = None, **kwargs: Any) -> UserManager:
    """
    A started L{UserManager} (arguments as for it), or, if it cannot start,
    skip the current test - fail it instead when C{CI=true} - with the reason
    and the tail of the manager's log.
    """
    build = kwargs.get("build") or installed_systemd()
    reason = unavailable_reason(build)
    if reason is None:
        manager = UserManager(base_dir, **kwargs)
        try:
            manager.start()
        except (OSError, UserManagerError, subprocess.SubprocessError) as e:
            reason = str(e)
            if manager.log_path.exists() and str(manager.log_path) not in reason:
                reason += "\n" + manager.log_tail()
        else:
            return manager
    message = f"private systemd user manager ({build.name}) unavailable: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _session_manager(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[UserManager]:
    manager = start_or_skip(
        tmp_path_factory.mktemp(f"systemd-user-{name}"), build=BUILDS[name]()
    )
    try:
        yield manager
    finally:
        manager.stop()


@pytest.fixture(scope="session")
def user_manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserManager]:
    """
    A started private L{UserManager} of the installed systemd, shared by the
    session, stopped at its end.  If it cannot start the tests using it are
    skipped, or fail when C{CI=true} (see L{start_or_skip}).  Its files (log
    included) stay in pytest's temporary directory.
    """
    yield from _session_manager(tmp_path_factory, INSTALLED)


@pytest.fixture(scope="session")
def user_manager_254(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[UserManager]:
    """
    Like L{user_manager}, with systemd 254 as tests/fetch_systemd254.sh
    unpacks it (L{systemd_254}): skipped if it is not there, failed under
    C{CI=true}.
    """
    yield from _session_manager(tmp_path_factory, SYSTEMD_254)


_MANAGER_FIXTURES = {INSTALLED: "user_manager", SYSTEMD_254: "user_manager_254"}


@pytest.fixture
def manager(request: pytest.FixtureRequest) -> UserManager:
    """
    The session's manager of the systemd a test is parametrized with
    (L{every_manager}, L{only_254}), the installed one otherwise.
    """
    name = getattr(request, "param", INSTALLED)
    manager: UserManager = request.getfixturevalue(_MANAGER_FIXTURES[name])
    return manager


# Run a test once on each manager: the installed systemd and systemd 254.
every_manager = pytest.mark.parametrize(
    "manager", [INSTALLED, SYSTEMD_254], indirect=True
)
# Run a test on systemd 254 only (what the installed 252 cannot do).
only_254 = pytest.mark.parametrize("manager", [SYSTEMD_254], indirect=True)


@pytest.fixture
def units(manager: UserManager) -> Iterator[list[str]]:
    """
    Unit names a test appends here are stopped and removed from L{manager}
    after it, last first.
    """
    names: list[str] = []
    yield names
    for name in reversed(names):
        manager.remove_unit(name)
