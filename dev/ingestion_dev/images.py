"""Container images built here, without Docker and without a registry.

- **pause**: the pod sandbox's process, a static C program put into an image from scratch.
- **base**: a stand-in for the official Python image, made from Debian packages with
  mmdebstrap (python3 plus a venv at /opt/python that is first on PATH, so `pip` installs
  where `python` runs, as in the official image).
- **operator** and **job**: ``Dockerfile.operator`` and ``Dockerfile.job`` built with
  ``buildah bud`` on that base (``--build-arg BASE=...``); users build them with Docker on
  the official image. The machine's CA bundle and a pip.conf naming it are mounted into the
  build, so pip trusts this network's TLS without the bundle entering any image layer.

Images live in buildah's storage under the git-ignored cache, and move into a node as
docker-archive files (``ctr images import``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import shutil
import sys
import subprocess
import tempfile
import threading
from pathlib import Path

from .workspace import REPO_ROOT, ClusterError, cache_dir, refuse_in_fast_loop

PAUSE_IMAGE = "localhost/ingestion-pause:1"
BASE_IMAGE = "localhost/ingestion-base:bookworm"
OPERATOR_IMAGE = "localhost/ingestion-operator:dev"
JOB_IMAGE = "localhost/ingestion-job:dev"
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
CA_BUNDLE = Path("/etc/ssl/certs")
PAUSE_C = r"""
/* The pod sandbox's process: sleep until told to stop, reaping orphans meanwhile. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
"""


def images_dir() -> Path:
    d = cache_dir() / "images"
    d.mkdir(parents=True, exist_ok=True)
    return d


_held = threading.local()  # whether this thread holds the lock: a locked function may call another


def exclusive(fn):
    """One build, export or prune of the image cache at a time, across processes: the suite's
    two workers, a sandbox beside them. ``buildah rmi --prune`` in one would take the
    intermediate images of another's build, and two exports of one image write one file.
    (flock also keeps two threads of one process apart: each opens the file anew.)"""
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        if getattr(_held, "lock", False):
            return fn(*args, **kwargs)
        with open(images_dir() / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            _held.lock = True
            try:
                return fn(*args, **kwargs)
            finally:
                _held.lock = False
    return locked


def buildah(*args: str) -> str:
    refuse_in_fast_loop(f"buildah {args[0] if args else ''}")
    if not shutil.which("buildah"):
        raise ClusterError("buildah is missing: run dev/bootstrap (as root) to install Debian's buildah")
    d = images_dir()
    cmd = ["buildah", "--root", str(d / "storage"), "--runroot", str(d / "runroot"), "--storage-driver", "overlay", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"buildah {args[0]} failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout.strip()


@contextlib.contextmanager
def from_scratch(name: str):
    """A working container from an empty image, committed as ``name`` when the block ends well."""
    ctr = buildah("from", "scratch")
    try:
        yield ctr
        buildah("commit", "--quiet", ctr, name)
    finally:
        buildah("rm", ctr)


def has_image(name: str) -> bool:
    return name in buildah("images", "--format", "{{.Name}}:{{.Tag}}").split()


@exclusive
def export(name: str) -> Path:
    """The image as a docker-archive file for ``ctr images import``; rewritten when the image changed."""
    image_id = buildah("inspect", "--format", "{{.FromImageID}}", name)
    stem = name.rsplit('/', 1)[-1].replace(':', '_')
    archive = images_dir() / f"{stem}-{image_id[:12]}.tar"
    if not archive.exists():
        tmp = archive.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        buildah("push", "--quiet", name, f"docker-archive:{tmp}:{name}")
        tmp.rename(archive)
    # One archive per image: each source change makes a new one of several hundred MB,
    # and a cache that only grows fills the disk (SeaweedFS then refuses every write).
    for old in archive.parent.glob(f"{stem}-*.tar"):
        if old != archive:
            old.unlink(missing_ok=True)
    return archive


@exclusive
def pause_image() -> Path:
    """The pause image's archive, built from source once."""
    if not has_image(PAUSE_IMAGE):
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "pause.c"
            src.write_text(PAUSE_C)
            proc = subprocess.run(["cc", "-static", "-Os", "-o", str(Path(tmp) / "pause"), str(src)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise ClusterError(f"compiling the pause program failed: {proc.stderr.strip()}")
            with from_scratch(PAUSE_IMAGE) as ctr:
                buildah("copy", ctr, str(Path(tmp) / "pause"), "/pause")
                buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr)
    return export(PAUSE_IMAGE)


@exclusive
def base_image() -> str:
    """The Debian-made stand-in for python:3.11-slim, built once (about 30 s)."""
    if has_image(BASE_IMAGE):
        return BASE_IMAGE
    if not shutil.which("mmdebstrap"):
        raise ClusterError("mmdebstrap is missing: run dev/bootstrap (as root) to install it")
    with tempfile.TemporaryDirectory(dir=images_dir()) as tmp:
        tar = Path(tmp) / "rootfs.tar"
        sources = [str(DEBIAN_SOURCES)] if DEBIAN_SOURCES.exists() else []
        proc = subprocess.run(["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,passwd,ca-certificates",
                               "--format=tar", "bookworm", str(tar), *sources], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ClusterError(f"mmdebstrap failed: {proc.stderr.strip()[-2000:]}")
        with from_scratch(BASE_IMAGE) as ctr:
            buildah("add", ctr, str(tar), "/")
            buildah("run", "--isolation", "chroot", ctr, "--", "sh", "-c",
                    "python3 -m venv /opt/python && ln -s /opt/python/bin/python /usr/local/bin/python")
            buildah("config", "--env", "PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--env", "LANG=C.UTF-8", "--cmd", "python3", ctr)
    return BASE_IMAGE


@exclusive
def build(dockerfile: str, name: str) -> Path:
    """Build ``dockerfile`` from the repository on the stand-in base; returns its archive."""
    base = base_image()
    with tempfile.TemporaryDirectory() as tmp:
        pip_conf = Path(tmp) / "pip.conf"
        pip_conf.write_text(f"[global]\ncert = {CA_BUNDLE / 'ca-certificates.crt'}\n")
        common = ["bud", "--quiet", "--isolation", "chroot", "--network", "host", "--layers",
                  "--build-arg", f"BASE={base}", "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
                  "--volume", f"{pip_conf}:/etc/pip.conf:ro", "-f", str(REPO_ROOT / dockerfile)]
        # Named stages are tagged too: an untagged stage is dangling, and pruning it would
        # cost the next build of an unchanged tree its layer cache.
        for stage in stages(REPO_ROOT / dockerfile):
            buildah(*common, "--target", stage, "-t", f"{name}-{stage}", str(REPO_ROOT))
        buildah(*common, "-t", name, str(REPO_ROOT))
    # What earlier builds left behind (images no tag points to any more) goes. Best effort: a
    # build killed half way leaves a working container that holds its image, and clean-up of
    # the cache must not fail a build that succeeded (the next prune takes it).
    try:
        buildah("rmi", "--prune")
    except ClusterError as e:
        print(f"images: pruning untagged images skipped: {str(e).splitlines()[0]}", file=sys.stderr)
    return export(name)


def stages(dockerfile: Path) -> list[str]:
    """The names of a Dockerfile's named build stages (``FROM ... AS name``)."""
    names = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if len(words) >= 4 and words[0].upper() == "FROM" and words[-2].upper() == "AS":
            names.append(words[-1])
    return names


def chart_values() -> list[str]:
    """Helm ``--set`` values that make the chart run the images built here (never pulled)."""
    values = []
    for key, image in (("image", OPERATOR_IMAGE), ("jobImage", JOB_IMAGE)):
        repository, tag = image.rsplit(":", 1)
        values += [f"{key}.repository={repository}", f"{key}.tag={tag}", f"{key}.pullPolicy=Never"]
    return values
