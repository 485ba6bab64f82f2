"""The image cache stays bounded: one archive per image, named stages kept for the layer cache."""

from __future__ import annotations

import pytest

from ingestion_dev import images
from ingestion_dev.workspace import REPO_ROOT


def test_both_dockerfiles_name_their_wheel_stage_so_it_is_tagged_not_pruned():
    assert images.stages(REPO_ROOT / "Dockerfile.job") == ["build"]
    assert images.stages(REPO_ROOT / "Dockerfile.operator") == ["build"]


@pytest.mark.build
def test_exporting_an_image_removes_the_archives_of_its_earlier_builds():
    """Each source change used to leave a new archive of several hundred MB beside the old
    ones (42 GB in a day of work) until SeaweedFS, sizing its volumes by free disk, refused writes."""
    stale = images.images_dir() / "ingestion-pause_1-000000000000.tar"
    stale.write_bytes(b"an earlier build")
    other = images.images_dir() / "ingestion-pausex_1-000000000000.tar"
    other.write_bytes(b"another image's archive")
    try:
        archive = images.pause_image()
        assert archive.exists() and archive != stale
        assert not stale.exists()
        assert other.exists()
        assert sorted(p.name for p in images.images_dir().glob("ingestion-pause_1-*.tar")) == [archive.name]
    finally:
        stale.unlink(missing_ok=True)
        other.unlink(missing_ok=True)
