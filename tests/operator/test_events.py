"""transition_events: one Event per transition of Ready, and one per CronJob write."""

from ingestion_operator.resource import Problem
from ingestion_operator.status import Event, transition_events


def status(ready: str | None, message: str = "", cronjob: str = "cj") -> dict:
    conds = [] if ready is None else [{"type": "Ready", "status": ready, "message": message}]
    return {"cronJobName": cronjob, "conditions": conds}


def test_nothing_changed_posts_nothing():
    assert transition_events(status("True"), status("True"), None, None) == []
    assert transition_events(status("False", "bad"), status("False", "bad"), Problem("InvalidSpec", "bad"), None) == []


def test_a_new_problem_is_one_warning():
    assert transition_events(status("True"), status("False", "bad"), Problem("InvalidSpec", "bad"), None) == [
        Event("Warning", "InvalidSpec", "bad")]
    assert transition_events({}, status("False", "bad"), Problem("CronJobConflict", "bad"), None) == [
        Event("Warning", "CronJobConflict", "bad")]


def test_a_different_problem_is_a_new_warning():
    assert transition_events(status("False", "old"), status("False", "new"), Problem("InvalidSpec", "new"), None) == [
        Event("Warning", "InvalidSpec", "new")]


def test_recovery_is_announced_once():
    assert transition_events(status("False", "bad"), status("True"), None, None) == [
        Event("Normal", "Recovered", "spec is valid again; CronJob cj is in sync")]
    # a first reconcile that is fine at once (no Ready before) is not a recovery
    assert transition_events({}, status("True"), None, "CronJobCreated") == [
        Event("Normal", "CronJobCreated", "CronJob cj created")]


def test_a_cronjob_write_is_named():
    assert transition_events(status("True"), status("True"), None, "CronJobUpdated") == [
        Event("Normal", "CronJobUpdated", "CronJob cj updated")]
