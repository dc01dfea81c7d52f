# -*- test-case-name: tests.test_systemd_254 -*-
"""
What only systemd 254 (newer than the installed 252) does with sdweb, under
the unpacked 254 manager of L{systemd_harness}: C{Type=notify-reload}
(systemd sends SIGHUP and waits for C{RELOADING=1} + C{MONOTONIC_USEC}, then
C{READY=1}) and the automatic fd store (C{$FDSTORE} set by the manager: sdweb
stores its sockets without C{--fd-store}).
"""

from __future__ import annotations

import time
from pathlib import Path

from systemd_harness import UserManager, only_254
from test_systemd_activation import assertStoredRestartsLoseNoRequest, startStoring
from test_systemd_units import (
    DOCS_UNITS,
    START_TIMEOUT,
    Hammer,
    SdwebFactory,
    get,
    sdweb,  # noqa: F401
    wait_for_text,
)

# Type=notify-reload in place of Type=notify + ExecReload=/bin/kill -HUP.
NOTIFY_RELOAD = {"Type": "notify-reload", "ReloadSignal": "SIGHUP", "ExecReload": None}


@only_254
def test_notify_reload(sdweb: SdwebFactory, tmp_path: Path) -> None:  # noqa: F811
    """
    Type=notify-reload: C{systemctl reload} succeeds and returns only once
    sdweb has reloaded (RELOADING=1 with MONOTONIC_USEC, hooks, READY=1):
    the access log is already reopened when it returns.  Same main process,
    no failed request under a steady load, reload after reload.

    Without MONOTONIC_USEC systemd ignores the RELOADING=1 and the reload
    only ends, failed, at TimeoutStartSec.
    """
    access = tmp_path / "access.log"
    unit = sdweb("--class", "slowapp.Slow", "--logfile", str(access), **NOTIFY_RELOAD)
    unit.start()
    # No ExecReload= (systemctl show leaves out an empty one).
    assert unit.show("Type", "ExecReload") == {"Type": "notify-reload"}
    pid = unit.main_pid()
    with Hammer(unit.url("/loop")) as hammer:
        hammer.wait_for_more(3)
        began = time.monotonic()
        for n in range(1, 3):
            marker = f"/rotation-{n}"
            assert get(unit.url(f"{marker}-before"))[0] == 200
            wait_for_text(access, f"{marker}-before")
            access.rename(tmp_path / f"access.log.{n}")
            # Well under TimeoutStartSec: a reload systemd does not see
            # complete would end there, failed.
            asked = time.monotonic()
            result = unit.systemctl("reload", check=False, timeout=START_TIMEOUT + 30)
            took = time.monotonic() - asked
            print(f"systemctl reload {n} took {took:.2f}s")
            assert result.returncode == 0, (result, unit.output())
            assert took < START_TIMEOUT / 2, took
            # No waiting: systemd waited for the READY=1 that follows the
            # hooks (and their log line), so the log is open at its path.
            assert unit.output().count("sdweb reloaded") == n
            assert access.exists()
            assert unit.show("ActiveState", "MainPID", "ReloadResult") == {
                "ActiveState": "active",
                "MainPID": str(pid),
                "ReloadResult": "success",
            }
            assert get(unit.url(f"{marker}-after"))[0] == 200
            assert f"{marker}-before" not in wait_for_text(access, f"{marker}-after")
        ended = time.monotonic()
        hammer.wait_for_more(3)
    assert hammer.failures == []
    assert hammer.served_between(began, ended) > 0
    assert "Reload failed" not in unit.prop("StatusText")


@only_254
def test_docs_notify_reload_unit(sdweb: SdwebFactory) -> None:  # noqa: F811
    """
    docs/units/sdweb-notify-reload.service itself (paths, port and user
    adapted) runs: start, serve, reload, stop.
    """
    unit = sdweb(docs_unit=DOCS_UNITS / "sdweb-notify-reload.service")
    unit.start()
    assert unit.show("Type", "ActiveState") == {
        "Type": "notify-reload",
        "ActiveState": "active",
    }
    pid = unit.main_pid()
    assert get(unit.url("/docs"))[1] == b"wsgi fast\n"
    unit.systemctl("reload", timeout=START_TIMEOUT + 30)
    assert "sdweb reloaded" in unit.output()
    assert unit.show("MainPID", "ReloadResult") == {
        "MainPID": str(pid),
        "ReloadResult": "success",
    }
    assert get(unit.url("/docs-again"))[0] == 200
    unit.systemctl("stop")
    assert unit.prop("ActiveState") == "inactive"


@only_254
def test_automatic_fd_store(
    manager: UserManager, units: list[str], tmp_path: Path
) -> None:
    """
    FileDescriptorStoreMax= and no --fd-store: the manager tells sdweb
    (C{$FDSTORE}), sdweb keeps its socket there by itself, and restarts
    under a steady load lose no request.
    """
    service, port = startStoring(manager, units, tmp_path, [])
    pid = manager.show(service, "MainPID")["MainPID"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"FDSTORE=4" in environ
    manager.wait_for(service, "NFileDescriptorStore", "1")
    assertStoredRestartsLoseNoRequest(manager, service, port, tmp_path)
    assert manager.show(service, "NFileDescriptorStore") == {
        "NFileDescriptorStore": "1"
    }
