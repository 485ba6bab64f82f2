"""What every dev tool shares: the repository's root, the build cache, ports on 127.0.0.1,
and the one error a person can act on."""

from __future__ import annotations

import os
import socket
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """The git-ignored cache of builds (binaries, images), shared by every clone on this machine."""
    base = os.environ.get("INGESTION_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ingestion-operator"
    return Path(base)


class ClusterError(RuntimeError):
    """A problem with the local control plane or its servers that a person can act on;
    the message says what to do. ``ingestion-dev`` prints it and exits with code 2."""


FAST_ENV = "INGESTION_FAST"


class NeedsServer(RuntimeError):
    """Raised under ``dev/test --fast`` when a test starts a server or a build: the test lacks
    one of the markers that keep it out of the fast loop (pyproject's pytest markers)."""


def refuse_in_fast_loop(what: str) -> None:
    """Called by everything that starts a server or builds something; a no-op outside the fast
    loop. In it, a test that got here is unmarked, and this says so instead of a slow pass."""
    if os.environ.get(FAST_ENV):
        raise NeedsServer(f"{what} started under dev/test --fast: mark the test cluster, servers, node "
                          "or build (tests/conftest.py marks by fixture; mark direct starts yourself)")


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the kernel reports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False
