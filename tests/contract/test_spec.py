"""Spec validation names the field, the value and what is accepted."""

import copy

import pytest

from ingestion_contract import validate

from ..samples import SCHEDULE


def errors_for(**changes):
    spec = copy.deepcopy(SCHEDULE["spec"])
    for path, value in changes.items():
        node = spec
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        if value is ...:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return [str(e) for e in validate(spec)]


def test_the_example_spec_is_valid():
    assert errors_for() == []


@pytest.mark.parametrize("changes,expected", [
    ({"schedule": "0 2 * *"}, "spec.schedule='0 2 * *': expected exactly 5 fields"),
    ({"schedule": "0 25 * * *"}, "spec.schedule='0 25 * * *': hour: 25 is above the maximum 23"),
    ({"timezone": "Europe/Londn"}, "spec.timezone='Europe/Londn': unknown time zone"),
    ({"target__keyTemplate": "data/{symbol}.zip"}, "spec.target.keyTemplate='data/{symbol}.zip': must contain {symbol} and {date}"),
    ({"target__keyTemplate": "{symbol}/{date}/{interval}"}, "no other placeholders"),
    ({"target__symbols": []}, "set exactly one of target.symbols"),
    ({"target__discover": True}, "set exactly one of target.symbols"),
    ({"target__credentialsSecret": {"name": "x"}}, "spec.target.anonymous=True: excludes target.credentialsSecret"),
    ({"target__endpoint": "minio:9000"}, "spec.target.endpoint='minio:9000': must be an http:// or https:// URL"),
    ({"metrics__pushgatewayUrl": "pushgateway"}, "spec.metrics.pushgatewayUrl='pushgateway'"),
    ({"storage__objectStore": {"bucket": "b"}}, "set exactly one of storage.duckdb or storage.objectStore"),
    ({"storage__duckdb__path": "ingestion.duckdb"}, "spec.storage.duckdb.path='ingestion.duckdb': must be absolute"),
    ({"target__lookbackDays": -1}, "spec.target.lookbackDays=-1: must be >= 0"),
    ({"startingDeadlineSeconds": -5}, "spec.startingDeadlineSeconds=-5: must be >= 0"),
    ({"schedule": "0 0 30 2 *"}, "spec.schedule='0 0 30 2 *': never fires"),
    ({"schedule": "0 0 31 4,6,9,11 *"}, "never fires"),
    ({"repair__load": "csv-zip", "repair__expectRows": 1440, "repair__expectRowsFromInterval": True},
     "spec.repair.expectRows=1440: excludes repair.expectRowsFromInterval"),
    ({"repair__load": "none", "repair__expectRowsFromInterval": True}, "spec.repair.load='none': must load objects"),
    ({"repair__expectRows": 0}, "spec.repair.expectRows=0: must be >= 1"),
])
def test_each_problem_names_field_and_value(changes, expected):
    errs = errors_for(**changes)
    assert any(expected in e for e in errs), errs


def test_all_problems_are_reported_at_once():
    assert len(errors_for(schedule="nope", timezone="Nowhere/Land")) == 2
