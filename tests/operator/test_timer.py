"""NextRunTimer: one thread, woken only for the schedule that is due."""

import datetime as dt
import queue

import pytest

from ingestion_operator.timer import NextRunTimer

UTC = dt.timezone.utc


@pytest.fixture
def fired():
    q: queue.Queue = queue.Queue()
    timer = NextRunTimer(lambda ns, name: q.put((ns, name)), grace=0.0)
    timer.start()
    yield timer, q
    timer.stop()


def soon(seconds: float) -> dt.datetime:
    return dt.datetime.now(UTC) + dt.timedelta(seconds=seconds)


def test_fires_in_due_order_and_only_once(fired):
    timer, q = fired
    timer.set(("ns", "later"), soon(0.4))
    timer.set(("ns", "first"), soon(0.1))
    assert q.get(timeout=5) == ("ns", "first")
    assert q.get(timeout=5) == ("ns", "later")
    assert timer.pending() == {}
    with pytest.raises(queue.Empty):
        q.get(timeout=0.3)


def test_a_new_due_time_replaces_the_old_and_none_forgets(fired):
    timer, q = fired
    timer.set(("ns", "moved"), soon(0.1))
    timer.set(("ns", "moved"), soon(0.5))  # superseded: fires once, at the new time
    timer.set(("ns", "gone"), soon(0.2))
    timer.set(("ns", "gone"), None)
    assert q.get(timeout=5) == ("ns", "moved")
    with pytest.raises(queue.Empty):
        q.get(timeout=0.5)


def test_a_failing_reconcile_is_tried_again_later():
    calls: queue.Queue = queue.Queue()

    def fire(ns, name):
        calls.put(name)
        raise RuntimeError("API server down")

    timer = NextRunTimer(fire, grace=0.0)
    timer.RETRY = dt.timedelta(seconds=0.2)
    timer.start()
    try:
        timer.set(("ns", "s"), soon(0.05))
        assert [calls.get(timeout=5), calls.get(timeout=5)] == ["s", "s"]
    finally:
        timer.stop()


def test_stop_ends_the_thread_promptly():
    timer = NextRunTimer(lambda ns, name: None)
    timer.set(("ns", "far"), soon(3600))
    timer.start()
    timer.stop()
    assert not timer._thread.is_alive()
