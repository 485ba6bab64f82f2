"""ingestion-job: one probe-and-repair run of an IngestionSchedule."""


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (DuckDB's and Arrow's run to several), or its type."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
