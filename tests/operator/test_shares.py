"""The upstream budget's split (ingestion_operator.shares): pure rules and their properties."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion_contract import parse_spec
from ingestion_contract.upstream import Source, UpstreamSpec
from ingestion_operator.shares import (BACKFILL_KIND, SCHEDULE_KIND, BackfillSharer, ScheduleSharer, backfill_take,
                                       bytes_share, requests_per_run, sharer_of, shares, split_evenly, with_share)

from ..samples import SCHEDULE

BINANCE = Source("", "data.binance.vision")


def up(rps=20, pct=70, **kw) -> UpstreamSpec:
    return UpstreamSpec(bucket="data.binance.vision", max_requests_per_second=rps, scheduled_share=pct, **kw)


def sched(name, own=None, floor=None, source=BINANCE) -> ScheduleSharer:
    return ScheduleSharer(name, source, own, floor)


def test_schedules_split_their_pool_evenly_by_name():
    assert shares(up(20), [sched("c"), sched("a"), sched("b")]) == {
        (SCHEDULE_KIND, "a"): 5, (SCHEDULE_KIND, "b"): 5, (SCHEDULE_KIND, "c"): 4}  # 14 = 5 + 5 + 4


def test_an_own_cap_only_lowers_a_share_and_what_it_leaves_goes_to_the_others():
    assert split_evenly(14, {"a": 2, "b": None, "c": None}) == {"a": 2, "b": 6, "c": 6}
    assert split_evenly(14, {"a": 100, "b": None}) == {"a": 7, "b": 7}  # never raised to its own
    assert split_evenly(14, {"a": 1, "b": 2, "c": 3}) == {"a": 1, "b": 2, "c": 3}  # all below: the pool is not filled


def test_other_sources_and_backfills():
    other = sched("x", source=Source("http://minio:9000", "data.binance.vision"))
    got = shares(up(20), [sched("a"), other], [BackfillSharer("bf2", 2), BackfillSharer("bf1", 4)])
    assert list(got) == [(SCHEDULE_KIND, "a"), (BACKFILL_KIND, "bf1"), (BACKFILL_KIND, "bf2")]
    assert got[(SCHEDULE_KIND, "a")] == 14


def test_every_schedule_gets_one_even_when_the_pool_is_smaller():
    assert split_evenly(2, {"a": None, "b": None, "c": None}) == {"a": 1, "b": 1, "c": 1}
    assert split_evenly(0, {"a": None}) == {"a": 1}


CAPS = st.dictionaries(st.text("abcdefgh", min_size=1, max_size=3), st.none() | st.integers(1, 50), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 500), CAPS)
def test_split_properties(pool, caps):
    got = split_evenly(pool, caps)
    assert list(got) == sorted(caps)  # stable: by name, whatever the input order
    assert all(v >= 1 for v in got.values())
    assert all(caps[n] is None or v <= caps[n] for n, v in got.items())  # never above its own
    if len(caps) <= pool:
        assert sum(got.values()) <= pool  # never above the pool where one each fits
        uncapped = [v for n, v in got.items() if caps[n] is None or caps[n] > v]
        assert not uncapped or max(uncapped) - min(uncapped) <= 1  # even, to one request
        if any(caps[n] is None for n in caps):
            assert sum(got.values()) == pool  # work-conserving: an uncapped schedule takes what is left
    assert split_evenly(pool, dict(reversed(list(caps.items())))) == got


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 400), st.integers(0, 100), CAPS, st.lists(st.integers(1, 8), max_size=6),
       st.lists(st.none() | st.integers(1, 100), max_size=6))
def test_shares_never_sum_above_the_budget(rps, pct, caps, shards, owns):
    """Schedules (when their pool holds one each) and backfills taken one after another by
    backfill_take never add up to more than the budget."""
    u = up(rps, pct)
    running: list[BackfillSharer] = []
    for i, (p, own) in enumerate(zip(shards, owns)):
        take = backfill_take(u, own, p, running)
        if take is not None:
            assert take % p == 0 and take >= p and (own is None or take <= own)
            running.append(BackfillSharer(f"bf{i}", take))
    got = shares(u, [sched(n, c) for n, c in caps.items()], running)
    backfill = sum(v for (k, _), v in got.items() if k == BACKFILL_KIND)
    assert backfill <= u.backfill_requests_per_second
    if len(caps) <= u.scheduled_requests_per_second:
        assert sum(got.values()) <= rps


def test_a_backfill_takes_what_is_left_and_waits_when_too_little_is():
    u = up(20)  # backfills: 6
    assert backfill_take(u, None, 2, []) == 6
    assert backfill_take(u, 3, 2, []) == 2  # its own cap, to a multiple of its shards
    assert backfill_take(u, None, 4, [BackfillSharer("a", 2)]) == 4
    assert backfill_take(u, None, 4, [BackfillSharer("a", 3)]) is None  # 3 left for 4 shards: waits
    assert backfill_take(up(20, 100), None, 1, []) is None  # no pool for backfills at all


def test_the_floor_estimate():
    """A listing page per symbol per 1,000 keys (sidecars too) and a GET (+ sidecar) per cell a
    run may repair (maxRepairsPerRun at most), over activeDeadlineSeconds."""
    spec = parse_spec(SCHEDULE["spec"])  # 2 symbols, 31 days, sidecars, 100 repairs, 3600 s
    assert requests_per_run(spec) == 2 * 1 + 2 * 62
    raw = copy.deepcopy(SCHEDULE["spec"])
    raw["target"].update(dimensions={"interval": ["1m", "1h"]}, keyTemplate="d/{symbol}/{interval}/{date}.zip")
    assert requests_per_run(parse_spec(raw)) == 4 * 1 + 2 * 100  # a listing per series; 124 cells, 100 repairs at most
    assert sharer_of("s", spec).floor == 1
    raw = copy.deepcopy(SCHEDULE["spec"])
    raw["target"]["symbols"] = [f"S{i}USDT" for i in range(300)]
    raw["target"]["lookbackDays"] = 999  # 1,000 days of keys and sidecars: 2 pages a symbol
    raw["repair"]["maxRepairsPerRun"] = 100_000
    raw["activeDeadlineSeconds"] = 600
    big = sharer_of("big", parse_spec(raw))
    assert big.requests == 300 * 2 + 2 * 100_000 and big.floor == -(-(600 + 200_000) // 600)
    raw["target"].pop("symbols")
    raw["target"]["discover"] = True
    assert sharer_of("d", parse_spec(raw)).floor is None  # symbols not known before a run


def test_with_share_is_the_smaller_of_share_and_own():
    spec = parse_spec(SCHEDULE["spec"])
    assert with_share(spec, None) is spec
    assert with_share(spec, 5).target.max_requests_per_second == 5
    own = parse_spec({**SCHEDULE["spec"], "target": {**SCHEDULE["spec"]["target"], "maxRequestsPerSecond": 3}})
    assert with_share(own, 5).target.max_requests_per_second == 3
    assert with_share(own, 5).schedule == own.schedule


def test_bytes_follow_the_requests():
    assert bytes_share(up(20), 5) is None
    assert bytes_share(up(20, max_bytes_per_second=1000), 5) == 250


def test_with_share_renders_the_byte_part_never_above_the_schedules_own():
    spec = parse_spec(SCHEDULE["spec"])
    assert with_share(spec, 5).target.max_bytes_per_second is None  # an upstream without a byte budget leaves it
    assert with_share(spec, 5, 250).target.max_bytes_per_second == 250
    own = parse_spec({**SCHEDULE["spec"], "target": {**SCHEDULE["spec"]["target"], "maxBytesPerSecond": 100}})
    assert with_share(own, 5, 250).target.max_bytes_per_second == 100
    assert with_share(own, 5).target.max_bytes_per_second == 100  # no byte budget: its own stands
