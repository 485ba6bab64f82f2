"""Each image installs only its own component: contract, operator and job are separate
distributions whose wheels hold one package each, whose dependencies stay apart, and whose
code imports across components only through the contract."""

from __future__ import annotations

import ast
import email
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = {"contract": "ingestion_contract", "operator": "ingestion_operator", "job": "ingestion_job"}
# What each component's code may import from outside the standard library.
ALLOWED_IMPORTS = {
    "contract": {"ingestion_contract", "tzdata"},  # tzdata: its declared dependency (IANA zones), read for its version
    "operator": {"ingestion_operator", "ingestion_contract", "kopf", "kubernetes", "urllib3", "prometheus_client"},
    "job": {"ingestion_job", "ingestion_contract", "httpx", "duckdb", "boto3", "botocore", "prometheus_client", "yaml",
            "pyarrow", "deltalake"},
}
FORBIDDEN_DEPENDENCIES = {"operator": {"duckdb", "pyarrow", "boto3", "httpx", "deltalake"}, "job": {"kopf", "kubernetes"},
                          "contract": {"kopf", "kubernetes", "duckdb", "pyarrow", "boto3", "httpx"}}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    src = tmp_path_factory.mktemp("src")  # setuptools writes build/ beside the sources: not in the work tree
    for c in COMPONENTS:
        shutil.copytree(REPO / c, src / c, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                           *(str(src / c) for c in COMPONENTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = {}
    for component, package in COMPONENTS.items():
        (whl,) = out.glob(f"{package}-*.whl")
        found[component] = whl
    return found


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_wheel_holds_only_its_own_package(wheels, component):
    with zipfile.ZipFile(wheels[component]) as zf:
        tops = {n.split("/", 1)[0] for n in zf.namelist() if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {COMPONENTS[component]}


@pytest.mark.parametrize("component", COMPONENTS)
def test_dependencies_stay_apart(wheels, component):
    with zipfile.ZipFile(wheels[component]) as zf:
        meta = email.message_from_bytes(zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))))
    deps = {_name(r) for r in meta.get_all("Requires-Dist") or []}
    assert not deps & FORBIDDEN_DEPENDENCIES[component], deps
    if component != "contract":
        assert "ingestion-contract" in deps


def test_component_pins_equal_the_workspace_pins():
    root = {_name(r): r for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    for component in COMPONENTS:
        for req in tomllib.loads((REPO / component / "pyproject.toml").read_text())["project"]["dependencies"]:
            if _name(req) != "ingestion-contract":
                assert root.get(_name(req)) == req, f"{component}/pyproject.toml pins {req!r}, the workspace {root.get(_name(req))!r}"


@pytest.mark.parametrize("component", COMPONENTS)
def test_code_imports_across_components_only_through_the_contract(component):
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    seen = {}
    for path in (REPO / component / COMPONENTS[component]).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module]
            else:
                continue
            for m in mods:
                top = m.split(".")[0]
                if top not in stdlib:
                    seen.setdefault(top, path.name)
    assert set(seen) <= ALLOWED_IMPORTS[component], {m: f for m, f in seen.items() if m not in ALLOWED_IMPORTS[component]}


def test_nothing_named_operator_is_importable():
    assert not (REPO / "operator" / "__init__.py").exists()
    assert Path(sysconfig.get_paths()["stdlib"], "operator.py").exists()
    import operator

    assert operator.__file__.startswith(sysconfig.get_paths()["stdlib"])
