"""The operator's informer against the real API server: it lists, then watches; a re-list
delivers what went meanwhile as DELETED; a watch too old lists again; stop ends it at once."""

from __future__ import annotations

import queue
import threading
import time

import httpx
from kubernetes import client

from ingestion_operator.informer import Informer

from ..conftest import kubectl
from ..kube import plain_cronjob

LABELS = {"app.kubernetes.io/managed-by": "informer-test"}


def create(cluster, ns: str, name: str, labels=None, schedule="0 2 * * *") -> dict:
    return client.BatchV1Api(cluster.api_client).create_namespaced_cron_job(
        ns, plain_cronjob(name, schedule, suspend_jobs=True, labels=labels or dict(LABELS))).to_dict()


def informer(cluster, ns, events: queue.Queue) -> Informer:
    return Informer(client.ApiClient(cluster.api_client.configuration), "cronjobs", "batch/v1", "CronJob", [ns],
                    lambda t, o: events.put((t, o)), "app.kubernetes.io/managed-by=informer-test")


def take(events: queue.Queue, n: int, timeout: float = 20) -> list[tuple[str | None, dict]]:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        got.append(events.get(timeout=max(0.1, deadline - time.monotonic())))
    return got


def test_it_lists_then_follows_changes_of_its_selection_in_order(cluster, namespace):
    create(cluster, namespace, "before")
    create(cluster, namespace, "not-ours", labels={"other": "x"})
    events: queue.Queue = queue.Queue()
    inf = informer(cluster, namespace, events)
    inf.start()
    try:
        assert inf.wait_listed(20)
        (t, listed), = take(events, 1)
        assert t is None and listed["metadata"]["name"] == "before"
        assert (listed["apiVersion"], listed["kind"]) == ("batch/v1", "CronJob")  # a list's items carry neither
        create(cluster, namespace, "after")
        batch = client.BatchV1Api(cluster.api_client)
        batch.patch_namespaced_cron_job("after", namespace, {"spec": {"schedule": "0 3 * * *"}})
        batch.delete_namespaced_cron_job("before", namespace)
        got = take(events, 3)
        assert [(t, o["metadata"]["name"]) for t, o in got] == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "before")]
        assert got[1][1]["spec"]["schedule"] == "0 3 * * *"
        time.sleep(0.5)
        assert events.empty()  # nothing of the object outside the selection
    finally:
        inf.stop()


def test_a_relist_delivers_what_went_meanwhile_as_deleted(cluster, namespace):
    create(cluster, namespace, "stays")
    events: queue.Queue = queue.Queue()
    inf = informer(cluster, namespace, events)
    # as a watch would have left it: it last saw "went", deleted while it was away
    known = {(namespace, "went"): {"namespace": namespace, "name": "went", "uid": "u-went", "labels": dict(LABELS)}}
    rv = inf._list(namespace, known)
    got = take(events, 2)
    assert got[0] == ("DELETED", {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {
        "namespace": namespace, "name": "went", "uid": "u-went", "labels": LABELS}})
    assert got[1][0] is None and got[1][1]["metadata"]["name"] == "stays" and set(known) == {(namespace, "stays")}
    assert int(rv) > 0 and inf.listed()


