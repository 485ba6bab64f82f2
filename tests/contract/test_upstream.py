"""The IngestionUpstream's spec against its CRD, its rules, and what counts as one source."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ingestion_contract import SpecError
from ingestion_contract.upstream import Source, UpstreamSpec, parse_upstream, source_of

from .conftest import compare

CRD = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "ingestionupstreams.ingestion.dev.yaml"


def schema() -> dict:
    return yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_model_fields_defaults_and_bounds_equal_the_crds():
    assert compare(UpstreamSpec, schema(), "spec") == []


def test_the_comparison_catches_a_drifted_share():
    s = schema()
    s["properties"]["scheduledShare"]["default"] = 80
    s["properties"]["scheduledShare"]["maximum"] = 99
    assert compare(UpstreamSpec, s, "spec") == ["spec.scheduledShare: default in CRD 80, in model 70",
                                                "spec.scheduledShare: maximum in CRD 99, in model 100"]


def test_defaults_and_pools():
    up = parse_upstream({"bucket": "data.binance.vision", "maxRequestsPerSecond": 20})
    assert (up.endpoint, up.scheduled_share, up.max_bytes_per_second) == ("", 70, None)
    assert (up.scheduled_requests_per_second, up.backfill_requests_per_second) == (14, 6)
    assert up.source == Source("", "data.binance.vision") and str(up.source) == "s3://data.binance.vision"
    # the pools always add up to the budget, rounding down the scheduled one
    for rps in range(1, 60):
        for pct in (0, 1, 33, 70, 99, 100):
            u = UpstreamSpec(bucket="bkt", max_requests_per_second=rps, scheduled_share=pct)
            assert u.scheduled_requests_per_second + u.backfill_requests_per_second == rps
            assert u.scheduled_requests_per_second <= rps * pct / 100


@pytest.mark.parametrize("spec, field, words", [
    ({"bucket": "b", "maxRequestsPerSecond": 5}, "spec.bucket", "at least 3"),
    ({"bucket": "bkt"}, "spec.maxRequestsPerSecond", "is required"),
    ({"bucket": "bkt", "maxRequestsPerSecond": 0}, "spec.maxRequestsPerSecond", ">= 1"),
    ({"bucket": "bkt", "maxRequestsPerSecond": 5, "scheduledShare": 101}, "spec.scheduledShare", "<= 100"),
    ({"bucket": "bkt", "maxRequestsPerSecond": 5, "endpoint": "minio:9000"}, "spec.endpoint", "http:// or https://"),
    ({"bucket": "bkt", "maxRequestsPerSecond": 5, "host": "x"}, "spec.host", "unknown field"),
])
def test_a_bad_spec_names_its_field(spec, field, words):
    with pytest.raises(SpecError) as e:
        parse_upstream(spec)
    assert [err.field for err in e.value.errors] == [field] and words in str(e.value)


def test_one_source_however_it_is_written():
    """A schedule's null endpoint and an upstream's "" are both AWS; a trailing '/' or the case
    of the scheme and host make no other source; the bucket and the path do."""
    assert source_of(None, "b") == source_of("", "b") == Source("", "b")
    assert source_of("HTTP://MinIO.storage:9000/", "b") == source_of("http://minio.storage:9000", "b")
    assert source_of("http://minio:9000", "b") != source_of("http://minio:9000", "c")
    assert source_of("http://h/Path", "b") != source_of("http://h/path", "b")
