"""The Kubernetes cron oracle: robfig/cron v3 (the version k8s.io/kubernetes pins) and the
API server's schedule and time-zone checks, built from the Go module proxy once into the
cache (``dev/cronoracle``), asked in batches of JSON lines.

Used by ``tests/contract/test_cron_differential.py``, which fails on any disagreement with
``ingestion_contract.cron``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from .workspace import REPO_ROOT, ClusterError, cache_dir, refuse_in_fast_loop

SOURCE = REPO_ROOT / "dev" / "cronoracle"


def build() -> Path:
    """The oracle binary, built if this source has not been built on this machine yet."""
    refuse_in_fast_loop("the cron oracle's Go build")
    key = hashlib.sha256(b"".join((SOURCE / f).read_bytes() for f in ("go.mod", "go.sum", "main.go"))).hexdigest()[:12]
    binary = cache_dir() / f"cronoracle-{key}" / "cronoracle"
    if binary.exists():
        return binary
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise ClusterError("the cron oracle needs Go (https://go.dev/dl) on PATH")
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(".tmp")
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    out = subprocess.run([go, "build", "-trimpath", "-o", str(tmp), "."], cwd=SOURCE, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise ClusterError(f"building the cron oracle failed: {out.stderr.strip()[-2000:]}")
    tmp.rename(binary)
    return binary


def ask(binary: Path, queries: list[dict]) -> list[dict]:
    """One answer per query: {"schedule_ok", "schedule_error", "tz_ok", "tz_error", "next"}."""
    text = "".join(json.dumps(q) + "\n" for q in queries)
    out = subprocess.run([str(binary)], input=text, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise ClusterError(f"the cron oracle failed: {out.stderr.strip()[-2000:]}")
    answers = [json.loads(line) for line in out.stdout.split("\n") if line]  # not splitlines(): U+0085 is no line end here
    assert len(answers) == len(queries), (len(answers), len(queries))
    return answers
