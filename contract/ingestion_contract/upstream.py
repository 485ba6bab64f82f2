"""An IngestionUpstream: one source (an S3 endpoint and bucket) and the request budget that
every schedule and backfill reading from it shares.

A schedule or a backfill *reads from* an upstream when its target's endpoint and bucket are
the upstream's (:func:`source_of`), in the same namespace; a backfill reads through its
schedule's target. How the budget is split is the operator's (``ingestion_operator.shares``);
the spec, its defaults and its bounds live here, compared with the CRD by a test.
"""

from __future__ import annotations

import dataclasses

from .spec import BUCKET_PATTERN, FieldError, _is_http_url, _parse_checked, spec_field

DEFAULT_SCHEDULED_SHARE = 70  # percent of the budget reserved for scheduled runs


@dataclasses.dataclass(frozen=True)
class Source:
    """Where requests go: an endpoint ("" for AWS S3) and a bucket, as a key to compare; shown as
    ``s3://bucket`` (AWS) or ``endpoint/bucket``."""

    endpoint: str
    bucket: str

    def __str__(self) -> str:
        return f"{self.endpoint}/{self.bucket}" if self.endpoint else f"s3://{self.bucket}"


def source_of(endpoint: str | None, bucket: str) -> Source:
    """The source an endpoint and a bucket name: null and "" are both AWS; a trailing '/' and
    the case of the scheme and host do not make another source."""
    ep = (endpoint or "").strip().rstrip("/")
    if "://" in ep:
        scheme, rest = ep.split("://", 1)
        host, sep, path = rest.partition("/")
        ep = f"{scheme.lower()}://{host.lower()}{sep}{path}"
    return Source(ep, bucket)


@dataclasses.dataclass(frozen=True, kw_only=True)
class UpstreamSpec:
    bucket: str = spec_field("bucket", min_length=3, max_length=63, pattern=BUCKET_PATTERN)
    endpoint: str = spec_field("endpoint", "")  # "": AWS S3
    # every request of every sharer together, retries included
    max_requests_per_second: int = spec_field("maxRequestsPerSecond", minimum=1)
    # shown and split like requests; not enforced by the job yet
    max_bytes_per_second: int | None = spec_field("maxBytesPerSecond", None, minimum=1)
    # percent of the budget reserved for scheduled runs; backfills share the rest
    scheduled_share: int = spec_field("scheduledShare", DEFAULT_SCHEDULED_SHARE, minimum=0, maximum=100)

    @property
    def source(self) -> Source:
        return source_of(self.endpoint, self.bucket)

    @property
    def scheduled_requests_per_second(self) -> int:
        """The scheduled runs' pool: scheduledShare percent of the budget, rounded down."""
        return self.max_requests_per_second * self.scheduled_share // 100

    @property
    def backfill_requests_per_second(self) -> int:
        """The backfills' pool: what the scheduled runs' leaves (the two never exceed the budget)."""
        return self.max_requests_per_second - self.scheduled_requests_per_second


def parse_upstream(raw: object, path: str = "spec") -> UpstreamSpec:
    """The typed spec of an IngestionUpstream; raises SpecError naming every problem."""
    return _parse_checked(UpstreamSpec, raw, path, upstream_rules)


def upstream_rules(spec: UpstreamSpec, path: str = "spec") -> list[FieldError]:
    if spec.endpoint and not _is_http_url(spec.endpoint):
        return [FieldError(f"{path}.endpoint", spec.endpoint, "must be an http:// or https:// URL, or \"\" for AWS S3")]
    return []
