"""An IngestionBackfill: a date range of a schedule, run once, sharded and resumable.

The work is a grid. A **shard** is a group of symbols: a symbol belongs to shard
``part_of(symbol) % shards``, where ``part_of`` is the symbol's Delta partition (CRC-32 of the
name, 8 parts), so two shards never write the same partition and never contend for a
commit. A **chunk** is ``daysPerChunk`` consecutive days of the range. One **unit** is one
shard's symbols over one chunk: one run of the job, committed on its own.

The operator renders an Indexed Job with one completion index per unit (index ``i`` is
shard ``i % shards``, chunk ``i // shards``) and ``parallelism = shards``, so the shards
run side by side and each works through its chunks in date order. A killed pod is replaced
for its index alone: the units already committed are held by the store and are never
repaired again, and within a unit the pod commits what it verified every ``checkpointEvery``
cells, so the replaced pod redoes at most the cells verified since the last checkpoint.

The unit reaches the job as ``INGESTION_BACKFILL`` (JSON) plus the Job controller's
``JOB_COMPLETION_INDEX``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import zlib
from collections.abc import Mapping

from .spec import DATE_PATTERN, MAX_NAME, SYMBOL_NAME, FieldError, _parse_checked, spec_field

BACKFILL_ENV = "INGESTION_BACKFILL"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by the Job controller in an Indexed Job's pods
PARTS = 8  # symbol parts of the Delta tables (ingestion_job.delta partitions by part_of)
MAX_UNITS = 10_000  # completions of one Indexed Job; more than a year of 8 shards by day


def part_of(symbol: str) -> int:
    """The symbol's part: the Delta partition its objects, gaps and loads are written to."""
    return zlib.crc32(symbol.encode()) % PARTS


