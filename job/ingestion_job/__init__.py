"""ingestion-job: one probe-and-repair run of an IngestionSchedule."""

from ingestion_contract import first_line  # noqa: F401  (the job's modules import it from here)
