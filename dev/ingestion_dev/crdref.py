"""Generate the IngestionSchedule and IngestionBackfill reference pages (docs/reference/) from the CRDs (the one contract).

    .venv/bin/ingestion-dev crd-reference --write   # refresh each page between its markers
A test fails when a page's table and its CRD disagree.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .workspace import REPO_ROOT

CRD = REPO_ROOT / "deploy" / "crds" / "ingestionschedules.ingestion.dev.yaml"
BACKFILL_CRD = REPO_ROOT / "deploy" / "crds" / "ingestionbackfills.ingestion.dev.yaml"
UPSTREAM_CRD = REPO_ROOT / "deploy" / "crds" / "ingestionupstreams.ingestion.dev.yaml"
REFERENCE = REPO_ROOT / "docs" / "reference"
BEGIN, END = "<!-- crd-reference:begin -->", "<!-- crd-reference:end -->"
# each CRD's table sits between its own markers, on a page of its own
PAGES = (
    (REFERENCE / "ingestionschedule.md", CRD, BEGIN, END),
    (REFERENCE / "ingestionbackfill.md", BACKFILL_CRD, "<!-- backfill-reference:begin -->", "<!-- backfill-reference:end -->"),
    (REFERENCE / "ingestionupstream.md", UPSTREAM_CRD, "<!-- upstream-reference:begin -->", "<!-- upstream-reference:end -->"),
)


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


def render(page: Path, text: str) -> str:
    """``text`` (the content of ``page``, one of PAGES) with the table between its markers
    generated again from its CRD."""
    _, crd, begin, end = next(p for p in PAGES if p[0] == page)
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{table(crd)}\n{end}{tail}"


def write() -> list[Path]:
    """Refresh every reference page; returns the pages that changed."""
    changed = []
    for page, *_ in PAGES:
        text = page.read_text()
        new = render(page, text)
        if new != text:
            page.write_text(new)
            changed.append(page)
    return changed

