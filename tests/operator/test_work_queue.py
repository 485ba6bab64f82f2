"""The work queue every reconcile runs on: one run at a time per key, what waits merges, an
older body never runs after a newer one, and the last event of a key is always run."""

from __future__ import annotations

import random
import threading
import time

from hypothesis import given, settings, strategies as st

from ingestion_operator.informer import Work, WorkQueue


def body(rv: int) -> dict:
    return {"metadata": {"resourceVersion": str(rv)}}


def test_what_waits_merges_into_one_run():
    assert Work("schedule", body(1)).merged(Work("cronjob")) == Work("schedule", body(1))  # the first names it
    assert Work("cronjob").merged(Work("schedule", body(2))) == Work("cronjob", body(2))  # the newest body
    assert Work("schedule", body(1)).merged(Work("timer")) == Work("timer", body(1))  # a timer's run reads its CronJob
    assert Work("timer").merged(Work("job")) == Work("timer")
    assert Work("schedule", body(1)).merged(Work("deleted")) == Work("deleted", None, True)  # a deletion drops it
    assert Work("deleted", None, True).merged(Work("schedule", body(3))) == Work("schedule", body(3), True)  # forgets first
    e1, e2 = ("cronjob", "ns", "a", "1"), ("schedule", "ns", "a", "2")
    assert Work("cronjob", echoes=(e1,)).merged(Work("schedule", body(2), echoes=(e2,))).echoes == (e1, e2)  # maybe both ours
    assert Work("cronjob", echoes=(e1,)).merged(Work("job")).echoes == ()  # a Job's event: it runs whatever else


def test_a_burst_for_one_key_while_it_runs_costs_one_more_run_with_the_newest_body():
    started, release, runs = threading.Event(), threading.Event(), []

    def run(key, work):
        runs.append((key, work))
        started.set()
        release.wait(5)

    q = WorkQueue(run, workers=4)
    q.start()
    try:
        q.put("a", Work("schedule", body(1)))
        assert started.wait(5)
        for rv in range(2, 50):
            q.put("a", Work("schedule" if rv % 2 else "cronjob", body(rv) if rv % 2 else None))
        assert q.pending() == {"a": Work("cronjob", body(49))}
        release.set()
        deadline = time.monotonic() + 5
        while len(runs) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
    finally:
        q.stop()
    assert runs == [("a", Work("schedule", body(1))), ("a", Work("cronjob", body(49)))]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from(["schedule", "cronjob", "timer", "deleted"])),
                min_size=1, max_size=60), st.integers(1, 6))
def test_runs_of_a_key_never_overlap_never_go_back_and_end_on_its_last_event(events, workers):
    lock, running, seen, overlap = threading.Lock(), set(), {}, []

    def run(key, work):
        with lock:
            if key in running:
                overlap.append(key)
            running.add(key)
        time.sleep(random.random() / 1000)
        with lock:
            running.discard(key)
            seen.setdefault(key, []).append(work)

    q = WorkQueue(run, workers)
    q.start()
    last = {}
    try:
        for rv, (key, trigger) in enumerate(events, 1):
            work = Work(trigger, None if trigger in ("deleted", "timer") else body(rv))
            q.put(key, work)
            last[key] = (rv, trigger)
            if rv % 7 == 0:
                time.sleep(0.002)
        deadline = time.monotonic() + 10
        while (q.pending() or running) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.02)
    finally:
        q.stop()
    assert not overlap
    for key, works in seen.items():
        versions = [int(w.body["metadata"]["resourceVersion"]) for w in works if w.body is not None]
        assert versions == sorted(versions), (key, works)  # never an older body after a newer one
        rv, trigger = last[key]
        end = works[-1]
        assert (end.trigger == "deleted") == (trigger == "deleted")  # the last event is what the last run did
        if trigger in ("schedule", "cronjob"):
            assert end.body == body(rv)
    assert set(seen) == set(last)
