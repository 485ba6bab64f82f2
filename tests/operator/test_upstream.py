"""The operator's side of an upstream budget: the index a schedule's reconcile reads, the
rendering of a share into the job's spec, the upstream's and the schedule's status (pure,
written only when they change), the backfills' shares from their Jobs, and which schedules an
upstream's change wakes."""

from __future__ import annotations

import copy
import datetime as dt
import json

from kubernetes import client

from ingestion_contract import SPEC_ENV, parse_spec
from ingestion_contract.upstream import Source, UpstreamSpec, parse_upstream
from ingestion_operator import names
from ingestion_operator.backfill import derive_backfill_status
from ingestion_operator import gateway
from ingestion_operator.reconcile import Reconciler
from ingestion_operator.render import RenderSettings, render_cronjob
from ingestion_operator.resource import Problem, ScheduleResource
from ingestion_operator.shares import ScheduleSharer, sharer_of, with_share
from ingestion_operator.status import derive_status, merge_patch
from ingestion_operator.upstream import (Share, SharingIndex, UpstreamReconciler, derive_upstream_status, rendered_cap,
                                        running_backfills, schedule_sharer)
from ingestion_contract.backfill import parse_backfill

from ..samples import SCHEDULE

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 6, 10, tzinfo=UTC)
BINANCE = Source("", "data.binance.vision")
UPSTREAM_BODY = {"metadata": {"name": "binance", "namespace": "data", "generation": 2},
                 "spec": {"bucket": "data.binance.vision", "maxRequestsPerSecond": 20}}


def spec_with(**target):
    raw = copy.deepcopy(SCHEDULE["spec"])
    raw["target"].update(target)
    return raw


def env_spec(cronjob: dict) -> dict:
    env = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    return json.loads(next(e["value"] for e in env if e["name"] == SPEC_ENV))


# -- the index ------------------------------------------------------------------------------------
def test_the_index_finds_a_schedules_upstream_and_share_without_a_list():
    idx = SharingIndex()
    up = parse_upstream(UPSTREAM_BODY["spec"])
    assert idx.put_upstream("data", "binance", up) == {BINANCE}
    assert idx.put_upstream("data", "binance", up) == set()  # unchanged: nothing moved
    for name in ("a", "b", "c"):
        assert idx.put_schedule("data", name, sharer_of(name, parse_spec(SCHEDULE["spec"]))) == {BINANCE}
    assert idx.put_schedule("data", "a", sharer_of("a", parse_spec(SCHEDULE["spec"]))) == set()
    share = idx.share_of("data", idx.readers("data", BINANCE)[0])
    assert share == Share("binance", 5, 1, 126)  # 14 = 5 + 5 + 4
    assert idx.share_of("other", idx.readers("data", BINANCE)[0]) is None  # upstreams are per namespace
    # the reconcile's own parse replaces the index's entry (a schedule that just lowered its cap)
    capped = sharer_of("c", parse_spec(spec_with(maxRequestsPerSecond=2)))
    assert idx.share_of("data", capped).requests_per_second == 2 and idx.cap_of("data", capped) == 2
    assert idx.put_schedule("data", "c", capped) == {BINANCE}
    assert [idx.share_of("data", s).requests_per_second for s in idx.readers("data", BINANCE)] == [6, 6, 2]
    # a second upstream of the same source: the first by name holds it
    idx.put_upstream("data", "aaa", UpstreamSpec(bucket="data.binance.vision", max_requests_per_second=100))
    assert idx.upstream_for("data", BINANCE)[0] == "aaa"
    idx.drop_upstream("data", "aaa")
    # an invalid upstream holds nothing; deleted, its schedules take their own settings
    assert idx.put_upstream("data", "binance", None) == {BINANCE}
    assert idx.share_of("data", capped) is None and idx.cap_of("data", capped) == 2
    assert idx.put_schedule("data", "a", None) == {BINANCE} and len(idx.readers("data", BINANCE)) == 2


def test_the_share_a_status_shows():
    from ingestion_operator.upstream import shown_share

    assert shown_share({"upstream": {"name": "binance", "requestsPerSecond": 5, "floor": 1}}) == ("binance", 5)
    assert shown_share({}) is None and shown_share(None) is None and shown_share({"upstream": {"name": "x"}}) is None


def test_an_invalid_or_disabled_schedule_reads_from_nothing():
    assert schedule_sharer("s", {"schedule": "nope"}) is None
    assert schedule_sharer("s", {**SCHEDULE["spec"], "enabled": False}) is None  # its CronJob starts no run
    assert schedule_sharer("s", SCHEDULE["spec"]).source == BINANCE



