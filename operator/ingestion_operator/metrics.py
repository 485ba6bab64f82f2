"""The operator's own Prometheus metrics, served on /metrics for scraping."""

from prometheus_client import Counter, Gauge, Histogram, Info

RECONCILES = Counter("ingestion_operator_reconciles_total", "Reconciles of IngestionSchedules, by result.", ["result"])
RECONCILE_ERRORS = Counter("ingestion_operator_reconcile_errors_total", "Reconciles that raised an unexpected error.")
RECONCILE_SECONDS = Histogram("ingestion_operator_reconcile_duration_seconds", "Time one reconcile took.",
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
API_WRITES = Counter("ingestion_operator_api_writes_total", "Writes the operator made to the API server.", ["resource", "verb"])
SCHEDULES = Gauge("ingestion_operator_schedules", "IngestionSchedules seen, by Ready condition.", ["ready"])
LEADER = Gauge("ingestion_operator_leader", "1 on the replica that holds the Lease and reconciles, 0 on a standby.")
TZDATA = Info("ingestion_operator_tzdata", "The IANA time zone database the operator computes status.nextRuns with "
              "(version, and where it was read: a system directory or the tzdata package).")
SUSPENDED = Gauge("ingestion_operator_schedule_suspended", "1 while a schedule is paused (spec.pause) or disabled "
                  "(spec.enabled false): its alerts stay quiet; 0 otherwise.", ["schedule_namespace", "schedule"])
ADMISSIONS = Counter("ingestion_operator_admission_reviews_total", "IngestionSchedules the validating webhook answered, by "
                     "result (allowed or refused).", ["result"])
WORK_QUEUE_DEPTH = Gauge("ingestion_operator_work_queue_depth", "Resources waiting for a reconcile on the leader's work queue "
                         "(not running now): a burst of events, or reconciles slower than they come.")
WATCH_ERRORS = Counter("ingestion_operator_watch_errors_total", "Watches of schedules, CronJobs and upstreams that failed and "
                       "were resumed after a pause, by kind (an API server away, a broken stream).", ["kind"])
