"""Names the operator shares with manifests, tests and the Helm chart: defined once."""

GROUP = "ingestion.dev"
VERSION = "v1alpha1"
PLURAL = "ingestionschedules"
KIND = "IngestionSchedule"
BACKFILL_PLURAL = "ingestionbackfills"
BACKFILL_KIND = "IngestionBackfill"
UPSTREAM_PLURAL = "ingestionupstreams"
UPSTREAM_KIND = "IngestionUpstream"

LABEL_SCHEDULE = "ingestion.dev/schedule"
LABEL_BACKFILL = "ingestion.dev/backfill"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
MANAGED_BY = "ingestion-operator"

# On a backfill's Job: the IngestionUpstream it took a share of, and that share (requests per
# second, all its shards together), so every later decision reads what the Job runs with.
ANNOTATION_UPSTREAM = "ingestion.dev/upstream"
ANNOTATION_UPSTREAM_SHARE = "ingestion.dev/upstream-requests-per-second"

# Set by Kubernetes on a Job made by `kubectl create job --from=cronjob/...`.
ANNOTATION_INSTANTIATE = "cronjob.kubernetes.io/instantiate"

FIELD_MANAGER = "ingestion-operator"
DEFAULT_JOB_IMAGE = "ghcr.io/ingestion-operator/ingestion-job:0.1.0"
JOB_COMMAND = ("ingestion-job", "run")
JOB_CONTAINER = "ingest"
RUN_AS_USER = 65532  # the non-root user of Dockerfile.job
