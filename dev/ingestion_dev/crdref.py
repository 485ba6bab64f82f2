"""Generate the README's IngestionSchedule and IngestionBackfill references from the CRDs (the one contract).

    .venv/bin/ingestion-dev crd-reference --write   # refresh README.md between the markers
A test fails when the README's table and the CRD disagree.
"""

from __future__ import annotations

import yaml

from .workspace import REPO_ROOT

CRD = REPO_ROOT / "deploy" / "crds" / "ingestionschedules.ingestion.dev.yaml"
BACKFILL_CRD = REPO_ROOT / "deploy" / "crds" / "ingestionbackfills.ingestion.dev.yaml"
README = REPO_ROOT / "README.md"
BEGIN, END = "<!-- crd-reference:begin -->", "<!-- crd-reference:end -->"
# each CRD's table sits between its own markers
SECTIONS = ((CRD, BEGIN, END), (BACKFILL_CRD, "<!-- backfill-reference:begin -->", "<!-- backfill-reference:end -->"))


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


def table(crd=CRD) -> str:
    schema = yaml.safe_load(crd.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    lines = ["| field | type | default | description |", "|---|---|---|---|"]
    lines += rows(spec, "spec", set(spec.get("required") or []))
    return "\n".join(lines)


def render(readme: str) -> str:
    for crd, begin, end in SECTIONS:
        head, rest = readme.split(begin, 1)
        _, tail = rest.split(end, 1)
        readme = f"{head}{begin}\n{table(crd)}\n{end}{tail}"
    return readme

