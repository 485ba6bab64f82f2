module ingestion.dev/cronoracle

go 1.26

// The version k8s.io/kubernetes pins (dev/kube/go.mod): the CronJob controller's and the
// API server's cron library. tests/contract/test_cron_differential.py checks they agree.
require github.com/robfig/cron/v3 v3.0.1
