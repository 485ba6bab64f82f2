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


def test_the_watches_keep_the_books_in_the_watchs_order_and_queue_only_what_is_news():
    """Every event of a schedule or CronJob, listed or watched, keeps the books at once, in the
    watch's order, echoes too (an older event delivered after our write is put right by the
    echo); only a non-echo queues a reconcile, and what is queued for a key merges."""
    import kopf

    from ingestion_contract.upstream import parse_upstream
    from ingestion_operator import handlers, names
    from ingestion_operator.informer import Work
    from ingestion_operator.upstream import UpstreamReconciler

    from ..samples import SCHEDULE

    r = Reconciler(client.ApiClient(), RenderSettings(job_image="job:test"))
    memo = kopf.Memo(reconciler=r, upstreams=UpstreamReconciler(r))
    r.sharing.put_upstream("ns", "binance", parse_upstream({"bucket": SCHEDULE["spec"]["target"]["bucket"],
                                                           "maxRequestsPerSecond": 20}))

    def schedule(name, rv, status=None):
        return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", "generation": 1, "resourceVersion": rv},
                "spec": SCHEDULE["spec"], "status": status or {}}

    def cronjob(name, rv, at="0 2 * * *"):
        return {"metadata": {"name": name, "namespace": "ns", "uid": f"c-{name}", "resourceVersion": rv,
                             "labels": {names.LABEL_SCHEDULE: name}}, "spec": {"schedule": at}}

    def readers():
        return sorted(s.name for s in r.sharing.readers("ns", r.sharing.sharer("ns", "a", schedule("a", "1")).source))

    def taken():  # what the queue holds, emptied (its workers are not started here)
        got = r.queue.pending()
        for key in got:
            r.queue._pending.pop(key)
        r.queue._ready.clear()
        return got

    # listed: the books at once; the schedule's and its CronJob's reconciles merge into one
    handlers.on_schedule(None, schedule("a", "1"), memo)
    handlers.on_cronjob(None, cronjob("a", "2"), memo)
    assert readers() == ["a"] and r.cronjobs.get("ns", "a")["metadata"]["resourceVersion"] == "2"
    assert taken() == {("schedule", "ns", "a"): Work("schedule", schedule("a", "1"))}
    handlers.on_schedule("ADDED", schedule("b", "3"), memo)
    handlers.on_cronjob("ADDED", cronjob("b", "4"), memo)
    assert readers() == ["a", "b"] and r.cronjobs.get("ns", "b")["metadata"]["resourceVersion"] == "4"
    assert set(taken()) == {("schedule", "ns", "b")}

    # our write (version 6) returned before the watch delivered an older event (version 5):
    # the older one is kept for a moment, and the echo of ours puts it right, queueing nothing
    r.cronjobs.put(cronjob("b", "6", "0 3 * * *"))
    r.kube.remember("cronjob", "ns", "b", {"metadata": {"resourceVersion": "6"}})
    handlers.on_cronjob("MODIFIED", cronjob("b", "5"), memo)
    assert r.cronjobs.get("ns", "b")["spec"]["schedule"] == "0 2 * * *"
    assert taken() == {("schedule", "ns", "b"): Work("cronjob", echoes=(("cronjob", "ns", "b", "5"),))}
    handlers.on_cronjob("MODIFIED", cronjob("b", "6", "0 3 * * *"), memo)
    assert r.cronjobs.get("ns", "b")["spec"]["schedule"] == "0 3 * * *" and taken() == {}

    # the echo of our status write: the share it names is kept, no reconcile
    r.kube.remember("schedule", "ns", "b", {"metadata": {"resourceVersion": "7"}})
    shown = {"upstream": {"name": "binance", "requestsPerSecond": 10}}
    handlers.on_schedule("MODIFIED", schedule("b", "7", shown), memo)
    assert r.sharing.shown("ns", "b") == ("binance", 10) and taken() == {}
    # somebody else's change: kept, and reconciled with the body it carried
    handlers.on_schedule("MODIFIED", schedule("b", "8", {}), memo)
    assert r.sharing.shown("ns", "b") is None  # its status names no share now
    # a deletion always reaches the queue, whatever its version, and drops what waited
    handlers.on_schedule("DELETED", schedule("b", "7"), memo)
    assert taken() == {("schedule", "ns", "b"): Work("deleted", None, True)} and readers() == ["a"]
    handlers.on_cronjob("DELETED", cronjob("b", "6"), memo)
    assert r.cronjobs.get("ns", "b") is None


def test_an_echo_that_arrives_before_its_write_returned_is_dropped_when_its_work_runs():
    """The watch can deliver our write's event before the write's response is read (and the
    echo recorded): queued, it is asked again at run time and dropped; merged with anything
    else, it runs."""
    import kopf

    from ingestion_operator import handlers, names
    from ingestion_operator.informer import Work
    from ingestion_operator.upstream import UpstreamReconciler

    r = Reconciler(client.ApiClient(), RenderSettings(job_image="job:test"))
    memo = kopf.Memo(reconciler=r, upstreams=UpstreamReconciler(r))
    ran = []
    r.runs["schedule"] = lambda ns, name, work: ran.append((name, work.trigger))
    created = {"metadata": {"name": "a", "namespace": "ns", "uid": "c-a", "resourceVersion": "9",
                            "labels": {names.LABEL_SCHEDULE: "a"}}, "spec": {"schedule": "0 2 * * *"}}
    handlers.on_cronjob("ADDED", created, memo)  # before the create's response: not known as ours yet
    (key, work), = r.queue.pending().items()
    r.kube.remember("cronjob", "ns", "a", created)  # the create returns
    r.work(key, work)
    assert ran == []  # the echo, dropped when its work ran
    r.work(key, work.merged(Work("job")))  # with a Job's event: runs
    r.kube.remember("cronjob", "ns", "a", {"metadata": {"resourceVersion": "10"}})
    r.work(key, work)  # somebody else's version 9 after our 10 would not be an echo: runs
    assert ran == [("a", "cronjob"), ("a", "cronjob")]
