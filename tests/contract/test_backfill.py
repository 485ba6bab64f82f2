"""The backfill's grid (shards x chunks), its rules, and its CRD: pure and fast."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ingestion_contract import ContractError, SpecError, encode_unit_env, parse_backfill, read_environment
from ingestion_contract.backfill import MAX_UNITS, PARTS, BackfillSpec, part_of, shard_of

from .conftest import compare

CRD = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "ingestionbackfills.ingestion.dev.yaml"


def test_model_fields_defaults_and_bounds_equal_the_crds():
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert compare(BackfillSpec, schema, "spec") == []


def test_a_range_becomes_chunks_and_each_index_one_shards_chunk():
    bf = parse_backfill({"schedule": "s", "from": "2026-01-01", "to": "2026-01-20", "parallelism": 3, "daysPerChunk": 7})
    assert (bf.days, bf.chunks, bf.units) == (20, 3, 9)
    units = [bf.unit(i) for i in range(bf.units)]
    assert [(u.shard, u.chunk) for u in units[:4]] == [(0, 0), (1, 0), (2, 0), (0, 1)]
    assert (units[0].first, units[0].last) == (dt.date(2026, 1, 1), dt.date(2026, 1, 7))
    assert (units[-1].first, units[-1].last) == (dt.date(2026, 1, 15), dt.date(2026, 1, 20))  # the last chunk is short
    with pytest.raises(ValueError, match="outside 0..8"):
        bf.unit(9)


@given(st.integers(1, 400), st.integers(1, 40), st.integers(1, PARTS))
def test_every_cell_of_the_range_is_in_exactly_one_unit(days, per_chunk, shards):
    first = dt.date(2025, 12, 30)
    bf = BackfillSpec(schedule="s", from_date=first.isoformat(), to_date=(first + dt.timedelta(days=days - 1)).isoformat(),
                      parallelism=shards, days_per_chunk=per_chunk)
    symbols = [f"S{i}USDT" for i in range(40)]
    seen = []
    for i in range(bf.units):
        u = bf.unit(i)
        seen += [(s, u.first + dt.timedelta(days=d)) for s in symbols if u.holds(s) for d in range((u.last - u.first).days + 1)]
    assert len(seen) == len(set(seen)) == days * len(symbols)


def test_shards_own_disjoint_delta_parts():
    symbols = [f"SYM{i}" for i in range(300)]
    for shards in range(1, PARTS + 1):
        parts_of = [{part_of(s) for s in symbols if shard_of(s, shards) == k} for k in range(shards)]
        assert all(a.isdisjoint(b) for i, a in enumerate(parts_of) for b in parts_of[i + 1:])


@pytest.mark.parametrize("spec, field, words", [
    ({"from": "2026-02-01", "to": "2026-01-01"}, "spec.to", "before from"),
    ({"from": "2026-02-30", "to": "2026-03-01"}, "spec.from", "YYYY-MM-DD"),
    ({"from": "2026-01-01", "to": "2026-01-02", "parallelism": 4, "maxRequestsPerSecond": 3}, "spec.maxRequestsPerSecond", "equal share"),
    ({"from": "2000-01-01", "to": "2030-01-01", "daysPerChunk": 1, "parallelism": 8}, "spec.daysPerChunk", str(MAX_UNITS)),
    ({"from": "2026-01-01", "to": "2026-01-02", "parallelism": 9}, "spec.parallelism", "<= 8"),
])
def test_bad_input_is_refused_naming_the_field(spec, field, words):
    with pytest.raises(SpecError) as e:
        parse_backfill({"schedule": "s", **spec})
    assert any(err.field == field and words in str(err) for err in e.value.errors), e.value.errors


def test_each_shard_gets_an_equal_share_of_the_request_cap():
    bf = parse_backfill({"schedule": "s", "from": "2026-01-01", "to": "2026-01-02", "parallelism": 4, "maxRequestsPerSecond": 10})
    assert bf.shard_requests_per_second(None) == 2  # 4 x 2 <= 10
    own = parse_backfill({"schedule": "s", "from": "2026-01-01", "to": "2026-01-02", "parallelism": 4})
    assert own.shard_requests_per_second(20) == 5 and own.shard_requests_per_second(None) is None


def test_a_pod_finds_its_unit_from_the_environment():
    from ingestion_contract import encode_job_spec, job_spec

    from ..samples import SCHEDULE

    bf = parse_backfill({"schedule": "s", "from": "2026-01-01", "to": "2026-01-31", "parallelism": 2, "daysPerChunk": 10})
    env = {"INGESTION_SPEC": encode_job_spec(job_spec(SCHEDULE["spec"])), "INGESTION_SCHEDULE": "s",
           "INGESTION_NAMESPACE": "ns", "INGESTION_JOB_NAME": "jan", "INGESTION_BACKFILL": encode_unit_env("jan", bf),
           "JOB_COMPLETION_INDEX": "5"}
    ctx = read_environment(env)
    assert ctx.trigger == "backfill" and ctx.scheduled_time is None
    assert (ctx.backfill.name, ctx.backfill.unit.shard, ctx.backfill.unit.chunk) == ("jan", 1, 2)
    assert (ctx.backfill.unit.first, ctx.backfill.unit.last) == (dt.date(2026, 1, 21), dt.date(2026, 1, 30))
    with pytest.raises(ContractError, match="JOB_COMPLETION_INDEX"):
        read_environment({**env, "JOB_COMPLETION_INDEX": ""})
    with pytest.raises(ContractError, match="INGESTION_BACKFILL"):
        read_environment({**env, "INGESTION_BACKFILL": "{}"})
