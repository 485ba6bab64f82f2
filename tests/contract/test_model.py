"""The typed spec against the CRD, and the validator against anything at all.

The CRD (deploy/crds/) is the contract with users; the dataclasses in
ingestion_contract.spec are what the code reads. They must agree on every field, every
default and every bound, or a default would live in two places and drift.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion_contract import FieldError, parse_spec, validate
from ingestion_contract.spec import JobSpec, ScheduleSpec, read_field, to_json

from ..samples import SCHEDULE
from .conftest import compare

CRD = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "ingestionschedules.ingestion.dev.yaml"


def crd_spec_schema() -> dict:
    doc = yaml.safe_load(CRD.read_text())
    return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_model_fields_defaults_and_bounds_equal_the_crds():
    assert compare(ScheduleSpec, crd_spec_schema(), "spec") == []


def test_the_comparison_catches_a_drifted_default():
    schema = crd_spec_schema()
    schema["properties"]["target"]["properties"]["lagDays"]["default"] = 2
    assert compare(ScheduleSpec, schema, "spec") == ["spec.target.lagDays: default in CRD 2, in model 1"]


def test_parsing_fills_every_default_once():
    minimal = {"schedule": "@daily", "target": {"bucket": "bkt", "keyTemplate": "{symbol}/{date}", "discover": True},
               "storage": {"duckdb": {"claimName": "c"}}}
    spec = parse_spec(minimal)
    assert (spec.timezone, spec.enabled, spec.starting_deadline_seconds, spec.active_deadline_seconds) == ("UTC", True, 300, 3600)
    assert (spec.target.lag_days, spec.target.lookback_days, spec.target.region) == (1, 30, "us-east-1")
    assert (spec.repair.max_repairs_per_run, spec.repair.load) == (100, "none")
    assert spec.storage.duckdb.path == "/data/ingestion.duckdb" and spec.metrics.pushgateway_url is None


def test_json_form_round_trips():
    spec = parse_spec(SCHEDULE["spec"])
    assert parse_spec(to_json(spec)) == spec
    assert set(to_json(spec.job())) == {f.metadata["key"] for f in dataclasses.fields(JobSpec)}


def test_read_field_survives_an_invalid_spec():
    broken = {**SCHEDULE["spec"], "timezone": 7, "enabled": False}
    assert validate(broken) and read_field(broken, "enabled") is False
    assert read_field({"enabled": "yes"}, "enabled") is True  # not a boolean: the default


def test_unknown_and_null_fields():
    errs = [str(e) for e in validate({**SCHEDULE["spec"], "tagret": {}})]
    assert any(e.startswith("spec.tagret={}: unknown field") for e in errs), errs
    spec = parse_spec({**SCHEDULE["spec"], "timezone": None})  # null is pruned and defaulted, as by the API server
    assert spec.timezone == "UTC"
    assert [str(e) for e in validate({**SCHEDULE["spec"], "schedule": None})] == ["spec.schedule=None: is required"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
# Mostly valid fields, so that a strange token late in an expression is reached too.
CRON_FIELD = st.one_of(st.sampled_from(["*", "?", "0", "5", "1-5", "*/2", "1-5/2", "MON", "jan", "sun-sat", "3,4"]),
                       st.text(alphabet=st.sampled_from(list("0123456789*?,-/²٣LW")), min_size=1, max_size=4))
CRONISH = st.one_of(st.lists(CRON_FIELD, min_size=4, max_size=6).map(" ".join),
                    st.text(alphabet=st.sampled_from(list("0123456789*?,-/ @LWadhilmnoruwy\t")), max_size=24))
KEYS = st.sampled_from(["schedule", "timezone", "enabled", "target", "repair", "storage", "metrics", "backoffLimit",
                        "startingDeadlineSeconds", "image", "resources"])


def mutate(spec: dict, data) -> dict:
    """The example spec with a few fields (top-level or nested) replaced by arbitrary JSON."""
    spec = yaml.safe_load(yaml.safe_dump(spec))
    for _ in range(data.draw(st.integers(1, 3))):
        node = spec
        key = data.draw(st.one_of(st.just("schedule"), KEYS))
        if isinstance(node.get(key), dict) and data.draw(st.booleans()):
            node = node[key]
            key = data.draw(st.sampled_from(sorted(node) + ["extra"]))
        node[key] = data.draw(CRONISH if key == "schedule" else JSON)
    return spec


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_validation_never_raises_and_names_a_field(data):
    """Any JSON, or the example spec with fields replaced by anything (cron-like text for
    the schedule): a list of field errors, never an exception."""
    raw = mutate(SCHEDULE["spec"], data) if data.draw(st.booleans()) else data.draw(JSON)
    errors = validate(raw)
    assert all(isinstance(e, FieldError) and e.field.startswith("spec") for e in errors)
    if not errors:
        assert parse_spec(raw) is not None


@settings(max_examples=500, deadline=None)
@given(CRONISH)
def test_any_schedule_text_is_a_field_error_or_valid(text):
    errors = validate({**SCHEDULE["spec"], "schedule": text})
    assert all(e.field == "spec.schedule" for e in errors), errors


def test_compact_after_files_is_zero_or_above_what_a_compaction_leaves():
    spec = yaml.safe_load(yaml.safe_dump(SCHEDULE["spec"]))
    spec["storage"] = {"objectStore": {"bucket": "lake", "maintenance": {"compactAfterFiles": 8}}}
    assert [e.field for e in validate(spec)] == ["spec.storage.objectStore.maintenance.compactAfterFiles"]
    for ok in (0, 16, 32):
        spec["storage"]["objectStore"]["maintenance"]["compactAfterFiles"] = ok
        assert validate(spec) == []


def test_a_symbol_may_carry_its_own_range():
    """Issue 24, point 3: target.symbolRanges ({name, from, until}) beside the names of
    target.symbols; the range survives the JSON the operator renders into the pod; a bad item
    names its index."""
    import copy
    import datetime as dt

    spec = copy.deepcopy(SCHEDULE["spec"])
    spec["target"].pop("discover", None)
    spec["target"]["symbols"] = ["BTCUSDT"]
    spec["target"]["symbolRanges"] = [{"name": "LUNAUSDT", "from": "2021-01-01", "until": "2022-05-31"},
                                      {"name": "ETHUSDT", "until": "2025-01-01"}]
    t = parse_spec(spec).target
    assert t.all_symbols == ("BTCUSDT", "LUNAUSDT", "ETHUSDT")  # names, as strings
    luna = t.all_symbols[1]
    assert (luna.first, luna.until) == (dt.date(2021, 1, 1), dt.date(2022, 5, 31))
    assert (t.all_symbols[0].ranged, t.all_symbols[2].first) == (False, None)
    assert to_json(parse_spec(spec))["target"]["symbolRanges"] == spec["target"]["symbolRanges"]
    assert parse_spec(to_json(parse_spec(spec))).target.all_symbols[1].until == dt.date(2022, 5, 31)
    for bad, problem in [({"name": "X", "from": "2021-13-01"}, "from must be a date YYYY-MM-DD"),
                         ({"name": "X", "from": "2022-01-02", "until": "2022-01-01"}, "from 2022-01-02 is after until"),
                         ({"from": "2022-01-01"}, "needs a name"), ({"name": "X", "to": "2022-01-01"}, "unknown field"),
                         ("X", "must be {name, from, until}"), ({"name": ""}, "at least 1 characters")]:
        spec["target"]["symbolRanges"] = [{"name": "LUNAUSDT"}, bad]
        (err,) = validate(spec)
        assert err.field == "spec.target.symbolRanges[1]" and problem in err.problem, (bad, err)
    spec["target"]["symbolRanges"] = [{"name": "LUNAUSDT"}, {"name": "LUNAUSDT", "from": "2021-01-01"}]
    assert "more than once" in validate(spec)[0].problem
    spec["target"]["symbolRanges"] = [{"name": "BTCUSDT", "from": "2021-01-01"}]
    assert "target.symbols names too" in validate(spec)[0].problem
    spec["target"]["symbols"] = []  # ranges alone are a list of symbols
    assert validate(spec) == []


def test_a_range_without_dates_reaches_the_job():
    """A symbolRanges item may leave out both dates (the CRD requires only its name); the JSON
    the operator renders into the pod still holds it as an object, which the job parses back.
    As a bare string it made every run of such a schedule exit 2 before probing."""
    import copy
    import json

    from ingestion_contract import encode_job_spec, parse_job_spec

    spec = copy.deepcopy(SCHEDULE["spec"])
    spec["target"].pop("discover", None)
    spec["target"]["symbols"] = []
    spec["target"]["symbolRanges"] = [{"name": "BTCUSDT"}, {"name": "LUNAUSDT", "until": "2022-05-31"}]
    job = parse_spec(spec).job()
    rendered = json.loads(encode_job_spec(job))
    assert rendered["target"]["symbolRanges"] == spec["target"]["symbolRanges"]
    assert parse_job_spec(rendered) == job