def test_a_schedules_sharer_is_parsed_once_per_version_of_its_spec(monkeypatch):
    """The index sees every event of a schedule, the echoes of its status writes too: it parses
    the spec again only when its generation (or uid) moves, and a deleted schedule is forgotten."""
    from ingestion_operator import upstream

    parsed = []
    real = upstream.schedule_sharer
    monkeypatch.setattr(upstream, "schedule_sharer", lambda name, raw: parsed.append(name) or real(name, raw))
    index = SharingIndex()
    body = {"metadata": {"uid": "u1", "generation": 1}, "spec": SCHEDULE["spec"]}
    first = index.sharer("data", "s", body)
    assert first.source == BINANCE and index.sharer("data", "s", {**body, "status": {"x": 1}}) is first
    assert parsed == ["s"]
    cheaper = {"metadata": {"uid": "u1", "generation": 2}, "spec": spec_with(maxRequestsPerSecond=3)}
    assert index.sharer("data", "s", cheaper).own == 3 and len(parsed) == 2
    assert index.sharer("data", "s", {**cheaper, "metadata": {"uid": "u2", "generation": 2}}).own == 3 and len(parsed) == 3
    assert index.sharer("data", "s", {"spec": SCHEDULE["spec"]}).own is None and len(parsed) == 4  # no generation: parsed
    index.put_schedule("data", "s", None)  # deleted
    index.sharer("data", "s", body)
    assert len(parsed) == 5

# -- rendering ------------------------------------------------------------------------------------
def test_the_share_is_the_jobs_cap_and_can_be_read_back():
    spec = parse_spec(SCHEDULE["spec"])
    plain = render_cronjob("s", "data", spec)
    assert env_spec(plain)["target"]["maxRequestsPerSecond"] is None and rendered_cap(plain) is None
    shared = render_cronjob("s", "data", with_share(spec, 7))
    assert env_spec(shared)["target"]["maxRequestsPerSecond"] == 7 and rendered_cap(shared) == 7
    assert rendered_cap({"spec": {}}) == "unknown"


# -- the upstream's status ------------------------------------------------------------------------
def test_upstream_status_lists_every_sharer_and_is_a_fixed_point():
    spec = parse_upstream({**UPSTREAM_BODY["spec"], "maxBytesPerSecond": 2000})
    schedules = [ScheduleSharer("b", BINANCE, None, 1), ScheduleSharer("a", BINANCE, 3, None)]
    backfills = running_backfills([backfill_job("old", "binance", 4), backfill_job("done", "binance", 2, finished=True),
                                   backfill_job("elsewhere", "other", 2)], "binance")
    st = derive_upstream_status(UPSTREAM_BODY, spec, NOW, None, schedules, backfills)
    assert st["sharers"] == [
        {"kind": "IngestionSchedule", "name": "a", "share": 3, "bytesPerSecond": 300},
        {"kind": "IngestionSchedule", "name": "b", "share": 11, "bytesPerSecond": 1100, "floor": 1},
        {"kind": "IngestionBackfill", "name": "old", "share": 4, "bytesPerSecond": 400}]
    assert (st["sharerCount"], st["split"], st["source"]) == (3, "14/6", "s3://data.binance.vision")
    assert [(c["type"], c["status"], c["reason"]) for c in st["conditions"]] == [
        ("Ready", "True", "SharesRendered"), ("Degraded", "False", "AsExpected")]
    again = derive_upstream_status({**UPSTREAM_BODY, "status": st}, spec, NOW + dt.timedelta(hours=1), None, schedules, backfills)
    assert again == st and merge_patch(st, again) == {}  # nothing changed: no write


def test_upstream_status_says_which_schedules_are_below_their_floor_or_overcommitted():
    spec = parse_upstream(UPSTREAM_BODY["spec"])
    st = derive_upstream_status(UPSTREAM_BODY, spec, NOW, None, [ScheduleSharer("a", BINANCE, None, 30)])
    degraded = st["conditions"][1]
    assert (degraded["status"], degraded["reason"]) == ("True", "BelowFloor") and "a gets 14/s, needs 30/s" in degraded["message"]
    many = [ScheduleSharer(f"s{i:02}", BINANCE, None, None) for i in range(16)]
    degraded = derive_upstream_status(UPSTREAM_BODY, spec, NOW, None, many)["conditions"][1]
    assert degraded["reason"] == "Overcommitted" and "16 schedules" in degraded["message"] and "2 more" in degraded["message"]


