"""
C{twistd -n sdweb --workers 2} as the unit of a real systemd manager: one
main process that systemd sees, ready once both workers are, reloaded by
replacing the workers under the same main PID, and stopped cleanly with a
request in flight.
"""

from __future__ import annotations

import time

from test_systemd_units import (  # noqa: F401 - the fixture
    CLEAN_STOP,
    Curl,
    SdwebFactory,
    get,
    sdweb,
)
from test_workers import childPids, pidOf


def test_workers_unit(sdweb: SdwebFactory) -> None:  # noqa: F811
    unit = sdweb(
        "--workers",
        "2",
        "--class",
        "pidapp.Pid",
        "--status-interval",
        "0.2",
        WatchdogSec="10",
    )
    unit.start()
    master = unit.main_pid()
    status = unit.prop("StatusText")
    assert "Workers: 2 ready" in status
    workers = childPids(master)
    assert len(workers) == 2
    assert pidOf(get(unit.url())[1]) in workers

    unit.systemctl("reload")
    unit.wait_for_output("sdweb reloaded", timeout=60)
    unit.wait_for("StatusText", lambda v: "Workers: 2 ready" in v)
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

    client = Curl(unit.url("/slow?s=2"))
    try:
        unit.in_flight(1)
        unit.systemctl("stop")
        client.finish()
    finally:
        client.kill()
    assert (client.returncode, client.status) == (0, 200), client
    assert pidOf(client.body) in renewed
    assert unit.prop("ActiveState") == "inactive"
    assert unit.ended() == [CLEAN_STOP]
    assert "Traceback (most recent call last)" not in unit.output()
