"""Status is exact: written as a merge patch that also removes nested fields that no longer
hold, so after any sequence of runs, failures and restarts the stored status equals the
derived one, and a resync derives the same status again (no write)."""

from __future__ import annotations

import copy
import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion_operator.resource import ScheduleResource
from ingestion_operator.status import derive_status, merge_patch

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 23, 2, tzinfo=UTC)
BODY = {
    "metadata": {"name": "s", "namespace": "data", "uid": "u-1", "generation": 1},
    "spec": {"schedule": "0 * * * *", "target": {"bucket": "bkt", "keyTemplate": "{symbol}/{date}", "symbols": ["A"]},
             "storage": {"duckdb": {"claimName": "c"}}},
}
CJ = {"metadata": {"name": "s", "uid": "cj-1"}, "status": {}}


def apply_merge_patch(target: object, patch: object) -> object:
    """RFC 7386, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = apply_merge_patch(out.get(k), v)
    return out


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_nested_fields_that_no_longer_hold_are_removed():
    live = {"lastRun": {"job": "j-1", "outcome": "Failed", "end": "2026-11-23T02:01:00Z", "reason": "BackoffLimitExceeded"},
            "active": 0}
    new = {"lastRun": {"job": "j-2", "outcome": "Running", "start": "2026-11-23T03:00:00Z"}, "active": 1}
    patch = merge_patch(live, new)
    assert patch == {"lastRun": {"job": "j-2", "outcome": "Running", "start": "2026-11-23T03:00:00Z", "end": None, "reason": None},
                     "active": 1}
    assert apply_merge_patch(live, patch) == new


def test_unchanged_keys_are_left_out_and_lists_replaced_whole():
    live = {"a": 1, "conditions": [{"type": "Ready", "status": "True"}], "gone": {"x": 1}}
    new = {"a": 1, "conditions": [{"type": "Ready", "status": "False"}]}
    assert merge_patch(live, new) == {"gone": None, "conditions": [{"type": "Ready", "status": "False"}]}
    assert merge_patch(new, new) == {}


STEPS = st.lists(st.sampled_from(["tick", "manual", "succeed", "fail", "restart", "time"]), max_size=25)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_any_history_ends_exact_and_a_resync_writes_nothing(steps):
    stored: dict = {}
    jobs: list[dict] = []
    cj = copy.deepcopy(CJ)
    now = T0
    for i, step in enumerate(steps):
        now += dt.timedelta(minutes=7)
        running = [j for j in jobs if not j["status"].get("conditions")]
        if step in ("tick", "manual"):
            ann = {"cronjob.kubernetes.io/instantiate": "manual"} if step == "manual" else {}
            jobs.append({"metadata": {"name": f"s-{i:03d}", "creationTimestamp": iso(now), "annotations": ann},
                         "status": {"startTime": iso(now)}})
            cj["status"]["lastScheduleTime"] = iso(now)
        elif step in ("succeed", "fail") and running:
            job = running[0]
            kind = "Complete" if step == "succeed" else "Failed"
            cond = {"type": kind, "status": "True", "lastTransitionTime": iso(now)}
            if kind == "Failed":
                cond.update(reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit")
            job["status"]["conditions"] = [cond]
            if kind == "Complete":
                job["status"]["completionTime"] = iso(now)
                cj["status"]["lastSuccessfulTime"] = iso(now)
        cj["status"]["active"] = [{"name": j["metadata"]["name"]} for j in jobs if not j["status"].get("conditions")]
        # One reconcile (a restarted operator derives from the same API state: same thing).
        body = {**BODY, "status": stored}
        derived = derive_status(ScheduleResource.from_body(body), cj, jobs, now)
        if derived != stored:
            stored = apply_merge_patch(stored, merge_patch(stored, derived))
        assert stored == derived
        # A resync with nothing new: the same status, so no write.
        again = derive_status(ScheduleResource.from_body({**BODY, "status": stored}), cj, jobs, now)
        assert again == stored
