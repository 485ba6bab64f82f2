"""The benchmarks still run (small sizes): a benchmark that rots is found here, not on the day
someone needs its figures. Each starts its own SeaweedFS on loopback."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.servers, pytest.mark.cluster]  # the scripts start their own

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_bench_job_small():
    table = bench("bench_job.py", "--symbols", "3", "--days", "5", "--upsert-rows", "10000", "--repairs", "20")
    assert "| probe, list by symbol prefix (ours) | 3 |" in table and "15 found" in table
    assert "| probe, one HEAD per object (baseline) | 15 |" in table
    assert "| whole run, 3 symbols x 5 days (15 cells, no repairs), first run |" in table
    assert "rerun, nothing new | - |" in table and table.rstrip().count("of the floor") == 2
    rerun = next(line for line in table.splitlines() if "rerun, nothing new" in line)
    assert rerun.endswith("; 0 rows written |"), rerun  # a rerun with nothing new writes nothing


def test_bench_throttle_small():
    table = bench("bench_throttle.py", "--symbols", "2", "--days", "3")
    assert "| every key throttled twice | succeeded | 6 | 0 |" in table and "| 24 |" in table
    assert "goal (every repair succeeds in one run): met" in table


def test_bench_faults_small():
    table = bench("bench_faults.py", "--kills", "2", "--outage", "2")
    assert "| SIGKILL at a random point, restart | 2 kills" in table and "most CronJobs one schedule owned: 1" in table
    assert "writes on a quiet restart: 0" in table
    assert table.count("operator restarted: no") == 2


def test_bench_scale_small():
    table = bench("bench_scale.py", "--schedules", "20", "--quiet", "2", "--no-tick")
    assert "| bare client: 20 CronJobs, sequential |" in table and "| operator: 20 schedules created" in table
    assert "the floor of the operator's contract" in table and "x its contract's floor" in table
    assert "0 writes to schedules, CronJobs, Events" in table and "goal < 150 MB: met" in table
    assert "| 20 applies (server-side dry-run creates, one at a time) with the admission webhook | p99 " in table
    assert "| CPU during the floor |" in table and "| CPU during the operator's convergence |" in table
    assert "kube-apiserver" in table and "operator" in table.split("| CPU during the operator's convergence |")[1]
    assert "| operator CPU per second of the API server's while converging |" in table and "the floor's client: " in table


def test_bench_scale_without_the_audit_log():
    """--no-audit: the operator's writes come from its own counter, and the table says what it
    could not count."""
    table = bench("bench_scale.py", "--schedules", "20", "--quiet", "2", "--no-tick", "--no-audit")
    assert "audit log off" in table and "| operator: 20 schedules created" in table
    assert "| operator API writes per schedule while converging | 3.00 writes |" in table
    assert "requests: not counted (no audit log)" in table and "| CPU during the floor |" in table


def test_bench_delta_small():
    table = bench("bench_delta.py", "--symbols", "5", "--days", "8", "--rounds", "1", "--every", "4", "--off-days", "4")
    assert "### First run: 5 symbols x 8 days = 40 cells (1 missing)" in table
    assert "| a new day (5 new cells) |" in table and "| nothing new | 1 |" in table
    assert "| default (compactAfterFiles 32) | 8 | 40 |" in table and "| housekeeping off | 4 | 20 |" in table


def test_bench_dimensions_small():
    """The script asserts each run's requests itself (1 + a listing per series and period)."""
    table = bench("bench_dimensions.py", "--symbols", "4", "--days", "120")
    assert "| every day (120 days) | 4 | 3 | 1,440 | 1,440 | 13 |" in table
    assert "| the last 30 days (symbolRanges from) | 4 | 3 | 360 | 360 | 13 |" in table
    assert "(target.archive) | 4 | 3 | 1,116 | 1,116 | 25 |" in table
