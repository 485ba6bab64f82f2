"""The IngestionSchedule spec as frozen dataclasses: parsed once, defaults in one place.

Every field names its key in the CRD (camelCase), its default and the schema's bounds,
so the model and ``deploy/crds/`` can be compared field by field (a test does). The
operator parses a resource's spec with :func:`parse_spec`; the job parses the JSON the
operator rendered into its pod, or a ``--spec`` file, with the same function. Nothing
else reads the raw dict, so no default is written twice.

:func:`validate` returns every problem as a :class:`FieldError` that names the field, the
value and what is accepted, and never raises anything else: a spec that passed
``kubectl apply`` (the CRD's schema and CEL rules) and a hand-written file get the same
checks, plus what the schema cannot express (cron syntax, IANA zones, URLs).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Mapping
from urllib.parse import urlparse

import datetime as dt

from .cron import CronError, load_timezone, next_after
from .cron import parse as parse_cron
from .cron import spread

# Job names are <cronjob>-<minutes since epoch, 8+ digits> and must fit in 63 characters,
# so a CronJob's name has at most 52: the schedule's name is refused above that.
MAX_NAME = 52
# A schedule's name is a DNS-1123 label (its CronJob's, Jobs' and pods' names, label values and
# the run ids and partitions of the store derive from it), at most MAX_NAME characters.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# lookbackDays' maximum (about ten years), and lagDays' (a lag of a million days took the window
# out of the calendar); ``ingestion-job run --dates`` takes a range of at most this many days
# before its last date, like the window of a run with the longest lookback
MAX_WINDOW_DAYS = 3660
KEY_PLACEHOLDERS = ("symbol", "date")
PERIODS = ("daily", "monthly")  # target.period: what one cell (one object) holds
PERIOD_PLACEHOLDER = {"daily": "date", "monthly": "month"}  # {date}: YYYY-MM-DD, {month}: YYYY-MM
# target.dimensions: further placeholders of the key template, each with its values. A name is a
# placeholder ({interval}); a value goes into keys and file names as a symbol does (SYMBOL_PATTERN).
DIMENSION_NAME_PATTERN = r"^[a-z][a-zA-Z0-9]*$"
RESERVED_PLACEHOLDERS = ("symbol", "date", "month")
MAX_DIMENSIONS = 4
MAX_DIMENSION_VALUES = 64
LOAD_MODES = ("none", "csv-zip", "csv", "parquet")
DEFAULT_DUCKDB_PATH = "/data/ingestion.duckdb"
MIN_COMPACT_AFTER_FILES = 16  # a compaction leaves one file per symbol part (ingestion_contract.backfill.PARTS, 8)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# A symbol becomes part of object keys (the {symbol} of keyTemplate, a key prefix to list) and of
# the names of the job's local files: runs of letters and digits joined by single '.', '_' or '-',
# so it is never '.' or '..', never holds '/', '\\', whitespace or a glob character. The CRD states
# the same patterns, so each must mean the same in Python's re and the API server's RE2 (no
# lookaround, no flags); re.fullmatch and RE2 both read '$' as the end of the text.
SYMBOL_PATTERN = r"^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$"
# An S3 bucket name, as AWS has allowed them (capitals and '_' only in legacy us-east-1 buckets).
BUCKET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# What a value that does not match a pattern is told (after "must be").
PATTERN_RULES = {
    DATE_PATTERN: "a date as YYYY-MM-DD",
    SYMBOL_PATTERN: "letters and digits, in runs joined by single '.', '_' or '-', e.g. BTCUSDT or "
                    f"BTCUSDT_240628 ({SYMBOL_PATTERN}): no '/', '..', whitespace or glob characters",
    BUCKET_PATTERN: "an S3 bucket name: letters, digits, '.', '-' and '_', beginning and ending with a letter or "
                    f"digit ({BUCKET_PATTERN})",
}
# Whether a schedule fires at all does not depend on when one asks; ask from a fixed instant
# (robfig/cron looks five years ahead, which always holds a 29 February).
_NEVER_FIRES_FROM = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


# -- errors -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FieldError:
    """One problem: the field's path from the resource's root, its value, what is accepted,
    and the reason the operator shows for it (a condition's one-word reason)."""

    field: str
    value: object
    problem: str
    reason: str = "InvalidSpec"

    def __str__(self) -> str:
        return f"{self.field}={self.value!r}: {self.problem}"


class SpecError(ValueError):
    """A spec that cannot be used; ``errors`` lists every problem, the message joins them."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(map(str, errors)))


# -- the model --------------------------------------------------------------------------------
def spec_field(key: str, default=dataclasses.MISSING, *, minimum: int | None = None, maximum: int | None = None,
               min_length: int | None = None, max_length: int | None = None, max_items: int | None = None,
               enum: tuple[str, ...] | None = None, pattern: str | None = None):
    """A field of the spec: its CRD key, its CRD default (none: required) and the schema's bounds
    (for a list of strings, ``min_length``, ``max_length`` and ``pattern`` bound each item)."""
    meta = {"key": key, "minimum": minimum, "maximum": maximum, "minLength": min_length, "maxLength": max_length,
            "maxItems": max_items, "enum": list(enum) if enum else None, "pattern": pattern}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SecretRef:
    name: str = spec_field("name")
    access_key_id_key: str = spec_field("accessKeyIdKey", "AWS_ACCESS_KEY_ID")
    secret_access_key_key: str = spec_field("secretAccessKeyKey", "AWS_SECRET_ACCESS_KEY")


class Symbol(str):
    """A symbol to probe: its name (the string itself), and the dates it is expected over when
    the spec gives them (an item of ``target.symbolRanges``, ``{name, from, until}``; None:
    unbounded on that side). The names of ``target.symbols`` are Symbols without a range."""

    first: dt.date | None
    until: dt.date | None

    def __new__(cls, name: str, first: dt.date | None = None, until: dt.date | None = None):
        self = super().__new__(cls, name)
        self.first, self.until = first, until
        return self

    @property
    def ranged(self) -> bool:
        return self.first is not None or self.until is not None

    def as_json(self) -> dict:
        """Its item of ``target.symbolRanges``: always an object, even without dates (the job
        reads the rendered spec back with the same parser, which takes only objects there)."""
        out = {"name": str(self)}
        if self.first:
            out["from"] = self.first.isoformat()
        if self.until:
            out["until"] = self.until.isoformat()
        return out


SYMBOL_FORMS = "{name, from, until} with dates YYYY-MM-DD"
SYMBOL_NAME = {"minLength": 1, "maxLength": 64, "pattern": SYMBOL_PATTERN}  # a name in target.symbols or symbolRanges


def _symbol(item, meta: Mapping) -> tuple[Symbol | None, str | None]:
    """One item of ``target.symbolRanges``, ``{name, from, until}``; (symbol, None) or (None, problem)."""
    if not isinstance(item, Mapping):
        return None, f"must be {SYMBOL_FORMS}"
    unknown = set(item) - {"name", "from", "until"}
    if unknown:
        return None, f"unknown field(s) {sorted(map(str, unknown))}; must be {SYMBOL_FORMS}"
    name = item.get("name")
    if not isinstance(name, str):
        return None, f"needs a name; must be {SYMBOL_FORMS}"
    if problem := _string_problem(name, SYMBOL_NAME):
        return None, f"name {name!r} {problem}"
    dates = {}
    for key in ("from", "until"):
        v = item.get(key)
        if v is None:
            dates[key] = None
            continue
        try:
            dates[key] = dt.date.fromisoformat(v) if isinstance(v, str) and len(v) == 10 else None
        except ValueError:
            dates[key] = None
        if dates[key] is None:
            return None, f"{key} must be a date YYYY-MM-DD, not {v!r}"
    if dates["from"] and dates["until"] and dates["from"] > dates["until"]:
        return None, f"from {dates['from']} is after until {dates['until']}"
    return Symbol(name, dates["from"], dates["until"]), None


class Dimensions(tuple):
    """``target.dimensions``: (name, values) pairs, by name. Each series of a symbol is one value
    of every dimension (:meth:`variants`)."""

    def as_json(self) -> dict:
        return {name: list(values) for name, values in self}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self)

    def variants(self) -> list[str]:
        """Every combination of one value per dimension, as the job writes it in the store's
        ``variant`` column: ``name=value`` pairs joined by ',' in name order ('' without
        dimensions). Values in their spec order, the last dimension varying fastest."""
        out = [""]
        for name, values in self:
            out = [f"{v},{name}={x}".lstrip(",") for v in out for x in values]
        return out


def variant_values(variant: str) -> dict[str, str]:
    """{dimension: value} of a variant as :meth:`Dimensions.variants` writes it
    ("interval=1m,market=um"; '' without dimensions)."""
    return dict(pair.split("=", 1) for pair in variant.split(",")) if variant else {}


DIMENSION_FORMS = "an object of placeholder names, each with a list of its values, e.g. {interval: [1m, 1h, 1d]}"


def _dimensions(value, path: str, errors: list) -> "Dimensions | object":
    def bad(field: str, v, problem: str):
        errors.append(FieldError(field, v, problem))
        return _INVALID

    if not isinstance(value, Mapping):
        return bad(path, value, f"must be {DIMENSION_FORMS}")
    if len(value) > MAX_DIMENSIONS:
        return bad(path, sorted(map(str, value)), f"must have at most {MAX_DIMENSIONS} dimensions")
    out = []
    for name in sorted(value, key=str):
        here = f"{path}.{name}"
        if not isinstance(name, str) or not re.fullmatch(DIMENSION_NAME_PATTERN, name):
            return bad(here, name, f"a dimension's name must be a placeholder name: a lowercase letter, then letters and "
                                   f"digits ({DIMENSION_NAME_PATTERN})")
        if name in RESERVED_PLACEHOLDERS:
            return bad(here, name, f"is a placeholder of its own; a dimension is none of {', '.join(RESERVED_PLACEHOLDERS)}")
        values = value[name]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return bad(here, values, "must be a list of strings")
        if not values:
            return bad(here, values, "must have at least one value")
        if len(values) > MAX_DIMENSION_VALUES:
            return bad(here, f"{len(values)} values", f"must have at most {MAX_DIMENSION_VALUES} values")
        for i, v in enumerate(values):
            if problem := _string_problem(v, SYMBOL_NAME):
                return bad(f"{here}[{i}]", v, problem)
        dups = sorted({v for v in values if values.count(v) > 1})
        if dups:
            return bad(here, values, f"names {dups[0]} more than once")
        out.append((name, tuple(values)))
    return Dimensions(out)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Archive:
    """``target.archive``: the same series published as monthly archives too. A run expects the
    last ``dailyDays`` days (from the first of their month) as daily files of ``keyTemplate``,
    and every whole month before them as its archive of ``archive.keyTemplate``."""

    key_template: str = spec_field("keyTemplate", min_length=1)
    daily_days: int = spec_field("dailyDays", 90, minimum=1, maximum=MAX_WINDOW_DAYS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Target:
    bucket: str = spec_field("bucket", min_length=3, max_length=63, pattern=BUCKET_PATTERN)
    key_template: str = spec_field("keyTemplate", min_length=1)
    endpoint: str | None = spec_field("endpoint", None)
    region: str = spec_field("region", "us-east-1")
    anonymous: bool = spec_field("anonymous", False)
    credentials_secret: SecretRef | None = spec_field("credentialsSecret", None)
    checksum_suffix: str | None = spec_field("checksumSuffix", None)
    symbols: tuple[str, ...] = spec_field("symbols", (), max_items=5000, min_length=SYMBOL_NAME["minLength"],
                                          max_length=SYMBOL_NAME["maxLength"], pattern=SYMBOL_NAME["pattern"])
    # symbols each expected over its own dates only, {name, from, until}, beside (or instead of) the plain names
    symbol_ranges: tuple[Symbol, ...] = spec_field("symbolRanges", (), max_items=5000)
    discover: bool = spec_field("discover", False)
    # further placeholders of keyTemplate and their values ({interval: [1m, 1h]}): a cell is one
    # (symbol, one value of each, date)
    dimensions: Dimensions = spec_field("dimensions", Dimensions())
    # what one object holds: a day ({date} in keyTemplate) or a calendar month ({month}), expected
    # once it is over plus lagDays
    period: str = spec_field("period", "daily", enum=PERIODS)
    # monthly archives of the same series for the days before the last archive.dailyDays (with
    # target.period daily): one schedule mirrors a dataset's whole history, old and new
    archive: Archive | None = spec_field("archive", None)
    lag_days: int = spec_field("lagDays", 1, minimum=0, maximum=MAX_WINDOW_DAYS)
    # hours after a date ends (in the schedule's zone) within which its object is usually
    # published: a cell not listed yet is a gap with cause not-due until then, late-upstream after
    publish_delay_hours: int = spec_field("publishDelayHours", 24, minimum=0, maximum=8784)
    # a symbol that has published nothing for this many days is delisted: later dates are not
    # expected (0: never); it is active again once it publishes
    delist_after_days: int = spec_field("delistAfterDays", 7, minimum=0, maximum=3660)
    # dates a run probes beyond its window to catch up after an outage longer than lookbackDays
    # (from the last date it probed); the rest are open gaps with cause deferred
    max_catch_up_days: int = spec_field("maxCatchUpDays", 90, minimum=0, maximum=3660)
    lookback_days: int = spec_field("lookbackDays", 30, minimum=0, maximum=MAX_WINDOW_DAYS)
    # every attempt of every request to the source, across the run's concurrency; None: no cap
    max_requests_per_second: int | None = spec_field("maxRequestsPerSecond", None, minimum=1)
    # bytes a second the run receives from the source (listing pages, objects, sidecars),
    # across its concurrency; None: no cap
    max_bytes_per_second: int | None = spec_field("maxBytesPerSecond", None, minimum=1)
    # one request's retry budget: throttling, 5xx and timeouts are retried until it is spent
    retry_budget_seconds: int = spec_field("retryBudgetSeconds", 120, minimum=1, maximum=3600)

    @property
    def all_symbols(self) -> tuple[Symbol, ...]:
        """The symbols the spec names: plain names (no range), then the ranged ones."""
        return tuple(Symbol(n) for n in self.symbols) + self.symbol_ranges


@dataclasses.dataclass(frozen=True, kw_only=True)
class Repair:
    max_repairs_per_run: int = spec_field("maxRepairsPerRun", 100, minimum=0)
    load: str = spec_field("load", "none", enum=LOAD_MODES)
    # the exact row count of a loaded object (None: not checked), or the count from the interval
    # in the key's file name (1440 for -1m-); an object with another count is quarantined
    expect_rows: int | None = spec_field("expectRows", None, minimum=1)
    expect_rows_from_interval: bool = spec_field("expectRowsFromInterval", False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DuckDBStorage:
    claim_name: str = spec_field("claimName", min_length=1)
    path: str = spec_field("path", DEFAULT_DUCKDB_PATH)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Maintenance:
    """Housekeeping of the Delta tables, done by the job when a table needs it (not every run)."""

    compact_after_files: int = spec_field("compactAfterFiles", 32, minimum=0)  # 0: never compact
    vacuum_retention_hours: int = spec_field("vacuumRetentionHours", 168, minimum=0)  # 0: at once
    checkpoint_interval: int = spec_field("checkpointInterval", 10, minimum=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ObjectStoreStorage:
    bucket: str = spec_field("bucket", min_length=3, max_length=63, pattern=BUCKET_PATTERN)
    prefix: str = spec_field("prefix", "")
    endpoint: str | None = spec_field("endpoint", None)
    region: str = spec_field("region", "us-east-1")
    credentials_secret: SecretRef | None = spec_field("credentialsSecret", None)
    maintenance: Maintenance = spec_field("maintenance", Maintenance())


RETENTION_PATTERN = r"^[1-9][0-9]{0,4}d$"  # days: 30d, 365d, 1825d
PATTERN_RULES[RETENTION_PATTERN] = "a number of days such as 30d or 1825d"


class RetentionRules(tuple):
    """``storage.retention.dimensions``: (dimension, ((value, days), ...)) pairs, by name."""

    def as_json(self) -> dict:
        return {d: {v: f"{n}d" for v, n in values} for d, values in self}


def _retention_rules(value, path: str, errors: list) -> "RetentionRules | object":
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        errors.append(FieldError(path, value, "must map a dimension of target.dimensions to its values' retention, "
                                              "e.g. {interval: {1m: 30d, 1h: 365d}}"))
        return _INVALID
    out = []
    for name in sorted(value, key=str):
        rules = []
        for v, days in value[name].items():
            here = f"{path}.{name}.{v}"
            if not isinstance(days, str) or not re.fullmatch(RETENTION_PATTERN, days):
                errors.append(FieldError(here, days, f"must be {PATTERN_RULES[RETENTION_PATTERN]}"))
                return _INVALID
            rules.append((str(v), int(days[:-1])))
        out.append((str(name), tuple(rules)))
    return RetentionRules(out)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Retention:
    """``storage.retention``: how long a cell's data is kept, by the run that finds it older
    (its last day more than that many days before the run's last date)."""

    # every cell's, unless a rule of one of its dimension values says otherwise; None: forever
    default: str | None = spec_field("default", None, pattern=RETENTION_PATTERN)
    # {dimension: {value: days}}: a cell's retention is the shortest that names one of its values
    dimensions: RetentionRules = spec_field("dimensions", RetentionRules())
    # also delete the cells' availability rows (objects) and verified gap rows; loaded rows and
    # open gaps past retention are always deleted
    history: bool = spec_field("history", False)

    def days_for(self, variant: str) -> int | None:
        """The retention in days of a cell of ``variant`` ("interval=1m,..."; '' without dimensions)."""
        values = variant_values(variant)
        named = [days for d, rules in self.dimensions for v, days in rules if values.get(d) == v]
        if named:
            return min(named)
        return int(self.default[:-1]) if self.default else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Storage:
    ONE_OF: typing.ClassVar[tuple[str, ...]] = ("duckdb", "objectStore")

    duckdb: DuckDBStorage | None = spec_field("duckdb", None)
    object_store: ObjectStoreStorage | None = spec_field("objectStore", None)
    retention: Retention | None = spec_field("retention", None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pause:
    """``spec.pause``: the schedule stops starting runs, for ``reason``, until ``until`` (an RFC
    3339 instant; none: until the pause is removed)."""

    reason: str = spec_field("reason", min_length=1, max_length=256)
    until: str | None = spec_field("until", None, min_length=1, max_length=64)

    def ends(self) -> dt.datetime | None:
        """``until`` as an aware datetime (None: no end, or not an instant: the validator says so)."""
        if not self.until:
            return None
        try:
            t = dt.datetime.fromisoformat(self.until.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
        return t if t.tzinfo is not None else None

    def holds(self, now: dt.datetime) -> bool:
        """Whether the pause holds at ``now`` (it ends at ``until``, by itself)."""
        end = self.ends()
        return end is None or now < end


@dataclasses.dataclass(frozen=True, kw_only=True)
class Metrics:
    pushgateway_url: str | None = spec_field("pushgatewayUrl", None)
    # a dimension of target.dimensions with at most this many values is a label of the
    # ingestion_dimension_* metrics (0: none are); a series never is (unbounded)
    dimension_labels: int = spec_field("dimensionLabels", 16, minimum=0, maximum=64)


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What one run needs: the part of the spec the operator renders into the job's pod."""

    schedule: str = spec_field("schedule", min_length=1, max_length=100)
    timezone: str = spec_field("timezone", "UTC", min_length=1, max_length=64)
    target: Target = spec_field("target")
    repair: Repair = spec_field("repair", Repair())
    storage: Storage = spec_field("storage")
    metrics: Metrics = spec_field("metrics", Metrics())
    # the Job's deadline: the run spends at most its time budget (see ingestion_job.run.time_budget)
    active_deadline_seconds: int = spec_field("activeDeadlineSeconds", 3600, minimum=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleSpec(JobSpec):
    """The whole spec: the job's part plus what the operator renders into the CronJob."""

    enabled: bool = spec_field("enabled", True)
    starting_deadline_seconds: int = spec_field("startingDeadlineSeconds", 300, minimum=0)
    backoff_limit: int = spec_field("backoffLimit", 2, minimum=0, maximum=20)
    successful_jobs_history_limit: int = spec_field("successfulJobsHistoryLimit", 3, minimum=0, maximum=100)
    failed_jobs_history_limit: int = spec_field("failedJobsHistoryLimit", 3, minimum=0, maximum=100)
    image: str | None = spec_field("image", None)
    resources: dict = spec_field("resources", {})
    # the Stale condition: no successful run for this long; None: see stale_after_seconds()
    stale_after_seconds: int | None = spec_field("staleAfterSeconds", None, minimum=60)
    # no runs start while it holds: a reason, and an optional end at which the schedule resumes by itself
    pause: Pause | None = spec_field("pause", None)

    def paused(self, now: dt.datetime) -> bool:
        return self.pause is not None and self.pause.holds(now)

    def job(self) -> JobSpec:
        return JobSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(JobSpec)})

    def stale_after(self) -> dt.timedelta:
        """How long without a successful run before the schedule is Stale: ``staleAfterSeconds``
        when set, else twice the schedule's longest interval plus the run's deadline
        (``activeDeadlineSeconds``), so one missed or failed tick is tolerated and two are not."""
        if self.stale_after_seconds is not None:
            return dt.timedelta(seconds=self.stale_after_seconds)
        return 2 * longest_interval(self.schedule, self.timezone) + dt.timedelta(seconds=self.active_deadline_seconds)

    def schedule_for(self, namespace: str, name: str) -> str:
        """The concrete cron expression of the schedule ``namespace/name``: every ``H`` replaced
        by its value for that name (see :func:`ingestion_contract.cron.spread`)."""
        return spread(self.schedule, f"{namespace}/{name}")


@functools.lru_cache(maxsize=4096)
def longest_interval(schedule: str, timezone: str, fires: int = 32) -> dt.timedelta:
    """The longest time between two consecutive fires among the first ``fires`` after a fixed
    instant: a weekday schedule's weekend, a monthly one's longest month. Fixed, so a default
    derived from it does not move with the clock (and status does not change by itself)."""
    zone, cron = load_timezone(timezone), parse_cron(spread(schedule, ""))
    times = [next_after(cron, _NEVER_FIRES_FROM, zone)]
    while len(times) <= fires and times[-1] is not None:
        times.append(next_after(cron, times[-1], zone))
    times = [t for t in times if t is not None]
    if len(times) < 2:  # fires once in five years at most: robfig's horizon
        return dt.timedelta(days=5 * 366)
    return max(b - a for a, b in zip(times, times[1:]))


# -- parsing ----------------------------------------------------------------------------------
def parse_spec(raw: object, path: str = "spec") -> ScheduleSpec:
    """The typed spec of an IngestionSchedule; raises SpecError naming every problem."""
    return _parse_checked(ScheduleSpec, raw, path)


def parse_job_spec(raw: object, path: str = "spec") -> JobSpec:
    """The job's part only (what the operator renders into the pod); raises SpecError."""
    return _parse_checked(JobSpec, raw, path)


def validate(raw: object, path: str = "spec") -> list[FieldError]:
    """Every problem with a raw spec; empty when it is valid. Never raises."""
    errors: list[FieldError] = []
    spec = _parse_object(ScheduleSpec, raw, path, errors)
    if spec is not None:
        errors += check_rules(spec, path)
    return errors


def validate_name(name: object, field: str = "metadata.name") -> list[FieldError]:
    """The schedule's name: a DNS-1123 label of at most MAX_NAME characters (its Jobs must fit in
    63). The API server holds a resource's name to a DNS-1123 subdomain only; a ``--spec`` file's
    name is whatever the file says."""
    if isinstance(name, str) and len(name) <= MAX_NAME and re.fullmatch(NAME_PATTERN, name):
        return []
    return [FieldError(field, name, f"must be a DNS-1123 label of at most {MAX_NAME} characters: lowercase letters, "
                                    "digits and '-', beginning and ending with a letter or digit (the CronJob's Jobs "
                                    "need the rest of 63)")]


def read_field(raw: object, key: str, cls=None):
    """One field of a raw spec that may be invalid elsewhere: its value when valid, else its default."""
    cls = cls or ScheduleSpec
    f = next(f for f in dataclasses.fields(cls) if f.metadata["key"] == key)
    default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    if not isinstance(raw, Mapping) or raw.get(key) is None:
        return default
    value = _convert(_unwrap(_hints(cls)[f.name]), raw[key], key, f.metadata, [])
    return default if value is _INVALID else value


def to_json(obj) -> object:
    """The CRD's JSON form of a model object (camelCase keys, every field, defaults filled)."""
    if dataclasses.is_dataclass(obj):
        return {f.metadata["key"]: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (Dimensions, RetentionRules)):
        return obj.as_json()
    if isinstance(obj, tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, Symbol):
        return obj.as_json()
    return obj


def _parse_checked(cls, raw: object, path: str, rules=None):
    """``raw`` as ``cls``, checked by ``rules`` (default :func:`check_rules`); raises SpecError."""
    errors: list[FieldError] = []
    spec = _parse_object(cls, raw, path, errors)
    if spec is not None:
        errors += (rules or check_rules)(spec, path)
    if errors:
        raise SpecError(errors)
    return spec


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


@functools.cache
def _plan(cls) -> tuple[dict, str, tuple]:
    """How to parse ``cls``, worked out once per class: its fields by key, the known keys as an
    error message lists them, and per field (key, attribute, type, required, metadata)."""
    fields = {f.metadata["key"]: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    steps = tuple((key, f.name, _unwrap(hints[f.name]), f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                   f.metadata) for key, f in fields.items())
    return fields, ", ".join(sorted(fields)), steps


def _parse_object(cls, raw: object, path: str, errors: list[FieldError]):
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, raw, "must be an object"))
        return None
    fields, known, steps = _plan(cls)
    before = len(errors)
    for key in raw:
        if key not in fields:
            shown = key if isinstance(key, str) and key.isprintable() else repr(key)  # never a raw control character
            errors.append(FieldError(f"{path}.{shown}", raw[key], f"unknown field; known: {known}"))
    one_of = getattr(cls, "ONE_OF", ())
    if one_of:
        chosen = [k for k in one_of if raw.get(k) is not None]
        if len(chosen) != 1:
            rel = path.split(".", 1)[-1]
            errors.append(FieldError(path, chosen, f"set exactly one of {' or '.join(f'{rel}.{k}' for k in one_of)}"))
    values = {}
    for key, name, tp, required, meta in steps:
        value = raw.get(key)
        if value is None:  # absent, or null: the API server prunes such a null and defaults the field
            if required:
                errors.append(FieldError(f"{path}.{key}", None, "is required"))
            continue
        value = _convert(tp, value, f"{path}.{key}", meta, errors)
        if value is not _INVALID:
            values[name] = value
    return cls(**values) if len(errors) == before else None


_INVALID = object()


def _optional(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


@functools.cache
def _unwrap(tp):
    """A field's type without its ``| None``, and whether it is a model class: what
    :func:`_convert` dispatches on, worked out once per type."""
    if _optional(tp):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp, dataclasses.is_dataclass(tp), typing.get_origin(tp)


def _convert(tp: tuple, value, path: str, meta: Mapping, errors: list[FieldError]):
    """``value`` as the type ``tp`` (:func:`_unwrap`'s answer) says, or _INVALID with its errors."""
    def bad(problem: str):
        errors.append(FieldError(path, value, problem))
        return _INVALID

    tp, model, origin = tp  # _unwrap's answer
    if model:
        parsed = _parse_object(tp, value, path, errors)
        return _INVALID if parsed is None else parsed
    if tp is bool:
        return value if isinstance(value, bool) else bad("must be true or false")
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            return bad("must be an integer")
        if meta.get("minimum") is not None and value < meta["minimum"]:
            return bad(f"must be >= {meta['minimum']}")
        if meta.get("maximum") is not None and value > meta["maximum"]:
            return bad(f"must be <= {meta['maximum']}")
        return value
    if tp is str:
        if not isinstance(value, str):
            return bad("must be a string")
        problem = _string_problem(value, meta)
        return bad(problem) if problem else value
    if tp is dict:
        return dict(value) if isinstance(value, Mapping) else bad("must be an object")
    if tp is Dimensions:
        return _dimensions(value, path, errors)
    if tp is RetentionRules:
        return _retention_rules(value, path, errors)
    if tp == tuple[Symbol, ...]:  # a list of {name, from, until}
        if not isinstance(value, list):
            return bad(f"must be a list, each item {SYMBOL_FORMS}")
        if meta.get("maxItems") is not None and len(value) > meta["maxItems"]:
            return bad(f"must have at most {meta['maxItems']} items")
        out = []
        for i, item in enumerate(value):
            sym, problem = _symbol(item, meta)
            if problem:
                errors.append(FieldError(f"{path}[{i}]", item, problem))
                return _INVALID
            out.append(sym)
        dups = sorted({s for s in out if out.count(s) > 1})
        if dups:  # which range would hold?
            return bad(f"names {dups[0]} more than once: give each symbol one range")
        return tuple(out)
    if origin is tuple:  # tuple[str, ...]: a list of strings
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return bad("must be a list of strings")
        if meta.get("maxItems") is not None and len(value) > meta["maxItems"]:
            return bad(f"must have at most {meta['maxItems']} items")
        for i, item in enumerate(value):
            if problem := _string_problem(item, meta):
                errors.append(FieldError(f"{path}[{i}]", item, problem))
                return _INVALID
        return tuple(value)
    raise TypeError(f"spec model field {path} has an unsupported type {tp!r}")  # a bug in the model, not in input


def _string_problem(value: str, meta: Mapping) -> str | None:
    """What is wrong with a string against the field's bounds, or None."""
    if meta.get("minLength") is not None and len(value) < meta["minLength"]:
        return f"must have at least {meta['minLength']} characters"
    if meta.get("maxLength") is not None and len(value) > meta["maxLength"]:
        return f"must have at most {meta['maxLength']} characters"
    if meta.get("enum") and value not in meta["enum"]:
        return f"must be one of {', '.join(meta['enum'])}"
    if meta.get("pattern") and not re.fullmatch(meta["pattern"], value):
        rule = PATTERN_RULES.get(meta["pattern"]) or f"matched by {meta['pattern']}"
        return f"must be {rule}"
    return None


# -- rules the schema cannot state ------------------------------------------------------------
def _check_archive(target: Target, err) -> None:
    """``target.archive``: monthly archives of the daily series, so the same placeholders with
    {month} for {date}."""
    key = target.archive.key_template
    names = _PLACEHOLDER.findall(key)
    wanted = ("symbol", "month") + target.dimensions.names
    if target.period != "daily":
        err("target.archive", {"keyTemplate": key}, "needs target.period: daily (the archives hold the months "
            "before the daily files)")
    elif "date" in names:
        err("target.archive.keyTemplate", key, "has {date}: an archive holds a month, named by {month} (YYYY-MM)")
    elif unknown := sorted(set(names) - set(wanted)):
        err("target.archive.keyTemplate", key, f"has the placeholder {{{unknown[0]}}}, which is neither {{symbol}}, "
            f"{{month}} nor a dimension of target.dimensions ({', '.join(target.dimensions.names) or 'none'})")
    elif missing := [p for p in wanted if p not in names]:
        err("target.archive.keyTemplate", key, f"must contain {{{missing[0]}}}: an archive holds one series' month, "
            "so its key names the symbol, the month and every dimension")


@functools.lru_cache(maxsize=1024)
def _never_fires(cron, zone) -> bool:
    """Whether a parsed schedule has no fire time from a fixed instant on (robfig's horizon):
    remembered per schedule and zone, both immutable."""
    return next_after(cron, _NEVER_FIRES_FROM, zone) is None


def check_rules(spec: JobSpec, path: str = "spec") -> list[FieldError]:
    """Cross-field and syntax rules, each naming the field, the value and what is accepted."""
    errors: list[FieldError] = []

    def err(field: str, value, problem: str) -> None:
        errors.append(FieldError(f"{path}.{field}", value, problem))

    try:
        zone = load_timezone(spec.timezone)
    except CronError as e:
        err("timezone", spec.timezone, str(e))
        zone = load_timezone("UTC")
    try:
        cron = parse_cron(spread(spec.schedule, ""))  # H checked for its form; its value does not matter here
    except CronError as e:
        errors.insert(0, FieldError(f"{path}.schedule", spec.schedule, str(e)))
    else:
        if _never_fires(cron, zone):
            errors.insert(0, FieldError(f"{path}.schedule", spec.schedule,
                                        "never fires: no date matches its day-of-month and month (e.g. 30 February)",
                                        reason="NeverFires"))

    target = spec.target
    names = _PLACEHOLDER.findall(target.key_template)
    when = PERIOD_PLACEHOLDER[target.period]
    wanted = ("symbol", when) + target.dimensions.names
    unknown = sorted(set(names) - set(wanted))
    other = next(p for p in PERIOD_PLACEHOLDER.values() if p != when)
    if other in names:
        err("target.keyTemplate", target.key_template,
            f"has {{{other}}}, which names {'monthly' if other == 'month' else 'daily'} objects, while target.period is "
            f"{target.period}: use {{{when}}}, or set target.period: {'monthly' if other == 'month' else 'daily'}")
    elif unknown:
        err("target.keyTemplate", target.key_template,
            f"has the placeholder {{{unknown[0]}}}, which is neither {{symbol}}, {{{when}}} nor a dimension of "
            f"target.dimensions ({', '.join(target.dimensions.names) or 'none'})")
    elif not all(p in names for p in wanted):
        missing = [p for p in wanted if p not in names]
        err("target.keyTemplate", target.key_template,
            f"must contain {{{missing[0]}}}: " + ("every dimension of target.dimensions is a placeholder of the key, or "
                                                  "its values would share one object" if missing[0] in target.dimensions.names
                                                  else f"the key of each cell names its symbol and its "
                                                       f"{'month' if when == 'month' else 'date'}"))
    elif target.discover and set(target.dimensions.names) & set(_PLACEHOLDER.findall(target.key_template.split("{symbol}", 1)[0])):
        err("target.keyTemplate", target.key_template,
            "with target.discover, no dimension may come before {symbol}: discovery lists the folder that holds the symbols")
    if target.archive is not None:
        _check_archive(target, err)
    if bool(target.symbols or target.symbol_ranges) == target.discover:
        err("target.symbols", list(target.symbols) or None,
            "set exactly one of target.symbols or target.symbolRanges (non-empty) or target.discover=true")
    both = sorted(set(target.symbols) & set(target.symbol_ranges))
    if both:
        err("target.symbolRanges", both, "names symbols target.symbols names too: name each symbol in one of them")
    if target.anonymous and target.credentials_secret:
        err("target.anonymous", True, "excludes target.credentialsSecret")
    urls = (("target.endpoint", target.endpoint),
            ("storage.objectStore.endpoint", spec.storage.object_store and spec.storage.object_store.endpoint),
            ("metrics.pushgatewayUrl", spec.metrics.pushgateway_url))
    for field, url in urls:
        if url and not _is_http_url(url):
            err(field, url, "must be an http:// or https:// URL")

    repair = spec.repair
    if repair.expect_rows is not None and repair.expect_rows_from_interval:
        err("repair.expectRows", repair.expect_rows, "excludes repair.expectRowsFromInterval: set one of them")
    if (repair.expect_rows is not None or repair.expect_rows_from_interval) and repair.load == "none":
        err("repair.load", repair.load, "must load objects (csv-zip, csv or parquet) for repair.expectRows* to be checked")

    storage = spec.storage
    if storage.duckdb is not None:
        p = storage.duckdb.path
        if not p.startswith("/") or p.rstrip("/").count("/") < 2:
            err("storage.duckdb.path", p, "must be absolute and inside a folder, e.g. /data/ingestion.duckdb")
    if storage.object_store is not None:
        n = storage.object_store.maintenance.compact_after_files
        if 0 < n < MIN_COMPACT_AFTER_FILES:
            err("storage.objectStore.maintenance.compactAfterFiles", n,
                f"must be 0 (never compact) or at least {MIN_COMPACT_AFTER_FILES}: a compaction leaves one file "
                "per symbol part (8), and a smaller limit would compact on every run")
    retention = storage.retention
    if retention is not None:
        dims = dict(target.dimensions)
        for d, rules in retention.dimensions:
            if d not in dims:
                err(f"storage.retention.dimensions.{d}", {v: f"{n}d" for v, n in rules},
                    f"names no dimension of target.dimensions ({', '.join(dims) or 'none'})")
                continue
            for v, n in rules:
                if v not in dims[d]:
                    err(f"storage.retention.dimensions.{d}.{v}", f"{n}d", f"{v} is not a value of target.dimensions.{d} "
                        f"({', '.join(dims[d])})")
        kept = [("storage.retention.default", int(retention.default[:-1]))] if retention.default else []
        kept += [(f"storage.retention.dimensions.{d}.{v}", n) for d, rules in retention.dimensions for v, n in rules]
        for field, n in kept:
            if n <= target.lookback_days:
                err(field, f"{n}d", f"is not longer than target.lookbackDays ({target.lookback_days}): each run would "
                                    "delete what its own window probes; keep more days, or look back fewer")
    pause = getattr(spec, "pause", None)
    if pause is not None and pause.until is not None and pause.ends() is None:
        err("pause.until", pause.until, "must be an RFC 3339 instant with its zone, e.g. 2026-12-24T00:00:00Z")
    return errors


def _is_http_url(url: str) -> bool:
    try:
        u = urlparse(url)
    except ValueError:
        return False
    return u.scheme in ("http", "https") and bool(u.netloc)
