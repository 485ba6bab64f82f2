"""The upstream budget split among its sharers: pure, so every rule has its own fast test.

The rule (``docs/user-guide/upstreams.md``):

* The budget ``maxRequestsPerSecond`` is two fixed pools: ``scheduledShare`` percent (rounded
  down) for the schedules, the rest for the backfills. Fixed, because a backfill's Job cannot
  be changed once made: a pool that grew while no backfill ran would be over budget the moment
  one started, and a backfill that took the schedules' pool would keep it to its end.
* **Schedules** split their pool evenly, max-min fair: a schedule whose own
  ``target.maxRequestsPerSecond`` is below the even share keeps its own (it can only lower its
  share), and what it leaves is split among the others; the remainder of an uneven split goes
  one request each to the first schedules by name. Every schedule gets at least 1 (a run
  cannot have 0): only when the pool holds fewer requests than there are schedules do the
  shares add up to more than it, and the upstream says so.
* **Backfills** take their share when their Job is made, and keep it to their end: what is
  left of the backfills' pool after the running backfills' shares, or less when its own cap
  (``spec.maxRequestsPerSecond``, else its schedule's) is lower. A backfill that would get less
  than one request per shard waits for a running one to end: so the backfills never exceed
  their pool either.
* A disabled schedule takes no share (its CronJob starts no run).
* A schedule's **floor** is the rate its run needs to finish its expected requests within
  ``activeDeadlineSeconds`` (:func:`requests_per_run`); a share below it makes the schedule
  Degraded (it still runs) and the upstream says which.
"""

from __future__ import annotations

import dataclasses
import math

from ingestion_contract.periods import most_cells
from ingestion_contract.spec import ScheduleSpec
from ingestion_contract.upstream import Source, UpstreamSpec, source_of

SCHEDULE_KIND = "IngestionSchedule"
BACKFILL_KIND = "IngestionBackfill"
LIST_PAGE = 1000  # keys a ListObjectsV2 page holds


@dataclasses.dataclass(frozen=True)
class ScheduleSharer:
    """What the split needs of a schedule: its source, its own cap, its floor."""

    name: str
    source: Source
    own: int | None  # target.maxRequestsPerSecond; None: no cap of its own
    floor: int | None  # requests per second its run needs (None: symbols are discovered, not known)
    requests: int | None = None  # requests of one run, estimated


@dataclasses.dataclass(frozen=True)
class BackfillSharer:
    """A running backfill: the share its Job was made with (all shards together)."""

    name: str
    share: int


def requests_per_run(spec: ScheduleSpec) -> int | None:
    """An estimate of one run's requests at most: a listing page per series (a symbol with one
    value of each dimension; per 1,000 keys of its window, sidecars included; one more for
    its monthly archives with target.archive), and for each
    cell it may repair (the window's cells, at most ``maxRepairsPerRun``) a GET, plus one for
    its checksum sidecar. None while the symbols are discovered (their number is not known
    before a run)."""
    t = spec.target
    if t.discover:
        return None
    symbols, days = len(t.all_symbols) * len(t.dimensions.variants()), most_cells(t.lookback_days + 1, t.period)
    per_cell = 2 if t.checksum_suffix else 1
    listings = symbols * math.ceil(days * per_cell / LIST_PAGE)
    if t.archive is not None:  # and a listing of each series' monthly archives (a page holds 40 years of them)
        listings += symbols
    return listings + per_cell * min(symbols * days, spec.repair.max_repairs_per_run)


def sharer_of(name: str, spec: ScheduleSpec) -> ScheduleSharer | None:
    """The schedule as a sharer; None while it is disabled: a suspended CronJob starts no run,
    so it takes no share from the others (a manual run of it takes its own settings)."""
    if not spec.enabled:
        return None
    requests = requests_per_run(spec)
    floor = None if requests is None else max(math.ceil(requests / spec.active_deadline_seconds), 1)
    t = spec.target
    return ScheduleSharer(name, source_of(t.endpoint, t.bucket), t.max_requests_per_second, floor, requests)


def split_evenly(pool: int, caps: dict[str, int | None]) -> dict[str, int]:
    """``pool`` split among ``caps``' names, max-min fair: a name whose cap is below the even
    share gets its cap and the rest is split again; an uneven remainder goes one each to the
    first names. Each gets at least 1. Ordered by name."""
    out: dict[str, int] = {}
    active, left = sorted(caps), pool
    while active:
        even = left // len(active)
        capped = [n for n in active if caps[n] is not None and caps[n] <= even]
        if not capped:
            extra = left - even * len(active)
            out.update({n: even + (1 if i < extra else 0) for i, n in enumerate(active)})
            break
        for n in capped:
            out[n] = caps[n]
            left -= caps[n]
        active = [n for n in active if n not in capped]
    return {n: max(out[n], 1) for n in sorted(out)}


def reads_from(upstream: UpstreamSpec, sharer: ScheduleSharer) -> bool:
    return sharer.source == upstream.source


def shares(upstream: UpstreamSpec, schedules: list[ScheduleSharer],
           backfills: list[BackfillSharer] = ()) -> dict[tuple[str, str], int]:
    """Every sharer's requests per second, keyed (kind, name): the schedules that read from
    ``upstream`` (by name), then the running ``backfills`` (already of this upstream) by name."""
    mine = {s.name: s.own for s in schedules if reads_from(upstream, s)}
    out = {(SCHEDULE_KIND, n): v for n, v in split_evenly(upstream.scheduled_requests_per_second, mine).items()}
    out.update({(BACKFILL_KIND, b.name): b.share for b in sorted(backfills, key=lambda b: b.name)})
    return out


def backfill_take(upstream: UpstreamSpec, own: int | None, parallelism: int, running: list[BackfillSharer]) -> int | None:
    """What a new backfill takes of the backfills' pool (all its shards together): what the
    running backfills left, or its own cap if lower, rounded down to a multiple of its shards
    (each gets an equal share); None while that is less than one per shard (it waits)."""
    left = upstream.backfill_requests_per_second - sum(b.share for b in running)
    take = left if own is None else min(own, left)
    take -= take % parallelism if take > 0 else 0
    return take if take >= parallelism else None


def bytes_share(upstream: UpstreamSpec, share: int) -> int | None:
    """A sharer's part of maxBytesPerSecond, in proportion to its requests (None: no byte budget)."""
    if upstream.max_bytes_per_second is None:
        return None
    return upstream.max_bytes_per_second * share // upstream.max_requests_per_second


def with_share(spec: ScheduleSpec, share: int | None, bytes_per_second: int | None = None) -> ScheduleSpec:
    """The schedule's spec as its runs take it: ``target.maxRequestsPerSecond`` its share and
    ``target.maxBytesPerSecond`` its part of the byte budget (if the upstream has one), each
    never above its own; None (no upstream): its own settings."""
    if share is None:
        return spec
    t = spec.target
    caps = {"max_requests_per_second": _lower(t.max_requests_per_second, share)}
    if bytes_per_second is not None:
        caps["max_bytes_per_second"] = _lower(t.max_bytes_per_second, bytes_per_second)
    return dataclasses.replace(spec, target=dataclasses.replace(t, **caps))


def _lower(own: int | None, share: int) -> int:
    return share if own is None else min(own, share)
