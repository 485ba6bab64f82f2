"""The echo of our own write (the watch event at exactly the resourceVersion the write
returned) starts no reconcile; any other version does."""

from kubernetes import client

from ingestion_operator.reconcile import Reconciler
from ingestion_operator.render import RenderSettings


def test_only_the_version_we_wrote_is_an_echo():
    r = Reconciler(client.ApiClient(), RenderSettings(job_image="job:test"))
    assert not r.is_echo("schedule", "ns", "a", "41")
    r._remember("schedule", "ns", "a", {"metadata": {"resourceVersion": "41"}})
    assert r.is_echo("schedule", "ns", "a", "41")
    assert not r.is_echo("schedule", "ns", "a", "42")  # somebody wrote after us
    assert not r.is_echo("cronjob", "ns", "a", "41") and not r.is_echo("schedule", "other", "a", "41")
    assert not r.is_echo("schedule", "ns", "a", None) and not r.is_echo("schedule", "ns", "a", "")
    r._remember("cronjob", "ns", "a", {"metadata": {"resourceVersion": "50"}})
    r.forget("ns", "a")  # deleted: nothing of it is remembered
    assert not r.is_echo("schedule", "ns", "a", "41") and not r.is_echo("cronjob", "ns", "a", "50")
