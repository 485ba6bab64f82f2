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


def test_the_index_handlers_keep_the_books_while_kopf_lists_and_the_filters_after_it_in_the_watchs_order():
    """kopf holds every handler until each listed object has been through the index handlers;
    those run only until then (an index handler is a full kopf invocation on every event). The
    on.event filters keep the same books from the first of them on, on every event in the
    watch's order, echoes too (an older event delivered after our write is put right by the
    echo), and only a non-echo starts a reconcile."""
    import asyncio

    import kopf

    from ingestion_contract.upstream import parse_upstream
    from ingestion_operator import handlers
    from ingestion_operator.upstream import UpstreamReconciler

    from ..samples import SCHEDULE

    r = Reconciler(client.ApiClient(), RenderSettings(job_image="job:test"))
    memo = kopf.Memo(reconciler=r, upstreams=UpstreamReconciler(r), listed=False)
    r.sharing.put_upstream("ns", "binance", parse_upstream({"bucket": SCHEDULE["spec"]["target"]["bucket"],
                                                           "maxRequestsPerSecond": 20}))

    def schedule(name, rv, status=None):
        return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", "generation": 1, "resourceVersion": rv},
                "spec": SCHEDULE["spec"], "status": status or {}}

    def cronjob(name, rv, at="0 2 * * *"):
        return {"metadata": {"name": name, "namespace": "ns", "uid": f"c-{name}", "resourceVersion": rv,
                             "labels": {"x": "1"}}, "spec": {"schedule": at}}

    def readers():
        return sorted(s.name for s in r.sharing.readers("ns", r.sharing.sharer("ns", "a", schedule("a", "1")).source))

    # while kopf lists: the index handlers keep the books
    assert handlers._while_listing(memo=memo)
    asyncio.run(handlers.schedule_sources(body=schedule("a", "1"), namespace="ns", name="a", memo=memo))
    asyncio.run(handlers.cronjob_cache(body=cronjob("a", "2"), namespace="ns", name="a", memo=memo))
    assert readers() == ["a"] and r.cronjobs.get("ns", "a")["metadata"]["resourceVersion"] == "2"

    # the first on.event filter: kopf holds nothing any more; the index handlers stop
    news_schedule = handlers._news("schedule", handlers._keep_schedule)
    news_cronjob = handlers._news("cronjob", handlers._keep_cronjob)
    assert news_schedule(type="ADDED", body=schedule("b", "3"), namespace="ns", name="b", memo=memo)
    assert not handlers._while_listing(memo=memo)
    assert readers() == ["a", "b"]
    assert news_cronjob(type="ADDED", body=cronjob("b", "4"), namespace="ns", name="b", memo=memo)
    assert r.cronjobs.get("ns", "b")["metadata"]["resourceVersion"] == "4"

    # our write (version 6) returned before the watch delivered an older event (version 5):
    # the older one is kept for a moment, and the echo of ours puts it right, reconciling nothing
    r.cronjobs.put(cronjob("b", "6", "0 3 * * *"))
    r.kube.remember("cronjob", "ns", "b", {"metadata": {"resourceVersion": "6"}})
    assert news_cronjob(type="MODIFIED", body=cronjob("b", "5"), namespace="ns", name="b", memo=memo)
    assert r.cronjobs.get("ns", "b")["spec"]["schedule"] == "0 2 * * *"
    assert not news_cronjob(type="MODIFIED", body=cronjob("b", "6", "0 3 * * *"), namespace="ns", name="b", memo=memo)
    assert r.cronjobs.get("ns", "b")["spec"]["schedule"] == "0 3 * * *"

    # the echo of our status write: the share it names is kept, no reconcile
    r.kube.remember("schedule", "ns", "b", {"metadata": {"resourceVersion": "7"}})
    shown = {"upstream": {"name": "binance", "requestsPerSecond": 10}}
    assert not news_schedule(type="MODIFIED", body=schedule("b", "7", shown), namespace="ns", name="b", memo=memo)
    assert r.sharing.shown("ns", "b") == ("binance", 10)
    # somebody else's change: kept, and reconciled
    assert news_schedule(type="MODIFIED", body=schedule("b", "8", {}), namespace="ns", name="b", memo=memo)
    assert r.sharing.shown("ns", "b") is None  # its status names no share now
    # a deletion always reaches its handler (which forgets it), whatever its version
    assert news_schedule(type="DELETED", body=schedule("b", "7"), namespace="ns", name="b", memo=memo)
