"""Generate the README's IngestionSchedule reference from the CRD (the one contract).

    .venv/bin/ingestion-dev crd-reference --write   # refresh README.md between the markers
A test fails when the README's table and the CRD disagree.
"""

from __future__ import annotations

import yaml

from .workspace import REPO_ROOT

CRD = REPO_ROOT / "deploy" / "crds" / "ingestionschedules.ingestion.dev.yaml"
README = REPO_ROOT / "README.md"
BEGIN, END = "<!-- crd-reference:begin -->", "<!-- crd-reference:end -->"


def rows(node: dict, path: str, required: set[str]):
    for name, child in (node.get("properties") or {}).items():
        p = f"{path}.{name}"
        kind = child.get("type", "object")
        if kind == "array":
            kind = f"[]{child.get('items', {}).get('type', 'object')}"
        default = child.get("default")
        default = "" if default is None else f"`{yaml.safe_dump(default, default_flow_style=True).strip().removesuffix('...').strip()}`"
        desc = " ".join(str(child.get("description", "")).split()).replace("|", "\\|")
        yield f"| `{p}` | {kind}{' (required)' if name in required else ''} | {default} | {desc} |"
        if child.get("type") == "object" or "properties" in child:
            yield from rows(child, p, set(child.get("required") or []))


def table() -> str:
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    lines = ["| field | type | default | description |", "|---|---|---|---|"]
    lines += rows(spec, "spec", set(spec.get("required") or []))
    return "\n".join(lines)


def render(readme: str) -> str:
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"

