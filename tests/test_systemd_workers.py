"""
C{twistd -n sdweb --workers 2} as the unit of a real systemd manager: one
main process that systemd sees, ready once both workers are, reloaded by
replacing the workers under the same main PID, and stopped cleanly with a
request in flight.
"""

from __future__ import annotations

import time
from pathlib import Path

from conftest import freePort, waitUntil
from systemd_harness import UserManager, only_254
from test_systemd_254 import NOTIFY_RELOAD
from test_systemd_activation import (
    assertStoredRestartsLoseNoRequest,
    serviceUnit,
    startStoring,
    writeSocketUnit,
)
from test_systemd_units import (  # noqa: F401 - the fixture
    CLEAN_STOP,
    START_TIMEOUT,
    Curl,
    SdwebFactory,
    get,
    sdweb,
)
from test_workers import childPids, flipApp, pidOf, refusedWithin


def test_workers_unit(sdweb: SdwebFactory) -> None:  # noqa: F811
    unit = sdweb(
        "--workers",
        "2",
        "--class",
        "pidapp.Pid",
        "--status-interval",
        "0.2",
        WatchdogSec="2",
    )
    unit.start()
    master = unit.main_pid()
    status = unit.prop("StatusText")
    assert status.startswith("2/2 workers")
    workers = childPids(master)
    assert len(workers) == 2
    assert pidOf(get(unit.url())[1]) in workers
    # The master pings the watchdog (every second for WatchdogSec=2) while
    # both workers report: the manager saw the pings, and did not kill it.
    assert unit.prop("WatchdogUSec") == "2s"
    pings = set()
    until = time.monotonic() + 3 * 2 + 0.5
    while time.monotonic() < until:
        props = unit.show("ActiveState", "MainPID", "WatchdogTimestampMonotonic")
        assert (props["ActiveState"], props["MainPID"]) == ("active", str(master))
        pings.add(props["WatchdogTimestampMonotonic"])
        time.sleep(0.2)
    assert len(pings) >= 3, pings

    unit.systemctl("reload")
    unit.wait_for_output("sdweb reloaded", timeout=60)
    unit.wait_for("StatusText", lambda v: v.startswith("2/2 workers"))
    assert unit.show("ActiveState", "MainPID") == {
        "ActiveState": "active",
        "MainPID": str(master),
    }
    deadline = time.monotonic() + 30
    while childPids(master) & workers and time.monotonic() < deadline:
        time.sleep(0.05)
    renewed = childPids(master)
    assert len(renewed) == 2 and not renewed & workers
    assert pidOf(get(unit.url())[1]) in renewed

    client = Curl(unit.url("/slow?s=3"))
    try:
        unit.in_flight(1)
        unit.manager.systemctl("stop", "--no-block", unit.name)
        unit.wait_for("ActiveState", "deactivating", timeout=10)
        # The ports close when the drain starts: a new connection is
        # refused at once, as with one process, while the slow request
        # finishes.
        assert refusedWithin(unit.port, 1.0) < 1.0
        client.finish()
    finally:
        client.kill()
    unit.wait_for("ActiveState", "inactive", timeout=30)
    assert (client.returncode, client.status) == (0, 200), client
    assert pidOf(client.body) in renewed
    assert unit.prop("ActiveState") == "inactive"
    assert unit.ended() == [CLEAN_STOP]
    assert "Traceback (most recent call last)" not in unit.output()


@only_254
def test_workers_notify_reload(sdweb: SdwebFactory) -> None:  # noqa: F811
    """
    Type=notify-reload: C{systemctl reload} returns, successful, once the
    master has replaced both workers and said C{READY=1}.
    """
    unit = sdweb("--workers", "2", "--class", "pidapp.Pid", **NOTIFY_RELOAD)
    unit.start()
    master = unit.main_pid()
    workers = childPids(master)
    assert len(workers) == 2
    result = unit.systemctl("reload", check=False, timeout=START_TIMEOUT + 30)
    assert result.returncode == 0, (result, unit.output())
    assert unit.show("ActiveState", "MainPID", "ReloadResult") == {
        "ActiveState": "active",
        "MainPID": str(master),
        "ReloadResult": "success",
    }
    # Both new workers were ready before the READY=1 that ended the reload.
    assert len(childPids(master) - workers) == 2
    assert unit.prop("StatusText").startswith("2/2 workers")


def test_workers_socket_activation(
    manager: UserManager, units: list[str], tmp_path: Path
) -> None:
    """
    A socket unit's socket, passed to the master (no --port), is served by
    both workers.
    """
    port = freePort()
    service = manager.unique_name("wact")
    manager.write_unit(
        service, serviceUnit(tmp_path, ["--workers", "2", "--class", "pidapp.Pid"])
    )
    socketUnit = writeSocketUnit(manager, service, port)
    units.extend([socketUnit, service])
    manager.systemctl("start", socketUnit)
    # The first connection starts the service, and is answered by a worker.
    first = pidOf(get(f"http://127.0.0.1:{port}/")[1])
    manager.wait_for(service, "ActiveState", "active", timeout=30)
    master = int(manager.show(service, "MainPID")["MainPID"])
    workers = childPids(master)
    assert first in workers and len(workers) == 2


def test_workers_fd_store_restarts_lose_no_request(
    user_manager: UserManager, units: list[str], tmp_path: Path
) -> None:
    """
    With the fd store, restarts of a --workers 2 service under a steady load
    fail no request: each new master adopts the stored socket.
    """
    service, port = startStoring(
        user_manager, units, tmp_path, ["--fd-store", "--workers", "2"]
    )
    assertStoredRestartsLoseNoRequest(user_manager, service, port, tmp_path)


def test_workers_broken_reload_keeps_the_old_workers(
    sdweb: SdwebFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    """
    C{systemctl reload} into code that no longer imports: the unit stays
    active under the same main PID, the status says the reload failed, and
    the old workers serve on.
    """
    site, app = flipApp(tmp_path)
    unit = sdweb(
        "--workers",
        "2",
        "--pythonpath",
        str(site),
        "--class",
        "flipapp.Pid",
        "--status-interval",
        "0.2",
    )
    unit.start()
    master = unit.main_pid()
    workers = childPids(master)
    assert len(workers) == 2
    app.write_text("raise RuntimeError('flipapp is broken now')\n")
    unit.systemctl("reload")
    unit.wait_for("StatusText", lambda v: "Reload failed" in v)
    # The status says it in short; the log has the reason.
    waitUntil(lambda: "flipapp is broken now" in unit.log.read_text(), timeout=30)
    assert unit.show("ActiveState", "MainPID") == {
        "ActiveState": "active",
        "MainPID": str(master),
    }
    assert childPids(master) == workers
    assert pidOf(get(unit.url())[1]) in workers
