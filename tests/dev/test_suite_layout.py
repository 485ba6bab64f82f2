"""The suite's own rule: shared helpers live in conftest.py, tests/kube.py and
tests/samples.py (or dev/ingestion_dev); no test module imports another."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_test_module_imports_another():
    offenders = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".") + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                parts = [p for a in node.names for p in a.name.split(".")]
            else:
                continue
            if any(p.startswith("test_") for p in parts):
                offenders.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    assert offenders == [], f"test modules importing test modules: {offenders}"


def test_the_fast_loop_refuses_a_server_a_test_forgot_to_mark(tmp_path, monkeypatch):
    """Under dev/test --fast, starting a server fails the test naming the markers, and starts nothing."""
    import pytest

    from ingestion_dev.processes import ProcessGroup
    from ingestion_dev.workspace import FAST_ENV, NeedsServer

    monkeypatch.setenv(FAST_ENV, "1")
    group = ProcessGroup(tmp_path)
    with pytest.raises(NeedsServer, match="mark the test cluster, servers, node or build"):
        group.start_process("sleeper", ["/bin/sleep", "300"])
    assert group.process_names() == []


def test_the_fast_loop_selects_no_test_that_uses_a_server_fixture():
    """The markers come from the fixtures a test uses: --fast collects nothing that needs the
    control plane, S3, the node or a build, and still collects the pure tests."""
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-m", "not (cluster or servers or node or build)", str(TESTS)],
        capture_output=True, text=True, cwd=TESTS.parent, env={**os.environ, "INGESTION_FAST": "1"}, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    selected = [line for line in out.stdout.splitlines() if "::" in line]
    for slow in ("tests/cluster/", "tests/node/", "tests/bench/", "tests/job/test_run.py", "tests/job/test_delta.py",
                 "tests/deploy/test_alerts.py", "tests/contract/test_cron_differential.py"):
        assert not [t for t in selected if t.startswith(slow)], f"{slow} selected by --fast"
    for pure in ("tests/contract/test_cron.py", "tests/operator/test_status.py", "tests/job/test_plan.py"):
        assert [t for t in selected if t.startswith(pure)], f"{pure} left out of --fast"


def test_two_workers_take_a_module_whole_and_every_node_module_on_one(tmp_path):
    """dev/test's workers (pytest-xdist) take units: a module, or all the modules that start
    real nodes together; a node test outside that list fails the collection by name."""
    import subprocess
    import sys

    from tests.conftest import _unit

    assert _unit("tests/job/test_delta.py::test_x[a-b]") == "tests/job/test_delta.py"
    assert {_unit(n) for n in ("tests/node/test_bad_day.py::t", "tests/dev/test_sandbox.py::t", "tests/dev/test_node.py::t[x]",
                               "tests/dev/test_images.py::t")} == {"node"}
    stray = TESTS / "dev" / f"test_zz_stray_{tmp_path.name}.py"
    stray.write_text("import pytest\n\n@pytest.mark.node\ndef test_on_a_node():\n    pass\n")
    try:
        out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", str(stray)],
                             capture_output=True, text=True, cwd=TESTS.parent, timeout=120)
    finally:
        stray.unlink()
    assert out.returncode != 0 and f"tests on a real node outside tests/conftest.py ONE_WORKER: tests/dev/{stray.name}" in (
        out.stdout + out.stderr), out.stdout[-2000:] + out.stderr[-2000:]