def shard_of(symbol: str, shards: int) -> int:
    return part_of(symbol) % shards


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackfillSpec:
    schedule: str = spec_field("schedule", min_length=1, max_length=MAX_NAME)
    from_date: str = spec_field("from", min_length=10, max_length=10, pattern=DATE_PATTERN)
    to_date: str = spec_field("to", min_length=10, max_length=10, pattern=DATE_PATTERN)
    # none: the schedule's own (its list, or discovery)
    symbols: tuple[str, ...] = spec_field("symbols", (), max_items=5000, min_length=SYMBOL_NAME["minLength"],
                                          max_length=SYMBOL_NAME["maxLength"], pattern=SYMBOL_NAME["pattern"])
    parallelism: int = spec_field("parallelism", 1, minimum=1, maximum=PARTS)
    days_per_chunk: int = spec_field("daysPerChunk", 7, minimum=1, maximum=366)
    # all shards together; none: the schedule's target.maxRequestsPerSecond, split the same way
    max_requests_per_second: int | None = spec_field("maxRequestsPerSecond", None, minimum=1)
    retries_per_chunk: int = spec_field("retriesPerChunk", 2, minimum=0, maximum=10)
    # a unit commits what it verified every this many cells (and at its end)
    checkpoint_every: int = spec_field("checkpointEvery", 50, minimum=1)

    @property
    def first(self) -> dt.date:
        return dt.date.fromisoformat(self.from_date)

    @property
    def last(self) -> dt.date:
        return dt.date.fromisoformat(self.to_date)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def chunks(self) -> int:
        return -(-self.days // self.days_per_chunk)

    @property
    def units(self) -> int:
        return self.chunks * self.parallelism

    def unit(self, index: int) -> "Unit":
        if not 0 <= index < self.units:
            raise ValueError(f"completion index {index} is outside 0..{self.units - 1}")
        shard, chunk = index % self.parallelism, index // self.parallelism
        first = self.first + dt.timedelta(days=chunk * self.days_per_chunk)
        last = min(first + dt.timedelta(days=self.days_per_chunk - 1), self.last)
        return Unit(index, shard, self.parallelism, chunk, first, last)

    def shard_requests_per_second(self, schedule_cap: int | None) -> int | None:
        """Each shard's share of the cap (rounded down: the shards together never exceed it)."""
        cap = self.max_requests_per_second or schedule_cap
        return None if cap is None else max(cap // self.parallelism, 1)


@dataclasses.dataclass(frozen=True)
class Unit:
    index: int
    shard: int
    shards: int
    chunk: int
    first: dt.date
    last: dt.date

    def holds(self, symbol: str) -> bool:
        return shard_of(symbol, self.shards) == self.shard


def parse_backfill(raw: object, path: str = "spec") -> BackfillSpec:
    """The typed spec of an IngestionBackfill; raises SpecError naming every problem."""
    return _parse_checked(BackfillSpec, raw, path, backfill_rules)


def backfill_rules(spec: BackfillSpec, path: str = "spec") -> list[FieldError]:
    errors = []
    dates = {}
    for key, value in (("from", spec.from_date), ("to", spec.to_date)):
        try:
            dates[key] = dt.date.fromisoformat(value)
            if len(value) != 10:
                raise ValueError
        except ValueError:
            errors.append(FieldError(f"{path}.{key}", value, "must be a date as YYYY-MM-DD"))
    if len(dates) == 2 and dates["from"] > dates["to"]:
        errors.append(FieldError(f"{path}.to", spec.to_date, f"must not be before from ({spec.from_date})"))
    elif len(dates) == 2 and spec.units > MAX_UNITS:
        errors.append(FieldError(f"{path}.daysPerChunk", spec.days_per_chunk,
                                 f"makes {spec.units} units (chunks x parallelism); at most {MAX_UNITS}: use longer chunks"))
    if spec.max_requests_per_second is not None and spec.max_requests_per_second < spec.parallelism:
        errors.append(FieldError(f"{path}.maxRequestsPerSecond", spec.max_requests_per_second,
                                 f"must be at least parallelism ({spec.parallelism}): each shard gets an equal share"))
    return errors


def encode_unit_env(name: str, spec: BackfillSpec, since: str | None = None) -> str:
    """The value of ``INGESTION_BACKFILL``: what a pod needs to find its unit from its index.
    ``since``: when the backfill was created (RFC 3339): a unit counts as its repairs every cell
    of its own repaired since then, by any of its attempts (a killed pod's too)."""
    body = {"name": name, "from": spec.from_date, "to": spec.to_date, "parallelism": spec.parallelism,
            "daysPerChunk": spec.days_per_chunk, "checkpointEvery": spec.checkpoint_every}
    if since:
        body["since"] = since
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


@dataclasses.dataclass(frozen=True)
class BackfillUnit:
    """What a backfill pod runs: the backfill's name and its unit."""

    name: str
    unit: Unit
    units: int  # of the whole grid
    checkpoint_every: int = 50
    since: dt.datetime | None = None  # the backfill's creation: its repairs are those since then
    last: dt.date | None = None  # the backfill's last date (its to): a target.archive's boundary counts back from it


def read_unit(env: Mapping[str, str]) -> BackfillUnit | None:
    """The unit of a backfill pod, or None for a schedule's run; raises ValueError naming the variable."""
    raw = env.get(BACKFILL_ENV)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        spec = BackfillSpec(schedule="-", from_date=data["from"], to_date=data["to"], parallelism=int(data["parallelism"]),
                            days_per_chunk=int(data["daysPerChunk"]), checkpoint_every=int(data["checkpointEvery"]))
        name = str(data["name"])
        since = dt.datetime.fromisoformat(data["since"].replace("Z", "+00:00")) if data.get("since") else None
        if since is not None and since.tzinfo is None:
            raise ValueError("since has no time zone")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{BACKFILL_ENV} does not describe a backfill: {e!r}") from None
    index = env.get(COMPLETION_INDEX_ENV)
    if index is None or not index.isdigit():
        raise ValueError(f"{COMPLETION_INDEX_ENV} is {index!r}: a backfill runs as an Indexed Job")
    return BackfillUnit(name, spec.unit(int(index)), spec.units, spec.checkpoint_every, since, spec.last)
