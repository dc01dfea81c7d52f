"""
The private systemd user manager of L{systemd_harness} really runs units:
C{Type=notify} readiness, exit codes, C{NOTIFY_SOCKET} for a Python main
process, the watchdog, and a clean stop.
"""

from __future__ import annotations

import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

from systemd_harness import (
    UserManager,
    every_manager,
    exec_line,
    only_254,
    python_exec_start,
    start_or_skip,
)

# Sends one datagram to NOTIFY_SOCKET with a plain socket, as the main
# process, then optionally lingers.
NOTIFY_CODE = textwrap.dedent(
    """
    import os, socket, sys, time
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(address)
        s.sendall(sys.argv[1].encode())
    time.sleep(float(sys.argv[2]))
    """
)

SH_NOTIFY = (
    "/bin/sh -c"
    """ 'sleep 1; systemd-notify --ready --status="hello"; exec sleep 300'"""
)


def test_notify_ready_blocks_start(
    user_manager: UserManager,  # noqa: F811
    units: list[str],
) -> None:
    """
    C{systemctl --user start} of a C{Type=notify} unit returns once it sent
    READY=1, with its STATUS= visible; stopping it makes it inactive.
    """
    name = user_manager.unique_name("notify-sh")
    units.append(name)
    user_manager.write_unit(
        name,
        f"""
        [Service]
        Type=notify
        NotifyAccess=all
        ExecStart={SH_NOTIFY}
        """,
    )
    started = time.monotonic()
    user_manager.systemctl("start", name)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.9, f"start returned after {elapsed:.2f}s, before READY=1"
    props = user_manager.show(name, "ActiveState", "SubState", "StatusText")
    assert props == {
        "ActiveState": "active",
        "SubState": "running",
        "StatusText": "hello",
    }
    user_manager.systemctl("stop", name)
    user_manager.wait_for(name, "ActiveState", "inactive", timeout=5)


def test_exit_code_failure(
    user_manager: UserManager,  # noqa: F811
    units: list[str],
) -> None:
    """
    A unit whose process exits 3 fails with Result=exit-code.
    """
    name = user_manager.unique_name("exit3")
    units.append(name)
    user_manager.write_unit(
        name,
        """
        [Service]
        Type=oneshot
        ExecStart=/bin/sh -c 'exit 3'
        """,
    )
    result = user_manager.systemctl("start", name, check=False)
    assert result.returncode != 0
    props = user_manager.show(name, "ActiveState", "Result", "ExecMainStatus")
    assert props == {
        "ActiveState": "failed",
        "Result": "exit-code",
        "ExecMainStatus": "3",
    }


@every_manager
def test_python_main_process_notifies(manager: UserManager, units: list[str]) -> None:
    """
    A Python main process finds NOTIFY_SOCKET and its READY=1 is accepted
    under the default NotifyAccess=main.
    """
    name = manager.unique_name("notify-py")
    units.append(name)
    exec_start = python_exec_start(NOTIFY_CODE, "READY=1\nSTATUS=python ready", "300")
    manager.write_unit(
        name,
        f"""
        [Service]
        Type=notify
        TimeoutStartSec=10
        ExecStart={exec_start}
        """,
    )
    manager.systemctl("start", name)
    props = manager.show(name, "ActiveState", "NotifyAccess", "StatusText")
    assert props == {
        "ActiveState": "active",
        "NotifyAccess": "main",
        "StatusText": "python ready",
    }


@only_254
def test_unpacked_254(manager: UserManager, units: list[str], tmp_path: Path) -> None:
    """
    The 254 manager is the unpacked systemd 254, talked to by its own
    systemctl; its libraries are for those two alone: nothing reaches a
    unit's environment.
    """
    assert manager.systemctl("--version").stdout.startswith("systemd 254 ")
    assert manager.show("init.scope", "Id") == {"Id": "init.scope"}
    argv = Path(f"/proc/{manager.pid}/cmdline").read_bytes().split(b"\0")
    assert manager.build.systemd is not None
    assert manager.build.systemd.encode() in argv
    name = manager.unique_name("env")
    units.append(name)
    dump = tmp_path / "environ"
    manager.write_unit(
        name,
        f"""
        [Service]
        Type=oneshot
        ExecStart=/bin/sh -c 'env > {dump}'
        """,
    )
    manager.systemctl("start", name)
    environ = dump.read_text()
    assert "XDG_RUNTIME_DIR=" in environ
    assert "LD_LIBRARY_PATH" not in environ
    assert ".cache" not in environ


