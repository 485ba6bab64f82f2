"""`ingestion-job run --spec FILE` refuses a malformed spec cleanly, every time: exit code 2
and one line naming the field and the value, never a traceback and never a run."""

from __future__ import annotations

import contextlib
import io

import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ingestion_contract import validate
from ingestion_job import cli

VALID = {
    "schedule": "0 2 * * *", "timezone": "UTC",
    "target": {"endpoint": "http://127.0.0.1:9", "bucket": "data.binance.vision", "anonymous": True,
               "keyTemplate": "data/{symbol}/{symbol}-{date}.zip", "symbols": ["BTCUSDT"], "lagDays": 1, "lookbackDays": 3},
    "storage": {"duckdb": {"claimName": "c", "path": "/data/x.duckdb"}},
}
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**4), st.text(max_size=10),
                   st.lists(st.text(max_size=5), max_size=2), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
PATHS = st.sampled_from(["schedule", "timezone", "enabled", "backoffLimit", "target", "target.bucket", "target.keyTemplate",
                         "target.symbols", "target.lagDays", "target.lookbackDays", "target.endpoint", "repair",
                         "repair.load", "repair.maxRepairsPerRun", "storage", "storage.duckdb", "storage.duckdb.path",
                         "metrics", "tagret", "target.discover"])


def cli_run(tmp_path, doc) -> tuple[int, str]:
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump(doc))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["run", "--spec", str(f), "--db", str(tmp_path / "never.duckdb")])
    return code, err.getvalue()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_every_malformed_spec_is_refused_in_one_line(tmp_path_factory, data):
    spec = yaml.safe_load(yaml.safe_dump(VALID))
    for _ in range(data.draw(st.integers(1, 3))):
        *parents, leaf = data.draw(PATHS).split(".")
        node = spec
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node.get(p), dict) or p not in node else {}
        node[leaf] = data.draw(VALUES)
    errors = validate(spec)
    assume(errors)
    tmp = tmp_path_factory.mktemp("cli")
    code, stderr = cli_run(tmp, {"metadata": {"name": "bad"}, "spec": spec})
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and errors[0].field in lines[0] and not (tmp / "never.duckdb").exists()


def test_the_issue_examples(tmp_path):
    for change, field in ((lambda s: s["target"].update(keyTemplate="data/{symbol}.zip"), "spec.target.keyTemplate"),
                          (lambda s: s.update(timezone="Mars/Base"), "spec.timezone='Mars/Base'"),
                          (lambda s: s["target"].update(lookbackDays="thirty"), "spec.target.lookbackDays='thirty': must be an integer"),
                          (lambda s: s.update(tagret={}), "spec.tagret={}: unknown field"),
                          (lambda s: s["target"].update(lagDays=-1), "spec.target.lagDays=-1: must be >= 0")):
        spec = yaml.safe_load(yaml.safe_dump(VALID))
        change(spec)
        code, stderr = cli_run(tmp_path, {"spec": spec})
        assert code == 2 and field in stderr and len(stderr.strip().splitlines()) == 1, stderr
