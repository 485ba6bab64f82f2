"""ingestion-job: one probe-and-repair run of an IngestionSchedule."""