def test_watchdog_fires(user_manager: UserManager, units: list[str]) -> None:  # noqa: F811
    """
    A ready unit with WatchdogSec=1 that never pings fails with
    Result=watchdog.
    """
    name = user_manager.unique_name("watchdog")
    units.append(name)
    exec_start = python_exec_start(NOTIFY_CODE, "READY=1", "300")
    user_manager.write_unit(
        name,
        f"""
        [Service]
        Type=notify
        WatchdogSec=1
        ExecStart={exec_start}
        """,
    )
    user_manager.systemctl("start", name)
    assert user_manager.show(name, "WatchdogUSec") == {"WatchdogUSec": "1s"}
    user_manager.wait_for(name, "Result", "watchdog", timeout=5)
    user_manager.wait_for(name, "ActiveState", "failed", timeout=5)


def test_stop_leaves_nothing(tmp_path: Path) -> None:
    """
    A manager of its own, with a unit running: after stop() neither the
    manager nor the unit's process exist and its cgroups are gone.
    """
    manager = start_or_skip(tmp_path)
    try:
        name = manager.unique_name("lingering")
        manager.write_unit(
            name,
            """
            [Service]
            ExecStart=/bin/sleep 300
            """,
        )
        manager.systemctl("start", name)
        main_pid = int(manager.wait_for(name, "MainPID", lambda v: v not in ("", "0")))
        manager_pid = manager.pid
        cgroups = manager.cgroup_paths
        assert cgroups and all(c.is_dir() for c in cgroups)
    finally:
        manager.stop()
    for pid in (manager_pid, main_pid):
        assert not _exists(pid), f"process {pid} survived stop()"
    assert not any(c.exists() for c in cgroups)
    assert (
        "systemd --user"
        not in subprocess.run(
            ["ps", "-o", "args=", "-p", f"{manager_pid},{main_pid}"],
            capture_output=True,
            text=True,
        ).stdout
    )


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@every_manager
def test_hardened_unit_notifies(manager: UserManager, units: list[str]) -> None:
    """
    A unit that hides /tmp (C{PrivateTmp=}) and runs as a user systemd
    makes up (C{DynamicUser=}) still reaches the manager's notify socket:
    the runtime directory is under /run, readable by all, and the socket
    writable by all, as C{/run/systemd/notify} is.
    """
    runtime = manager.runtime_dir
    assert runtime is not None
    assert not str(runtime).startswith(("/tmp/", tempfile.gettempdir() + "/"))
    notify = runtime / "systemd" / "notify"
    # The runtime directory is a tmpfs in the manager's mount namespace.
    modes = manager.run_in_namespace(
        ["stat", "-c", "%a", str(runtime), str(notify)], check=True
    ).stdout.split()
    assert modes == ["755", "777"]
    name = manager.unique_name("notify-hardened")
    units.append(name)
    # Not this test run's Python: it may live where a dynamic user cannot go.
    exec_start = exec_line(
        ["/usr/bin/python3", "-c", NOTIFY_CODE, "READY=1\nSTATUS=hardened", "300"]
    )
    manager.write_unit(
        name,
        f"""
        [Service]
        Type=notify
        TimeoutStartSec=20
        DynamicUser=yes
        PrivateTmp=yes
        ExecStart={exec_start}
        """,
    )
    manager.systemctl("start", name)
    props = manager.show(name, "ActiveState", "StatusText")
    assert props == {"ActiveState": "active", "StatusText": "hardened"}