def test_an_invalid_or_duplicate_upstream_holds_no_sharer():
    st = derive_upstream_status(UPSTREAM_BODY, None, NOW, Problem("InvalidSpec", "spec.maxRequestsPerSecond=0: must be >= 1"))
    assert st["sharers"] == [] and st["conditions"][0]["reason"] == "InvalidSpec"
    assert "own settings" in st["conditions"][0]["message"]
    st = derive_upstream_status(UPSTREAM_BODY, parse_upstream(UPSTREAM_BODY["spec"]), NOW,
                                Problem("DuplicateSource", "IngestionUpstream aaa already names s3://data.binance.vision"))
    assert st["conditions"][0]["status"] == "False" and st["source"] == "s3://data.binance.vision"


# -- the schedule's status ------------------------------------------------------------------------
CJ = {"metadata": {"name": "binance-um-klines", "uid": "cj-1"}, "status": {}}


def test_the_schedule_names_its_upstream_and_share_and_loses_them_when_it_goes():
    sched = ScheduleResource.from_body(SCHEDULE)
    with_up = derive_status(sched, CJ, [], NOW, upstream=Share("binance", 5, 1, 126))
    assert with_up["upstream"] == {"name": "binance", "requestsPerSecond": 5, "floor": 1}
    assert next(c for c in with_up["conditions"] if c["type"] == "Degraded")["status"] == "False"
    again = derive_status(ScheduleResource.from_body({**SCHEDULE, "status": with_up}), CJ, [], NOW,
                          upstream=Share("binance", 5, 1, 126))
    assert merge_patch(with_up, again) == {}  # a resync writes nothing
    gone = derive_status(ScheduleResource.from_body({**SCHEDULE, "status": with_up}), CJ, [], NOW)
    assert merge_patch(with_up, gone) == {"upstream": None}  # deleted upstream: the field goes, nothing else


def test_a_share_below_the_floor_degrades_the_schedule_but_it_still_runs():
    sched = ScheduleResource.from_body(SCHEDULE)
    st = derive_status(sched, CJ, [], NOW, upstream=Share("binance", 2, 9, 30000))
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ShareBelowFloor")
    assert "gives this schedule 2 requests/s" in degraded["message"] and "at least 9/s" in degraded["message"]
    assert next(c for c in st["conditions"] if c["type"] == "Ready")["status"] == "True" and st["nextRuns"]
    from ingestion_operator.status import transition_events

    ok = derive_status(sched, CJ, [], NOW, upstream=Share("binance", 20, 9, 30000))
    (event,) = transition_events(ok, st, None, None)
    assert (event.type, event.reason) == ("Warning", "ShareBelowFloor") and event.message == degraded["message"]
    assert transition_events(st, st, None, None) == []  # once, not on every reconcile


# -- backfills ------------------------------------------------------------------------------------
def backfill_job(name, upstream, share, finished=False):
    conditions = [{"type": "Complete", "status": "True"}] if finished else []
    return {"metadata": {"name": name, "labels": {names.LABEL_BACKFILL: name},
                         "annotations": {names.ANNOTATION_UPSTREAM: upstream, names.ANNOTATION_UPSTREAM_SHARE: str(share)}},
            "status": {"conditions": conditions}}


def test_a_backfill_shows_the_share_its_job_was_made_with():
    body = {"metadata": {"name": "old", "namespace": "data", "generation": 1},
            "spec": {"schedule": "s", "from": "2026-01-01", "to": "2026-01-02"}}
    bf = parse_backfill(body["spec"])
    st = derive_backfill_status(body, bf, backfill_job("old", "binance", 4), [], NOW)
    assert st["upstream"] == {"name": "binance", "requestsPerSecond": 4}
    assert "upstream" not in derive_backfill_status(body, bf, {"metadata": {"name": "old"}, "status": {}}, [], NOW)


