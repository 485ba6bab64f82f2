"""The echo of our own write (the watch event at exactly the resourceVersion the write
returned) starts no reconcile; any other version does."""

from kubernetes import client

from ingestion_operator.reconcile import Reconciler
from ingestion_operator.render import RenderSettings


def test_only_the_version_we_wrote_is_an_echo():
    r = Reconciler(client.ApiClient(), RenderSettings(job_image="job:test"))
    assert not r.kube.is_echo("schedule", "ns", "a", "41")
    r.kube.remember("schedule", "ns", "a", {"metadata": {"resourceVersion": "41"}})
    assert r.kube.is_echo("schedule", "ns", "a", "41")
    assert not r.kube.is_echo("schedule", "ns", "a", "42")  # somebody wrote after us
    assert not r.kube.is_echo("cronjob", "ns", "a", "41") and not r.kube.is_echo("schedule", "other", "a", "41")
    assert not r.kube.is_echo("schedule", "ns", "a", None) and not r.kube.is_echo("schedule", "ns", "a", "")
    r.kube.remember("cronjob", "ns", "a", {"metadata": {"resourceVersion": "50"}})
    r.forget("ns", "a")  # deleted: nothing of it is remembered
    assert not r.kube.is_echo("schedule", "ns", "a", "41") and not r.kube.is_echo("cronjob", "ns", "a", "50")


def test_the_cronjob_cache_holds_what_a_reconcile_compares_and_forgets_only_the_deleted_one():
    from ingestion_operator.reconcile import CronJobCache

    cache = CronJobCache()
    assert not cache.primed and cache.get("ns", "a") is None
    old = {"metadata": {"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": "7", "labels": {"x": "1"},
                        "ownerReferences": [{"uid": "s1"}], "annotations": {"big": "y" * 1000},
                        "managedFields": [{"manager": "kubectl"}]},
           "spec": {"schedule": "0 2 * * *"}, "status": {"lastSuccessfulTime": "2026-11-24T02:00:05Z"}}
    cache.put(old)
    held = cache.get("ns", "a")
    assert held == {"metadata": {"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": "7", "labels": {"x": "1"},
                                 "ownerReferences": [{"uid": "s1"}]},
                    "spec": {"schedule": "0 2 * * *"}, "status": {"lastSuccessfulTime": "2026-11-24T02:00:05Z"}}
    new = {**old, "metadata": {**old["metadata"], "uid": "u2", "resourceVersion": "9"}}
    cache.put(new)  # recreated before the old one's DELETED event was handled
    cache.drop("ns", "a", "u1")
    assert cache.get("ns", "a")["metadata"]["uid"] == "u2"  # the newer one stays
    cache.drop("ns", "a", "u2")
    assert cache.get("ns", "a") is None and len(cache) == 0
