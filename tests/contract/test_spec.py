"""Spec validation names the field, the value and what is accepted."""

import copy
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    ({"target__keyTemplate": "data/{symbol}.zip"}, "spec.target.keyTemplate='data/{symbol}.zip': must contain {date}"),
    ({"target__keyTemplate": "{symbol}/{date}/{interval}"},
     "has the placeholder {interval}, which is neither {symbol}, {date} nor a dimension of target.dimensions (none)"),
    ({"target__keyTemplate": "{symbol}/{date}/{interval}", "target__dimensions": {"interval": ["1m"], "market": ["um"]}},
     "must contain {market}: every dimension of target.dimensions is a placeholder of the key"),
    ({"storage__retention": {"default": "30"}}, "spec.storage.retention.default='30': must be a number of days such as 30d"),
    ({"storage__retention": {"default": "20d"}}, "spec.storage.retention.default='20d': is not longer than target.lookbackDays (30)"),
    ({"storage__retention": {"dimensions": {"interval": {"1m": "40d"}}}},
     "spec.storage.retention.dimensions.interval={'1m': '40d'}: names no dimension of target.dimensions (none)"),
    ({"storage__retention": {"dimensions": {"interval": {"5m": "40d"}}}, "target__dimensions": {"interval": ["1m"]},
      "target__keyTemplate": "{symbol}/{interval}/{date}"},
     "spec.storage.retention.dimensions.interval.5m='40d': 5m is not a value of target.dimensions.interval (1m)"),
    ({"storage__retention": {"dimensions": {"interval": {"1m": 30}}}, "target__dimensions": {"interval": ["1m"]},
      "target__keyTemplate": "{symbol}/{interval}/{date}"}, "spec.storage.retention.dimensions.interval.1m=30: must be a number"),
    ({"target__period": "weekly"}, "spec.target.period='weekly': must be one of daily, monthly"),
    ({"target__period": "monthly"}, "has {date}, which names daily objects, while target.period is monthly: use {month}"),
    ({"target__keyTemplate": "{symbol}/{symbol}-{month}.zip"},
     "has {month}, which names monthly objects, while target.period is daily: use {date}, or set target.period: monthly"),
    ({"target__keyTemplate": "{symbol}/x.zip", "target__period": "monthly"}, "must contain {month}: the key of each cell names its symbol and its month"),
    ({"target__dimensions": {"interval": []}}, "spec.target.dimensions.interval=[]: must have at least one value"),
    ({"target__dimensions": {"interval": ["1m", "1h", "1m"]}}, "spec.target.dimensions.interval=['1m', '1h', '1m']: names 1m more than once"),
    ({"target__dimensions": {"interval": ["1m", "1/h"]}}, "spec.target.dimensions.interval[1]='1/h': must be letters and digits"),
    ({"target__dimensions": {"Interval": ["1m"]}}, "spec.target.dimensions.Interval='Interval': a dimension's name must be a placeholder name"),
    ({"target__dimensions": {"date": ["1m"]}}, "spec.target.dimensions.date='date': is a placeholder of its own"),
    ({"target__dimensions": ["1m"]}, "spec.target.dimensions=['1m']: must be an object of placeholder names"),
    ({"target__dimensions": {"interval": "1m"}}, "spec.target.dimensions.interval='1m': must be a list of strings"),
    ({"target__dimensions": {f"d{i}": ["x"] for i in range(5)}}, "must have at most 4 dimensions"),
    ({"target__keyTemplate": "{interval}/{symbol}/{symbol}-{date}.zip", "target__dimensions": {"interval": ["1m"]},
      "target__symbols": ..., "target__discover": True}, "with target.discover, no dimension may come before {symbol}"),
    ({"target__archive": {"keyTemplate": "m/{symbol}/{symbol}-{date}.zip"}},
     "spec.target.archive.keyTemplate='m/{symbol}/{symbol}-{date}.zip': has {date}: an archive holds a month"),
    ({"target__archive": {"keyTemplate": "m/{symbol}.zip"}}, "spec.target.archive.keyTemplate='m/{symbol}.zip': must contain {month}"),
    ({"target__archive": {"keyTemplate": "m/{symbol}/{interval}-{month}.zip"}},
     "has the placeholder {interval}, which is neither {symbol}, {month} nor a dimension of target.dimensions (none)"),
    ({"target__archive": {"keyTemplate": "m/{symbol}-{month}.zip"}, "target__keyTemplate": "{symbol}/{interval}/{date}",
      "target__dimensions": {"interval": ["1m"]}}, "archive.keyTemplate='m/{symbol}-{month}.zip': must contain {interval}"),
    ({"target__archive": {"keyTemplate": "m/{symbol}-{month}.zip"}, "target__period": "monthly",
      "target__keyTemplate": "{symbol}/{month}"}, "spec.target.archive={'keyTemplate': 'm/{symbol}-{month}.zip'}: needs target.period: daily"),
    ({"target__archive": {"keyTemplate": "m/{symbol}-{month}.zip", "dailyDays": 0}}, "spec.target.archive.dailyDays=0: must be >= 1"),
    ({"target__archive": {"dailyDays": 30}}, "spec.target.archive.keyTemplate"),
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
    ({"target__lagDays": 1000000}, "spec.target.lagDays=1000000: must be <= 3660"),
    ({"target__bucket": "my bucket!"}, "spec.target.bucket='my bucket!': must be an S3 bucket name"),
    ({"storage__duckdb": ..., "storage__objectStore": {"bucket": "-lake"}}, "spec.storage.objectStore.bucket='-lake': must be an S3 bucket name"),
    ({"target__symbols": ["BTCUSDT", "BTC/USDT"]}, "spec.target.symbols[1]='BTC/USDT': must be letters and digits"),
])
def test_each_problem_names_field_and_value(changes, expected):
    errs = errors_for(**changes)
    assert any(expected in e for e in errs), errs


