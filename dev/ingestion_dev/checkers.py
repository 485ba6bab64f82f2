"""The third-party checkers the tests run on our manifests (kube-score, checkov): each built
or installed once, at a pinned version, into the git-ignored cache by its dev/ script."""

from __future__ import annotations

import subprocess

from .workspace import REPO_ROOT, ClusterError, refuse_in_fast_loop


def checker_binary(name: str) -> str:
    """The path of ``name`` (``kube-score`` or ``checkov``) from ``dev/build-<name>``; a failed
    build or install raises, so a test that needs the checker fails rather than skips."""
    refuse_in_fast_loop(f"the {name} build")
    script = REPO_ROOT / "dev" / f"build-{name}"
    proc = subprocess.run([str(script)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ClusterError(f"{script.relative_to(REPO_ROOT)} failed (exit {proc.returncode}); see the output above")
    return proc.stdout.strip().splitlines()[-1]