def test_a_watch_resumed_from_a_compacted_version_lists_again(cluster, namespaces):
    """The API server has etcd compacted every five minutes; a watch that resumes from a version
    compacted away gets 410 Gone and lists again. (Events: the kind the API server keeps no
    watch cache of, so the resume reaches etcd.)"""
    assert cluster.etcd_url, "this test compacts the plane's own etcd"
    ns, elsewhere = namespaces("t-informer-410"), namespaces("t-informer-410-b")
    core = client.CoreV1Api(cluster.api_client)

    def event(namespace, name):
        core.create_namespaced_event(namespace, {"metadata": {"name": name}, "reason": "R", "message": "m", "type": "Normal",
                                                 "involvedObject": {"kind": "Pod", "name": "p", "namespace": namespace}})
    event(ns, "e0")
    events: queue.Queue = queue.Queue()
    inf = Informer(client.ApiClient(cluster.api_client.configuration), "events", "v1", "Event", [ns],
                   lambda t, o: events.put((t, o)))
    inf.SERVER_TIMEOUT = 2  # its watch ends every 2 s and resumes from the last version it saw
    inf.start()
    try:
        assert inf.wait_listed(20)
        assert [(t, o["metadata"]["name"]) for t, o in take(events, 1)] == [(None, "e0")]
        event(elsewhere, "later")  # the store moves on; this watch sees nothing of it
        event(elsewhere, "later-still")  # (etcd keeps the revision compacted at: go two past)
        now = core.list_namespaced_event(elsewhere).metadata.resource_version
        httpx.post(f"{cluster.etcd_url}/v3/kv/compaction", json={"revision": now, "physical": True},
                   timeout=10).raise_for_status()
        # its next resume is from a version compacted away: listed again, e0 delivered again
        assert [(t, o["metadata"]["name"]) for t, o in take(events, 1, timeout=15)] == [(None, "e0")]
        event(ns, "e1")  # and it follows changes after the new list
        assert [(t, o["metadata"]["name"]) for t, o in take(events, 1)] == [("ADDED", "e1")]
    finally:
        inf.stop()


def test_stop_ends_an_open_watch_at_once(cluster, namespace):
    events: queue.Queue = queue.Queue()
    inf = informer(cluster, namespace, events)
    inf.start()
    assert inf.wait_listed(20)
    time.sleep(0.5)  # its watch is open and idle, for up to five minutes
    threads = [t for t in threading.enumerate() if t.name == f"watch-cronjobs-{namespace}"]
    assert len(threads) == 1
    t0 = time.monotonic()
    inf.stop()
    threads[0].join(5)
    assert not threads[0].is_alive() and time.monotonic() - t0 < 2


def test_a_kind_not_served_counts_as_listed_and_is_followed_once_its_crd_is_applied(cluster, namespace, caplog):
    """An operator on a cluster that lacks one of its CRDs goes on without that kind, and
    follows it once the CRD is applied (no restart)."""
    import logging

    import yaml

    caplog.set_level(logging.INFO, logger="ingestion_operator")
    group, plural = "informer-test.ingestion.dev", "widgets"
    events: queue.Queue = queue.Queue()
    inf = Informer(client.ApiClient(cluster.api_client.configuration), plural, f"{group}/v1", "Widget", [namespace],
                   lambda t, o: events.put((t, o)))
    inf.NOT_SERVED_RETRY = 1
    inf.start()
    try:
        assert inf.wait_listed(10) and events.empty()
        assert [r.getMessage().split(":")[0] for r in caplog.records if "watch_not_served" in r.getMessage()] == [
            f"event=watch_not_served kind=Widget namespace={namespace} retry_seconds=1"]
        crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": f"{plural}.{group}"},
               "spec": {"group": group, "scope": "Namespaced",
                        "names": {"plural": plural, "singular": "widget", "kind": "Widget"},
                        "versions": [{"name": "v1", "served": True, "storage": True,
                                      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
        kubectl(cluster, "apply", "-f", "-", input=yaml.safe_dump(crd))
        kubectl(cluster, "wait", "--for=condition=Established", f"crd/{plural}.{group}", "--timeout=60s")
        deadline = time.monotonic() + 30
        while True:  # the API server serves a new kind a moment after it is Established
            try:
                client.CustomObjectsApi(cluster.api_client).create_namespaced_custom_object(
                    group, "v1", namespace, plural, {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}})
                break
            except client.exceptions.ApiException as e:
                assert e.status == 404 and time.monotonic() < deadline, e
                time.sleep(0.5)
        (t, obj), = take(events, 1)
        assert t in (None, "ADDED") and obj["metadata"]["name"] == "w"
        assert any(f"event=watch_listed kind=Widget namespace={namespace} count=" in r.getMessage() for r in caplog.records)
    finally:
        inf.stop()
        kubectl(cluster, "delete", "crd", f"{plural}.{group}", "--ignore-not-found", "--wait=false")
