"""The Lease rule (client-go's): who may write themselves into the Lease, and when."""

from __future__ import annotations

import datetime as dt

import pytest

from ingestion_operator.leader import Record, Timing, decide

T = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)


def held_by(holder: str) -> Record:
    return Record(holder=holder, lease_duration=15, acquire_time=T, renew_time=T, transitions=2)


def test_no_lease_is_created():
    assert decide(None, None, 100.0, "me", 15) == "create"


def test_our_own_lease_is_renewed_whatever_the_clock():
    assert decide(held_by("me"), 0.0, 10_000.0, "me", 15) == "renew"


def test_a_released_lease_is_taken_at_once():
    assert decide(held_by(""), 100.0, 100.0, "me", 15) == "take"


def test_a_fresh_lease_of_another_holder_is_waited_for():
    assert decide(held_by("other"), 100.0, 100.0, "me", 15) == "wait"
    assert decide(held_by("other"), 100.0, 114.9, "me", 15) == "wait"


def test_an_unrenewed_lease_is_taken_after_its_duration_by_our_own_clock():
    assert decide(held_by("other"), 100.0, 115.0, "me", 15) == "take"


def test_a_lease_never_observed_changing_counts_from_when_we_first_saw_it():
    # observed_at None means this candidate has no observation: it may take (client-go
    # records the observation on the same read, so the shell always passes one).
    assert decide(held_by("other"), None, 0.0, "me", 15) == "take"


@pytest.mark.parametrize("bad", [(15, 10, 0), (15, 10, 10), (10, 10, 2), (15, 20, 2)])
def test_timing_must_leave_the_old_leader_time_to_stop(bad):
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        Timing(*bad)


def test_default_timing_is_client_gos():
    assert Timing() == Timing(15.0, 10.0, 2.0)
