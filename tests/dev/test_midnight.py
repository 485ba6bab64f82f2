"""Midnight-proof: the job tests derive every date from one clock (tests/job/conftest.py),
handed to the product through its own inputs (``run(now=...)``, ``--as-of``). Proven here by
running them all with that clock pinned to yesterday just before midnight, so that the wall
clock is already a day later: a run that read the wall clock for its window would shift it a
day and fail its test (15 of them do, with the pinning taken out). ``dev/test`` pins the clock
for its whole run, so in CI the job tests run once, pinned; a plain ``pytest`` runs them again
here."""

from __future__ import annotations

import ast
import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def _proved_by_this_session(collected) -> str | None:
    """How this session's own job tests (among the ``collected`` items) already ran on a
    pinned clock, or None.

    ``dev/test`` (and so CI) pins the clock for the whole run (INGESTION_TEST_NOW, yesterday
    at 23:59:59.9 UTC): the job tests collected in this session are then the proof, and
    running them all again would double the suite's longest part."""
    pinned = os.environ.get("INGESTION_TEST_NOW")
    job = sys.modules.get("tests.job.conftest")
    jobs = sum(TESTS / "job" in Path(item.path).parents for item in collected)
    if not pinned or job is None or not jobs:
        return None
    wall = dt.datetime.now(dt.timezone.utc)
    assert job.START.date() < wall.date(), f"the pinned clock {pinned} is not before the last midnight ({wall:%F %T} UTC)"
    assert job.START.time() >= dt.time(23, 59), f"the pinned clock {pinned} is not just before a midnight"
    return f"this session's {jobs} job tests ran on {job.START.isoformat()}"


@pytest.mark.servers
@pytest.mark.timeout(1260)  # the whole job suite again: 400 s on the faster machine, over 600 s on one twice as slow
def test_job_tests_pass_with_their_clock_just_before_a_midnight_already_past(request):
    if _proved_by_this_session(request.session.items):
        return  # their own passes and failures are in this session's report
    yesterday = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    pinned = f"{yesterday.isoformat()}T23:59:59.9Z"
    # A session that did not pin its clock (a plain `pytest`) runs every job test again on
    # the pinned clock. (test_throttling.py and the run of every key throttled twice are left
    # out: minutes of backoff waited out, nothing in them depends on the date.) The child runs
    # in a process group of its own, killed whole on a timeout, so its S3 server goes too.
    child = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "job"),
                              f"--ignore={TESTS / 'job' / 'test_throttling.py'}",
                              "--deselect", "tests/job/test_honest_runs.py::test_every_key_throttled_twice_still_repairs_everything"],
                             cwd=TESTS.parent, env={**os.environ, "INGESTION_TEST_NOW": pinned},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        stdout, _ = child.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        stdout, _ = child.communicate()
        pytest.fail(f"the job tests on the pinned clock took over 1,200 s: {stdout[-3000:]}")
    finally:
        if child.poll() is None:  # this test itself interrupted
            os.killpg(child.pid, signal.SIGKILL)
    tail = stdout[-3000:]
    assert child.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail and " skipped" not in tail, tail


def test_a_pinned_session_is_its_own_proof_only_when_its_job_tests_ran_on_a_past_midnight(monkeypatch):
    import tests.job.conftest as job

    class Item:
        path = TESTS / "job" / "test_store.py"

    monkeypatch.setenv("INGESTION_TEST_NOW", "2020-01-01T23:59:59.9Z")
    monkeypatch.setattr(job, "START", dt.datetime(2020, 1, 1, 23, 59, 59, 900000, tzinfo=dt.timezone.utc))
    assert _proved_by_this_session([Item(), Item()]) == "this session's 2 job tests ran on 2020-01-01T23:59:59.900000+00:00"
    assert _proved_by_this_session([]) is None  # no job test in the session: nothing proved
    monkeypatch.setattr(job, "START", dt.datetime(2020, 1, 1, 12, 0, tzinfo=dt.timezone.utc))
    with pytest.raises(AssertionError, match="not just before a midnight"):
        _proved_by_this_session([Item()])
    monkeypatch.setattr(job, "START", dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1))
    with pytest.raises(AssertionError, match="not before the last midnight"):
        _proved_by_this_session([Item()])
    monkeypatch.delenv("INGESTION_TEST_NOW")
    assert _proved_by_this_session([Item()]) is None


def test_job_test_modules_read_no_wall_clock():
    """Only tests/job/conftest.py reads the clock; the modules take TODAY, days_ago() and run()."""
    offenders = []
    for path in sorted((TESTS / "job").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("now", "today", "utcnow") and \
                    isinstance(node.value, (ast.Name, ast.Attribute)):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == [], f"job tests reading the wall clock: {offenders}"