# -- which schedules an upstream's change wakes ---------------------------------------------------
def test_an_upstream_wakes_exactly_the_schedules_whose_cronjobs_run_at_another_cap():
    r = Reconciler(client.ApiClient(), RenderSettings(job_image="job:test"), clock=lambda: NOW)
    ups = UpstreamReconciler(r)
    spec = parse_spec(SCHEDULE["spec"])
    up = parse_upstream(UPSTREAM_BODY["spec"])
    capped = parse_spec(spec_with(maxRequestsPerSecond=2))
    r.sharing.put_schedule("data", "a", sharer_of("a", spec))
    r.sharing.put_schedule("data", "b", sharer_of("b", spec), shown=("binance", 6))
    r.sharing.put_schedule("data", "c", sharer_of("c", capped))
    r.cronjobs.put(render_cronjob("a", "data", spec))  # runs with its own settings (no cap)
    r.cronjobs.put(render_cronjob("b", "data", with_share(spec, 6)))  # already at its share, and its status says so
    r.cronjobs.put(render_cronjob("c", "data", capped))  # its own 2 is its share: the same CronJob, but no status yet
    moved = r.sharing.put_upstream("data", "binance", up)
    ups.soon("data", moved, wake=True)
    due = lambda: {k for k in r.timer.pending()}  # noqa: E731
    assert due() == {(gateway.UPSTREAM.name, "data", "binance"), (gateway.SCHEDULE.name, "data", "a"),
                     (gateway.SCHEDULE.name, "data", "c")}
    for name in "ac":
        r.timer.set((gateway.SCHEDULE.name, "data", name), None)
    r.sharing.put_schedule("data", "c", sharer_of("c", capped), shown=("binance", 2))  # c's reconcile wrote its status
    ups.soon("data", r.sharing.drop_upstream("data", "binance"), wake=True)  # deleted: b runs at 6, c's status names it
    assert due() >= {(gateway.SCHEDULE.name, "data", "b"), (gateway.SCHEDULE.name, "data", "c")}
    assert (gateway.SCHEDULE.name, "data", "a") not in due()  # a runs at its own already


def test_the_example_upstream_holds_the_binance_vision_schedules_of_the_examples():
    import yaml

    from ..conftest import REPO

    docs = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "examples").glob("*.yaml"))]
    (up,) = [parse_upstream(d["spec"]) for d in docs if d["kind"] == "IngestionUpstream"]
    readers = [s for d in docs if d["kind"] == "IngestionSchedule"
               if (s := schedule_sharer(d["metadata"]["name"], d["spec"])) is not None and s.source == up.source]
    assert [s.name for s in readers] == ["binance-spot-klines-intervals", "binance-spot-klines-monthly", "binance-um-klines-daily",
                                         "binance-um-klines-hourly"]  # disabled.yaml takes none


def test_a_backfill_takes_its_share_under_the_upstreams_lock_or_waits(monkeypatch):
    """BackfillReconciler._create_job with the gateway's two calls stubbed: the Job carries its
    share (annotations, and each shard's cap in its pods' spec); with the pool held, no Job."""
    from ingestion_operator.backfill import BackfillReconciler

    r = Reconciler(client.ApiClient(), RenderSettings(job_image="job:test"), clock=lambda: NOW)
    backfills = BackfillReconciler(r)
    r.sharing.put_upstream("data", "binance", parse_upstream(UPSTREAM_BODY["spec"]))  # backfills' pool: 6
    made: list[dict] = []
    monkeypatch.setattr(r.kube, "jobs", lambda namespace, selector: list(made))
    monkeypatch.setattr(r.kube, "create_job", lambda namespace, body: made.append(body) or body)
    spec = parse_spec(SCHEDULE["spec"])

    def create(name, **bf):
        body = {"metadata": {"name": name, "namespace": "data", "uid": f"uid-{name}", "creationTimestamp": "2026-12-06T09:00:00Z"},
                "apiVersion": "ingestion.dev/v1alpha1", "kind": "IngestionBackfill"}
        return backfills._create_job("data", name, body, parse_backfill({"schedule": "s", "from": "2026-01-01",
                                                                         "to": "2026-01-02", **bf}), spec)

    job, action, problem = create("one", parallelism=2, maxRequestsPerSecond=4)
    assert (action, problem) == ("JobCreated", None)
    assert job["metadata"]["annotations"] == {names.ANNOTATION_UPSTREAM: "binance", names.ANNOTATION_UPSTREAM_SHARE: "4"}
    assert env_spec({"spec": {"jobTemplate": {"spec": job["spec"]}}})["target"]["maxRequestsPerSecond"] == 2  # a shard's
    assert (gateway.UPSTREAM.name, "data", "binance") in r.timer.pending()  # its status lists the new sharer
    job, action, problem = create("two", parallelism=2)
    assert job["metadata"]["annotations"][names.ANNOTATION_UPSTREAM_SHARE] == "2"  # what one left
    job, action, problem = create("three")
    assert job is None and action is None and problem.reason == "WaitingForUpstream"
    assert "one 4, two 2" in problem.message and "6 requests/s" in problem.message
