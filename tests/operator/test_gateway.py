"""The gateway's policies as values: one retry policy for a concurrent write, the one owner
check, the cache's trust decision, and the timer handing due keys to the work queue."""

from __future__ import annotations

import datetime as dt
import queue
import threading

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from ingestion_operator.gateway import KubeGateway, owned_by
from ingestion_operator.reconcile import CronJobCache, Reconciler
from ingestion_operator.render import RenderSettings

UTC = dt.timezone.utc


def gateway() -> KubeGateway:
    return KubeGateway(client.ApiClient(), lambda: dt.datetime.now(UTC))


def failing(*statuses: int, body: str = ""):
    """An attempt that raises these API statuses in turn, then returns "done"; records ``fresh``."""
    seen = []

    def attempt(fresh: bool) -> str:
        seen.append(fresh)
        if len(seen) <= len(statuses):
            raise ApiException(status=statuses[len(seen) - 1], reason="x")
        return "done"

    attempt.seen = seen
    return attempt


def test_a_conflict_is_retried_fresh_and_the_policy_gives_up_after_three():
    kube = gateway()
    attempt = failing(409, 409)
    assert kube.with_retries(attempt, on_gone=lambda: None) == ("done", 2)
    assert attempt.seen == [False, True, True]  # the first may use the event's body; each retry reads again
    endless = failing(*[409] * 10)
    assert kube.with_retries(endless, on_gone=lambda: None) == ("conflict", KubeGateway.CONFLICT_ATTEMPTS)
    assert len(endless.seen) == KubeGateway.CONFLICT_ATTEMPTS


def test_a_resource_gone_meanwhile_is_forgotten_and_other_errors_raise():
    kube = gateway()
    gone = []
    assert kube.with_retries(failing(404), on_gone=lambda: gone.append(1)) == ("gone", 0)
    assert gone == [1]
    with pytest.raises(ApiException):
        kube.with_retries(failing(500), on_gone=lambda: gone.append(2))
    assert gone == [1]


def test_the_owner_check_and_the_caches_trust_are_values():
    ours = {"metadata": {"ownerReferences": [{"uid": "s1"}]}, "spec": {"schedule": "0 2 * * *"}}
    assert owned_by(ours, "s1") and not owned_by(ours, "s2") and not owned_by({"metadata": {}}, "s1")
    wanted = {"metadata": {"ownerReferences": [{"uid": "s1"}]}, "spec": {"schedule": "0 2 * * *"}}
    assert CronJobCache.trusts(None, "s1", wanted)  # absent: a wrong create costs a 409 and a retry
    assert CronJobCache.trusts(ours, "s1", wanted)  # ours and in line: nothing to write
    assert CronJobCache.trusts(ours, "s1", None)  # ours, nothing rendered to compare (an invalid spec)
    assert not CronJobCache.trusts(ours, "s2", wanted)  # another owner: read before reporting a conflict
    changed = {**wanted, "spec": {"schedule": "0 3 * * *"}}
    assert not CronJobCache.trusts(ours, "s1", changed)  # a replace starts from a read


def test_the_timer_hands_due_keys_to_the_work_queue_and_a_failed_run_is_tried_again():
    from ingestion_operator.informer import Work

    fired: queue.Queue = queue.Queue()
    r = Reconciler(client.ApiClient(), RenderSettings(job_image="job:test"), pool_size=2)
    attempts = []

    def run(ns, name, work):
        attempts.append(work.trigger)
        fired.put((ns, name, work.trigger, threading.current_thread().name))
        if len(attempts) == 1:
            raise RuntimeError("the API server is away")

    r.runs["backfill"] = run
    r.timer.RETRY = dt.timedelta(seconds=0.2)
    r.timer._grace = dt.timedelta(0)
    r.queue.start()
    r.timer.start(submit=lambda key: r.submit(key, Work("timer")))
    try:
        r.timer.set(("backfill", "ns", "b"), dt.datetime.now(UTC))
        first = fired.get(timeout=5)
        again = fired.get(timeout=5)  # the failure set the timer: tried again
    finally:
        r.timer.stop()
        r.queue.stop()
    assert first[:3] == again[:3] == ("ns", "b", "timer") and first[3].startswith("reconcile") and attempts == ["timer"] * 2
