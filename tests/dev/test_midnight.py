"""Midnight-proof: the job tests derive every date from one clock (tests/job/conftest.py),
handed to the product through its own inputs (``run(now=...)``, ``--as-of``). Proven here by
running them all with that clock pinned to yesterday just before midnight, so that the wall
clock is already a day later: a run that read the wall clock for its window would shift it a
day and fail its test (15 of them do, with the pinning taken out)."""

from __future__ import annotations

import ast
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.servers
@pytest.mark.timeout(1260)  # the whole job suite again: 400 s on the faster machine, over 600 s on one twice as slow
def test_job_tests_pass_with_their_clock_just_before_a_midnight_already_past():
    yesterday = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    pinned = f"{yesterday.isoformat()}T23:59:59.9Z"
    # (test_throttling.py and the run of every key throttled twice are left out: minutes of
    #  backoff waited out, nothing in them depends on the date; every other job test runs
    #  again on the pinned clock)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "job"),
                          f"--ignore={TESTS / 'job' / 'test_throttling.py'}",
                          "--deselect", "tests/job/test_honest_runs.py::test_every_key_throttled_twice_still_repairs_everything"],
                         cwd=TESTS.parent, env={**os.environ, "INGESTION_TEST_NOW": pinned},
                         capture_output=True, text=True, timeout=1200)
    tail = out.stdout[-3000:]
    assert out.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail and " skipped" not in tail, tail


def test_job_test_modules_read_no_wall_clock():
    """Only tests/job/conftest.py reads the clock; the modules take TODAY, days_ago() and run()."""
    offenders = []
    for path in sorted((TESTS / "job").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("now", "today", "utcnow") and \
                    isinstance(node.value, (ast.Name, ast.Attribute)):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == [], f"job tests reading the wall clock: {offenders}"
