"""The docs site (mkdocs.yml, docs/) builds with ``mkdocs build --strict``: a link to a page or
anchor that does not exist, or a page left out of the nav, fails it. No server, no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def nav_pages(nav) -> set[str]:
    """Every page file the nav names, at any depth."""
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, list):
        return set().union(*(nav_pages(item) for item in nav))
    if isinstance(nav, dict):
        return set().union(*(nav_pages(value) for value in nav.values()))
    return set()


def docs_pages() -> set[str]:
    """Every .md file under docs/, through links as MkDocs follows them (docs/bench is ../bench)."""
    found = set()
    for folder, _, files in os.walk(DOCS, followlinks=True):
        found.update((Path(folder) / f).relative_to(DOCS).as_posix() for f in files if f.endswith(".md"))
    return found


def test_the_docs_site_builds_strict(tmp_path):
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert config["strict"] is True and config["docs_dir"] == "docs"
    pages, listed = docs_pages(), nav_pages(config["nav"])
    assert pages - listed == set(), "pages under docs/ missing from the nav in mkdocs.yml"
    assert listed - pages == set(), "the nav names pages that do not exist"
    # the benchmarks' lab notes are pages of the site, through the docs/bench link
    assert {f"bench/{p.name}" for p in (REPO / "bench").glob("results-*.md")} <= pages
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
                           "--site-dir", str(tmp_path / "site")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").exists()
