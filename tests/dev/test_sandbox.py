"""The README's first command: ``dev/sandbox up`` on a real node, ``status``, the sample data's
story (a first tick repairs what is present, the late arrivals are repaired by a later tick,
the never-published cells stay open gaps), then ``down`` removing exactly what ``up`` made."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client, config

from ingestion_dev import sandbox
from ingestion_dev.cluster import ControlPlane
from ingestion_dev.node import host_footprint
from ingestion_dev.operatorproc import wait_for

from ..samples import store_rows

DEV = [str(Path(sys.executable).parent / "ingestion-dev"), "sandbox"]


@pytest.fixture
def tmp_path(tmp_path_factory):
    """A short one: the nodes' state lives under it, and the kubelet's unix sockets under a
    test-named directory of xdist's worker (popen-gwN) would pass a socket's 107 bytes."""
    return tmp_path_factory.mktemp("n")


def gaps(db: Path, today: dt.date) -> dict | None:
    """{(symbol, days before ``today``, interval): status} of the sandbox's daily files, and
    {(symbol, month, interval, 'monthly'): status} of its archives (None before its first run)."""
    if not db.exists():
        return None
    rows = store_rows(db, "SELECT symbol, variant, period, date, status FROM gaps", wait=30)
    return {(s, (today - d).days, v.removeprefix("interval=")) if p == "daily" else (s, d, v.removeprefix("interval="), p): status
            for s, v, p, d, status in rows}


@pytest.mark.node
@pytest.mark.build
def test_sandbox_up_status_down(tmp_path):
    state = tmp_path / "sandbox"
    before = host_footprint(state)
    today = dt.datetime.now(dt.timezone.utc).date()  # the day 'up' seeds its data from, seconds later
    up = subprocess.run([*DEV, "up", "--state-dir", str(state)], capture_output=True, text=True, timeout=900)
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        assert "sandbox is up" in up.stdout and f"schedule '{sandbox.SCHEDULE_NAME}' runs every minute" in up.stdout

        status = subprocess.run([*DEV, "status", "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
        st = json.loads(status.stdout)
        assert status.returncode == 0 and st["ready"], status.stdout
        assert {"etcd", "kube-apiserver", "kubelet", "containerd", "seaweedfs", "pushgateway"} <= set(st["processes"]), st
        assert all(isinstance(pid, int) for pid in st["processes"].values())

        plane = ControlPlane(state, node=True)
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        custom = client.CustomObjectsApi(api)

        def last_run():
            obj = custom.get_namespaced_custom_object("ingestion.dev", "v1alpha1", "default", "ingestionschedules", sandbox.SCHEDULE_NAME)
            return (obj.get("status") or {}).get("lastRun") or {}

        assert wait_for(lambda: last_run().get("outcome") in ("Succeeded", "Failed") and last_run(), 150, "the first tick's run",
                        interval=2)["outcome"] == "Succeeded", last_run()
        db = plane.node.dir / "volumes" / "sandbox-data" / "sandbox.duckdb"
        late = {k: "repaired" for k in sandbox.LATE}
        # the late arrivals come ~90 s after up; the next tick after that repairs them
        got = wait_for(lambda: (g := gaps(db, today)) and all(g.get(k) == "repaired" for k in late) and g, 240,
                       "the late arrivals repaired", interval=3)
        assert {k: got[k] for k in sandbox.MISSING} == {k: "open" for k in sandbox.MISSING}
        # every published cell: a new symbol's history is backfilled, its daily files from the
        # boundary and the monthly archives before it (the schedule's target.archive)
        archives = {(s, m, i, "monthly") for s, m, i in sandbox.archives(today)}
        assert {k: got[k] for k in archives} == {k: "repaired" for k in archives}
        days = len(sandbox._cells(exclude=sandbox.MISSING, today=today))
        assert sum(1 for v in got.values() if v == "repaired") == days + len(archives)
        assert len(archives) == 12 and days == 3 * 2 * (today - sandbox.boundary(today)).days - 2
    finally:
        down = subprocess.run([*DEV, "down", "--state-dir", str(state)], capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    assert host_footprint(state) == before
    again = subprocess.run([*DEV, "status", "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 3 and json.loads(again.stdout)["processes"] == {}
