"""spec.pause: a reason and an optional end; the CronJob suspended, status and Events say why
and who, the schedule resumes by itself at the end, Stale is not judged meanwhile."""

import copy
import datetime as dt

import pytest

from ingestion_contract import SpecError, parse_spec
from ingestion_operator.render import render_cronjob
from ingestion_operator.resource import ScheduleResource
from ingestion_operator.status import condition_of, derive_status, stale_deadline, transition_events

from ..samples import SCHEDULE

NOW = dt.datetime(2026, 12, 6, 12, tzinfo=dt.timezone.utc)
CJ = {"metadata": {"name": "binance-um-klines", "uid": "cj-1"},
      "status": {"lastSuccessfulTime": "2026-12-01T02:03:00Z", "active": []}}
BY = [{"manager": "kubectl-client-side-apply", "time": "2026-12-01T00:00:00Z", "fieldsV1": {"f:spec": {"f:schedule": {}}}},
      {"manager": "kubectl-patch", "time": "2026-12-06T11:00:00Z", "fieldsV1": {"f:spec": {"f:pause": {"f:reason": {}}}}}]


def paused(until=None, reason="upstream migration (INC-42)"):
    body = copy.deepcopy(SCHEDULE)
    body["spec"]["pause"] = {"reason": reason, **({"until": until} if until else {})}
    body["metadata"]["managedFields"] = BY
    return body


def test_a_pause_suspends_the_cronjob_and_status_says_why_who_and_until_when():
    body = paused("2026-12-24T00:00:00Z")
    res = ScheduleResource.from_body(body)
    assert render_cronjob("s", "ns", res.spec, paused=res.spec.paused(NOW))["spec"]["suspend"] is True
    st = derive_status(res, CJ, [], NOW)
    assert st["pause"] == {"reason": "upstream migration (INC-42)", "until": "2026-12-24T00:00:00Z", "by": "kubectl-patch"}
    assert st["nextRuns"] == []
    s = condition_of(st, "Suspended")
    assert (s["status"], s["reason"]) == ("True", "Paused")
    assert s["message"] == "paused by kubectl-patch: upstream migration (INC-42); resumes by itself at 2026-12-24T00:00:00Z"
    assert (condition_of(st, "Stale")["status"], condition_of(st, "Stale")["reason"]) == ("Unknown", "NotJudged")
    assert "paused" in condition_of(st, "Stale")["message"]
    assert stale_deadline(res, CJ, [], NOW) is None  # no timer for Stale while paused
    events = transition_events({}, st, None, None)
    assert [(e.type, e.reason) for e in events] == [("Normal", "Paused")] and "kubectl-patch" in events[0].message
    assert transition_events(st, derive_status(ScheduleResource.from_body({**body, "status": st}), CJ, [], NOW), None, None) == []


def test_at_its_end_the_schedule_resumes_by_itself_and_freshness_counts_from_then():
    body = paused("2026-12-24T00:00:00Z")
    before = derive_status(ScheduleResource.from_body(body), CJ, [], NOW)
    after_end = dt.datetime(2026, 12, 24, 0, 0, 1, tzinfo=dt.timezone.utc)
    res = ScheduleResource.from_body({**body, "status": before})
    assert render_cronjob("s", "ns", res.spec, paused=res.spec.paused(after_end))["spec"]["suspend"] is False
    st = derive_status(res, CJ, [], after_end)
    assert "pause" not in st and st["nextRuns"] and condition_of(st, "Suspended")["status"] == "False"
    assert condition_of(st, "Stale")["status"] == "False"  # not stale at once: counted from the pause's end
    assert stale_deadline(res, CJ, [], after_end) == dt.datetime(2026, 12, 24, tzinfo=dt.timezone.utc) + res.spec.stale_after()
    events = transition_events(before, st, None, None)
    assert [(e.type, e.reason) for e in events] == [("Normal", "Resumed")]
    assert "2026-12-24T00:00:00Z" in events[0].message


def test_a_pause_without_an_end_holds_until_removed_and_enabled_false_keeps_its_meaning():
    res = ScheduleResource.from_body(paused())
    assert res.spec.paused(NOW + dt.timedelta(days=3650))
    assert "until spec.pause is removed" in condition_of(derive_status(res, CJ, [], NOW), "Suspended")["message"]
    off = copy.deepcopy(SCHEDULE)
    off["spec"]["enabled"] = False
    st = derive_status(ScheduleResource.from_body(off), CJ, [], NOW)
    assert condition_of(st, "Suspended")["reason"] == "Disabled" and "pause" not in st


@pytest.mark.parametrize("pause,field", [({"until": "2026-12-24T00:00:00Z"}, "spec.pause.reason"),
                                         ({"reason": "x", "until": "tomorrow"}, "spec.pause.until"),
                                         ({"reason": "x", "until": "2026-12-24T00:00:00"}, "spec.pause.until"),
                                         ({"reason": ""}, "spec.pause.reason")])
def test_a_bad_pause_is_refused_naming_its_field(pause, field):
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec({**SCHEDULE["spec"], "pause": pause})
