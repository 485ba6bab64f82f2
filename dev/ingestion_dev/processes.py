"""Long-lived helper processes recorded in PID files, stopped exactly.

Each PID file records the process's binary and command line; a PID is signalled only if
``/proc/PID/exe`` and ``/proc/PID/cmdline`` still match, so a stale PID file never makes
us kill a stranger.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from .workspace import refuse_in_fast_loop

CLONE_NEWNET = 0x40000000


class ProcessGroup:
    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir).resolve()
        self._procs: dict[str, subprocess.Popen] = {}

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    def start_process(self, name: str, argv: list[str], env: dict | None = None, netns: str | None = None) -> int:
        """Start a long-lived process owned by this state dir, logged to logs/NAME.log; with
        ``netns``, inside that network namespace (entered before exec, so the PID file still
        records the program itself)."""
        refuse_in_fast_loop(f"process {name!r}")
        exe = Path(argv[0]).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the 'up' command; stopped by 'down'
                cwd=self.state_dir,
                env=env,
                preexec_fn=_enter_netns(netns) if netns else None,
            )
        record = {"pid": proc.pid, "exe": os.path.realpath(exe), "argv": argv, "started": time.time()}
        (self.run_dir / f"{name}.pid").write_text(json.dumps(record))
        self._procs[name] = proc
        # Return only once /proc shows what the PID file records, so running() and down()
        # recognise the process from the first moment (seen once in a full suite: an
        # immediate running() missed a process just started).
        deadline = time.monotonic() + 5
        while self._owned_pid(name) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return proc.pid

    def _owned_pid(self, name: str) -> int | None:
        """The PID from the PID file, only if it still runs what we started there."""
        pid_file = self.run_dir / f"{name}.pid"
        try:
            rec = json.loads(pid_file.read_text())
            pid = int(rec["pid"])
            exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode() for a in f.read().split(b"\0")[:-1]]
        except (OSError, ValueError, KeyError):
            return None
        if argv != rec["argv"] or (exe != rec["exe"] and Path(exe).name != Path(rec["exe"]).name):
            return None
        return pid

    def process_names(self) -> list[str]:
        """Names with a PID file, oldest start first."""
        recs = []
        for f in self.run_dir.glob("*.pid"):
            try:
                recs.append((json.loads(f.read_text()).get("started", 0), f.stem))
            except (OSError, ValueError):
                recs.append((0, f.stem))
        return [n for _, n in sorted(recs)]

    def down(self, log=print) -> list[str]:
        """Stop exactly the processes this state dir started, newest first."""
        stopped = []
        for name in reversed(self.process_names()):
            pid = self._owned_pid(name)
            pid_file = self.run_dir / f"{name}.pid"
            if pid is None:
                pid_file.unlink(missing_ok=True)
                continue
            _terminate(pid)
            pid_file.unlink(missing_ok=True)
            stopped.append(name)
            log(f"stopped {name} (pid {pid})")
        return stopped

    def stop_process(self, name: str, sig: int = signal.SIGTERM) -> list[str]:
        """Stop one process (SIGKILL: at once, no grace) and return the argv it ran, to start it again."""
        rec = json.loads((self.run_dir / f"{name}.pid").read_text())
        pid = self._owned_pid(name)
        if pid is not None:
            if sig == signal.SIGKILL:
                os.kill(pid, signal.SIGKILL)
                while _alive(pid):
                    time.sleep(0.02)
            else:
                _terminate(pid)
        return rec["argv"]

    def running(self) -> dict[str, int]:
        """Name -> PID of each recorded process that still runs what was started."""
        return {n: p for n in self.process_names() if (p := self._owned_pid(n)) is not None}

    def exited(self, name: str) -> int | None:
        """Exit code of a process started by this object, if it has ended."""
        proc = self._procs.get(name)
        return None if proc is None else proc.poll()


def _terminate(pid: int, grace: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _alive(pid):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child (tests start the plane in-process).
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _enter_netns(name: str):
    """A preexec function that moves the child into network namespace ``name``."""
    path = f"/run/netns/{name}"
    if not os.path.exists(path):
        raise FileNotFoundError(f"network namespace {name} does not exist ({path})")

    def enter() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {path}")
        finally:
            os.close(fd)

    return enter