def test_all_problems_are_reported_at_once():
    assert len(errors_for(schedule="nope", timezone="Nowhere/Land")) == 2


# What a symbol becomes part of: key prefixes, listed prefixes, the job's scratch file names.
ESCAPES = ["BTC/USDT", "..", ".", "../../etc", "BTC USDT", "BTC\tUSDT", "*", "BTC*", "BTC?", "[ab]", "{a,b}", "a\\b",
           "A..B", "-BTC", "BTC-", "_x", "x.", "BTCUSDT\n", "~", "$HOME", "BTC%2FUSDT", "BTC:USDT", "ÄBC"]


@pytest.mark.parametrize("name", ESCAPES)
def test_a_symbol_that_could_leave_its_prefix_is_refused(name):
    """In target.symbols, in target.symbolRanges and in an IngestionBackfill's symbols alike."""
    from ingestion_contract.backfill import parse_backfill
    from ingestion_contract.spec import SpecError

    (err,) = errors_for(target__symbols=[name])
    assert err.startswith(f"spec.target.symbols[0]={name!r}: must be letters and digits"), err
    (err,) = errors_for(target__symbols=..., target__symbolRanges=[{"name": name}])
    assert err.startswith(f"spec.target.symbolRanges[0]={{'name': {name!r}}}: name {name!r} must be letters"), err
    with pytest.raises(SpecError, match=r"spec\.symbols\[0\]=.*must be letters and digits"):
        parse_backfill({"schedule": "s", "from": "2026-01-01", "to": "2026-01-02", "symbols": [name]})


@pytest.mark.parametrize("name", ["BTCUSDT", "1000SHIBUSDT", "BTCUSDT_240628", "BTC-240628-60000-C", "BRK.B", "btcusdt",
                                  "A", "x" * 64])
def test_the_symbols_of_real_sources_are_accepted(name):
    assert errors_for(target__symbols=[name]) == []


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12)
       | st.text(alphabet="AB09._-/*? ", min_size=1, max_size=8))
def test_a_name_the_pattern_accepts_can_never_escape(name):
    """Whatever the pattern accepts is one plain path segment: not . or .., no separator, no
    whitespace, no glob or shell character, nothing outside ASCII."""
    from ingestion_contract.spec import SYMBOL_PATTERN

    if re.fullmatch(SYMBOL_PATTERN, name):
        assert name not in (".", "..") and ".." not in name and name.isascii()
        assert not set(name) & set("/\\ \t\n\r*?[]{}~$%:") and name[0].isalnum() and name[-1].isalnum()


@pytest.mark.parametrize("bucket", ["data.binance.vision", "private-market-data", "abc", "Legacy_Bucket", "a" * 63])
def test_bucket_names_s3_has_allowed_are_accepted(bucket):
    assert errors_for(target__bucket=bucket) == []


@pytest.mark.parametrize("bucket", ["my bucket!", "ab", "a" * 64, "-abc", "abc.", "s3://abc", "abc/def", "ab*c"])
def test_a_bucket_name_s3_never_allows_is_refused(bucket):
    (err,) = errors_for(target__bucket=bucket)
    assert err.startswith(f"spec.target.bucket={bucket!r}: must "), err


def test_the_crd_holds_symbols_to_the_same_pattern_everywhere():
    """target.symbols is compared with the model by test_model; the items of symbolRanges and
    the backfill's symbols are held to the same pattern here."""
    from pathlib import Path

    import yaml

    from ingestion_contract.spec import SYMBOL_PATTERN

    crds = Path(__file__).resolve().parents[2] / "deploy" / "crds"

    def spec_of(name):
        doc = yaml.safe_load((crds / name).read_text())
        return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]

    target = spec_of("ingestionschedules.ingestion.dev.yaml")["target"]["properties"]
    assert target["symbols"]["items"]["pattern"] == SYMBOL_PATTERN
    assert target["symbolRanges"]["items"]["properties"]["name"]["pattern"] == SYMBOL_PATTERN
    assert spec_of("ingestionbackfills.ingestion.dev.yaml")["symbols"]["items"]["pattern"] == SYMBOL_PATTERN


@pytest.mark.parametrize("name,ok", [("btc", True), ("btc-usdt-1", True), ("a" * 52, True), ("a/b", False),
                                     ("a" * 80, False), ("a" * 53, False), ("a.b", False), ("BTC", False),
                                     ("-btc", False), ("", False), (None, False)])
def test_a_schedule_name_is_a_dns_label_its_jobs_fit_in(name, ok):
    from ingestion_contract import validate_name

    errs = validate_name(name)
    assert (errs == []) == ok, errs
    if not ok:
        assert str(errs[0]).startswith(f"metadata.name={name!r}: must be a DNS-1123 label of at most 52 characters")
