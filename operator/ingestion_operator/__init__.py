"""ingestion-operator: reconciles IngestionSchedule resources into CronJobs."""
