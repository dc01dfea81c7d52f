"""
Socket activation and fd-store restarts under the real (private) systemd
user manager: the first connection starts the service, names show in the
log, and restarts under a steady load lose no request.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import freePort, portAnswers, processEnv, twistdCommand
from loadgen import steadyLoad
from systemd_harness import UserManager, every_manager, exec_line


def serviceUnit(tmp_path: Path, args: list[str], extra: str = "") -> str:
    env = processEnv()
    execStart = exec_line(twistdCommand() + ["-n", "--pidfile=", "sdweb", *args])
    pythonpath = env["PYTHONPATH"].replace("%", "%%")
    return f"""
        [Service]
        Type=notify
        ExecStart={execStart}
        KillMode=mixed
        TimeoutStopSec=40
        WorkingDirectory={tmp_path}
        Environment="PYTHONPATH={pythonpath}"
        StandardOutput=append:{tmp_path}/unit.log
        StandardError=inherit
        {extra}
        """


def writeSocketUnit(manager: UserManager, service: str, port: int) -> str:
    """
    Write the socket unit (C{FileDescriptorName=web}) of C{service} on
    127.0.0.1:C{port}; its name.
    """
    socketUnit = service.replace(".service", ".socket")
    manager.write_unit(
        socketUnit,
        f"""
        [Socket]
        ListenStream=127.0.0.1:{port}
        FileDescriptorName=web
        Service={service}
        """,
    )
    return socketUnit


def get(port: int, path: str = "/") -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return r.status, r.read()


def unitLog(tmp_path: Path) -> str:
    log = tmp_path / "unit.log"
    return log.read_text(errors="replace") if log.exists() else ""


@every_manager
@pytest.mark.parametrize("portOption", [[], ["--port", "systemd:domain=INET:name=web"]])
def test_socketActivation(
    manager: UserManager,
    units: list[str],
    tmp_path: Path,
    portOption: list[str],
) -> None:
    port = freePort()
    service = manager.unique_name("act")
    manager.write_unit(service, serviceUnit(tmp_path, portOption))
    socketUnit = writeSocketUnit(manager, service, port)
    units.extend([socketUnit, service])
    manager.systemctl("start", socketUnit)
    assert manager.show(service, "ActiveState")["ActiveState"] == "inactive"
    # The first connection starts the service, and is answered.
    status, body = get(port)
    assert status == 200 and b"sdweb is serving" in body
    manager.wait_for(service, "ActiveState", "active", timeout=30)
    log = unitLog(tmp_path)
    assert "[web]" in log, log
    assert f"127.0.0.1:{port}" in log


def restartUnderLoad(
    user_manager: UserManager,  # noqa: F811
    service: str,
    port: int,
    tmp_path: Path,
    restarts: int = 3,
) -> dict[str, Any]:
    """
    Restart C{service} several times while a separate process sends a steady
    stream of requests; return that process's counts.
    """
    with steadyLoad(f"http://127.0.0.1:{port}/", tmp_path / "stop-load") as counts:
        time.sleep(1.0)
        pids = {user_manager.show(service, "MainPID")["MainPID"]}
        for _ in range(restarts):
            user_manager.systemctl("restart", service, timeout=60)
            pids.add(user_manager.show(service, "MainPID")["MainPID"])
            time.sleep(1.0)
        assert len(pids) == restarts + 1, pids
    return counts


def startStoring(
    manager: UserManager, units: list[str], tmp_path: Path, args: list[str]
) -> tuple[str, int]:
    """
    Start an sdweb service with an fd store (C{FileDescriptorStoreMax=4})
    and C{args} on a free port; its name and port.
    """
    port = freePort()
    service = manager.unique_name("store")
    manager.write_unit(
        service,
        serviceUnit(
            tmp_path,
            [*args, "--port", f"tcp:{port}:interface=127.0.0.1"],
            "FileDescriptorStoreMax=4",
        ),
    )
    units.append(service)
    manager.systemctl("start", service)
    return service, port


def assertStoredRestartsLoseNoRequest(
    manager: UserManager, service: str, port: int, tmp_path: Path
) -> None:
    """
    Restarts of C{service} under a steady load fail no request, and the
    new processes adopt the stored sockets.
    """
    counts = restartUnderLoad(manager, service, port, tmp_path)
    log = unitLog(tmp_path)
    print("fd store restarts:", counts)
    assert counts["failed"] == 0, (counts, log)
    assert counts["ok"] > 300, counts
    assert "from the fd store" in log


@every_manager
def test_fdStoreRestartsLoseNoRequest(
    manager: UserManager,
    units: list[str],
    tmp_path: Path,
) -> None:
    service, port = startStoring(manager, units, tmp_path, ["--fd-store"])
    assertStoredRestartsLoseNoRequest(manager, service, port, tmp_path)


def test_socketUnitRestartsLoseNoRequest(
    user_manager: UserManager,  # noqa: F811
    units: list[str],
    tmp_path: Path,
) -> None:
    port = freePort()
    service = user_manager.unique_name("sockrestart")
    socketUnit = service.replace(".service", ".socket")
    user_manager.write_unit(service, serviceUnit(tmp_path, []))
    user_manager.write_unit(
        socketUnit,
        f"""
        [Socket]
        ListenStream=127.0.0.1:{port}
        Service={service}
        """,
    )
    units.extend([socketUnit, service])
    user_manager.systemctl("start", socketUnit)
    user_manager.systemctl("start", service)
    counts = restartUnderLoad(user_manager, service, port, tmp_path)
    print("socket unit restarts:", counts)
    assert counts["failed"] == 0, (counts, unitLog(tmp_path))
    assert counts["ok"] > 300, counts


def test_withoutStoreTheFlagChangesNothing(
    user_manager: UserManager,  # noqa: F811
    units: list[str],
    tmp_path: Path,
) -> None:
    port = freePort()
    service = user_manager.unique_name("nostore")
    user_manager.write_unit(
        service,
        serviceUnit(tmp_path, ["--port", f"tcp:{port}:interface=127.0.0.1"]),
    )
    units.append(service)
    user_manager.systemctl("start", service)
    assert get(port)[0] == 200
    # Under load, a restart without a store does lose requests: the port is
    # closed between the two processes.  That is what the store is for.
    counts = restartUnderLoad(user_manager, service, port, tmp_path, restarts=2)
    print("restarts without a store:", counts)
    assert counts["failed"] > 0
    assert get(port)[0] == 200
    user_manager.systemctl("stop", service)
    assert not portAnswers(port)


def test_staleStoredSocketDropped(
    user_manager: UserManager,  # noqa: F811
    units: list[str],
    tmp_path: Path,
) -> None:
    kept, dropped = freePort(), freePort()
    service = user_manager.unique_name("stale")
    both = [
        "--fd-store",
        "--port",
        f"tcp:{kept}:interface=127.0.0.1",
        "--port",
        f"tcp:{dropped}:interface=127.0.0.1",
    ]
    user_manager.write_unit(
        service, serviceUnit(tmp_path, both, "FileDescriptorStoreMax=4")
    )
    units.append(service)
    user_manager.systemctl("start", service)
    assert portAnswers(kept) and portAnswers(dropped)
    user_manager.write_unit(
        service,
        serviceUnit(tmp_path, both[:3], "FileDescriptorStoreMax=4"),
    )
    user_manager.systemctl("restart", service)
    assert get(kept)[0] == 200
    # The stored copy is gone from systemd too: nothing listens there now.
    time.sleep(0.5)
    assert not portAnswers(dropped), unitLog(tmp_path)
    assert "Dropping sdweb-tcp_" in unitLog(tmp_path)
