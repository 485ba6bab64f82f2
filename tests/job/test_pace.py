"""The run's pace towards the source (AIMD), as a pure object: throttling halves the rate and
the requests in flight at most once a second, down to a floor; successes add back about one
request a second per second, up to the cap and the run's concurrency."""

from __future__ import annotations

import time

from ingestion_job.source import Pace


def test_throttling_halves_once_a_second_down_to_a_floor_and_successes_climb_back_to_the_cap():
    pace = Pace(cap=16, concurrency=8)
    assert (pace.rate, pace.in_flight_limit, pace.lowest) == (16.0, 8, 16.0)
    for _ in range(3):  # one burst of answers to requests already in flight counts once
        assert pace.acquire(time.monotonic() + 5)
        pace.release(throttled=True)
    assert (pace.rate, pace.in_flight_limit, pace.throttled) == (8.0, 4, 3)
    pace.CUT_EVERY = 0.0  # every answer may cut from now on
    for _ in range(10):
        pace.in_flight += 1
        pace.release(throttled=True)
    assert pace.rate == Pace.MIN_RATE and pace.in_flight_limit == 1 and pace.lowest == Pace.MIN_RATE
    for _ in range(2000):
        pace.in_flight += 1
        pace.release(throttled=False)
    assert pace.rate == 16.0 and pace.in_flight_limit == 8 and pace.lowest == Pace.MIN_RATE  # back to the cap, not past it


def test_a_byte_cap_holds_the_next_request_until_the_bytes_before_it_had_their_time():
    pace = Pace(cap=None, concurrency=4, bytes_cap=1000)
    t0 = time.monotonic()
    assert pace.acquire(t0 + 5)
    pace.received(500)  # half a second's worth
    pace.release(throttled=False)
    assert pace.acquire(t0 + 5)
    assert time.monotonic() - t0 >= 0.49
    pace.release(throttled=False)
    pace.received(10_000)  # ten seconds' worth: a request whose budget ends sooner is not started
    assert not pace.acquire(time.monotonic() + 2)
    assert Pace(cap=None, concurrency=4).bytes_next <= time.monotonic()  # no byte cap: bytes hold nothing
    no_cap = Pace(cap=None, concurrency=4)
    no_cap.received(10**9)
    assert no_cap.acquire(time.monotonic() + 0.1)


def test_without_a_cap_the_first_cut_starts_from_the_rate_measured():
    pace = Pace(cap=None, concurrency=4)
    assert pace.rate is None and pace.lowest is None
    deadline = time.monotonic() + 5
    for _ in range(20):
        assert pace.acquire(deadline)
        pace.release(throttled=False)
    assert pace.rate is None  # uncapped and never throttled: no pacing at all
    assert pace.acquire(deadline)
    pace.release(throttled=True)
    assert pace.rate == 21 / 2 / 2  # 21 requests in the last two seconds: 10.5/s, halved
    assert pace.waited < 0.5


def test_no_room_before_the_limit_takes_nothing():
    pace = Pace(cap=1, concurrency=1)
    assert pace.acquire(time.monotonic() + 5)
    t0 = time.monotonic()
    assert not pace.acquire(time.monotonic() + 0.3)  # the one slot in flight is taken
    assert 0.25 <= time.monotonic() - t0 < 1.5 and pace.in_flight == 1
    pace.release(throttled=False)
    assert not pace.acquire(time.monotonic() + 0.2)  # room now, but the next slot is a second away
    assert pace.in_flight == 0
