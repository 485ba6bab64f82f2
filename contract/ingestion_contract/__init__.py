"""ingestion-contract: what the operator and the job agree on, imported by both.

* :mod:`.spec`: the IngestionSchedule spec as typed, frozen dataclasses with the CRD's
  defaults, and the one validator (field-named errors, never an exception).
* :mod:`.cron`: cron parsing and next fire times with the CronJob controller's semantics.
* :mod:`.podenv`: the job pod's environment (names, encoding, :class:`RunContext`).
* :mod:`.backfill`: an IngestionBackfill's spec and its grid of units (shard x chunk).
* :mod:`.summary`: the run summary the job reports, naming its columns and metrics, and the
  coverage summary it leaves in its termination message for the operator.

It depends only on the standard library and `tzdata`, so each image carries it cheaply.
"""

from .backfill import BACKFILL_ENV, COMPLETION_INDEX_ENV, BackfillSpec, BackfillUnit, encode_unit_env, parse_backfill
from .podenv import (
    EXIT_FAILED,
    EXIT_MEANINGS,
    EXIT_PARTIAL,
    EXIT_INTERRUPTED,
    EXIT_SUCCEEDED,
    EXIT_USAGE,
    JOB_NAME_ENV,
    JOB_NAME_LABEL,
    NAMESPACE_ENV,
    NO_RETRY_EXIT_CODES,
    POD_NAME_ENV,
    SCHEDULE_ENV,
    SOURCE_KEY_ID_ENV,
    SOURCE_SECRET_ENV,
    SPEC_ENV,
    STORE_KEY_ID_ENV,
    STORE_SECRET_ENV,
    ContractError,
    RunContext,
    encode_job_spec,
    job_spec,
    read_environment,
    scheduled_time_from_job_name,
)
from .spec import FieldError, JobSpec, ScheduleSpec, SpecError, parse_job_spec, parse_spec, validate, validate_name
from .summary import (GAP_CAUSES, TERMINATION_MESSAGE_ENV, TERMINATION_MESSAGE_PATH, Coverage, RunSummary, by_cause,
                      end_message, end_reason, largest_causes)


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (DuckDB's and Arrow's run to several), or its type."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


__all__ = [
    "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_MEANINGS", "EXIT_PARTIAL", "EXIT_SUCCEEDED", "EXIT_USAGE", "NO_RETRY_EXIT_CODES",
    "JOB_NAME_ENV", "JOB_NAME_LABEL", "NAMESPACE_ENV", "POD_NAME_ENV", "SCHEDULE_ENV", "SOURCE_KEY_ID_ENV",
    "SOURCE_SECRET_ENV", "SPEC_ENV", "STORE_KEY_ID_ENV", "STORE_SECRET_ENV", "ContractError", "RunContext",
    "encode_job_spec", "job_spec", "read_environment", "scheduled_time_from_job_name", "FieldError", "JobSpec",
    "ScheduleSpec", "SpecError", "parse_job_spec", "parse_spec", "validate", "validate_name", "RunSummary", "first_line",
    "Coverage", "TERMINATION_MESSAGE_ENV", "TERMINATION_MESSAGE_PATH", "BACKFILL_ENV", "COMPLETION_INDEX_ENV",
    "BackfillSpec", "BackfillUnit", "encode_unit_env", "parse_backfill", "GAP_CAUSES", "by_cause",
    "largest_causes", "end_message", "end_reason",
]
